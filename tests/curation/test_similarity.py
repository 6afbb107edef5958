"""The similarity math, on plain arrays with answers worked out by hand."""
import numpy as np
import pytest

from curation.similarity import (
    cosine_matrix,
    normalize,
    novelty,
    split_sentences,
)


def test_split_sentences_keeps_abbreviations_inside_a_sentence():
    text = "Enzymes speed up reactions, e.g. digestion. They are proteins! Are all of them? No."
    assert split_sentences(text) == [
        "Enzymes speed up reactions, e.g. digestion.",
        "They are proteins!",
        "Are all of them?",
        "No.",
    ]


def test_split_sentences_of_empty_text_is_empty():
    assert split_sentences("   ") == []


def test_cosine_matrix_matches_hand_computed_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    expected = np.array([[1.0, 0.0, -1.0], [2**-0.5, 2**-0.5, -(2**-0.5)]])
    assert cosine_matrix(a, b) == pytest.approx(expected, abs=1e-6)


def test_normalize_leaves_zero_vectors_at_zero_instead_of_nan():
    out = normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert out[0].tolist() == [0.0, 0.0]
    assert out[1] == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("similarity,expected", [(None, 1.0), (0.25, 0.75), (1.2, 0.0)])
def test_novelty_is_one_minus_the_highest_similarity(similarity, expected):
    assert novelty(similarity) == pytest.approx(expected)
