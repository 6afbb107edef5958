"""The detectors' scoring, shared by the flagging service and the evaluation commands.

No database here: the service hands in what pgvector retrieved, the evaluation
hands in each item's own sources. Both then call the same functions with the
same settings, so `evaluate_flags` measures what the app flags.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.conf import settings

from curation import embedder, lexical
from curation.hallucination import (
    Reference,
    SentenceScore,
    Weights,
    answer_sentences,
    chunk_passage,
    sample_score,
    score_sentences,
)
from curation.similarity import cosine_matrix, split_sentences, top_k

# Bump when a change alters scores: every flag stores it, and `reflag_lineage`
# recomputes a lineage's flags after a bump.
HALLUCINATION_VERSION = "halluc-2.0-minilm-cov-selfcheck"
DUPLICATE_VERSION = "dup-2.0-minilm-minhash"


def weights() -> Weights:
    return Weights(
        cosine=settings.OUROBOROS["HALLUCINATION_COSINE_WEIGHT"],
        grounding=settings.OUROBOROS["HALLUCINATION_GROUNDING_WEIGHT"],
    )


# ----------------------------------------------------------------------------- hallucinations


@dataclass(frozen=True)
class HallucinationResult:
    score: float
    sentences: list[SentenceScore]

    def evidence(self, *, threshold: float) -> dict:
        """What the review card shows: every sentence with its support, the risky ones with their best passage."""

        def best(s: SentenceScore) -> dict:
            source = s.best.source if s.best else {}
            return {
                "passage_id": source.get("passage_id"),
                "passage_title": source.get("passage_title", ""),
                "passage_text": s.best.text if s.best else "",
            }

        return {
            "threshold": threshold,
            "sentences": [
                {"sentence": s.sentence, "support": round(s.support, 4), "grounding": round(s.grounding, 4),
                 "consistency": None if s.consistency is None else round(s.consistency, 4),
                 "risk": round(s.risk, 4), "unsupported": s.risk >= threshold}
                for s in self.sentences
            ],
            "unsupported": [
                {"sentence": s.sentence, "support": round(s.support, 4), "risk": round(s.risk, 4), **best(s)}
                for s in self.sentences
                if s.risk >= threshold
            ],
        }


def hallucination_score(*, sentences: list[str], sentence_vecs: np.ndarray, candidates: list[list[Reference]],
                        alternatives: list[str]) -> HallucinationResult:
    """Score an answer's sentences against retrieved references and the student's other answers."""
    alt_sentences = [answer_sentences(a) for a in alternatives if a and a.strip()]
    flat = [s for alt in alt_sentences for s in alt]
    flat_vecs = embedder.embed(flat)
    alt_vecs, start = [], 0
    for alt in alt_sentences:
        alt_vecs.append(flat_vecs[start : start + len(alt)])
        start += len(alt)
    scores = score_sentences(sentences, sentence_vecs, candidates, alt_sentences, alt_vecs, weights())
    return HallucinationResult(sample_score(scores), scores)


def hallucination_in_memory(*, answer: str, sources: list[str], alternatives: list[str]) -> HallucinationResult:
    """The same scoring with references from the given sources, searched exactly instead of by pgvector."""
    sentences = answer_sentences(answer)
    chunks = [(n, chunk) for n, source in enumerate(sources) for chunk in chunk_passage(source)]
    vectors = embedder.embed(sentences + [c for _, c in chunks])
    sentence_vecs, chunk_vecs = vectors[: len(sentences)], vectors[len(sentences) :]
    k = settings.OUROBOROS["GROUNDING_TOP_K"]
    candidates = [
        [Reference(chunks[j][1], chunk_vecs[j], {"passage_id": chunks[j][0], "passage_title": f"source {chunks[j][0] + 1}"})
         for j in top_k(sentence_vecs[i : i + 1], chunk_vecs, k)[0]]
        for i in range(len(sentences))
    ]
    return hallucination_score(sentences=sentences, sentence_vecs=sentence_vecs, candidates=candidates,
                               alternatives=alternatives)


# ----------------------------------------------------------------------------- near-duplicates


def duplicate_text(question: str, answer: str) -> str:
    """What near-duplicate search compares: the question and its answer together."""
    return f"{question}\n{answer}" if question else answer


def duplicate_score(*, cosine: float, jaccard: float) -> float:
    """One number per pair: the larger of the embedding cosine and the MinHash Jaccard estimate.

    The cosine finds paraphrases; the Jaccard is near 1 only for copy-paste
    repeats, which it confirms cheaply and without the model.
    """
    return float(max(cosine, jaccard))


def duplicate_pair_score(a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    cosine = float(cosine_matrix(va, vb)[0, 0])
    return duplicate_score(cosine=cosine, jaccard=lexical.minhash_jaccard(lexical.minhash(a), lexical.minhash(b)))


__all__ = [
    "DUPLICATE_VERSION",
    "HALLUCINATION_VERSION",
    "HallucinationResult",
    "Reference",
    "answer_sentences",
    "chunk_passage",
    "duplicate_pair_score",
    "duplicate_score",
    "duplicate_text",
    "hallucination_in_memory",
    "hallucination_score",
    "split_sentences",
]
