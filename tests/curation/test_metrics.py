"""The collapse metrics on hand-made data whose answer is known by hand."""
import itertools
import math

import numpy as np
import pytest

from curation import metrics

E = np.eye(4)  # four orthonormal directions


def brute_force_pairwise_distance(vectors):
    rows = [v / np.linalg.norm(v) for v in vectors]
    distances = [1 - float(a @ b) for a, b in itertools.combinations(rows, 2)]
    return sum(distances) / len(distances)


def test_distinct_n_counts_distinct_ngrams_over_all_ngrams():
    assert metrics.distinct_n(["a b a"], 1) == pytest.approx(2 / 3)
    # Bigrams of "a b a b": (a b), (b a), (a b): two distinct of three.
    assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    # Across texts: "the cell" twice is one distinct bigram of two.
    assert metrics.distinct_n(["The cell.", "the CELL"], 2) == pytest.approx(1 / 2)
    assert metrics.distinct_n(["one two three"], 1) == 1.0
    assert metrics.distinct_n(["word"], 2) is None, "no bigram at all is unknown, not zero"
    with pytest.raises(ValueError, match="n >= 1"):
        metrics.distinct_n(["a"], 0)


def test_pairwise_distance_of_orthogonal_rows_is_one_and_of_identical_rows_zero():
    assert metrics.mean_pairwise_cosine_distance(E[:3]) == pytest.approx(1.0)
    assert metrics.mean_pairwise_cosine_distance([[1, 0], [2, 0], [5, 0]]) == pytest.approx(0.0)
    # Two identical rows and one orthogonal: pair distances 0, 1, 1.
    assert metrics.mean_pairwise_cosine_distance([E[0], E[0], E[1]]) == pytest.approx(2 / 3)
    # Opposite directions are as far apart as cosine allows.
    assert metrics.mean_pairwise_cosine_distance([[1, 0], [-1, 0]]) == pytest.approx(2.0)


def test_pairwise_distance_in_closed_form_equals_the_mean_over_every_pair():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 16))
    assert metrics.mean_pairwise_cosine_distance(vectors) == pytest.approx(
        brute_force_pairwise_distance(vectors), abs=1e-9
    )


def test_pairwise_distance_needs_two_rows_and_ignores_zero_rows():
    assert metrics.mean_pairwise_cosine_distance([E[0]]) is None
    assert metrics.mean_pairwise_cosine_distance(np.zeros((0, 4))) is None
    assert metrics.mean_pairwise_cosine_distance([E[0], np.zeros(4), E[1]]) == pytest.approx(1.0)


def test_vendi_score_is_the_effective_number_of_distinct_items():
    assert metrics.vendi_score(np.tile(E[0], (7, 1))) == pytest.approx(1.0)
    assert metrics.vendi_score(E) == pytest.approx(4.0)
    # Two equal clusters of identical rows, orthogonal to each other: two distinct items.
    two_clusters = np.vstack([np.tile(E[0], (5, 1)), np.tile(E[1], (5, 1))])
    assert metrics.vendi_score(two_clusters) == pytest.approx(2.0)
    # Unequal clusters (3:1) score exp(H(3/4, 1/4)).
    unequal = np.vstack([np.tile(E[0], (3, 1)), E[1:2]])
    assert metrics.vendi_score(unequal) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert metrics.vendi_score(np.zeros((0, 4))) is None


def test_vendi_score_uses_the_gram_or_the_covariance_side_alike():
    rng = np.random.default_rng(5)
    wide = rng.normal(size=(6, 50))  # n < d: n×n Gram
    tall = rng.normal(size=(60, 5))  # n > d: d×d covariance
    for vectors in (wide, tall):
        x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        eig = np.clip(np.linalg.eigvalsh(x @ x.T / len(x)), 0, None)
        eig = eig[eig > 1e-12]
        assert metrics.vendi_score(vectors) == pytest.approx(math.exp(-np.sum(eig * np.log(eig))))


def test_vendi_score_above_the_size_scores_a_seeded_sample():
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(500, 8))
    first = metrics.vendi_score(vectors, max_items=50, seed=1)
    assert metrics.vendi_score(vectors, max_items=50, seed=1) == first, "the same seed scores the same rows"
    assert metrics.vendi_score(vectors, max_items=50, seed=2) != first
    subset = metrics.seeded_subset(metrics.unit_rows(vectors), max_items=50, seed=1)
    assert len(subset) == 50 and metrics.vendi_score(subset, max_items=50) == pytest.approx(first)
    with pytest.raises(ValueError, match="max_items"):
        metrics.seeded_subset(vectors, max_items=0, seed=1)


