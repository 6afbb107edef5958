"""The default models: fitted weights with their provenance. Written by `python manage.py fit_flags --write`.

Do not edit by hand: re-run the fit (its command is in each provenance) and
bump the detector versions in `curation.detectors`.
"""
from __future__ import annotations

from functools import lru_cache

from curation.signals.combiner import Model

FITTED: dict = {
    "hallucination": {
        "features": [
            "cosine",
            "coverage",
            "missing_numbers",
            "missing_months",
            "missing_names",
            "missing_name_share",
            "words",
            "first_sentence",
            "answer_cosine",
            "answer_coverage",
            "answer_missing_names",
            "answer_min_coverage",
            "answer_missing_numbers"
        ],
        "mean": [
            0.676169,
            0.405868,
            0.710221,
            0.071654,
            1.805058,
            0.390738,
            2.869184,
            0.125395,
            0.676169,
            0.405868,
            1.805058,
            0.184228,
            0.710221
        ],
        "scale": [
            0.14539,
            0.224575,
            0.965861,
            0.27377,
            2.210935,
            0.373533,
            0.364316,
            0.331166,
            0.092467,
            0.138441,
            0.972898,
            0.122633,
            0.447461
        ],
        "coef": [
            -0.078842,
            -0.329232,
            0.403031,
            0.420559,
            0.218981,
            0.264515,
            -0.118382,
            -0.129332,
            -0.527777,
            -0.889443,
            0.232986,
            0.50793,
            0.282477
        ],
        "intercept": 1.46273,
        "provenance": "manage.py fit_flags hallucination wikibio_dev.jsonl --no-lm --folds 5 --l2 1.0; wikibio_dev.jsonl sha256 630e230bf504; 949 rows; 5-fold CV by answer: ROC-AUC 0.8445, PR-AUC 0.926, Brier 0.1326"
    },
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
