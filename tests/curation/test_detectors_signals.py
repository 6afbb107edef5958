"""The detectors with the new signals, on the real embedder and the real language model."""
import numpy as np
import pytest

from curation import detectors
from curation.evaluation import HallucinationItem, answers_of
from curation.signals import lm

SOURCE = ("Marie Curie (born 1867 in Warsaw) was a physicist and chemist. She won two Nobel Prizes, in physics "
          "and in chemistry. She discovered polonium and radium.")


def test_the_invented_sentence_is_the_likeliest_unsupported_and_its_evidence_says_why():
    result = detectors.hallucination_in_memory(
        answer="Marie Curie was a physicist and chemist. She won two Nobel Prizes. She discovered 14 elements in Lisbon.",
        sources=[SOURCE], alternatives=[], use_lm=False)
    p = result.probabilities
    assert all(0.0 <= x <= 1.0 for x in p) and p[2] == max(p)
    assert result.score == pytest.approx(max(s.risk for s in result.sentences))
    evidence = result.evidence(threshold=p[2] - 1e-9)  # risk is stored as 1 - support: allow its rounding
    [flagged] = evidence["unsupported"]
    assert flagged["sentence"].endswith("14 elements in Lisbon.")
    assert "the number 14 is not in the passage" in flagged["reasons"]
    assert "the name 'lisbon' is not in the passage" in flagged["reasons"]
    assert evidence["sentences"][2]["signals"]["missing_numbers"] == 1.0


def test_the_pair_model_scores_a_paraphrase_above_a_neighbour_with_other_facts():
    paraphrase = detectors.duplicate_pair_score("A man is playing a guitar.", "A man plays the guitar.")
    neighbour = detectors.duplicate_pair_score("A man is playing a guitar.", "A woman is playing a violin on stage.")
    assert 0.0 <= neighbour < paraphrase <= 1.0


QA = ("What does chlorophyll do in a leaf?\nChlorophyll in the chloroplasts absorbs red and blue light and reflects "
      "green, which is why leaves look green. The energy it captures drives the light-dependent reactions, where "
      "water is split and oxygen is released. The Calvin cycle then uses that energy to fix carbon dioxide into sugar.")


def test_a_long_question_and_answer_repeated_is_a_near_duplicate_and_an_unrelated_one_is_not():
    """Issue 15.4: the model fitted on one-line STS-B pairs alone scored this repeat at 0.23."""
    reordered = ("What does chlorophyll do in a leaf?\nThe energy chlorophyll captures drives the light-dependent "
                 "reactions, where water is split and oxygen is released. Chlorophyll in the chloroplasts absorbs red "
                 "and blue light and reflects green, which is why leaves look green. The Calvin cycle then uses that "
                 "energy to fix carbon dioxide into sugar.")
    reworded = QA.replace("What does chlorophyll do in a leaf?", "What is the job of chlorophyll in leaves?")
    unrelated = ("Why did the Roman Empire split in two?\nThe empire had grown too large to govern from one city, so "
                 "Diocletian divided its administration between an eastern and a western emperor in 286. Rome and "
                 "Constantinople then developed separate courts, armies and tax systems.")
    same_topic = ("How do plants take in carbon dioxide?\nCarbon dioxide enters the leaf through small pores called "
                  "stomata on its underside. Guard cells open the pores in daylight and close them when the plant "
                  "is short of water, which also limits how much sugar it can make.")
    for copy in (QA, reordered, reworded):
        assert detectors.duplicate_pair_score(QA, copy) >= 0.9, copy
    assert detectors.duplicate_pair_score(QA, unrelated) < 0.05
    assert detectors.duplicate_pair_score(QA, same_topic) < 0.5


def test_the_probability_from_rows_equals_the_one_from_the_feature_vector():
    from curation.signals import features, weights

    model = weights.duplicate()
    a, b = QA, QA.replace("sugar", "glucose")
    vector = features.pair_features(a, b, cosine=0.97)
    row = features.duplicate_row(a, b, cosine=0.97)
    assert detectors.duplicate_probability(vector[None, :])[0] == pytest.approx(detectors.duplicate_probability([row])[0])
    assert detectors.duplicate_score(cosine=0.97, a=a, b=b) == pytest.approx(float(model.predict([row])[0]))
    with pytest.raises(ValueError, match="feature columns"):
        detectors.duplicate_probability(vector[None, :3])


