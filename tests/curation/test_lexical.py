"""Content-word coverage and MinHash on literals."""
import pytest

from curation import lexical


def test_coverage_counts_content_words_and_weighs_numbers_double():
    words = lexical.content_words("The reaction uses 6 molecules of water.")
    assert words == ["reaction", "use", "6", "molecule", "water"]
    assert lexical.coverage(words, set(lexical.content_words("six molecules of water react"))) == pytest.approx(
        (1 + 1) / (1 + 1 + 2 + 1 + 1)
    )
    assert lexical.coverage([], set()) == 1.0


def test_plurals_cover_singulars_and_numbers_keep_their_punctuation():
    assert lexical.content_words("chromosomes, 1,200 pounds, 0.05 percent") == ["chromosome", "1,200", "pound",
                                                                                "0.05", "percent"]


def test_identical_texts_have_equal_signatures_and_share_every_band():
    a = lexical.minhash("DNA polymerase adds nucleotides to the growing strand.")
    b = lexical.minhash("DNA polymerase adds nucleotides to the growing strand.")
    assert a == b and len(a) == lexical.NUM_PERM and all(0 <= v < 2**32 for v in a)
    assert lexical.minhash_jaccard(a, b) == 1.0
    assert lexical.minhash_bands(a) == lexical.minhash_bands(b)


def test_jaccard_estimate_tracks_the_true_shingle_overlap():
    base = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    edited = base.replace("sixteen", "seventeen")
    true = len(lexical.shingles(base) & lexical.shingles(edited)) / len(lexical.shingles(base) | lexical.shingles(edited))
    estimate = lexical.minhash_jaccard(lexical.minhash(base), lexical.minhash(edited))
    assert abs(estimate - true) < 0.12
    unrelated = lexical.minhash("mitochondria make most of the cell's ATP through oxidative phosphorylation")
    assert lexical.minhash_jaccard(lexical.minhash(base), unrelated) < 0.1
    shared = set(lexical.minhash_bands(lexical.minhash(base))) & set(lexical.minhash_bands(lexical.minhash(edited)))
    assert shared, "a light edit still shares an LSH band, so the database finds it as a candidate"


def test_signatures_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        lexical.minhash_jaccard([1, 2], [1])
