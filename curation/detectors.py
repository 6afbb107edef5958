"""The detectors' scoring, shared by the flagging service and the evaluation commands.

No database here: the service hands in what pgvector retrieved, the evaluation
hands in each item's own sources. Both then call the same functions with the
same settings, so `evaluate_flags` measures what the app flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
from curation.signals import checks, features
from curation.signals import weights as default_weights
from curation.signals.combiner import Model, sigmoid
from curation.similarity import cosine_matrix, split_sentences, top_k

# Bump when a change alters scores: every flag stores it, and `reflag_lineage`
# recomputes a lineage's flags after a bump.
HALLUCINATION_VERSION = "halluc-4.0-lm-copied-answers"
DUPLICATE_VERSION = "dup-4.0-calibrated-pairs"


def weights() -> Weights:
    return Weights(
        cosine=settings.OUROBOROS["HALLUCINATION_COSINE_WEIGHT"],
        grounding=settings.OUROBOROS["HALLUCINATION_GROUNDING_WEIGHT"],
    )


# ----------------------------------------------------------------------------- hallucinations


@dataclass(frozen=True)
class HallucinationResult:
    """An answer's score (its riskiest sentence's probability) and each sentence's signals."""

    score: float
    sentences: list[SentenceScore]
    rows: list[dict] = field(default_factory=list)  # the combiner's feature rows, one per sentence
    probabilities: list[float] = field(default_factory=list)  # P(sentence is unsupported), one per sentence
    model: Model | None = None

    def signals(self, i: int) -> dict:
        """Sentence i's signals with their values (what `evaluate_flags` reports AUCs for)."""
        return {k: v for k, v in self.rows[i].items() if not k.startswith("_")}

    def reasons(self, i: int) -> list[str]:
        """Why sentence i was marked, in words, with values: the signals that pushed its probability up."""
        row = self.rows[i]
        pushed = self.model.contributions(row) if self.model else {}
        out = []
        if "pmi" in row and pushed.get("pmi", 0.0) > 0:
            out.append(f"PMI {row['pmi']:+.2f}")
        if pushed.get("cosine", 0.0) > 0 or pushed.get("coverage", 0.0) > 0:
            out.append(f"best passage cosine {row['cosine']:.2f}, coverage {row['coverage']:.2f}")
        if row.get("consistency") is not None and row["consistency"] < 0.5:
            out.append(f"agreement with the alternatives {row['consistency']:.2f}")
        if row.get("lm_consistency") is not None and row["lm_consistency"] < 0:
            out.append(f"LM consistency {row['lm_consistency']:+.2f}")
        out += row["_mismatch"].describe()
        return out

    def evidence(self, *, threshold: float) -> dict:
        """What the review card shows: every sentence with its probability and signals, the risky ones with why."""

        def best(s: SentenceScore) -> dict:
            source = s.best.source if s.best else {}
            return {
                "passage_id": source.get("passage_id"),
                "passage_title": source.get("passage_title", ""),
                "passage_text": s.best.text if s.best else "",
            }

        def signals(i: int) -> dict:
            return {k: round(v, 4) for k, v in self.signals(i).items() if isinstance(v, float)}

        return {
            "threshold": threshold,
            "detector": HALLUCINATION_VERSION,
            "sentences": [
                {"sentence": s.sentence, "support": round(s.support, 4), "grounding": round(s.grounding, 4),
                 "consistency": None if s.consistency is None else round(s.consistency, 4),
                 "risk": round(s.risk, 4), "unsupported": s.risk >= threshold, "signals": signals(i)}
                for i, s in enumerate(self.sentences)
            ],
            "unsupported": [
                {"sentence": s.sentence, "support": round(s.support, 4), "risk": round(s.risk, 4),
                 "reasons": self.reasons(i), **best(s)}
                for i, s in enumerate(self.sentences)
                if s.risk >= threshold
            ],
        }


