"""Fitting a lineage's flag thresholds to labelled data or to its reviewers' past decisions."""
from __future__ import annotations

from dataclasses import dataclass

from curation import detector_metrics as metrics
from curation.models import Flag, Lineage

THRESHOLD_FIELDS = {Flag.Kind.HALLUCINATION: "hallucination_threshold", Flag.Kind.NEAR_DUPLICATE: "duplicate_threshold"}


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class Calibration:
    kind: str
    n: int
    chosen: metrics.OperatingPoint
    current: metrics.OperatingPoint
    rule: str


def threshold_fit(*, kind: str, labels: list[int], scores: list[float], current: float,
                  min_precision: float | None = None) -> Calibration:
    """Choose a threshold: the best F1, or with `min_precision` the highest recall that keeps that precision.

    Reports precision and recall at the chosen point and at the current threshold.
    """
    if len(labels) < 2 or len(set(labels)) < 2:
        raise CalibrationError(
            f"need labelled examples of both classes; have {labels.count(1)} positive and {labels.count(0)} negative"
        )
    if min_precision is None:
        chosen, rule = metrics.best_f1(labels, scores), "best F1"
    else:
        eligible = [p for p in metrics.operating_points(labels, scores) if p.precision >= min_precision]
        if not eligible:
            raise CalibrationError(f"no threshold reaches precision {min_precision:.2f} on these labels")
        chosen = max(eligible, key=lambda p: (p.recall, p.threshold))
        rule = f"highest recall at precision ≥ {min_precision:.2f}"
    return Calibration(kind, len(labels), chosen, metrics.at_threshold(labels, scores, current), rule)


def lineage_threshold_set(*, lineage: Lineage, kind: str, threshold: float) -> Lineage:
    """Store a lineage's threshold for one detector (flags change when the lineage is re-flagged)."""
    if not 0.0 <= threshold <= 1.0:
        raise CalibrationError(f"a threshold must lie in [0, 1], got {threshold}")
    field = THRESHOLD_FIELDS[kind]
    Lineage.objects.filter(pk=lineage.pk).update(**{field: threshold})
    setattr(lineage, field, threshold)
    return lineage
