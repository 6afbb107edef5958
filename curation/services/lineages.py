"""Creating lineages and loading their real corpus."""
from __future__ import annotations

import hashlib

from django.db import connection, transaction

from curation.models import Generation, Lineage, LineagePolicy, SourcePassage

MAX_PASSAGE_CHARS = 20_000
# The first key of the advisory lock taken by writers of a lineage's passages (the second is the lineage's id).
PASSAGE_LOCK_CLASS = 0x50A5


class CorpusError(ValueError):
    """Bad corpus input; the message names the passage that was wrong."""


def lineage_create(*, name: str, slug: str, description: str = "") -> Lineage:
    """A lineage starts with generation 0 (its real corpus, closed), generation 1 open for generating,
    and the default policy (accumulate, at least 20% real data, the default gates)."""
    with transaction.atomic():
        lineage = Lineage.objects.create(name=name, slug=slug, description=description)
        LineagePolicy.objects.create(lineage=lineage)
        Generation.objects.create(lineage=lineage, number=0, status=Generation.Status.CLOSED)
        Generation.objects.create(lineage=lineage, number=1)
    return lineage


def passage_build(*, lineage: Lineage, text: str, title: str = "") -> SourcePassage:
    """An unsaved passage with normalised text (whitespace collapsed) and its content hash.

    Raises CorpusError (without naming the passage: the caller knows where it came from)
    when the text is empty or longer than MAX_PASSAGE_CHARS.
    """
    text = " ".join(str(text).split())
    if not text:
        raise CorpusError("has no text")
    if len(text) > MAX_PASSAGE_CHARS:
        raise CorpusError(f"is {len(text)} characters; the limit is {MAX_PASSAGE_CHARS}")
    return SourcePassage(
        lineage=lineage,
        title=str(title)[:300],
        text=text,
        content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def passages_insert(*, lineage_id: int, rows: list[SourcePassage]) -> int:
    """Insert the passages not yet in the lineage; returns how many were new.

    Must run inside the caller's transaction. Writers of one lineage's passages
    take a transaction-scoped advisory lock first, so that two imports counting
    "new" against "already stored" cannot both count the same text as new.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("passages_insert must run inside a transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PASSAGE_LOCK_CLASS, lineage_id])
    existing = set(
        SourcePassage.objects.filter(lineage_id=lineage_id, content_hash__in=[row.content_hash for row in rows])
        .values_list("content_hash", flat=True)
    )
    new, seen = [], set(existing)
    for row in rows:
        if row.content_hash not in seen:
            seen.add(row.content_hash)
            new.append(row)
    SourcePassage.objects.bulk_create(new, batch_size=500)
    return len(new)


def passages_add(*, lineage: Lineage, passages: list[dict]) -> int:
    """Add passages ({"title", "text"}), skipping ones already present; all or nothing.

    Returns how many were new.
    """
    rows = []
    for number, item in enumerate(passages, start=1):
        try:
            rows.append(passage_build(lineage=lineage, text=item.get("text", ""), title=item.get("title", "")))
        except CorpusError as exc:
            raise CorpusError(f"passage {number} {exc}") from None
    with transaction.atomic():
        return passages_insert(lineage_id=lineage.pk, rows=rows)


class SettingsError(ValueError):
    """A setting that cannot be stored; `field` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# What a curator may change on a lineage and on its policy (the admin's lineage form shows the same).
# Settings other apps keep per lineage (generation's backend, sampling and loop mode) come in through
# curation.extensions.settings_sections() and are accepted beside these.
LINEAGE_SETTINGS = (
    "name", "description", "reject_reasons", "lease_seconds", "overlap_fraction", "auto_review",
    "duplicate_threshold", "hallucination_threshold", "lm_grounding",
)
POLICY_SETTINGS = (
    "mode", "min_real_fraction", "metrics_seed", "metrics_sample_size", "coverage_radius", "gate_min_samples",
    "gate_min_diversity_ratio", "gate_max_duplicate_rate", "gate_min_coverage", "gate_max_hallucination_rate",
    "gate_max_perplexity_ratio", "heldout_fraction", "heldout_min",
)


def _check_reject_reasons(reasons) -> list[str]:
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise SettingsError("reject_reasons", "must be a list of short texts")
    cleaned = [" ".join(r.split()) for r in reasons]
    if not 1 <= len(cleaned) <= 9:
        raise SettingsError("reject_reasons", f"reviewers pick a reason with keys 1-9: give 1 to 9, not {len(cleaned)}")
    if any(not r or len(r) > 60 or ":" in r for r in cleaned):
        raise SettingsError("reject_reasons", "each reason is 1 to 60 characters, without ':'")
    if len(set(cleaned)) != len(cleaned):
        raise SettingsError("reject_reasons", "the reasons repeat one another")
    return cleaned


def lineage_settings_update(*, lineage: Lineage, settings: dict | None = None, policy: dict | None = None) -> Lineage:
    """Change a lineage's generator, review and flag settings and its policy and gates; all or nothing.

    Only the names in LINEAGE_SETTINGS, POLICY_SETTINGS and the registered
    settings sections (curation.extensions: generation's settings) may change.
    The models' own validation (choices, lengths, the policy's range
    constraints) runs before anything is written, and every error names its
    field; a section's error rolls back the lineage's and the policy's changes too.
    """
    from django.core.exceptions import ValidationError

    from curation.extensions import settings_sections
    from curation.services.training_sets import lineage_policy

    settings, policy = dict(settings or {}), dict(policy or {})
    sections = {section: {} for section in settings_sections()}
    for name in list(settings):
        owner = next((section for section in sections if name in section.names), None)
        if owner is not None:
            sections[owner][name] = settings.pop(name)
        elif name not in LINEAGE_SETTINGS:
            raise SettingsError(name, "is not a lineage setting that can be changed")
    for name in policy:
        if name not in POLICY_SETTINGS:
            raise SettingsError(f"policy.{name}", "is not a policy setting that can be changed")
    if "reject_reasons" in settings:
        settings["reject_reasons"] = _check_reject_reasons(settings["reject_reasons"])
    ranges = {"overlap_fraction": (0, 1), "duplicate_threshold": (0, 1), "hallucination_threshold": (0, 1)}
    for name, (low, high) in ranges.items():
        if name in settings and not low <= settings[name] <= high:
            raise SettingsError(name, f"must be between {low} and {high}")
    with transaction.atomic():
        locked = Lineage.objects.select_for_update().get(pk=lineage.pk)
        for section, values in sections.items():
            if values:
                section.update(lineage=locked, settings=values)
        for name, value in settings.items():
            setattr(locked, name, value)
        rules = lineage_policy(lineage=locked)
        for name, value in policy.items():
            setattr(rules, name, value)
        for obj, prefix in ((locked, ""), (rules, "policy.")):
            try:
                obj.full_clean(exclude=["lineage"] if prefix else None, validate_unique=not prefix)
            except ValidationError as exc:
                field, messages = next(iter(exc.message_dict.items()))
                raise SettingsError(prefix + (field if field != "__all__" else "settings"), " ".join(messages))
        locked.save()
        rules.save()
    return locked
