"""The flag signals on plain strings and arrays, and the numpy logistic combiner."""
import numpy as np
import pytest

from curation.signals import checks, combiner, features, fitting
from curation.signals.lm import sentence_lm, token_logprobs


def test_a_number_or_name_the_source_lacks_is_named():
    source = "Brian Hughes (born October 28, 1956) is an American guitarist from Chicago. He released 1,200 songs."
    miss = checks.mismatch("Brian Hughes (born May 4, 1958) is a Canadian guitarist who released 1200 songs.",
                           source)
    assert miss.numbers == ["4", "1958"]  # 1200 is 1,200
    assert miss.months == ["may"]
    assert miss.names == ["canadian"]
    assert "the number 1958 is not in the passage" in miss.describe()


def test_a_sentence_the_source_states_has_no_mismatch_and_may_as_a_verb_is_not_a_month():
    source = "Ada Lovelace wrote the first program in 1843 for Babbage's engine."
    miss = checks.mismatch("In 1843 Ada Lovelace may have written the first program.", source)
    assert (miss.numbers, miss.months, miss.names) == ([], [], [])


def test_decontextualise_puts_the_subject_in_place_of_a_leading_pronoun():
    out = checks.decontextualise(["Brian Hughes (born 1956) is a guitarist.", "He released six albums.",
                                  "His first album sold well.", "The band toured."])
    assert out == ["Brian Hughes (born 1956) is a guitarist.", "Brian Hughes released six albums.",
                   "Brian Hughes's first album sold well.", "The band toured."]
    assert checks.decontextualise([]) == []
    assert checks.subject("the cell divides.") == ""


def test_token_logprobs_is_the_log_softmax_at_the_target():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    lp = token_logprobs(logits, np.array([0, 1]))
    assert lp == pytest.approx([np.log(0.5), np.log(0.25)])
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(logits, np.array([0]))


def test_sentence_lm_pmi_min_and_consistency():
    with_source, without = np.array([-1.0, -1.0, -5.0, -1.0]), np.array([-2.0, -2.0, -4.0, -2.0])
    s = sentence_lm(with_source, without, [np.array([-2.0, -2.0, -4.0, -2.0]), np.array([-1.0, -1.0, -4.0, -1.0])])
    assert s.pmi == pytest.approx(0.5)  # lifts +1, +1, −1, +1
    assert s.logprob == pytest.approx(-2.0)
    assert s.min_pmi == pytest.approx(1 / 3)  # mean of the three lowest lifts
    assert s.consistency == pytest.approx(0.375)  # (0 + 0.75) / 2
    assert sentence_lm(with_source, without, []).consistency is None


def test_duplicate_row_separates_a_paraphrase_from_a_topic_neighbour():
    same = features.duplicate_row("A man is playing a guitar.", "A man plays the guitar.", cosine=0.9)
    other = features.duplicate_row("A man is playing a guitar on stage in 2010.", "A woman sings in 1999.",
                                   cosine=0.5)
    assert same["word_jaccard"] > other["word_jaccard"] and same["containment"] > other["containment"]
    assert other["number_mismatch"] == 2.0 and same["number_mismatch"] == 0.0
    assert 0 < other["length_ratio"] < same["length_ratio"] <= 1.0


def test_logistic_fit_recovers_a_separating_direction_and_gives_probabilities():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = (X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=400) > 0).astype(int)
    model = combiner.fit(X, y, features=("a", "b"), l2=0.1)
    assert model.coef[0] > 0 > model.coef[1] and abs(model.coef[0]) > abs(model.coef[1])
    p = model.predict([{"a": 3.0, "b": 0.0}, {"a": -3.0, "b": 0.0}])
    assert p[0] > 0.95 and p[1] < 0.05
    assert combiner.Model.from_dict(model.as_dict()) == model
    with pytest.raises(ValueError, match="lacks 'b'"):
        model.predict([{"a": 1.0}])


def test_grouped_folds_keep_a_group_in_one_fold_and_cv_scores_every_row():
    groups = [0, 0, 1, 1, 2, 3, 3, 4]
    folds = combiner.grouped_folds(groups, 3)
    assert sorted(i for f in folds for i in f) == list(range(8))
    for fold in folds:
        for g in {groups[i] for i in fold}:
            assert all(i in fold for i, h in enumerate(groups) if h == g)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 1))
    y = (X[:, 0] > 0).astype(int)
    oof = combiner.cross_validated(X, y, [i // 3 for i in range(60)], features=("x",), k=5)
    assert ((oof > 0.5) == (y == 1)).mean() > 0.9


def test_write_weights_replaces_one_entry_and_keeps_the_others(tmp_path):
    path = tmp_path / "weights.py"
    path.write_text('"""doc"""\nFITTED: dict = {}\n\n\ndef f():\n    return FITTED\n')
    model = combiner.Model(("x",), (0.0,), (1.0,), (2.0,), -1.0, "test fit")
    fitting.write_weights("a", model, path=path)
    fitting.write_weights("b", model, path=path)
    fitting.write_weights("a", combiner.Model(("y",), (0.0,), (1.0,), (3.0,), 0.5, "refit"), path=path)
    namespace: dict = {}
    exec(path.read_text(), namespace)
    assert namespace["f"]()["a"]["features"] == ["y"] and namespace["f"]()["b"]["provenance"] == "test fit"
