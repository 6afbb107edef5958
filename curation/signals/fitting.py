"""Fitting the default models: which features each reads, cross-validation, and writing the weights into code."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from curation import detector_metrics as metrics
from curation.signals import combiner, features

# What each default model reads (every row carries more; the evidence shows it all).
HALLUCINATION_FEATURES = ("cosine", "coverage", "missing_numbers", "missing_months", "missing_names",
                          "missing_name_share", "words", "first_sentence", "answer_cosine", "answer_coverage",
                          "answer_missing_names", "answer_min_coverage", "answer_missing_numbers",
                          "answer_copied_share")
HALLUCINATION_LM_FEATURES = HALLUCINATION_FEATURES + ("pmi", "lm_logprob", "min_pmi", "answer_pmi")
# The near-duplicate model: the pair features, each also times the length gate (`features.GATED`), and the gate.
DUPLICATE_BASE_FEATURES = features.GATED
DUPLICATE_FEATURES = DUPLICATE_BASE_FEATURES + tuple(f"{f}_long" for f in DUPLICATE_BASE_FEATURES) + ("long",)

WEIGHTS_FILE = Path(__file__).with_name("weights.py")


def figures(labels, probabilities) -> dict:
    """ROC-AUC, PR-AUC and Brier score of probabilities against labels (n too)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    return {"n": len(y), "roc_auc": round(metrics.roc_auc(labels, p), 4), "pr_auc": round(metrics.pr_auc(labels, p), 4),
            "brier": round(float(np.mean((p - y) ** 2)), 4)}


def reliability(labels, probabilities, *, bins: int = 10) -> list[dict]:
    """The reliability table: per probability bin, how many rows, their mean probability and the observed rate.

    A calibrated model has the two close in every bin with enough rows.
    """
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [{"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": int((which == b).sum()),
             "mean_p": round(float(p[which == b].mean()), 3), "observed": round(float(y[which == b].mean()), 3)}
            for b in range(bins) if (which == b).any()]


def fit_with_cv(rows: list[dict], labels: list[int], groups: list, *, features: tuple[str, ...], folds: int = 5,
                l2: float = 1.0, provenance: str = "", subsets: dict[str, list[bool]] | None = None
                ) -> tuple[combiner.Model, dict]:
    """The model fitted on every row, and its k-fold cross-validated figures (folds by group).

    `subsets` names row masks whose out-of-fold figures are reported apart
    (e.g. the public pairs alone, and the pairs built from them); the
    reliability table is over every row.
    """
    X = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)
    y = np.asarray(labels)
    oof = combiner.cross_validated(X, y, groups, features=features, k=folds, l2=l2)
    cv = {"folds": folds, "grouped": True, **figures(labels, oof)}
    for name, mask in (subsets or {}).items():
        keep = np.asarray(mask, dtype=bool)
        cv[name] = figures(y[keep], oof[keep])
    cv["reliability"] = reliability(y, oof)
    model = combiner.fit(X, y, features=features, l2=l2, provenance=provenance)
    return model, cv


def write_weights(name: str, model: combiner.Model, *, path: Path = WEIGHTS_FILE) -> None:
    """Replace (or add) one entry of `FITTED` in the weights module, keeping the others."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^FITTED: dict = (\{.*?\n\})$", text, flags=re.S | re.M) or re.search(
        r"^FITTED: dict = (\{\})$", text, flags=re.M)
    if match is None:
        raise ValueError(f"{path} has no `FITTED: dict = {{...}}` block to update")
    fitted = json.loads(match.group(1))
    fitted[name] = {k: (round(v, 6) if isinstance(v, float) else [round(x, 6) for x in v] if k in
                        ("mean", "scale", "coef") else v) for k, v in model.as_dict().items()}
    block = "FITTED: dict = " + json.dumps(dict(sorted(fitted.items())), indent=4, ensure_ascii=False)
    path.write_text(text[: match.start()] + block + text[match.end():], encoding="utf-8")
