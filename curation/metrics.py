"""Collapse metrics on plain arrays and strings: no database, no model.

Every function here is pure and unit-tested on hand-made data with a known
answer (tests/curation/test_metrics.py). `curation/services/metrics.py`
fetches a generation's texts and embeddings and stores what these return.

Embeddings are compared by cosine; rows are normalised here, and all-zero rows
(nothing to compare) are dropped rather than turned into NaN.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def rate(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide (a rate of nothing is unknown, not 0)."""
    return part / whole if whole else None


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation is not a token, so "cell." and "cell" are one word."""
    return _WORD.findall(text.lower())


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct-n: distinct n-grams divided by all n-grams, over the whole set of texts.

    Source: Li, Galley, Brockett, Gao and Dolan, "A Diversity-Promoting Objective
    Function for Neural Conversation Models", NAACL 2016 (arXiv:1510.03055), §4.
    A set that repeats itself scores low; 1.0 means no n-gram occurs twice.
    None when the texts hold no n-gram at all.
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, not {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = tokenize(text)
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return rate(len(seen), total)


def unit_rows(vectors) -> np.ndarray:
    """Rows scaled to unit length, as float64; all-zero rows are dropped (their cosine is undefined)."""
    array = np.asarray(vectors, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, array.shape[-1] if array.ndim == 2 else 0)
    array = np.atleast_2d(array)
    norms = np.linalg.norm(array, axis=1)
    keep = norms > 0
    return array[keep] / norms[keep, None]


def seeded_subset(vectors: np.ndarray, *, max_items: int, seed: int) -> np.ndarray:
    """At most `max_items` rows, drawn without replacement by a seeded RNG (the same seed, the same rows).

    Python's `random` is used because its sequence for an integer seed is stable
    across versions, so a stored metric can be recomputed exactly.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, not {max_items}")
    if len(vectors) <= max_items:
        return vectors
    rows = sorted(random.Random(seed).sample(range(len(vectors)), max_items))
    return vectors[rows]


def mean_pairwise_cosine_distance(vectors) -> float | None:
    """Mean cosine distance (1 − cosine similarity) over all pairs of distinct rows.

    Source: embedding-based diversity as evaluated by Tevet and Berant,
    "Evaluating the Evaluation of Diversity in Natural Language Generation",
    EACL 2021 (arXiv:2004.02990). 0 when every row is the same direction.

    Exact for any n in O(n·d): for unit rows x_i, Σ_{i≠j} x_i·x_j = ‖Σ x_i‖² − n,
    so no n×n matrix (and no sampling) is needed even for 10⁶ rows.
    None for fewer than two rows.
    """
    x = unit_rows(vectors)
    n = len(x)
    if n < 2:
        return None
    total = x.sum(axis=0)
    mean_similarity = (float(total @ total) - n) / (n * (n - 1))
    return float(np.clip(1.0 - mean_similarity, 0.0, 2.0))


def vendi_score(vectors, *, max_items: int = 1000, seed: int = 0) -> float | None:
    """The Vendi score: the exponential of the Shannon entropy of the eigenvalues of K/n.

    Source: Friedman and Dieng, "The Vendi Score: A Diversity Evaluation Metric
    for Machine Learning", TMLR 2023 (arXiv:2210.02410), Definition 3.1, with the
    cosine-similarity kernel K_ij = x_i·x_j of unit embeddings. It is the
    "effective number" of distinct items: n identical rows score 1, n
    orthogonal rows score n.

    K/n = XXᵀ/n has the same non-zero eigenvalues as XᵀX/n, so the smaller of
    the two (n×n or d×d) is decomposed. Above `max_items` rows a seeded sample is
    scored; the score then counts distinct items among at most `max_items`.
    None for no rows.
    """
    x = seeded_subset(unit_rows(vectors), max_items=max_items, seed=seed)
    n = len(x)
    if n == 0:
        return None
    gram = (x.T @ x) if n > x.shape[1] else (x @ x.T)
    eigenvalues = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    entropy = -float(np.sum(eigenvalues * np.log(eigenvalues)))
    return float(math.exp(entropy))


