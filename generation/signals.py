"""Receivers that keep generation's rows beside curation's without curation importing generation."""
from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from curation.models import Lineage
from curation.signals import training_set_published
from ouroboros import egress

from .models import GeneratorSettings, ModelRecord


@receiver(post_save, sender=Lineage, dispatch_uid="generation.lineage_generator_settings")
def lineage_generator_settings(sender, instance: Lineage, created: bool, raw: bool = False, **kwargs) -> None:
    """Every lineage has generator settings from the moment it exists."""
    if created and not raw:
        GeneratorSettings.objects.get_or_create(lineage=instance)


# The egress policy (ouroboros/egress.py) on every save, whatever path saves the row: the API and the admin
# report a refusal on the field before this; a management command or the shell meets it here.
_EGRESS_FIELDS = ("backend_base_url", "backend_api_key_env", "webhook_url", "webhook_secret_env", "base_url",
                  "api_key_env")


@receiver(pre_save, sender=GeneratorSettings, dispatch_uid="generation.generator_settings_egress")
@receiver(pre_save, sender=ModelRecord, dispatch_uid="generation.model_record_egress")
@receiver(pre_save, sender=Lineage, dispatch_uid="generation.lineage_egress")
def egress_guard(sender, instance, raw: bool = False, **kwargs) -> None:
    if not raw:
        egress.instance_guard(instance, _EGRESS_FIELDS)


@receiver(training_set_published, dispatch_uid="generation.training_set_published_webhook")
def training_set_published_webhook(sender, training_set, **kwargs) -> None:
    """Queue the lineage's webhook (external trainers). In a savepoint: a failure here is logged by curation
    and cannot undo the publication."""
    from .services.webhooks import webhook_queue

    with transaction.atomic():
        webhook_queue(training_set=training_set)
