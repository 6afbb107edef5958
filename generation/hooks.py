"""What generation adds to curation's pages and settings, registered from GenerationConfig.ready.

curation declares the points (curation/extensions.py) and never imports
generation; the signal receivers are in generation/signals.py.
"""
from __future__ import annotations

from curation.extensions import (
    Panel,
    SettingsSection,
    dead_claims_releaser_register,
    panel_register,
    settings_section_register,
)


def _lineage_jobs(*, request, lineage) -> dict:
    """The lineage's latest jobs, and its loop schedules with what their last firing did (one query each)."""
    from django.db.models import OuterRef, Subquery

    from generation.models import GenerationJob, LineageSchedule, ScheduleRun

    last = ScheduleRun.objects.filter(schedule=OuterRef("pk")).order_by("-created_at", "-id")
    loops = LineageSchedule.objects.filter(lineage=lineage, runs_loop=True).annotate(
        last_at=Subquery(last.values("created_at")[:1]), last_step=Subquery(last.values("loop_step")[:1]),
        last_skip=Subquery(last.values("skipped_reason")[:1]))
    return {"lineage": lineage, "loops": list(loops),
            "jobs": GenerationJob.objects.filter(lineage=lineage).select_related("generation")[:20]}


def _dashboard_jobs(*, request, limit: int = 10) -> dict:
    """Running jobs first, then the latest ended ones."""
    from generation.models import GenerationJob

    active = list(GenerationJob.objects.filter(status__in=GenerationJob.ACTIVE)
                  .select_related("lineage", "generation").order_by("-created_at")[:limit])
    ended = list(GenerationJob.objects.exclude(status__in=GenerationJob.ACTIVE)
                 .select_related("lineage", "generation").order_by("-created_at")[: max(0, limit - len(active))])
    return {"jobs": active + ended}


def _read_fields() -> dict:
    from generation.api.serializers import generator_read_fields

    return generator_read_fields()


def _write_fields() -> dict:
    from generation.api.serializers import generator_write_fields

    return generator_write_fields()


def _update(*, lineage, settings: dict) -> None:
    from generation.services.settings import generator_settings_update

    generator_settings_update(lineage=lineage, settings=settings)


def register() -> None:
    from generation.api.serializers import GENERATOR_SETTINGS

    panel_register(Panel(page="lineage", template="generation/_lineage_jobs.html", context=_lineage_jobs, order=10))
    panel_register(Panel(page="dashboard_live", template="generation/_dashboard_jobs.html",
                         context=_dashboard_jobs, order=10))
    settings_section_register(SettingsSection(
        name="generator", names=GENERATOR_SETTINGS, related="generator",
        read_fields=_read_fields, write_fields=_write_fields, update=_update,
    ))
    # A worker starting on a host frees and queues again what a dead predecessor there held.
    dead_claims_releaser_register("generation.services.jobs.jobs_release_dead")
    dead_claims_releaser_register("generation.services.training.training_runs_release_dead")