def test_coverage_counts_real_items_with_a_sample_within_the_radius():
    real = E[:3]
    near_first = np.array([0.99, 0.141, 0, 0])  # cosine 0.99 to e0
    samples = np.vstack([near_first, E[1]])
    assert metrics.coverage(real, samples, radius=0.05) == pytest.approx(2 / 3)
    assert metrics.coverage(real, samples, radius=0.005) == pytest.approx(1 / 3), "e0's neighbour is 0.01 away"
    assert metrics.coverage(real, np.zeros((0, 4)), radius=0.5) == 0.0
    assert metrics.coverage(np.zeros((0, 4)), samples, radius=0.5) is None
    # Scanning samples in chunks finds the same nearest neighbours.
    assert metrics.coverage(real, samples, radius=0.05, chunk=1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="radius"):
        metrics.coverage(real, samples, radius=3)


def test_centroid_drift_is_zero_for_the_same_data_and_one_for_orthogonal_centroids():
    assert metrics.centroid_drift(E[:2], E[:2]) == pytest.approx(0.0)
    assert metrics.centroid_drift([E[0], E[0]], [E[1]]) == pytest.approx(1.0)
    # Centroid of e0 and e1 is 45° from e0: drift 1 − cos 45°.
    assert metrics.centroid_drift(E[:2], [E[0]]) == pytest.approx(1 - math.sqrt(0.5))
    assert metrics.centroid_drift([], [E[0]]) is None
    assert metrics.centroid_drift([[1, 0], [-1, 0]], [E[0, :2]]) is None, "a zero centroid has no direction"


def test_selection_bias_compares_the_accepted_spread_with_the_generated_spread():
    generated = E[:4]
    assert metrics.selection_bias(E[:2], generated) == pytest.approx(1.0), "kept the spread"
    assert metrics.selection_bias([E[0], E[0]], generated) == pytest.approx(0.0), "kept only one kind"
    assert metrics.selection_bias([E[0]], generated) is None
    assert metrics.selection_bias(E[:2], [E[0], E[0]]) is None, "no spread to compare with"


def test_cohens_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, yes/no 5, no/yes 10, both no 15 → p_o 0.7, p_e 0.5, κ 0.4.
    assert metrics.cohens_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert metrics.cohens_kappa([[10, 0], [0, 5]]) == pytest.approx(1.0)
    assert metrics.cohens_kappa([[0, 5], [5, 0]]) == pytest.approx(-1.0)
    assert metrics.cohens_kappa([[0, 0], [0, 0]]) is None
    assert metrics.cohens_kappa([[7, 0], [0, 0]]) is None, "both always said the same one label"
    with pytest.raises(ValueError, match="square"):
        metrics.cohens_kappa([[1, 2, 3], [4, 5, 6]])


def test_agreement_table_counts_pairs_by_label():
    pairs = [("accept", "accept"), ("accept", "reject"), ("reject", "reject"), ("accept", "accept")]
    assert metrics.agreement_table(pairs, ["accept", "reject"]) == [[2, 1], [0, 1]]
    with pytest.raises(ValueError, match="unknown label"):
        metrics.agreement_table([("accept", "maybe")], ["accept", "reject"])


def test_rates_and_reasons():
    assert metrics.rate(1, 4) == 0.25 and metrics.rate(3, 0) is None
    assert metrics.count_reasons(["duplicate", "", "off-topic", "duplicate", "  "]) == {
        "duplicate": 2, "(none given)": 2, "off-topic": 1
    }


# The stored metrics of a generation, computed by the service from hand-made rows ---------------


