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
    evidence = result.evidence(threshold=p[2])
    [flagged] = evidence["unsupported"]
    assert flagged["sentence"].endswith("14 elements in Lisbon.")
    assert "the number 14 is not in the passage" in flagged["reasons"]
    assert "the name 'lisbon' is not in the passage" in flagged["reasons"]
    assert evidence["sentences"][2]["signals"]["missing_numbers"] == 1.0


def test_the_pair_model_scores_a_paraphrase_above_a_neighbour_with_other_facts():
    paraphrase = detectors.duplicate_pair_score("A man is playing a guitar.", "A man plays the guitar.")
    neighbour = detectors.duplicate_pair_score("A man is playing a guitar.", "A woman is playing a violin on stage.")
    assert 0.0 <= neighbour < paraphrase <= 1.0
    assert detectors.duplicate_score(cosine=0.7, jaccard=0.95) == 0.95  # without texts: the old max


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
