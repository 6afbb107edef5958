"""Per-sentence and per-pair feature rows: the combiner's inputs, assembled from plain values.

A row is a dict of named floats. Which names a model reads is part of the
model (`combiner.Model.features`), so a row may carry more than a model uses
(the evidence shows them all).
"""
from __future__ import annotations

import numpy as np

from curation import lexical
from curation.signals import checks
from curation.signals.lm import SentenceLM


def hallucination_rows(*, sentences: list[str], cosine: list[float], coverage: list[float],
                       consistency: list[float | None], source: str, lm: list[SentenceLM] | None,
                       copied: list[bool] | None = None) -> list[dict]:
    """One row per answer sentence.

    `cosine` and `coverage` are each sentence's best among its candidate chunks
    (after de-contextualisation); `source` is the text its mismatches are
    checked against (the union of the chunks retrieved for the answer).
    Answer-level means are included: an answer that invents one thing tends to
    invent others, and the sample's score is about the whole answer. `copied`
    says which sentences stand word for word in the passage (`checks.copied`);
    `answer_copied_share` is the share of the *other* sentences that do, so the
    model can tell an answer whose means are high because the rest is copied
    (`signals.copied_answers`).
    """
    n = len(sentences)
    rows = []
    for i, sentence in enumerate(sentences):
        miss = checks.mismatch(sentence, source)
        row = {
            "cosine": float(cosine[i]),
            "coverage": float(coverage[i]),
            "missing_numbers": float(len(miss.numbers)),
            "missing_months": float(len(miss.months)),
            "missing_names": float(len(miss.names)),
            "missing_name_share": len(miss.names) / miss.sentence_names if miss.sentence_names else 0.0,
            "first_sentence": 1.0 if i == 0 else 0.0,
            "words": float(np.log1p(len(lexical.tokens(sentence)))),
            "_mismatch": miss,
        }
        if consistency[i] is not None:
            row["consistency"] = float(consistency[i])
        if lm is not None:
            row.update({"pmi": lm[i].pmi, "lm_logprob": lm[i].logprob, "min_pmi": lm[i].min_pmi})
            if lm[i].consistency is not None:
                row["lm_consistency"] = lm[i].consistency
        rows.append(row)
    for name in ("cosine", "coverage", "missing_names", "missing_numbers", "pmi"):
        if n and name in rows[0]:
            mean = float(np.mean([r[name] for r in rows]))
            for r in rows:
                r[f"answer_{name}"] = mean
    copied = [bool(c) for c in copied] if copied is not None else [False] * n
    for i, r in enumerate(rows):
        r["copied"] = 1.0 if copied[i] else 0.0
        r["answer_copied_share"] = (sum(copied) - copied[i]) / (n - 1) if n > 1 else 0.0
    if n:
        # The answer's least covered sentence: one unsupported sentence makes the rest suspect too.
        least = float(min(r["coverage"] for r in rows))
        for r in rows:
            r["answer_min_coverage"] = least
    return rows


def lcs_length(x: list[str], y: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Allison & Dix 1986; Hyyrö 2004, "Bit-parallel LCS-length
    computation revisited"): one Python integer holds a row of the dynamic
    programme, so the cost is len(x) big-integer operations instead of
    len(x) · len(y) steps; a question + answer against a passage takes
    microseconds, not the milliseconds of the table.
    """
    if not x or not y:
        return 0
    positions: dict[str, int] = {}
    for j, token in enumerate(y):
        positions[token] = positions.get(token, 0) | (1 << j)
    full = (1 << len(y)) - 1
    row = full
    for token in x:
        match = row & positions.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(y) - row.bit_count()


# The length gate: 0 for a one-line pair (STS-B's average 9 words a text, at most 19), 1 for a question +
# answer (25+ words a text). Every base feature also enters multiplied by it, so the model is in effect
# one logistic regression for short pairs and one for long ones, fitted together and blending in between.
LONG_GATE_WORDS = 25.0
LONG_GATE_WIDTH = 4.0
GATED = ("cosine", "cosine_sq", "cosine_cube", "word_jaccard", "containment", "length_ratio", "shingle_jaccard",
         "number_mismatch", "name_mismatch", "unshared_words", "token_order", "words")


def long_gate(words_a: int, words_b: int) -> float:
    """How far a pair is sample-shaped rather than one-line, from the mean token count of its two texts (0–1)."""
    mean = (words_a + words_b) / 2
    return float(1.0 / (1.0 + np.exp(-(mean - LONG_GATE_WORDS) / LONG_GATE_WIDTH)))


def duplicate_row(a: str, b: str, *, cosine: float, jaccard: float | None = None) -> dict:
    """Pair features for near-duplicate verification of a candidate found by pgvector or MinHash.

    The cosine says "about the same thing"; what separates a paraphrase from a
    neighbour on the same topic is whether the *content* matches: shared
    content words, the same numbers and names, similar length, and the same
    order ("a man carrying a dog" is not "a dog carrying a man"). Counts that
    grow with length (unshared words, mismatches) come with the pair's length
    (`words`), so one model serves one-line STS-B pairs and a question +
    answer alike.
    """
    wa, wb = set(lexical.content_words(a)), set(lexical.content_words(b))
    ta, tb = lexical.tokens(a), lexical.tokens(b)
    union = wa | wb
    shared = wa & wb
    na, nb = set(checks.numbers(a)), set(checks.numbers(b))
    ma, mb = set(checks.names(a)), set(checks.names(b))
    grams_a, grams_b = lexical.shingles(a), lexical.shingles(b)
    longest = max(len(ta), len(tb))
    order = lcs_length(ta, tb) / longest if longest else 1.0
    row = {
        "cosine": float(cosine),
        # The cosine's effect is not linear: above ~0.8 small gains matter more (STS-B, 5-fold CV).
        "cosine_sq": float(cosine) ** 2,
        "cosine_cube": float(cosine) ** 3,
        "word_jaccard": len(shared) / len(union) if union else 1.0,
        "containment": len(shared) / min(len(wa), len(wb)) if wa and wb else float(wa == wb),
        "length_ratio": min(len(ta), len(tb)) / max(len(ta), len(tb)) if ta and tb else float(ta == tb),
        "shingle_jaccard": (len(grams_a & grams_b) / len(grams_a | grams_b)) if (grams_a | grams_b) else 1.0,
        "minhash_jaccard": float(jaccard) if jaccard is not None else 0.0,
        "number_mismatch": float(len(na ^ nb)),
        "name_mismatch": float(len(ma ^ mb)),
        "unshared_words": float(np.log1p(len(union - shared))),
        # Word order: the longest common token subsequence over the longer text's length.
        "token_order": float(order),
        "words": float(np.log1p((len(ta) + len(tb)) / 2)),
    }
    gate = long_gate(len(ta), len(tb))
    row["long"] = gate
    for name in GATED:
        row[f"{name}_long"] = row[name] * gate
    return row


def pair_features(a: str, b: str, *, cosine: float, names: tuple[str, ...] | None = None) -> np.ndarray:
    """The pair's features as one vector, in the order `names` gives (the default pair model's)."""
    if names is None:
        from curation.signals import weights

        names = weights.duplicate().features
    row = duplicate_row(a, b, cosine=cosine)
    return np.array([row[name] for name in names], dtype=np.float64)
