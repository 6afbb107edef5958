"""Detector metrics against values worked out by hand."""
import pytest

from curation import detector_metrics as metrics


def test_roc_auc_counts_ordered_pairs_and_half_ties():
    # positives 0.9, 0.4; negatives 0.5, 0.4 → pairs: (0.9>0.5) (0.9>0.4) (0.4<0.5) (0.4=0.4 → ½) = 2.5/4
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.4]) == pytest.approx(0.625)
    assert metrics.roc_auc([0, 1], [0.1, 0.9]) == 1.0


def test_pr_auc_is_average_precision():
    # ranked: 0.9 (1), 0.8 (0), 0.7 (1), 0.1 (0): AP = ½·1 + ½·(2/3)
    assert metrics.pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)


def test_best_f1_picks_the_threshold_and_flags_scores_at_or_above_it():
    best = metrics.best_f1([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert best.threshold == pytest.approx(0.7) and best.f1 == pytest.approx(0.8)
    point = metrics.at_threshold([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 0.7)
    assert (point.precision, point.recall) == (pytest.approx(2 / 3), 1.0)


def test_one_class_only_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([1, 1], [0.2, 0.3])
