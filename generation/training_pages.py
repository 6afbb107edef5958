"""The trainer's pages (curators): a lineage's training runs, their live progress, start and cancel.

The lineage page (curation's) loads the runs section from here over htmx, so curation
never imports generation; without JavaScript its link leads to the full page below.
"""
from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseStopPolling

from curation.models import Lineage, TrainingSet
from generation.models import TrainingRun
from generation.services.training import TrainingError, training_run_cancel, training_run_create
from ouroboros.roles import curator_required


def _section_context(lineage: Lineage) -> dict:
    return {
        "lineage": lineage,
        "runs": TrainingRun.objects.filter(lineage=lineage)
        .select_related("training_set__generation", "base_model", "output_model")[:20],
        "published_sets": lineage.training_sets.filter(status=TrainingSet.Status.PUBLISHED)
        .select_related("generation"),
    }


@curator_required
@require_http_methods(["GET", "HEAD", "POST"])
def lineage_training(request, slug: str):
    """GET: the runs (a partial for htmx, the full page otherwise). POST: start a run on a published set."""
    lineage = get_object_or_404(Lineage, slug=slug)
    if request.method == "POST":
        training_set = lineage.training_sets.filter(pk=request.POST.get("training_set", "")
                                                    if request.POST.get("training_set", "").isdigit() else None).first()
        if training_set is None:
            messages.error(request, "Could not start training: choose one of this lineage's training sets.")
        else:
            try:
                run = training_run_create(training_set=training_set, created_by=request.user)
            except TrainingError as exc:
                messages.error(request, f"Could not start training: {exc}.")
            else:
                messages.success(request, f"Training run {run.pk} queued on generation "
                                          f"{training_set.generation.number}'s training set.")
        return redirect("lineage-training", slug=lineage.slug)
    template = "generation/_training_runs.html" if request.htmx else "generation/training_runs.html"
    return render(request, template, _section_context(lineage))


@curator_required
@require_safe
def training_run_progress(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("training_set__generation", "output_model"), pk=pk)
    response = render(request, "generation/_training_run_row.html", {"run": run})
    if request.htmx and not run.is_active:
        stop = HttpResponseStopPolling()  # the run has ended: its final row, and no more polling
        stop.content = response.content
        return stop
    return response


@curator_required
@require_POST
def training_run_stop(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("lineage"), pk=pk)
    if training_run_cancel(run=run):
        messages.success(request, f"Training run {run.pk} cancelled.")
    else:
        messages.info(request, f"Training run {run.pk} had already ended.")
    return redirect("lineage-training", slug=run.lineage.slug)
