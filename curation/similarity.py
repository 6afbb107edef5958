"""Similarity math on plain arrays: no database, no model, unit-tested alone.

Vectors are compared by cosine similarity. The detectors built on it follow
the usual embedding recipes: a near-duplicate is a neighbour above a cosine
threshold (SemDeDup, Abbas et al. 2023, https://arxiv.org/abs/2303.09540);
a sentence is grounded when some source passage is close to it.
"""
from __future__ import annotations

import re

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "Dr.", "Mr.", "Mrs.", "Fig.", "approx.")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences; good enough for short model answers.

    Common abbreviations are protected so that "e.g. Mitosis" is not a boundary.
    """
    protected = text.strip()
    for i, abbr in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbr, f"\x00{i}\x00")
    parts = [p.strip() for p in _SENTENCE_END.split(protected) if p.strip()]
    sentences = []
    for part in parts:
        for i, abbr in enumerate(_ABBREVIATIONS):
            part = part.replace(f"\x00{i}\x00", abbr)
        sentences.append(" ".join(part.split()))
    return sentences


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to unit length; zero rows stay zero instead of becoming NaN."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b`, shape (len(a), len(b))."""
    return normalize(a) @ normalize(b).T


def novelty(max_similarity: float | None) -> float:
    """1 − the highest similarity to anything earlier; 1.0 when there is nothing earlier."""
    if max_similarity is None:
        return 1.0
    return float(np.clip(1.0 - max_similarity, 0.0, 1.0))


def top_k(queries: np.ndarray, references: np.ndarray, k: int) -> list[list[int]]:
    """Indices of the k most similar references for each query, best first (exact search)."""
    if len(references) == 0:
        return [[] for _ in range(len(np.atleast_2d(queries)))]
    sims = cosine_matrix(queries, references)
    k = min(k, sims.shape[1])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [row.tolist() for row in order]
