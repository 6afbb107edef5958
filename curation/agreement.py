"""Inter-reviewer agreement on plain labels; no database code.

Cohen's kappa corrects raw agreement for the agreement two reviewers would
reach by chance given how often each says yes (Cohen 1960, "A coefficient of
agreement for nominal scales", Educational and Psychological Measurement 20:37–46).
"""
from __future__ import annotations

from collections import Counter


def cohens_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """κ = (p_o − p_e) / (1 − p_e) over (label by A, label by B) pairs.

    None when there are no pairs. When chance agreement is already total (both
    reviewers always gave the same single label), κ is 1.0 if they agreed.
    """
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for a, b in pairs if a == b) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first.keys() | second.keys()) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)
