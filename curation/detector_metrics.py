"""Detector quality metrics on plain lists of labels and scores (label 1 = positive).

Written out here instead of importing scikit-learn: they are a few lines each,
tested against hand-worked examples, and the app needs no extra dependency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be two lists of the same length")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 or 1")
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("both classes are needed (found only label %d)" % int(y[0]) if len(y) else "no items")
    return y, s


def roc_auc(labels, scores) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    y, s = _check(labels, scores)
    pos, neg = s[y == 1], s[y == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _curve(y: np.ndarray, s: np.ndarray):
    """Precision and recall at every distinct threshold, highest first (flag when score ≥ threshold)."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_each = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # ties flag together
    tp = np.cumsum(y)[last_of_each]
    fp = (last_of_each + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return precision, recall, s[last_of_each]


def pr_auc(labels, scores) -> float:
    """Area under the precision-recall curve as average precision: Σ (Rₙ − Rₙ₋₁) Pₙ."""
    y, s = _check(labels, scores)
    precision, recall, _ = _curve(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float


def operating_points(labels, scores) -> list[OperatingPoint]:
    y, s = _check(labels, scores)
    precision, recall, thresholds = _curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return [OperatingPoint(float(t), float(p), float(r), float(f)) for t, p, r, f in
            zip(thresholds, precision, recall, f1)]


def best_f1(labels, scores) -> OperatingPoint:
    """The threshold with the highest F1 (the higher threshold on a tie: fewer flags for the same F1)."""
    points = operating_points(labels, scores)
    return max(points, key=lambda p: (p.f1, p.threshold))


def at_threshold(labels, scores, threshold: float) -> OperatingPoint:
    """Precision, recall and F1 when flagging every score ≥ threshold."""
    y, s = _check(labels, scores)
    flagged = s >= threshold
    tp = int((flagged & (y == 1)).sum())
    precision = tp / flagged.sum() if flagged.sum() else 1.0
    recall = tp / y.sum()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return OperatingPoint(float(threshold), float(precision), float(recall), float(f1))
