"""Receivers that keep generation's rows beside curation's without curation importing generation."""
from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from curation.extensions import build_refusal, gate_crossed, gate_resumed
from curation.models import Lineage

from .models import GenerationJob, GeneratorSettings, LineageSchedule


@receiver(post_save, sender=Lineage, dispatch_uid="generation.lineage_generator_settings")
def lineage_generator_settings(sender, instance: Lineage, created: bool, raw: bool = False, **kwargs) -> None:
    """Every lineage has generator settings from the moment it exists."""
    if created and not raw:
        GeneratorSettings.objects.get_or_create(lineage=instance)


@receiver(gate_crossed, dispatch_uid="generation.pause_schedules_on_gate")
def pause_schedules_on_gate(sender, lineage, generation, reason: str, **kwargs) -> list[int]:
    """A gate crossed: pause every running schedule of the lineage; the ids go on the GatePause."""
    from .services import schedule_pause

    schedules = list(LineageSchedule.objects.select_for_update()
                     .filter(lineage=lineage, enabled=True, paused_at__isnull=True))
    for schedule in schedules:
        schedule_pause(schedule=schedule, reason=reason)
    return [schedule.pk for schedule in schedules]


@receiver(gate_resumed, dispatch_uid="generation.resume_schedules_after_gate")
def resume_schedules_after_gate(sender, pause, **kwargs) -> int:
    """Resume what this gate paused and is still paused by a gate; a schedule paused for another reason stays."""
    from .services import schedule_resume

    schedules = LineageSchedule.objects.filter(
        pk__in=pause.schedule_ids, paused_at__isnull=False, paused_reason__startswith="gate: "
    )
    resumed = 0
    for schedule in schedules:
        schedule_resume(schedule=schedule)
        resumed += 1
    return resumed


@receiver(build_refusal, dispatch_uid="generation.refuse_build_while_jobs_run")
def refuse_build_while_jobs_run(sender, generation, **kwargs) -> str | None:
    running = GenerationJob.objects.filter(generation=generation, status__in=GenerationJob.ACTIVE).count()
    if running:
        return f"generation {generation.number} still has {running} running job(s); wait or cancel them first"
    return None