def lm_source(candidates: list[list[Reference]], *, limit_chars: int | None = None, root_only: bool = False) -> str:
    """The sentences of an answer's candidate chunks, once each: what its mismatches are checked against,
    and (`root_only`) what the language model reads before it.

    The sample's root passage comes first, then the other passages in the
    order they first rank; each passage's chunks in their position order (a
    passage's single sentences come before its windows), so a passage reads as
    written. The order is canonical on purpose: every sample of one passage
    then starts its source with the same text, and the language model reuses
    that prefix's evaluated state across them (`signals.lm`). Cut at
    `limit_chars` (LM_SOURCE_CHARS): the model's cost grows with its length.

    `root_only`: the root passage alone, when the candidates hold it (else
    every passage). The language model reads that: the passage the sample was
    written from, the same text for every sample of it, so its evaluated state
    is read once for all of them. The other passages' retrieved chunks differ
    per sample, and reading them cost about 210 tokens a sample (issue 15.5).
    """
    limit_chars = limit_chars or settings.OUROBOROS.get("LM_SOURCE_CHARS", 2400)
    by_passage: dict = {}
    rank = 0
    while True:
        any_left = False
        for refs in candidates:
            if rank < len(refs):
                any_left = True
                ref = refs[rank]
                chunks = by_passage.setdefault(ref.source.get("passage_id", id(ref)), {})
                chunks.setdefault(ref.text, (ref.source.get("position", len(chunks)), len(chunks), ref))
        if not any_left:
            break
        rank += 1
    root = [key for key, chunks in by_passage.items()
            if any(r.source.get("supported_by") == "root passage" for _, _, r in chunks.values())]
    order = root[:1] if root_only and root else root[:1] + [key for key in by_passage if key not in root[:1]]
    seen: set[str] = set()
    texts = []
    for key in order:
        sentences = []
        for _, _, ref in sorted(by_passage[key].values(), key=lambda c: (c[0], c[1])):
            for sentence in split_sentences(ref.text) or [ref.text]:
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
        if sentences:
            texts.append(" ".join(sentences))
    return "\n\n".join(texts)[:limit_chars]


def hallucination_score(*, sentences: list[str], sentence_vecs: np.ndarray, candidates: list[list[Reference]],
                        alternatives: list[str], use_lm: bool | None = None,
                        model: Model | None = None) -> HallucinationResult:
    """Score an answer's sentences against retrieved references and the student's other answers.

    Every sentence gets a feature row (`curation.signals.features`); the
    default model (`curation.signals.weights`, with or without the language
    model) turns it into P(unsupported). With alternatives, that probability is
    mixed with 1 − consistency (HALLUCINATION_GROUNDING_WEIGHT), since no public
    set with alternatives exists to fit that part on. The answer's score is its
    riskiest sentence's probability.

    `model`: a lineage's own model (`services.lineage_fit`), fitted on its
    reviewers' decisions; its probability is the risk as it stands (it was
    fitted and calibrated on the decisions, alternatives or not). It is used
    only if the rows carry every feature it reads; `result.model` says which
    model scored.
    """
    if use_lm is None:
        use_lm = settings.OUROBOROS.get("LM_GROUNDING", False)
    w = weights()
    alt_sentences = [answer_sentences(a) for a in alternatives if a and a.strip()]
    standalone = checks.decontextualise(sentences)
    flat = [s for alt in alt_sentences for s in alt]
    vecs = embedder.embed(standalone + flat)  # unchanged sentences are cache hits
    standalone_vecs, flat_vecs = vecs[: len(standalone)], vecs[len(standalone) :]
    alt_vecs, start = [], 0
    for alt in alt_sentences:
        alt_vecs.append(flat_vecs[start : start + len(alt)])
        start += len(alt)
    base = score_sentences(standalone, standalone_vecs, candidates, alt_sentences, alt_vecs, w)
    cos, cov = [], []
    for i, sentence in enumerate(standalone):
        refs = candidates[i]
        if refs:
            c = np.clip(cosine_matrix(standalone_vecs[i : i + 1], np.stack([r.vector for r in refs]))[0], 0, 1)
            v = lexical.coverage_matrix([sentence], [r.text for r in refs])[0]
            cos.append(float(c.max()))
            cov.append(float(v.max()))
        else:
            cos.append(0.0)
            cov.append(0.0)
    source = lm_source(candidates)
    lm_signals = None
    if use_lm and sentences:
        from curation.signals import lm

        lm_signals = lm.scorer().answer_signals(source=lm_source(candidates, root_only=True), sentences=sentences,
                                                alternatives=[a for a in alternatives if a and a.strip()])
    rows = features.hallucination_rows(sentences=sentences, cosine=cos, coverage=cov,
                                       consistency=[b.consistency for b in base], source=source, lm=lm_signals,
                                       copied=[checks.copied(s, [r.text for r in refs]) for s, refs in
                                               zip(sentences, candidates)])
    own = model is not None and all(f in row for row in rows for f in model.features)
    if not own:
        try:
            model = default_weights.hallucination(with_lm=lm_signals is not None)
        except LookupError:  # before the first `fit_flags --write`: the unfitted support stands in
            model = None
    probabilities = ([float(p) for p in model.predict(rows)] if model else [b.risk for b in base]) if rows else []
    scores = []
    for sentence, b, p in zip(sentences, base, probabilities):
        risk = p if own or b.consistency is None else w.grounding * p + (1.0 - w.grounding) * (1.0 - b.consistency)
        scores.append(SentenceScore(sentence, b.grounding, b.consistency, float(1.0 - risk), b.best))
    return HallucinationResult(sample_score(scores), scores, rows, probabilities, model)


