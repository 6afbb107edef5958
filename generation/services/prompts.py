"""Per-lineage generator settings: the backend config and versioned prompts."""
from __future__ import annotations

import string

from django.conf import settings
from django.db import transaction

from curation.models import Lineage
from generation.backends import BackendConfig
from generation.dialogue import DEFAULT_PROMPTS, Prompts
from generation.errors import JobError
from generation.models import PromptTemplate, generator_settings_for


def lineage_backend_config(*, lineage: Lineage) -> BackendConfig:
    """Where the lineage's backend finds its model: its generator settings, else the settings."""
    conf = settings.OUROBOROS
    generator = generator_settings_for(lineage)
    return BackendConfig(
        base_url=generator.backend_base_url or conf["OPENAI_BASE_URL"],
        model=generator.backend_model or conf["OPENAI_MODEL"],
        api_key_env=generator.backend_api_key_env or conf["OPENAI_API_KEY_ENV"],
        timeout=conf["BACKEND_TIMEOUT"],
    )


def lineage_prompts(*, lineage: Lineage) -> Prompts:
    """The lineage's newest prompt version, or the built-in defaults."""
    template = PromptTemplate.objects.filter(lineage=lineage).order_by("-version").first()
    if template is None:
        return DEFAULT_PROMPTS
    return Prompts(
        version=template.label,
        tutor_system=template.tutor_system,
        student_system=template.student_system,
        critique_system=template.critique_system,
        question_styles=tuple(template.question_styles or ()),
    )


def prompt_template_save(*, lineage: Lineage, tutor_system: str, student_system: str, critique_system: str = "",
                         question_styles: list[str] | None = None, note: str = "", created_by=None) -> PromptTemplate:
    """Write the next prompt version; earlier versions stay as they were.

    A template may use only the {style} placeholder, in the tutor's prompt;
    anything else would fail at generation time, so it is refused here.
    """
    for field_name, text in (("tutor_system", tutor_system), ("student_system", student_system),
                             ("critique_system", critique_system)):
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as exc:
            raise JobError(f"{field_name}: {exc} (write literal braces as {{{{ and }}}})") from None
        unknown = names - PromptTemplate.PLACEHOLDERS[field_name]
        if unknown:
            allowed = ", ".join("{" + n + "}" for n in PromptTemplate.PLACEHOLDERS[field_name]) or "none"
            raise JobError(f"{field_name}: unknown placeholder {{{sorted(unknown)[0]}}} (allowed: {allowed})")
    if not tutor_system.strip() or not student_system.strip():
        raise JobError("the tutor and student prompts cannot be empty")
    styles = [str(style).strip() for style in (question_styles or []) if str(style).strip()]
    with transaction.atomic():
        Lineage.objects.select_for_update().get(pk=lineage.pk)  # serialise version numbers per lineage
        latest = PromptTemplate.objects.filter(lineage=lineage).order_by("-version").first()
        return PromptTemplate.objects.create(
            lineage=lineage,
            version=(latest.version + 1) if latest else 1,
            tutor_system=tutor_system,
            student_system=student_system,
            critique_system=critique_system,
            question_styles=styles,
            note=note,
            created_by=created_by,
        )


