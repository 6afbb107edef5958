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
            "unshared_words",
            "token_order",
            "words",
            "cosine_long",
            "cosine_sq_long",
            "cosine_cube_long",
            "word_jaccard_long",
            "containment_long",
            "length_ratio_long",
            "shingle_jaccard_long",
            "number_mismatch_long",
            "name_mismatch_long",
            "unshared_words_long",
            "token_order_long",
            "words_long",
            "long"
        ],
        "mean": [
            0.612436,
            0.456869,
            0.365675,
            0.362558,
            0.518601,
            0.858332,
            0.134495,
            0.291339,
            2.929134,
            2.168278,
            0.443204,
            2.711664,
            0.193227,
            0.15226,
            0.127181,
            0.123591,
            0.162379,
            0.274447,
            0.060543,
            0.155407,
            1.814942,
            0.863883,
            0.137402,
            1.106694,
            0.302184
        ],
        "scale": [
            0.285991,
            0.3092,
            0.303292,
            0.264405,
            0.302469,
            0.127444,
            0.203689,
            0.740552,
            3.992475,
            0.894957,
            0.235431,
            0.724504,
            0.31094,
            0.270872,
            0.242994,
            0.230037,
            0.27905,
            0.380638,
            0.155752,
            0.575038,
            3.89981,
            1.330324,
            0.229862,
            1.577728,
            0.41356
        ],
        "coef": [
            0.888018,
            1.025698,
            1.033338,
            -0.531438,
            0.585397,
            0.197508,
            -0.298381,
            -1.230533,
            0.347594,
            -0.473456,
            0.416792,
            0.37424,
            -0.163912,
            -0.250253,
            -0.26926,
            1.99798,
            1.462792,
            0.109055,
            -0.751161,
            0.625011,
            -0.184944,
            -1.19304,
            -1.02458,
            0.017774,
            -0.013855
        ],
        "intercept": -2.973857,
        "provenance": "manage.py fit_flags near_duplicate stsb_dev.jsonl --folds 5 --l2 1.0 --built-per-fold 60 --seed 15; stsb_dev.jsonl sha256 2c47fa681187; 589 pairs of the file plus 300 multi-sentence pairs built from them (synthetic: curation.signals.long_pairs, seed 15; each a concatenation of the file's sentences, scored by the mean of their pairs' scores); 5-fold CV grouped by source pair: stsb_dev ROC-AUC 0.9409, PR-AUC 0.7889, Brier 0.082; built ROC-AUC 0.9722, PR-AUC 0.9619, Brier 0.063; all Brier 0.0756"
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