def test_consecutive_one_sentence_items_of_one_source_form_one_answer():
    items = [HallucinationItem(["s1"], "A b.", 0, [], ""), HallucinationItem(["s1"], "C d.", 1, [], ""),
             HallucinationItem(["s2"], "E f.", 1, [], ""), HallucinationItem(["s1"], "G h.", 0, [], "")]
    assert answers_of(items) == [[0, 1], [2], [3]]
    assert answers_of(items, mode="items") == [[0], [1], [2], [3]]
    with_questions = [HallucinationItem(i.sources, i.text, i.label, i.samples, "Q?") for i in items]
    assert answers_of(with_questions) == [[0], [1], [2], [3]]  # whole answers to questions: each its own


def test_the_language_model_lifts_a_sentence_the_source_states_more_than_an_invented_one():
    signals = lm.scorer().answer_signals(
        source=SOURCE, sentences=["Marie Curie discovered polonium and radium.",
                                  "Marie Curie discovered penicillin in Brazil."],
        alternatives=["Curie found polonium and radium."])
    stated, invented = signals
    assert stated.pmi > invented.pmi
    assert stated.consistency is not None and stated.consistency > invented.consistency


def test_reused_prefixes_and_one_decode_for_all_answers_give_what_a_fresh_read_gives():
    """The scorer's prefix cache and batched answer rows change the cost, never the numbers."""
    from ouroboros.embedded import smollm2_gguf

    path = str(smollm2_gguf())
    shared = "Source:\n" + SOURCE + " "
    prefixes = [shared + "She was born in Warsaw.\n\nText:\n", shared + "She taught in Paris.\n\nText:\n",
                "Source:\n\n\nText:\n", "Source:\nCurie found radium.\n\nText:\n"]
    sentences = ["Marie Curie discovered polonium.", "She was born in Paris."]
    # A context so small that the four prefixes cannot all stay: every call evicts and copies.
    cached = lm.LMScorer(path, n_ctx=192, window=128, prefix_slots=3)
    first = cached.logprobs_after(prefixes, sentences)
    again = cached.logprobs_after(prefixes[::-1], sentences)[::-1]
    reordered = cached.logprobs_after(prefixes, sentences[::-1])
    assert cached.stats["reused_tokens"] > 0  # the second prefix starts with the first's passage
    for n, prefix in enumerate(prefixes):
        alone = lm.LMScorer(path, n_ctx=128, window=128, prefix_slots=1)
        fresh = alone.logprobs_after([prefix], sentences)[0]
        fresh_reordered = alone.logprobs_after([prefix], sentences[::-1])[0]
        alone.close()
        for got, want in ((first[n], fresh), (again[n], fresh), (reordered[n], fresh_reordered)):
            assert [len(g) for g in got] == [len(w) for w in want]
            for g, w in zip(got, want):
                assert np.allclose(g, w, atol=2e-3), (prefix, g, w)
    cached.close()
    assert lm.scorer() is lm.scorer()  # one scorer, one context, per process


def test_the_language_model_reads_the_root_passage_alone_and_the_mismatches_every_passage():
    """Issue 15.5: the LM's source is the passage the sample was written from, the same for all its samples."""
    from curation.hallucination import Reference

    def ref(text, passage, position, root):
        return Reference(text, np.zeros(3), {"passage_id": passage, "position": position,
                                             **({"supported_by": "root passage"} if root else {})})

    other = ref("Paris is in France.", 2, 0, False)
    root_second, root_first = ref("Curie won two prizes.", 1, 1, True), ref("Curie was born in 1867.", 1, 0, True)
    candidates = [[other, root_second], [root_first, other]]
    assert detectors.lm_source(candidates, root_only=True) == "Curie was born in 1867. Curie won two prizes."
    assert detectors.lm_source(candidates) == "Curie was born in 1867. Curie won two prizes.\n\nParis is in France."
    # Without a root passage among the candidates the language model reads them all.
    assert detectors.lm_source([[other]], root_only=True) == "Paris is in France."


