"""Logistic regression in numpy: fit, grouped cross-validation and prediction.

Small on purpose (a few hundred rows, a dozen features): Newton's method with
an L2 penalty on standardised features converges in a few steps, and the fitted
model is a handful of numbers that live in code (`curation.signals.weights`)
with their provenance. A logistic model fitted by log loss gives probabilities
calibrated on the data it was fitted on (and, under cross-validation, close to
calibrated on unseen data), which is what lets the queue order hallucination
and duplicate flags by one risk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Model:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    provenance: str = ""

    def matrix(self, rows: list[dict]) -> np.ndarray:
        try:
            return np.array([[float(r[f]) for f in self.features] for r in rows], dtype=np.float64).reshape(
                len(rows), len(self.features))
        except KeyError as exc:
            raise ValueError(f"a feature row lacks {exc.args[0]!r}, which this model reads") from None

    def predict(self, rows: list[dict]) -> np.ndarray:
        """The probability of the positive class for every row."""
        if not rows:
            return np.zeros(0)
        z = (self.matrix(rows) - np.asarray(self.mean)) / np.asarray(self.scale)
        return sigmoid(z @ np.asarray(self.coef) + self.intercept)

    def contributions(self, row: dict) -> dict[str, float]:
        """Each feature's part of the row's log-odds (relative to an average row): what the evidence names."""
        z = (self.matrix([row])[0] - np.asarray(self.mean)) / np.asarray(self.scale)
        return {f: float(c * v) for f, c, v in zip(self.features, self.coef, z)}

    def as_dict(self) -> dict:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "intercept": self.intercept, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict) -> "Model":
        return cls(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]),
                   float(d["intercept"]), d.get("provenance", ""))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit(X: np.ndarray, y: np.ndarray, *, features: tuple[str, ...], l2: float = 1.0, provenance: str = "",
        iterations: int = 50) -> Model:
    """L2-penalised logistic regression (the intercept unpenalised) by Newton's method."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(features):
        raise ValueError(f"need X (n, {len(features)}) and n labels, got {X.shape} and {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("both classes are needed to fit")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    Z = np.c_[np.ones(len(X)), (X - mean) / scale]
    w = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = sigmoid(Z @ w)
        gradient = Z.T @ (p - y) + penalty * w
        hessian = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty) + 1e-9 * np.eye(Z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Model(tuple(features), tuple(float(m) for m in mean), tuple(float(s) for s in scale),
                 tuple(float(c) for c in w[1:]), float(w[0]), provenance)


def grouped_folds(groups: list, k: int) -> list[np.ndarray]:
    """k folds of row indices such that rows of one group (e.g. one passage) share a fold; deterministic."""
    order = list(dict.fromkeys(groups))
    fold_of = {g: i % k for i, g in enumerate(order)}
    return [np.array([i for i, g in enumerate(groups) if fold_of[g] == f]) for f in range(k)]


def cross_validated(X: np.ndarray, y: np.ndarray, groups: list, *, features: tuple[str, ...], k: int = 5,
                    l2: float = 1.0) -> np.ndarray:
    """Out-of-fold probabilities: every row is scored by a model fitted without its group."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    out = np.zeros(len(y))
    for test in grouped_folds(groups, k):
        if len(test) == 0:
            continue
        train = np.setdiff1d(np.arange(len(y)), test)
        model = fit(X[train], y[train], features=features, l2=l2)
        out[test] = model.predict([dict(zip(features, row)) for row in X[test]])
    return out
