"""The validators refuse what a small model gets wrong, each with its reason.

Two kinds of cases: outputs of the embedded SmolLM2-135M recorded once
(tests/data/smollm2_outputs.json, written by tests/data/record_smollm2.py,
each labelled by hand with the refusal it deserves or none), and the outputs
the issue quotes from earlier runs of the same model.
"""
import json
from pathlib import Path

import pytest

from curation.management.commands.seed_demo import DEMO_FILE
from generation.backends import Completion
from generation.dialogue import InvalidOutput, clean_answer, clean_question
from generation.dialogue.validators import answer_refusal, echo_share, looks_english, question_refusal

RECORDED = Path(__file__).resolve().parents[1] / "data" / "smollm2_outputs.json"
PASSAGES = [p["text"] for p in json.loads(DEMO_FILE.read_text(encoding="utf-8"))["passages"]]
PHOTOSYNTHESIS = PASSAGES[0]


def recorded(kind: str) -> list[dict]:
    records = json.loads(RECORDED.read_text(encoding="utf-8"))["records"]
    return [r for r in records if r["kind"] == kind and "expect" in r]


def code(refusal) -> str | None:
    return refusal.code if refusal else None


@pytest.mark.parametrize("question,expected", [
    ("What would you like to know next?", "question.meta"),
    ("Do you have any questions about the passage?", "question.meta"),
    ("What is the passage about?", "question.meta"),
    ("What is the answer to the question about how mitosis works?", "question.meta"),  # bench run, 2026-12-01
    ("Why is this important?", "question.off_material"),
    ("What are the main ideas mentioned here?", "question.off_material"),
    ("¿Qué hace la clorofila en las plantas verdes?", "question.language"),
    ("Cellular respiration is the set of reactions cells use to release the energy stored in food?",
     "question.not_interrogative"),
    ("Where in the cell does the Calvin cycle run?", None),
    ("Why do chloroplasts look green?", None),
])
def test_it_refuses_meta_questions_and_questions_about_nothing_in_the_passage(question, expected):
    assert code(question_refusal(question, PHOTOSYNTHESIS)) == expected


@pytest.mark.parametrize("answer,expected", [
    ("I'll make sure to add more details about photosynthesis in the next version.", "answer.meta"),
    ("Here's a revised version of the answer with the light reactions and the Calvin cycle.", "answer.meta"),
    ("The passage explains that plants make sugar. It also mentions chlorophyll.", "answer.meta"),
    ("What do you think happens to the oxygen that plants release?", "answer.question"),
    ("La fotosíntesis es el proceso por el que las plantas capturan la energía de la luz. "
     "Tiene lugar en los cloroplastos.", "answer.language"),
    ("Die Photosynthese findet in den Chloroplasten statt und ist die Quelle des Sauerstoffs in der Luft.",
     "answer.language"),
    ("Photosynthesis is the process by which plants, algae, and some bacteria capture light energy and store "
     "it in the chemical bonds of sugar. In plants it takes place inside chloroplasts, organelles packed with "
     "the green pigment chlorophyll.", "answer.echo"),
    ("Yes.", "answer.short"),
    ("The Calvin cycle runs in the stroma. There rubisco fixes carbon dioxide onto a five-carbon sugar.", None),
    ("Chlorophyll absorbs light in the thylakoid membranes. Water is split and oxygen is released.", None),
])
def test_it_refuses_answers_that_do_not_answer(answer, expected):
    question = "What happens in the two stages of photosynthesis?"
    assert code(answer_refusal(answer, question=question, material=PHOTOSYNTHESIS)) == expected


def test_an_answer_that_repeats_the_question_is_refused():
    question = "Where does the Calvin cycle take place in the chloroplast?"
    refusal = answer_refusal("The Calvin cycle take place in the chloroplast.", question=question,
                             material=PHOTOSYNTHESIS)
    assert code(refusal) == "answer.echo_question"


def test_echo_share_counts_words_in_long_verbatim_runs():
    source = "one two three four five six seven eight nine ten"
    assert echo_share("one two three four five six seven", source) == 1.0
    assert echo_share("one two three nine ten eleven twelve", source) == 0.0


def test_english_with_a_foreign_term_is_still_english():
    assert looks_english("The enzyme rubisco, named from ribulose bisphosphate carboxylase, fixes carbon.")
    assert not looks_english("Le cycle de Calvin se déroule dans le stroma des chloroplastes avec la rubisco.")


def as_completion(record: dict) -> Completion:
    return Completion(text=record["text"], model="SmolLM2-135M-Instruct-Q4_1", finish_reason=record["finish_reason"],
                      prompt_tokens=0, completion_tokens=0, latency_ms=0)


def verdict(call) -> str | None:
    try:
        call()
    except InvalidOutput as exc:
        return exc.code
    return None


def test_recorded_questions_of_the_model_get_the_verdict_written_beside_them():
    cases = recorded("question")
    assert len(cases) >= 10
    for case in cases:
        got = verdict(lambda: clean_question(as_completion(case), PASSAGES[case["passage"]]))
        assert got == case["expect"], case


def test_recorded_answers_of_the_model_get_the_verdict_written_beside_them():
    cases = recorded("answer")
    assert len(cases) >= 12
    for case in cases:
        material = PASSAGES[case["passage"]]
        prompt = f"Passage:\n{material}\n\nQuestion: {case['question']}"
        got = verdict(lambda: clean_answer(as_completion(case), prompt, question=case["question"], material=material))
        assert got == case["expect"], case
