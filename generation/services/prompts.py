"""Per-lineage generator settings: the backend config and versioned prompts."""
from __future__ import annotations

import hashlib
import string

from django.conf import settings
from django.db import transaction

from curation.models import Lineage
from generation.backends import BackendConfig
from generation.dialogue import DEFAULT_QUESTION_STYLES, Prompts
from generation.errors import JobError
from generation.models import PromptTemplate, generator_settings_for


def lineage_backend_config(*, lineage: Lineage) -> BackendConfig:
    """Where the lineage's backend finds its model: its generator settings, else the settings."""
    conf = settings.OUROBOROS
    generator = generator_settings_for(lineage)
    return BackendConfig(
        base_url=generator.backend_base_url or conf["OPENAI_BASE_URL"],
        model=generator.backend_model or conf["OPENAI_MODEL"],
        api_key_env=generator.backend_api_key_env,  # no fallback: a server-wide key must not follow a curator's URL
        timeout=conf["BACKEND_TIMEOUT"],
    )


# Words of a lineage's name that say what kind of dataset it is, not what it is about.
_NAME_NOISE = {"tutor", "tutors", "qa", "q&a", "questions", "answers", "question", "answer", "dataset", "data",
               "lineage", "demo", "set", "corpus", "generation", "synthetic", "-", "–", "·", "/"}
DESCRIPTION_CHARS = 240


def _subject(name: str) -> str:
    """What a lineage is about, from its name: "Contract law QA" -> "contract law"."""
    kept = [w for w in name.split() if w.lower().strip(":,.()") not in _NAME_NOISE]
    subject = " ".join(kept).strip(" :,.-") or name.strip()
    # Lower-case ordinary words, keep acronyms and names written in capitals inside ("EU contract law").
    return " ".join(w if (w.isupper() and len(w) > 1) else w[0].lower() + w[1:] if w else w
                    for w in subject.split())


def _first_sentences(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > 40 else cut.rsplit(" ", 1)[0] + "…"


def default_prompts(*, lineage: Lineage) -> Prompts:
    """The built-in prompts, written for what the lineage is about (its name and description).

    A small model follows a concrete role far better than a generic one; a
    lineage about contract law gets a law tutor. The question styles are the
    defaults. The version names the words: "default-3/<hash>" changes when
    the lineage's name or description does.
    """
    subject = _subject(lineage.name)
    about = _first_sentences(lineage.description or "")
    context = f" The course: {about}" if about else ""
    tutor_system = (
        f"You are a tutor in {subject}.{context} Read the passage and write exactly one short question "
        "that a student can answer from the passage. Ask {style}. Reply with the question only."
    )
    student_system = (
        f"You are a student of {subject}. Answer the question in two or three short, plain sentences, using "
        "only facts from the passage. State the facts directly; do not mention the passage, the question or "
        "yourself."
    )
    critique_system = (
        f"You are a tutor in {subject}. In one or two sentences, say whether the student's answer is correct "
        "according to the passage and what it misses."
    )
    digest = hashlib.sha256("\n".join((tutor_system, student_system, critique_system)).encode()).hexdigest()[:8]
    return Prompts(version=f"default-3/{digest}", tutor_system=tutor_system, student_system=student_system,
                   critique_system=critique_system, question_styles=DEFAULT_QUESTION_STYLES)


def lineage_prompts(*, lineage: Lineage) -> Prompts:
    """The lineage's newest prompt version, or the defaults written from its name and description."""
    template = PromptTemplate.objects.filter(lineage=lineage).order_by("-version").first()
    if template is None:
        return default_prompts(lineage=lineage)
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