def in_memory_candidates(sentences: list[str], sources: list[str]) -> tuple[np.ndarray, list[list[Reference]]]:
    """Sentence vectors and candidate chunks from given sources, searched exactly instead of by pgvector.

    The top-k chunks of all sources, as the service retrieves them; a single
    source is also the question's own passage, whose every chunk the service
    adds after the retrieved ones.
    """
    chunks = [(n, chunk) for n, source in enumerate(sources) for chunk in chunk_passage(source)]
    vectors = embedder.embed(sentences + [c for _, c in chunks])
    sentence_vecs, chunk_vecs = vectors[: len(sentences)], vectors[len(sentences) :]
    k = settings.OUROBOROS["GROUNDING_TOP_K"]
    first: dict[int, int] = {}
    for j, (n, _) in enumerate(chunks):
        first.setdefault(n, j)

    def ref(j: int) -> Reference:
        n = chunks[j][0]
        return Reference(chunks[j][1], chunk_vecs[j], {
            "passage_id": n, "passage_title": f"source {n + 1}", "position": j - first[n],
            # one source is the question's own passage, as the service's root passage
            **({"supported_by": "root passage"} if len(sources) == 1 else {})})

    candidates = []
    for i in range(len(sentences)):
        retrieved = top_k(sentence_vecs[i : i + 1], chunk_vecs, k)[0]
        own = [j for j in range(len(chunks)) if j not in retrieved] if len(sources) == 1 else []
        candidates.append([ref(j) for j in retrieved + own])
    return sentence_vecs, candidates


def hallucination_in_memory(*, answer: str | list[str], sources: list[str], alternatives: list[str],
                            use_lm: bool | None = None) -> HallucinationResult:
    """The same scoring with references from the given sources (an answer may come as its sentences)."""
    sentences = answer if isinstance(answer, list) else answer_sentences(answer)
    sentence_vecs, candidates = in_memory_candidates(sentences, sources)
    return hallucination_score(sentences=sentences, sentence_vecs=sentence_vecs, candidates=candidates,
                               alternatives=alternatives, use_lm=use_lm)


# ----------------------------------------------------------------------------- near-duplicates


def duplicate_text(question: str, answer: str) -> str:
    """What near-duplicate search compares: the question and its answer together."""
    return f"{question}\n{answer}" if question else answer


def duplicate_probability(features, model: Model | None = None) -> np.ndarray:
    """P(near-duplicate) of pairs from their features, with `model` (default: the fitted pair model).

    `features` is either a list of rows (`signals.features.duplicate_row`) or a
    matrix with one row per pair, columns in `model.features` order
    (`signals.features.pair_features`). Calibrated: fitted by log loss, its
    reliability table and Brier score on held-out folds are in the model's
    provenance and the README, so the flag's score compares with the
    hallucination flag's and the threshold reads as a probability.
    """
    model = model or default_weights.duplicate()
    if isinstance(features, np.ndarray):
        X = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if X.shape[1] != len(model.features):
            raise ValueError(f"need {len(model.features)} feature columns ({', '.join(model.features)}), got {X.shape[1]}")
        z = (X - np.asarray(model.mean)) / np.asarray(model.scale)
        return sigmoid(z @ np.asarray(model.coef) + model.intercept)
    return model.predict(list(features))


def duplicate_score(*, cosine: float, a: str, b: str) -> float:
    """P(near-duplicate) of a candidate pair found by pgvector or MinHash, given its embedding cosine and texts."""
    return float(duplicate_probability([features.duplicate_row(a, b, cosine=cosine)])[0])


def duplicate_pair_score(a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return duplicate_score(cosine=float(cosine_matrix(va, vb)[0, 0]), a=a, b=b)


def duplicate_pair_row(a: str, b: str) -> dict:
    """The pair's features (what `evaluate_flags` reports per-signal AUCs for)."""
    va, vb = embedder.embed([a, b])
    return features.duplicate_row(a, b, cosine=float(cosine_matrix(va, vb)[0, 0]),
                                  jaccard=lexical.minhash_jaccard(lexical.minhash(a), lexical.minhash(b)))


__all__ = [
    "DUPLICATE_VERSION",
    "HALLUCINATION_VERSION",
    "HallucinationResult",
    "Reference",
    "answer_sentences",
    "chunk_passage",
    "duplicate_pair_score",
    "duplicate_pair_row",
    "duplicate_probability",
    "duplicate_score",
    "duplicate_text",
    "hallucination_in_memory",
    "hallucination_score",
    "split_sentences",
]
