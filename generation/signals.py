"""Receivers that keep generation's rows beside curation's without curation importing generation."""
from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from curation.extensions import build_refusal, gate_crossed, gate_resumed, training_set_published
from curation.models import Lineage
from ouroboros import egress

from .models import GenerationJob, GeneratorSettings, LineageSchedule, ModelRecord

log = logging.getLogger(__name__)


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


# The egress policy (ouroboros/egress.py) on every save, whatever path saves the row: the API and the admin
# report a refusal on the field before this; a management command or the shell meets it here.
_EGRESS_FIELDS = ("backend_base_url", "backend_api_key_env", "webhook_url", "webhook_secret_env", "base_url",
                  "api_key_env")


@receiver(pre_save, sender=GeneratorSettings, dispatch_uid="generation.generator_settings_egress")
@receiver(pre_save, sender=ModelRecord, dispatch_uid="generation.model_record_egress")
def egress_guard(sender, instance, raw: bool = False, **kwargs) -> None:
    if not raw:
        egress.instance_guard(instance, _EGRESS_FIELDS)


@receiver(training_set_published, dispatch_uid="generation.training_set_published_webhook")
def training_set_published_webhook(sender, training_set, **kwargs) -> None:
    """Queue the lineage's webhook (external trainers). Sent after the publication commits; the
    savepoint keeps the delivery row and its queued task together. A failure is logged, not raised, so
    the other receivers (the built-in trainer) still run; the webhook sweep writes the delivery later."""
    from .services.webhooks import webhook_queue

    try:
        with transaction.atomic():
            webhook_queue(training_set=training_set)
    except Exception:
        log.exception("could not queue the webhook of training set %s; the sweep will retry", training_set.pk)
@receiver(training_set_published, dispatch_uid="generation.train_on_publish")
def train_on_publish(sender, training_set, **kwargs) -> None:
    """Loop mode train: a published set starts the built-in trainer on it (generation N+1's student)."""
    from .models import LoopMode, generator_settings_for
    from .services.loop import training_start

    if generator_settings_for(training_set.lineage).loop_mode == LoopMode.TRAIN:
        training_start(training_set=training_set)
