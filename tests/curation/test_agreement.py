"""Cohen's kappa on hand-worked examples."""
import pytest

from curation.agreement import cohens_kappa


def test_perfect_agreement_is_one():
    assert cohens_kappa([("a", "a"), ("r", "r"), ("a", "a")]) == pytest.approx(1.0)


def test_agreement_at_chance_level_is_zero():
    # Each says "a" half the time, independently: p_o = p_e = 1/2.
    assert cohens_kappa([("a", "a"), ("a", "r"), ("r", "a"), ("r", "r")]) == pytest.approx(0.0)


def test_a_textbook_table():
    # 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohens_kappa(pairs) == pytest.approx(0.4)


def test_no_pairs_has_no_kappa_and_one_shared_label_counts_as_agreement():
    assert cohens_kappa([]) is None
    assert cohens_kappa([("a", "a"), ("a", "a")]) == 1.0
