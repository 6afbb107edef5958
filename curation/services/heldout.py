"""The held-out split: real passages kept out of the loop so the student can be judged on them.

Shumailov et al. (Nature 2024) measured collapse as the perplexity of each
generation's model on real text it never trained on. Here that text is a fixed,
seeded split of the lineage's real passages (`SourcePassage.heldout`): its
share and minimum are policy settings (`heldout_fraction`, default 10%, and
`heldout_min`, default 5), capped at half the corpus. A held-out passage is
never drawn into a training set (training_sets._draw_real) and never given to
the tutor to ask about (generation's passage_pick); grounding still reads it.

The split is fixed: once marked a passage stays held out, and a passage that
was already asked about or trained on is never moved into it (it would not be
held out any more). Passages added later top the split up to its share, chosen
by the same seeded order, so the split of a growing corpus stays reproducible.
"""
from __future__ import annotations

import hashlib
import math

from django.db import transaction

from curation.models import Lineage, SourcePassage


def heldout_target(*, corpus: int, fraction: float, minimum: int) -> int:
    """How many passages of a corpus of this size to hold out (pure)."""
    if fraction <= 0 or corpus < 2:
        return 0
    return min(max(math.ceil(fraction * corpus), minimum), corpus // 2)


def _rank(seed: int, content_hash: str) -> str:
    return hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest()


def heldout_split_ensure(*, lineage: Lineage) -> int:
    """Mark the lineage's held-out split up to its target; returns how many passages it holds.

    1. Lock the lineage (two jobs starting at once mark one split).
    2. Count the target from the policy and the corpus.
    3. Top up from passages never asked about and never in a training set, in
       the order of sha256(seed:content hash) with the policy's metrics seed.
    """
    from curation.services.training_sets import lineage_policy

    with transaction.atomic():
        Lineage.objects.select_for_update().filter(pk=lineage.pk).first()
        policy = lineage_policy(lineage=lineage)
        passages = SourcePassage.objects.filter(lineage=lineage)
        held = passages.filter(heldout=True).count()
        missing = heldout_target(corpus=passages.count(), fraction=policy.heldout_fraction,
                                 minimum=policy.heldout_min) - held
        if missing <= 0:
            return held
        fresh = (passages.filter(heldout=False, samples__isnull=True, training_sets__isnull=True)
                 .values_list("id", "content_hash").distinct())
        chosen = sorted(fresh, key=lambda row: _rank(policy.metrics_seed, row[1]))[:missing]
        SourcePassage.objects.filter(pk__in=[pk for pk, _ in chosen]).update(heldout=True)
        return held + len(chosen)


def heldout_texts(*, lineage: Lineage) -> list[str]:
    """The held-out passages' texts, in id order (what the student's perplexity is measured on)."""
    return list(SourcePassage.objects.filter(lineage=lineage, heldout=True).order_by("id").values_list("text", flat=True))


def heldout_digest(*, lineage: Lineage) -> str:
    """sha256 over the held-out passages' hashes: names the split a perplexity was measured on."""
    hashes = SourcePassage.objects.filter(lineage=lineage, heldout=True).order_by("id").values_list(
        "content_hash", flat=True)
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()