def test_lm_consistency_reads_the_alternatives_as_one_prefix_and_the_answer_three_times():
    scorer = lm.scorer()
    asked = []
    inner = scorer.logprobs_after

    def spy(prefixes, sentences):
        asked.append(list(prefixes))
        return inner(prefixes, sentences)

    alternatives = ["Curie found polonium and radium.", "She discovered radium.", "  "]
    sentences = ["Marie Curie discovered polonium and radium.", "She was born in Paris."]
    scorer.logprobs_after = spy
    try:
        signals = scorer.answer_signals(source=SOURCE, sentences=sentences, alternatives=alternatives)
    finally:
        del scorer.logprobs_after
    [prefixes] = asked
    together = lm.SOURCE_HEADER + "Curie found polonium and radium.\n\nShe discovered radium." + lm.ANSWER_HEADER
    assert prefixes == [lm.SOURCE_HEADER + SOURCE + lm.ANSWER_HEADER, lm.SOURCE_HEADER + lm.ANSWER_HEADER, together]
    with_alternatives, without = scorer.logprobs_after([together, prefixes[1]], sentences)
    for s, given, alone in zip(signals, with_alternatives, without):
        assert s.consistency == pytest.approx(float(np.mean(given - alone)), abs=1e-6)


def test_the_scoring_copy_of_the_model_is_derived_once_and_scores_like_the_shipped_file(tmp_path):
    from ouroboros import embedded

    path = embedded.smollm2_scoring_gguf(cache_dir=tmp_path)
    assert path.parent == tmp_path and path.name.startswith("SmolLM2-135M-Instruct.F16.")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left beside it
    made = path.stat().st_mtime_ns
    assert embedded.smollm2_scoring_gguf(cache_dir=tmp_path) == path and path.stat().st_mtime_ns == made
    sentences = ["Marie Curie discovered polonium and radium.", "Marie Curie discovered penicillin in Brazil."]
    prefix = lm.SOURCE_HEADER + SOURCE + lm.ANSWER_HEADER
    runs = []
    for model in (path, embedded.smollm2_gguf()):
        scorer = lm.LMScorer(str(model), n_ctx=256, window=256, prefix_slots=1)
        runs.append(np.concatenate(scorer.logprobs_after([prefix], sentences)[0]))
        scorer.close()
    widened, shipped = runs
    assert widened.shape == shipped.shape and np.corrcoef(widened, shipped)[0, 1] > 0.99
    assert np.abs(widened - shipped).mean() < 0.1


def test_a_model_cache_that_cannot_be_written_is_an_error_that_names_it(tmp_path):
    from ouroboros import embedded

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OSError):
        embedded.smollm2_scoring_gguf(cache_dir=blocker / "models")


@pytest.mark.parametrize("use_lm", [False, True])
def test_an_invented_sentence_after_sentences_copied_from_the_passage_is_still_likely_unsupported(use_lm):
    """Fitted on WikiBio alone, the answer's copied rest vouched for it: P 0.19 with the LM model (halluc-3.1)."""
    import json
    from pathlib import Path

    passages = json.loads((Path(detectors.__file__).parent / "demo/passages.json").read_text())["passages"]
    text = next(p["text"] for p in passages if p["title"] == "The Kidney and the Nephron")
    copied = ". ".join(text.split(". ")[:2]).strip() + "."
    result = detectors.hallucination_in_memory(
        answer=copied + " It was discovered by Marie Curie in Lisbon in 1931.", sources=[text], alternatives=[],
        use_lm=use_lm)
    assert ("pmi" in result.model.features) is use_lm  # the LM model scores with the LM, the other without
    *kept, invented = result.probabilities
    assert invented >= 0.5 and max(kept) <= 0.2, result.probabilities
    assert [r["copied"] for r in result.rows] == [1.0, 1.0, 0.0] and result.rows[2]["answer_copied_share"] == 1.0