@pytest.fixture
def generation_with_known_metrics(db, reviewer):
    """Generation 1 of a 4-passage lineage (passages e0..e3) with hand-made samples:

    accepted A1 (e0, near-duplicate flag), A2 (e1); rejected R1 (e2, hallucination
    flag, "off-topic"), R2 (e0, "duplicate"); pending P1 (no embedding yet).
    """
    from curation.services.review import sample_accept, sample_reject
    from tests.factories import make_flag, make_lineage, make_sample, make_user
    from tests.support.metrics_data import embed_passages_as_basis, unit_vector

    lineage = make_lineage(passages=4)
    embed_passages_as_basis(lineage)
    rows = {
        "A1": ("Where is chlorophyll?", "In the chloroplast.", 0),
        "A2": ("What do mitochondria make?", "They make ATP.", 1),
        "R1": ("Why is the sky green?", "Because of cells.", 2),
        "R2": ("Where is chlorophyll found?", "In chloroplasts.", 0),
    }
    samples = {name: make_sample(lineage, question=q, answer=a, embedding=unit_vector(i))
               for name, (q, a, i) in rows.items()}
    samples["P1"] = make_sample(lineage, flagged=False)
    make_flag(samples["A1"], kind="near_duplicate")
    make_flag(samples["R1"], kind="hallucination")
    for name in ("A1", "A2"):
        sample_accept(sample=samples[name], reviewer=reviewer)
    sample_reject(sample=samples["R1"], reviewer=reviewer, reason="off-topic")
    sample_reject(sample=samples["R2"], reviewer=reviewer, reason="duplicate")
    # A second reviewer decided three of them too (as an undo-and-redecide by someone else would).
    second = make_user("sam", "reviewer")
    from curation.models import Review

    for name, decision, reason in (("A1", "accept", ""), ("R1", "accept", ""), ("R2", "reject", "duplicate")):
        Review.objects.create(sample=samples[name], reviewer=second, decision=decision, reason=reason)
    return lineage.generations.get(number=1), samples


def test_the_service_stores_known_metrics_for_hand_made_samples(generation_with_known_metrics):
    from curation.services.metrics import generation_metrics_compute

    generation, _ = generation_with_known_metrics
    m = generation_metrics_compute(generation=generation)
    assert (m.generated, m.accepted, m.rejected, m.pending) == (5, 2, 2, 1)
    assert m.accept_rate == pytest.approx(0.5)
    # Four of the five samples went through the detectors (P1 did not).
    assert m.flag_rates == {"near_duplicate": pytest.approx(0.25), "hallucination": pytest.approx(0.25)}
    assert m.duplicate_rate == pytest.approx(0.25) and m.hallucination_rate == pytest.approx(0.25)
    # The latest rejecting decision of each rejected sample gives its reason.
    assert m.reject_reasons == {"off-topic": 1, "duplicate": 1}
    assert m.pairwise_distance == pytest.approx(1.0) and m.vendi == pytest.approx(2.0)
    assert m.coverage == pytest.approx(0.5), "e0 and e1 of the four passages are covered"
    assert m.centroid_drift == pytest.approx(1 - math.sqrt(0.5))
    # All embedded generated samples: e0, e1, e2, e0 → pair distances 1,1,0,1,1,1 → 5/6.
    assert m.selection_bias == pytest.approx(1.0 / (5 / 6))
    # Words of A1 and A2 (question + answer): 13 tokens, "make" twice → 12 distinct; 11 bigrams, all distinct.
    assert m.distinct_1 == pytest.approx(12 / 13) and m.distinct_2 == pytest.approx(1.0)
    # Pairs (first reviewer, second): A1 (accept, accept), R1 (reject, accept), R2 (reject, reject).
    assert m.agreement["table"] == [[1, 0], [1, 1]]
    assert m.kappa == pytest.approx(0.4)
    assert m.params["accepted_embedded"] == 2 and m.params["generated_embedded"] == 4


def test_generation_0_is_measured_on_the_real_corpus(generation_with_known_metrics):
    from curation.models import GenerationMetrics
    from curation.services.metrics import generation_metrics_compute

    generation, _ = generation_with_known_metrics
    generation_metrics_compute(generation=generation)
    real = GenerationMetrics.objects.get(generation__lineage=generation.lineage, generation__number=0)
    assert real.generated == real.accepted == 4
    assert real.pairwise_distance == pytest.approx(1.0) and real.vendi == pytest.approx(4.0)
    assert real.centroid_drift == 0.0 and real.accept_rate is None


def test_recomputing_replaces_the_row_and_notices_changes(generation_with_known_metrics, reviewer):
    from curation.models import GenerationMetrics
    from curation.services.metrics import generation_fingerprint, generation_metrics_compute, metrics_refresh_stale
    from curation.services.review import sample_reject

    generation, samples = generation_with_known_metrics
    first = generation_metrics_compute(generation=generation)
    assert generation_metrics_compute(generation=generation).fingerprint == first.fingerprint
    assert GenerationMetrics.objects.filter(generation=generation).count() == 1
    assert metrics_refresh_stale() == [], "nothing changed, nothing to queue"

    sample_reject(sample=samples["P1"], reviewer=reviewer, reason="unsafe")
    assert generation_fingerprint(generation=generation) != first.fingerprint
    assert metrics_refresh_stale() == [generation.pk]
    again = generation_metrics_compute(generation=generation)
    assert again.rejected == 3 and again.reject_reasons["unsafe"] == 1
