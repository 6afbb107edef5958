"""Receivers that keep generation's rows beside curation's without curation importing generation."""
from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from curation.models import Lineage

from .models import GeneratorSettings


@receiver(post_save, sender=Lineage, dispatch_uid="generation.lineage_generator_settings")
def lineage_generator_settings(sender, instance: Lineage, created: bool, raw: bool = False, **kwargs) -> None:
    """Every lineage has generator settings from the moment it exists."""
    if created and not raw:
        GeneratorSettings.objects.get_or_create(lineage=instance)
