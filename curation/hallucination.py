"""Hallucination scoring on plain arrays and strings: no database, no model.

Each sentence of an answer gets two kinds of support, both in [0, 1]:

1. **Grounding**: the best support among reference chunks (sentence windows of
   the lineage's source passages that pgvector retrieved for it; in
   evaluation, of the item's own sources).
2. **Consistency**: agreement with the student's other answers to the same
   question. A fact the model knows tends to come back when it is asked again;
   a hallucinated one tends not to (SelfCheckGPT, Manakul et al. 2023,
   https://arxiv.org/abs/2303.08896). As in SelfCheckGPT's BERTScore variant,
   a sentence's agreement with one alternative is its best match among that
   alternative's sentences, averaged over the alternatives.

Support between a sentence and a reference mixes the embedding cosine (does it
say the same kind of thing?) with lexical coverage (are its content words,
numbers above all, in the reference?); see `curation.lexical`.

The sentence's support is `w·grounding + (1 − w)·consistency` when there are
alternatives, else grounding alone; its risk is `1 − support`; the sample's
score is its riskiest sentence's risk ("contains *something* unsupported").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curation import lexical
from curation.similarity import cosine_matrix, split_sentences


@dataclass(frozen=True)
class Weights:
    """How the signals mix. Defaults come from settings (OUROBOROS["HALLUCINATION_*"])."""

    cosine: float = 0.5  # share of the cosine in a support (the rest is lexical coverage)
    grounding: float = 0.85  # share of grounding in a sentence's support when alternatives exist


@dataclass(frozen=True)
class Reference:
    """A text a sentence may be supported by, with its embedding and where it came from."""

    text: str
    vector: np.ndarray
    source: dict = field(default_factory=dict)  # e.g. {"passage_id": 3, "passage_title": "…", "chunk_id": 9}


@dataclass(frozen=True)
class SentenceScore:
    sentence: str
    grounding: float
    consistency: float | None  # None: no alternative answers to compare with
    support: float
    best: Reference | None  # the reference that grounded it best

    @property
    def risk(self) -> float:
        return float(np.clip(1.0 - self.support, 0.0, 1.0))


def support_matrix(sentences: list[str], sentence_vecs: np.ndarray, refs: list[str], ref_vecs: np.ndarray,
                   weights: Weights) -> np.ndarray:
    """Support of every sentence by every reference, shape (len(sentences), len(refs))."""
    if not sentences or not refs:
        return np.zeros((len(sentences), len(refs)), dtype=np.float32)
    cos = np.clip(cosine_matrix(sentence_vecs, ref_vecs), 0.0, 1.0)
    cov = lexical.coverage_matrix(sentences, refs)
    return weights.cosine * cos + (1.0 - weights.cosine) * cov


def grounding(sentences: list[str], sentence_vecs: np.ndarray, candidates: list[list[Reference]],
              weights: Weights) -> list[tuple[float, Reference | None]]:
    """For each sentence, its best support among its own candidate references."""
    out = []
    for i, sentence in enumerate(sentences):
        refs = candidates[i]
        if not refs:
            out.append((0.0, None))
            continue
        row = support_matrix([sentence], sentence_vecs[i : i + 1], [r.text for r in refs],
                             np.stack([r.vector for r in refs]), weights)[0]
        best = int(row.argmax())
        out.append((float(row[best]), refs[best]))
    return out


def consistency(sentences: list[str], sentence_vecs: np.ndarray, alternatives: list[list[str]],
                alternative_vecs: list[np.ndarray], weights: Weights) -> list[float | None]:
    """SelfCheckGPT-style agreement of each sentence with the alternative answers (None without any)."""
    usable = [(s, v) for s, v in zip(alternatives, alternative_vecs) if s]
    if not usable or not sentences:
        return [None] * len(sentences)
    per_alternative = [support_matrix(sentences, sentence_vecs, alt, vecs, weights).max(axis=1)
                       for alt, vecs in usable]
    return [float(x) for x in np.mean(per_alternative, axis=0)]


def score_sentences(sentences: list[str], sentence_vecs: np.ndarray, candidates: list[list[Reference]],
                    alternatives: list[list[str]], alternative_vecs: list[np.ndarray],
                    weights: Weights) -> list[SentenceScore]:
    grounded = grounding(sentences, sentence_vecs, candidates, weights)
    consistent = consistency(sentences, sentence_vecs, alternatives, alternative_vecs, weights)
    scores = []
    for sentence, (g, best), c in zip(sentences, grounded, consistent):
        support = g if c is None else weights.grounding * g + (1.0 - weights.grounding) * c
        scores.append(SentenceScore(sentence, g, c, float(support), best))
    return scores


def sample_score(scores: list[SentenceScore]) -> float:
    """The sample's risk: its riskiest sentence's (0 for an answer with no sentences)."""
    return max((s.risk for s in scores), default=0.0)


def answer_sentences(answer: str) -> list[str]:
    return split_sentences(answer) or ([answer.strip()] if answer.strip() else [])


def chunk_passage(text: str, *, window: int = 2) -> list[str]:
    """Sentence windows of a passage: every single sentence and every run of `window` sentences.

    Single sentences give sharp support for a sentence-sized claim; the windows
    keep claims that straddle two source sentences supportable.
    """
    sentences = split_sentences(text)
    chunks = list(sentences)
    for size in range(2, window + 1):
        chunks += [" ".join(sentences[i : i + size]) for i in range(len(sentences) - size + 1)]
    return chunks or ([text.strip()] if text.strip() else [])
