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
