"""The flag signals on plain strings and arrays, and the numpy logistic combiner."""
import numpy as np
import pytest

import random

from curation.signals import checks, combiner, copied_answers, features, fitting, long_pairs
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


def test_a_sentence_is_copied_when_it_stands_word_for_word_in_a_text():
    texts = ["Photosynthesis takes place in chloroplasts. It releases oxygen.", "Other passage."]
    assert checks.copied("photosynthesis takes place  in chloroplasts", texts)  # case, spacing, punctuation aside
    assert checks.copied("It releases oxygen!", texts)
    assert not checks.copied("Photosynthesis takes place in mitochondria.", texts)
    assert not checks.copied("...", texts) and not checks.copied("It releases oxygen.", [])


def test_the_answer_copied_share_counts_the_other_sentences_that_are_copied():
    rows = features.hallucination_rows(sentences=["A b c.", "D e f.", "G h i."], cosine=[0.9, 0.9, 0.2],
                                       coverage=[1.0, 1.0, 0.1], consistency=[None] * 3, source="A b c. D e f.",
                                       lm=None, copied=[True, True, False])
    assert [r["copied"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["answer_copied_share"] for r in rows] == [0.5, 0.5, 1.0]  # the invented one: all the rest copied
    [alone] = features.hallucination_rows(sentences=["A b c."], cosine=[0.9], coverage=[1.0], consistency=[None],
                                          source="A b c.", lm=None, copied=[True])
    assert alone["answer_copied_share"] == 0.0


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


def _lcs_table(x, y):
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i, a in enumerate(x):
        for j, b in enumerate(y):
            table[i + 1][j + 1] = table[i][j] + 1 if a == b else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_the_bit_parallel_lcs_equals_the_dynamic_programme():
    rng = random.Random(3)
    for _ in range(500):
        x = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        y = [rng.choice("abcdef") for _ in range(rng.randint(0, 70))]
        assert features.lcs_length(x, y) == _lcs_table(x, y), (x, y)


def test_word_order_tells_who_did_what_to_whom():
    swapped = features.duplicate_row("A man is carrying a dog.", "A dog is carrying a man.", cosine=0.9)
    same = features.duplicate_row("A man is carrying a dog.", "A man is carrying a dog.", cosine=1.0)
    assert swapped["word_jaccard"] == same["word_jaccard"] == 1.0  # the same words…
    assert same["token_order"] == 1.0 and swapped["token_order"] < 0.8  # …not in the same order


def test_the_length_gate_tells_a_one_line_pair_from_a_question_and_answer():
    short = features.duplicate_row("A man plays the guitar.", "A man is playing a guitar.", cosine=0.9)
    answer = ("What does chlorophyll do? Chlorophyll in the chloroplasts absorbs red and blue light and reflects "
              "green, which is why leaves look green. The energy it captures drives the light-dependent reactions, "
              "where water is split and oxygen is released into the air.")
    long = features.duplicate_row(answer, answer, cosine=1.0)
    assert short["long"] < 0.05 and long["long"] > 0.95
    assert long["cosine_long"] == pytest.approx(long["cosine"] * long["long"])
    assert set(fitting.DUPLICATE_FEATURES) <= set(long)


def _source_pairs(n=150):
    return [long_pairs.SourcePair(f"a{i} sentence.", f"b{i} sentence.", int(i % 3 == 0), 4.5 if i % 3 == 0 else 1.0 + i % 3)
            for i in range(n)]


def test_built_pairs_take_every_sentence_from_their_own_fold_and_are_labelled_by_the_mean_score():
    pairs = _source_pairs()
    built = long_pairs.build(pairs, folds=5, per_fold=20, seed=1)
    assert built == long_pairs.build(pairs, folds=5, per_fold=20, seed=1)  # seeded
    assert {p.kind for p in built} == set(long_pairs.KINDS) and len(built) == 100
    for p in built:
        sources = [int(w[1:]) for w in (p.a + " " + p.b).split() if w[0] in "ab" and w[1:].isdigit()]
        assert {i % 5 for i in sources} == {p.group % 5}, p  # no sentence of another fold leaks in
        assert p.label == int(p.score >= long_pairs.POSITIVE_SCORE)
        assert 3 <= len(p.a.split(".")) - 1 <= 7  # k sentences, one more on a near copy now and then
    copies = [p for p in built if p.kind == "near_copy" and p.a == p.b]
    assert copies and all(p.score == 5.0 and p.label == 1 for p in copies)
    assert all(p.score == 0.0 and p.label == 0 for p in built if p.kind == "unrelated")
    with pytest.raises(ValueError, match="per_fold"):
        long_pairs.build(pairs, per_fold=-1)


def test_built_answers_copy_their_passage_around_one_labelled_sentence_of_each_class():
    passage = ("Ada Lovelace was born in London in 1815. She worked with Charles Babbage on his engine. "
               "Her notes describe an algorithm for it. Short one. She died in 1852 at the age of 36.")
    answers = [copied_answers.SourceAnswer(passage, ["She was a poet.", "She wrote notes on the engine.",
                                                     "She lived in Rome."], [1, 0, 1], group=7),
               copied_answers.SourceAnswer(passage, ["She was born in 1815."], [0], group=8),
               copied_answers.SourceAnswer("Too short.", ["x y z w."], [1], group=9)]
    built = copied_answers.build(answers, copied=2, seed=3)
    assert built == copied_answers.build(answers, copied=2, seed=3)  # seeded
    assert [(b.group, b.labels[b.added]) for b in built] == [(7, 0), (7, 1), (8, 0)]  # none from a 1-sentence passage
    kept = [s for s in passage.split(". ")]
    for b, answer in zip(built, [answers[0], answers[0], answers[1]]):
        assert len(b.sentences) == 3 and b.sentences[b.added] in answer.sentences
        assert b.labels[b.added] == answer.labels[answer.sentences.index(b.sentences[b.added])]
        copied = [s for i, s in enumerate(b.sentences) if i != b.added]
        assert all(b.labels[i] == 0 for i in range(3) if i != b.added)
        assert " ".join(copied) in passage and "Short one." not in copied  # consecutive, as written
        assert copied[0].rstrip(".") in kept
    with pytest.raises(ValueError, match="at least one"):
        copied_answers.build(answers, copied=0)
    with pytest.raises(ValueError, match="group 1: 1 sentences but 2 labels"):
        copied_answers.build([copied_answers.SourceAnswer(passage, ["a b c d."], [0, 1], group=1)])


def test_fit_reports_each_subset_apart_with_a_reliability_table():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    y = (x + rng.normal(scale=0.7, size=400) > 0).astype(int)
    rows = [{"x": float(v)} for v in x]
    _, cv = fitting.fit_with_cv(rows, list(y), list(range(400)), features=("x",),
                                subsets={"first": [n < 100 for n in range(400)]})
    assert cv["first"]["n"] == 100 and 0.5 < cv["first"]["roc_auc"] <= 1.0
    table = cv["reliability"]
    assert sum(b["n"] for b in table) == 400
    # A well-specified logistic model is calibrated out of fold: every well-filled bin within 0.15.
    assert all(abs(b["mean_p"] - b["observed"]) < 0.15 for b in table if b["n"] >= 30), table


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
