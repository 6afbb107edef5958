"""Lineage pages for curators: the panels other apps add (jobs), the next generation's plan, training sets and their files."""
from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseStopPolling

from curation import selectors
from curation.models import Lineage, TrainingSet, TrainingSetExport
from curation.services.exports import CONTENT_TYPE, ExportError, export_file, manifest_file
from curation.services.lineage_fit import LineageFitError, lineage_fit_request
from curation.services.reflag import ReflagError, flag_run_create
from curation.services.training_sets import (
    TrainingSetError,
    lineage_policy,
    policy_check,
    training_set_build,
    training_set_plan,
)
from curation.extensions import panels_render
from ouroboros.roles import curator_required

TRAINING_SETS_PER_PAGE = 20


@curator_required
@require_safe
def lineage_list(request):
    return render(request, "curation/lineage_list.html", {"lineages": selectors.lineage_list_overview()})


@curator_required
@require_safe
def lineage_detail(request, slug: str):
    lineage = get_object_or_404(Lineage, slug=slug)
    # Newest first, a page at a time: a long-lived lineage has a set per generation.
    training_sets = Paginator(
        lineage.training_sets.select_related("generation", "built_by").prefetch_related("exports")
        .order_by("-generation__number"), TRAINING_SETS_PER_PAGE,
    ).get_page(request.GET.get("sets"))
    try:
        plan = training_set_plan(lineage=lineage)
    except TrainingSetError:
        plan = None
    return render(
        request,
        "curation/lineage_detail.html",
        {
            "lineage": lineage,
            "overview": selectors.lineage_overview(lineage=lineage),
            # Other apps' pieces of the page (generation's jobs panel), in their registered order.
            "panels": panels_render(page="lineage", request=request, lineage=lineage),
            "agreement": selectors.reviewer_agreement(lineage=lineage),
            "fits": selectors.lineage_fits_overview(lineage=lineage),
            "policy": lineage_policy(lineage=lineage),
            "plan": plan,
            "plan_breaches": policy_check(plan) if plan else [],
            "training_sets": training_sets,
        },
    )


@curator_required
@require_POST
def training_set_create(request, slug: str):
    lineage = get_object_or_404(Lineage, slug=slug)
    try:
        training_set = training_set_build(lineage=lineage, built_by=request.user)
    except TrainingSetError as exc:
        messages.error(request, f"Could not build the training set: {exc}.")
    else:
        messages.success(
            request,
            f"Built the training set of generation {training_set.generation.number} "
            f"({training_set.sample_count} samples + {training_set.real_count} real passages); its exports are "
            f"being written. Generation {training_set.generation.number + 1} is open.",
        )
    return redirect("lineage-detail", slug=lineage.slug)


def _fits_partial(request, lineage: Lineage, *, notice: str = "", error: str = ""):
    """The lineage's own flag models panel; polled while a fit runs, told to stop once none does."""
    fits = selectors.lineage_fits_overview(lineage=lineage)
    response = render(request, "curation/_lineage_fits.html",
                      {"lineage": lineage, "fits": fits, "notice": notice, "error": error})
    if request.htmx and request.method == "GET" and not fits["fitting"]:
        stop = HttpResponseStopPolling()
        stop.content = response.content
        return stop
    return response


@curator_required
@require_http_methods(["GET", "HEAD", "POST"])
def lineage_fits(request, slug: str):
    """GET: the panel. POST ("fit now"): queue a fit of each kind on the lineage's review decisions."""
    lineage = get_object_or_404(Lineage, slug=slug)
    notice = error = ""
    if request.method == "POST":
        try:
            lineage_fit_request(lineage=lineage, created_by=request.user)
        except LineageFitError as exc:
            error = f"Could not start a fit: {exc}."
        else:
            notice = "Fitting both flag models on this lineage's review decisions."
        if not request.htmx:
            (messages.error if error else messages.success)(request, error or notice)
            return redirect("lineage-detail", slug=lineage.slug)
    return _fits_partial(request, lineage, notice=notice, error=error)


@curator_required
@require_POST
def lineage_reflag(request, slug: str):
    """Start the existing re-flag job for the lineage (offered after a fit changed its detectors)."""
    lineage = get_object_or_404(Lineage, slug=slug)
    notice = error = ""
    try:
        run = flag_run_create(lineage=lineage, created_by=request.user)
    except ReflagError as exc:
        error = f"Could not re-flag: {exc}."
    else:
        notice = f"Re-flagging the lineage's {run.total} samples (run {run.pk})."
    if not request.htmx:
        (messages.error if error else messages.success)(request, error or notice)
        return redirect("lineage-detail", slug=lineage.slug)
    return _fits_partial(request, lineage, notice=notice, error=error)


@curator_required
@require_safe
def training_set_exports(request, pk: int):
    """The exports of one set, for htmx to poll while they are written."""
    training_set = get_object_or_404(TrainingSet.objects.prefetch_related("exports"), pk=pk)
    response = render(request, "curation/_training_set_exports.html", {"ts": training_set})
    if request.htmx and training_set.status == TrainingSet.Status.PUBLISHED:
        stop = HttpResponseStopPolling()
        stop.content = response.content
        return stop
    return response


def training_set_file_response(training_set: TrainingSet, fmt: str) -> FileResponse:
    """The file of one format (or the manifest) of a set; Http404 saying why when it cannot be served."""
    try:
        if fmt == "manifest":
            path, content_type = manifest_file(training_set=training_set), "application/json"
        else:
            export = training_set.exports.filter(format=fmt).first()
            if export is None:
                raise Http404(f"no {fmt!r} export; formats are {', '.join(TrainingSetExport.Format.values)}, manifest")
            path, content_type = export_file(export=export), CONTENT_TYPE[fmt]
    except ExportError as exc:
        raise Http404(str(exc)) from None
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name, content_type=content_type)


@curator_required
@require_safe
def training_set_download(request, pk: int):
    training_set = get_object_or_404(TrainingSet, pk=pk)
    return training_set_file_response(training_set, request.GET.get("format", TrainingSetExport.Format.CHAT))
