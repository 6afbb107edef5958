"""Style examples for the tutor: a few accepted questions of earlier generations.

Shown in the tutor's prompt so that questions reviewers accepted shape the
next round's (as Self-Instruct's prompts draw on earlier rounds' accepted
instructions), but never two near-duplicates of each other: a prompt showing
the same question twice would only teach the model to repeat it.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from .validators import words

JACCARD_NEAR_DUPLICATE = 0.6  # for questions without an embedding yet


def _jaccard(a: str, b: str) -> float:
    x, y = set(words(a)), set(words(b))
    return len(x & y) / len(x | y) if x and y else 0.0


def style_examples_pick(candidates: Sequence[tuple[str, Sequence[float] | None]], *, k: int, rng: random.Random,
                        threshold: float) -> list[str]:
    """Up to k questions drawn from `candidates` (question, embedding or None), no two near-duplicates.

    Near-duplicate: cosine of the embeddings at least `threshold` (the
    lineage's duplicate threshold), or, when either has no embedding, word
    Jaccard at least JACCARD_NEAR_DUPLICATE. The draw follows `rng`, so an
    item's examples are the same each time it runs.
    """
    if k <= 0 or not candidates:
        return []
    order = list(range(len(candidates)))
    rng.shuffle(order)
    chosen: list[int] = []
    vectors: dict[int, np.ndarray] = {}
    for i in order:
        question, embedding = candidates[i]
        if embedding is not None:
            v = np.asarray(embedding, dtype=np.float32)
            norm = float(np.linalg.norm(v))
            vectors[i] = v / norm if norm else v
        near = False
        for j in chosen:
            if i in vectors and j in vectors:
                near = float(vectors[i] @ vectors[j]) >= threshold
            else:
                near = _jaccard(question, candidates[j][0]) >= JACCARD_NEAR_DUPLICATE
            if near or question.strip().lower() == candidates[j][0].strip().lower():
                near = True
                break
        if not near:
            chosen.append(i)
            if len(chosen) == k:
                break
    return [candidates[i][0] for i in chosen]
