"""Creating lineages and loading their real corpus."""
from __future__ import annotations

import hashlib

from django.db import transaction

from curation.models import Generation, Lineage, LineagePolicy, SourcePassage

MAX_PASSAGE_CHARS = 20_000


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


def passages_add(*, lineage: Lineage, passages: list[dict]) -> int:
    """Add passages ({"title", "text"}), skipping ones already present; all or nothing.

    Returns how many were new.
    """
    rows = []
    for number, item in enumerate(passages, start=1):
        text = " ".join(str(item.get("text", "")).split())
        if not text:
            raise CorpusError(f"passage {number} has no text")
        if len(text) > MAX_PASSAGE_CHARS:
            raise CorpusError(f"passage {number} is {len(text)} characters; the limit is {MAX_PASSAGE_CHARS}")
        rows.append(
            SourcePassage(
                lineage=lineage,
                title=str(item.get("title", ""))[:300],
                text=text,
                content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            )
        )
    with transaction.atomic():
        existing = set(SourcePassage.objects.filter(lineage=lineage).values_list("content_hash", flat=True))
        new = [row for row in rows if row.content_hash not in existing]
        SourcePassage.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)
