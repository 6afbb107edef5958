"""A lineage's generator settings (generation.models.GeneratorSettings): checked and written.

They are changed through the lineage's own endpoint and service
(`curation.services.lineages.lineage_settings_update`), which hands the names it
does not own to the section generation registers (generation/hooks.py), so a
client sends one PATCH for curation's and generation's settings alike.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError

from curation.models import Lineage
from curation.services.lineages import SettingsError
from generation.models import GeneratorSettings

RANGES = {"temperature": (0, 2), "synthetic_context_fraction": (0, 1), "student_answers": (1, 10),
          "style_examples": (0, 20)}


def generator_settings_update(*, lineage: Lineage, settings: dict) -> GeneratorSettings:
    """Check and write generator settings; raises SettingsError naming the field, writing nothing.

    Runs inside the caller's transaction (the lineage row locked), so an error
    here rolls back the lineage's and the policy's changes of the same request.
    """
    from generation.backends import backend_refusal

    if settings.get("backend") and (refusal := backend_refusal(settings["backend"])):
        raise SettingsError("backend", refusal)  # the same rule as the admin and the worker
    for name, (low, high) in RANGES.items():
        if name in settings and not low <= settings[name] <= high:
            raise SettingsError(name, f"must be between {low} and {high}")
    row, _ = GeneratorSettings.objects.select_for_update().get_or_create(lineage=lineage)
    for name, value in settings.items():
        setattr(row, name, value)
    try:
        row.full_clean(exclude=["lineage"], validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise SettingsError(field if field != "__all__" else "settings", " ".join(messages)) from None
    row.save()
    return row
