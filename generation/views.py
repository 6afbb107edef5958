"""Generation pages: start, watch and cancel jobs (curators)."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import HttpResponseStopPolling

from curation.models import Lineage
from generation.models import GenerationJob
from generation.services import MAX_JOB_SIZE, JobError, job_cancel, job_create
from ouroboros.roles import curator_required


class JobForm(forms.Form):
    requested = forms.IntegerField(min_value=1, max_value=MAX_JOB_SIZE, initial=5, label="Samples")


@curator_required
@require_POST
def job_start(request, slug: str):
    lineage = get_object_or_404(Lineage, slug=slug)
    form = JobForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Samples: " + "; ".join(form.errors.get("requested", ["invalid"])))
        return redirect("lineage-detail", slug=lineage.slug)
    try:
        job = job_create(lineage=lineage, requested=form.cleaned_data["requested"], created_by=request.user)
    except JobError as exc:
        messages.error(request, f"Could not start the job: {exc}.")
    else:
        messages.success(request, f"Job {job.pk} queued for {job.requested} samples.")
    return redirect("lineage-detail", slug=lineage.slug)


@curator_required
@require_safe
def job_progress(request, pk: int):
    job = get_object_or_404(GenerationJob, pk=pk)
    response = render(request, "generation/_job_row.html", {"job": job})
    if request.htmx and not job.is_active:
        # The job has ended: swap in its final row and tell htmx to stop polling.
        stop = HttpResponseStopPolling()
        stop.content = response.content
        return stop
    return response


@curator_required
@require_POST
def job_stop(request, pk: int):
    job = get_object_or_404(GenerationJob, pk=pk)
    if job_cancel(job=job):
        messages.success(request, f"Job {job.pk} cancelled.")
    else:
        messages.info(request, f"Job {job.pk} had already ended.")
    return redirect("lineage-detail", slug=job.lineage.slug)
