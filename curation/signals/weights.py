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
            0.611543,
            0.453199,
            0.360889,
            0.361735,
            0.519542,
            0.856416,
            0.133588,
            0.273341,
            2.827897,
            2.16969,
            0.441703,
            2.704273,
            0.192315,
            0.148994,
            0.122868,
            0.123146,
            0.163473,
            0.272225,
            0.059879,
            0.13763,
            1.700958,
            0.861602,
            0.135559,
            1.096403,
            0.301498
        ],
        "scale": [
            0.28145,
            0.305906,
            0.299248,
            0.26088,
            0.30155,
            0.127333,
            0.200014,
            0.684538,
            3.713392,
            0.863377,
            0.233633,
            0.713103,
            0.305978,
            0.263704,
            0.233959,
            0.226641,
            0.279479,
            0.377022,
            0.151168,
            0.488676,
            3.527269,
            1.301451,
            0.225591,
            1.557176,
            0.411545
        ],
        "coef": [
            0.872403,
            1.025878,
            1.038144,
            -0.556511,
            0.774808,
            0.241685,
            -0.265121,
            -1.27094,
            0.206538,
            -0.207624,
            0.427447,
            0.210187,
            -0.285484,
            -0.407386,
            -0.534901,
            1.798426,
            1.695769,
            0.194264,
            -0.086896,
            0.531996,
            0.008383,
            -0.745479,
            -1.123185,
            0.025919,
            -0.13467
        ],
        "intercept": -2.873555,
        "provenance": "manage.py fit_flags near_duplicate stsb_dev.jsonl --folds 5 --l2 1.0 --built-per-fold 60 --seed 15; stsb_dev.jsonl sha256 2c47fa681187; 589 pairs of the file plus 300 multi-sentence pairs built from them (synthetic: curation.signals.long_pairs, seed 15; each a concatenation of the file's sentences, scored by the mean of their pairs' scores); 5-fold CV grouped by source pair: stsb_dev ROC-AUC 0.9416, PR-AUC 0.7921, Brier 0.0809; built ROC-AUC 0.9607, PR-AUC 0.9377, Brier 0.0663; all Brier 0.076"
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
