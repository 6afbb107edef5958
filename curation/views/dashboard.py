"""The dashboard (`/dashboard/`), a generation's page and a sample's page, for curators and admins.

Thin views: they read stored metrics through curation.reports and call one
service for each action. Nothing here computes a metric: that is the
`curation.compute_generation_metrics` task's work, queued by "Recompute".
"""
from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from curation import reports
from curation.extensions import panels_render
from curation.models import GatePause, Generation, GenerationMetrics, Sample
from curation.services.gates import GateError, gate_resume
from curation.services.metrics import generation_metrics_compute_later
from ouroboros.roles import curator_required


def _selected(rows: list[reports.LineageRow], slug: str | None) -> reports.LineageRow | None:
    """The lineage asked for; else the first one at risk; else the first."""
    if slug:
        return next((row for row in rows if row.lineage.slug == slug), None)
    return next((row for row in rows if row.at_risk), rows[0] if rows else None)


def _live_context(request) -> dict:
    return {
        # Other apps' live pieces (generation's jobs), polled with the rest.
        "live_panels": panels_render(page="dashboard_live", request=request),
        "exports": reports.dashboard_exports(),
        "queues": reports.queue_depths(),
        "backlog": reports.review_backlog(),
    }


@curator_required
@require_safe
def dashboard(request):
    rows = reports.dashboard_lineages()
    selected = _selected(rows, request.GET.get("lineage"))
    if request.GET.get("lineage") and selected is None:
        messages.warning(request, f"No lineage {request.GET['lineage']!r}; showing the first one.")
        selected = _selected(rows, None)
    context = {
        "rows": rows,
        "selected": selected,
        "charts": reports.lineage_charts(row=selected) if selected else [],
        "agreement": reports.lineage_agreement(row=selected) if selected else None,
        "pauses": list(reports.open_gate_pauses()),
        "resumed": list(reports.recent_gate_pauses()),
        "throughput": reports.reviewer_throughput(),
        **_live_context(request),
    }
    return render(request, "curation/dashboard.html", context)


@curator_required
@require_safe
def dashboard_live(request):
    """Jobs (a panel generation adds), exports, queue depth and backlog: the panel htmx polls."""
    return render(request, "curation/dashboard_live.html", _live_context(request))


@curator_required
@require_safe
def generation_detail(request, pk: int):
    generation = get_object_or_404(Generation.objects.select_related("lineage", "metrics"), pk=pk)
    try:
        after = max(0, int(request.GET.get("after", 0)))
    except ValueError:
        after = 0
    samples = reports.generation_samples(generation=generation, after=after)
    try:
        metrics = generation.metrics
    except GenerationMetrics.DoesNotExist:
        metrics = None
    return render(request, "curation/dashboard_generation.html", {
        "generation": generation,
        "metrics": metrics,
        "samples": samples,
        "next_after": samples[-1].pk if len(samples) == 50 else None,
        "pause": GatePause.objects.filter(generation=generation).select_related("resumed_by").first(),
    })


@curator_required
@require_POST
def metrics_recompute(request, pk: int):
    generation = get_object_or_404(Generation.objects.select_related("lineage"), pk=pk)
    with transaction.atomic():
        generation_metrics_compute_later(generation_id=generation.pk)
    messages.success(request, f"Recomputing the metrics of {generation}; the page shows them when the task is done.")
    return redirect(f"{reverse('dashboard')}?lineage={generation.lineage.slug}")


@curator_required
@require_POST
def gate_resume_view(request, pk: int):
    pause = get_object_or_404(GatePause.objects.select_related("lineage", "generation"), pk=pk)
    try:
        resumed = gate_resume(pause=pause, resumed_by=request.user, note=request.POST.get("note", ""))
    except GateError as exc:
        messages.warning(request, str(exc).capitalize() + ".")
    else:
        messages.success(request, f"Resumed {resumed} schedule{'s' if resumed != 1 else ''} of {pause.lineage}.")
    return redirect(f"{reverse('dashboard')}?lineage={pause.lineage.slug}")


@curator_required
@require_safe
def sample_detail(request, pk: int):
    try:
        sample = reports.sample_trace(pk=pk)
    except Sample.DoesNotExist:
        raise Http404(f"no sample {pk}") from None
    return render(request, "curation/sample_detail.html", {"sample": sample, "provenance": sample.provenance or {}})