def coverage(real_vectors, sample_vectors, *, radius: float, chunk: int = 8192) -> float | None:
    """The fraction of real items whose nearest sample lies within `radius` (cosine distance).

    Source: the coverage of Naeem, Oh, Uh, Choi and Yoo, "Reliable Fidelity and
    Diversity Metrics for Generative Models", ICML 2020 (arXiv:2002.09797), §3.2,
    with a fixed radius in place of each real point's k-NN radius, so that the
    value means the same thing across generations of different sizes.
    0 when there are no samples; None when there are no real items.
    Samples are scanned in chunks, so memory stays bounded for 10⁶ of them.
    """
    if not 0 <= radius <= 2:
        raise ValueError(f"a cosine-distance radius lies in [0, 2], not {radius}")
    real = unit_rows(real_vectors)
    if len(real) == 0:
        return None
    samples = unit_rows(sample_vectors)
    if len(samples) == 0:
        return 0.0
    best = np.full(len(real), -np.inf)
    for start in range(0, len(samples), chunk):
        similarities = real @ samples[start : start + chunk].T
        np.maximum(best, similarities.max(axis=1), out=best)
    return float(np.mean(1.0 - best <= radius + 1e-9))


def centroid_drift(vectors, reference_vectors) -> float | None:
    """Cosine distance between the centroid of `vectors` and the centroid of the reference.

    Source: the mean term of the Fréchet distance (Heusel et al., "GANs Trained by a
    Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017,
    arXiv:1706.08500), taken as a direction so that it stays in [0, 2]; the drift of
    a self-consuming model's distribution away from the original data is what
    Shumailov et al., "AI models collapse when trained on recursively generated
    data", Nature 631, 2024, describe. None when either side has no rows or a
    centroid is zero.
    """
    x, reference = unit_rows(vectors), unit_rows(reference_vectors)
    if len(x) == 0 or len(reference) == 0:
        return None
    a, b = x.mean(axis=0), reference.mean(axis=0)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        return None
    return float(np.clip(1.0 - float(a @ b) / norm, 0.0, 2.0))


def selection_bias(accepted_vectors, generated_vectors) -> float | None:
    """How much reviewers narrowed diversity: pairwise distance of the accepted / of all generated.

    1.0 means reviewers kept the spread of what was generated; below 1 they
    preferred similar samples. Curation in a self-consuming loop acts as an
    implicit preference optimisation that can concentrate the distribution:
    Ferbach, Bertrand, Bose and Gidel, "Self-Consuming Generative Models with
    Curated Data Provably Optimize Human Preferences", NeurIPS 2024
    (arXiv:2407.09499). None when either diversity is undefined or zero.
    """
    accepted = mean_pairwise_cosine_distance(accepted_vectors)
    generated = mean_pairwise_cosine_distance(generated_vectors)
    if accepted is None or not generated:
        return None
    return accepted / generated


def cohens_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Cohen's kappa for two raters from a k×k table (rows: first rater, columns: second).

    Source: Cohen, "A Coefficient of Agreement for Nominal Scales", Educational and
    Psychological Measurement 20(1), 1960. κ = (p_o − p_e) / (1 − p_e). None when
    there are no pairs, or when chance agreement is 1 (both raters always gave one
    and the same label: κ is undefined).
    """
    matrix = np.asarray(table, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"an agreement table is square, not of shape {matrix.shape}")
    if (matrix < 0).any():
        raise ValueError("an agreement table holds counts, and counts are not negative")
    total = matrix.sum()
    if total == 0:
        return None
    observed = np.trace(matrix) / total
    expected = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / total**2
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def agreement_table(pairs: Iterable[tuple[str, str]], labels: Sequence[str]) -> list[list[int]]:
    """Count decision pairs (first reviewer's label, second's) into a len(labels)² table."""
    index = {label: i for i, label in enumerate(labels)}
    table = [[0] * len(labels) for _ in labels]
    for first, second in pairs:
        if first not in index or second not in index:
            raise ValueError(f"unknown label in pair ({first!r}, {second!r}); labels are {list(labels)}")
        table[index[first]][index[second]] += 1
    return table


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Reject reasons by frequency, most common first; a blank reason counts as "(none given)"."""
    counts = Counter((reason or "").strip() or "(none given)" for reason in reasons)
    return dict(counts.most_common())
