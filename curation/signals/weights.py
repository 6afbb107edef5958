"""The default models: fitted weights with their provenance. Written by `python manage.py fit_flags --write`.

Do not edit by hand: re-run the fit (its command is in each provenance) and
bump the detector versions in `curation.detectors`.
"""
from __future__ import annotations

from functools import lru_cache

from curation.signals.combiner import Model

FITTED: dict = {}


@lru_cache(maxsize=None)
def _model(name: str) -> Model:
    if name not in FITTED:
        raise LookupError(f"no default model {name!r} has been fitted (run `manage.py fit_flags --write`)")
    return Model.from_dict(FITTED[name])


def hallucination(*, with_lm: bool) -> Model:
    return _model("hallucination_lm" if with_lm else "hallucination")


def duplicate() -> Model:
    return _model("near_duplicate")
