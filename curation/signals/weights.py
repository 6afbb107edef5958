"""The default models: fitted weights with their provenance. Written by `python manage.py fit_flags --write`.

Do not edit by hand: re-run the fit (its command is in each provenance) and
bump the detector versions in `curation.detectors`.
"""
from __future__ import annotations

from functools import lru_cache

from curation.signals.combiner import Model

FITTED: dict = {
    "near_duplicate": {
        "features": [
            "cosine",
            "cosine_sq",
            "cosine_cube",
            "word_jaccard",
            "containment",
            "length_ratio",
            "shingle_jaccard",
            "number_mismatch",
            "name_mismatch",
            "unshared_words"
        ],
        "mean": [
            0.596923,
            0.42895,
            0.332781,
            0.334762,
            0.505725,
            0.831544,
            0.097636,
            0.17657,
            1.36163,
            1.8267
        ],
        "scale": [
            0.269504,
            0.293282,
            0.285742,
            0.239719,
            0.289288,
            0.137611,
            0.158094,
            0.536664,
            1.733507,
            0.576733
        ],
        "coef": [
            0.904039,
            1.025167,
            1.017698,
            -0.579217,
            0.700523,
            0.310812,
            -0.032979,
            -1.076237,
            -0.015941,
            -0.277254
        ],
        "intercept": -3.282172,
        "provenance": "manage.py fit_flags near_duplicate stsb_dev.jsonl --folds 5 --l2 1.0; stsb_dev.jsonl sha256 2c47fa681187; 589 rows; 5-fold CV by answer: ROC-AUC 0.9415, PR-AUC 0.8022, Brier 0.0797"
    }
}


@lru_cache(maxsize=None)
def _model(name: str) -> Model:
    if name not in FITTED:
        raise LookupError(f"no default model {name!r} has been fitted (run `manage.py fit_flags --write`)")
    return Model.from_dict(FITTED[name])


def hallucination(*, with_lm: bool) -> Model:
    """The model with LM features when one was fitted; else the one without (the PMI is then evidence only)."""
    if with_lm and "hallucination_lm" in FITTED:
        return _model("hallucination_lm")
    return _model("hallucination")


def duplicate() -> Model:
    return _model("near_duplicate")
