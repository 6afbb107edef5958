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
            "answer_missing_numbers",
            "answer_copied_share"
        ],
        "mean": [
            0.74714,
            0.553383,
            0.529024,
            0.05409,
            1.378628,
            0.291288,
            2.907506,
            0.203166,
            0.74714,
            0.553383,
            1.378628,
            0.267423,
            0.529024,
            0.257916
        ],
        "scale": [
            0.192114,
            0.324423,
            0.882146,
            0.243063,
            2.115508,
            0.362971,
            0.394448,
            0.402355,
            0.123149,
            0.22622,
            1.126785,
            0.213613,
            0.4626,
            0.351044
        ],
        "coef": [
            -0.461754,
            -0.760253,
            0.306231,
            0.317585,
            0.120397,
            0.32482,
            -0.073086,
            0.10511,
            -0.478311,
            -1.598785,
            0.250798,
            0.876887,
            0.278075,
            0.639388
        ],
        "intercept": 0.065385,
        "provenance": "manage.py fit_flags hallucination wikibio_dev.jsonl --no-lm --folds 5 --l2 1.0 --copied 2 --seed 15; wikibio_dev.jsonl sha256 630e230bf504; 949 sentences of the file plus 567 of 189 answers built from it (synthetic: curation.signals.copied_answers, seed 15; 2 passage sentences copied as written, label 0, with one of the file's sentences among them); 5-fold CV by answer: wikibio_dev ROC-AUC 0.8419, PR-AUC 0.9267, Brier 0.1338; built ROC-AUC 0.9577, PR-AUC 0.7786, Brier 0.067"
    },
    "hallucination_lm": {
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
            "answer_missing_numbers",
            "answer_copied_share",
            "pmi",
            "lm_logprob",
            "min_pmi",
            "answer_pmi"
        ],
        "mean": [
            0.74714,
            0.553383,
            0.529024,
            0.05409,
            1.378628,
            0.291288,
            2.907506,
            0.203166,
            0.74714,
            0.553383,
            1.378628,
            0.267423,
            0.529024,
            0.257916,
            0.904264,
            -1.403736,
            -0.790819,
            0.904264
        ],
        "scale": [
            0.192114,
            0.324423,
            0.882146,
            0.243063,
            2.115508,
            0.362971,
            0.394448,
            0.402355,
            0.123149,
            0.22622,
            1.126785,
            0.213613,
            0.4626,
            0.351044,
            1.230023,
            0.807972,
            0.833264,
            0.912723
        ],
        "coef": [
            -0.302546,
            -0.524588,
            0.260796,
            0.304852,
            0.092387,
            0.313322,
            -0.061352,
            0.35735,
            -0.480984,
            -1.255536,
            0.224543,
            0.702857,
            0.298807,
            0.8945,
            -0.92147,
            0.001303,
            -0.192846,
            -0.496132
        ],
        "intercept": -0.330072,
        "provenance": "manage.py fit_flags hallucination wikibio_dev.jsonl --folds 5 --l2 1.0 --copied 2 --seed 15; wikibio_dev.jsonl sha256 630e230bf504; 949 sentences of the file plus 567 of 189 answers built from it (synthetic: curation.signals.copied_answers, seed 15; 2 passage sentences copied as written, label 0, with one of the file's sentences among them); 5-fold CV by answer: wikibio_dev ROC-AUC 0.8532, PR-AUC 0.9308, Brier 0.1281; built ROC-AUC 0.9521, PR-AUC 0.742, Brier 0.071"
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
