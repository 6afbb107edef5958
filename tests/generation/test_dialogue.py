"""Output validation: what a small model gets wrong must never become a sample."""
import pytest

from generation.backends import Completion
from generation.backends.fake import FakeBackend
from generation.dialogue import DEFAULT_QUESTION_STYLES, InvalidOutput, clean_answer, clean_question, run_dialogue


def completion(text: str, finish_reason: str = "stop") -> Completion:
    return Completion(text=text, model="m", finish_reason=finish_reason, prompt_tokens=1, completion_tokens=1,
                      latency_ms=1)


def test_it_takes_the_question_out_of_a_chatty_tutor_turn():
    text = "Sure! Here is a question.\nQuestion: What do ribosomes build from amino acids? They build proteins."
    assert clean_question(completion(text)) == "What do ribosomes build from amino acids?"


@pytest.mark.parametrize(
    "text,finish,reason",
    [
        ("", "stop", "empty"),
        ("Photosynthesis converts light into chemical energy.", "stop", "did not ask"),
        ("Was ist die Funktion der Mitochondrien im Zellstoffwechsel und warum", "length", "cut off"),
        ("Что такое фотосинтез и зачем он нужен растениям?", "stop", "not in English"),
    ],
)
def test_it_rejects_bad_tutor_turns_with_a_reason(text, finish, reason):
    with pytest.raises(InvalidOutput, match=reason):
        clean_question(completion(text, finish))


def test_a_cut_off_answer_keeps_its_complete_sentences():
    text = "Mitochondria release energy from glucose. They make ATP for the cell. And then the"
    assert clean_answer(completion(text, "length"), "prompt") == (
        "Mitochondria release energy from glucose. They make ATP for the cell."
    )


@pytest.mark.parametrize(
    "text,finish,reason",
    [
        ("   ", "stop", "empty"),
        ("Yes.", "stop", "shorter"),
        ("and then the cell", "length", "cut off"),
        ("x" * 2100 + ".", "stop", "over"),
    ],
)
def test_it_rejects_bad_answers_with_a_reason(text, finish, reason):
    with pytest.raises(InvalidOutput, match=reason):
        clean_answer(completion(text, finish), "prompt")


def test_it_rejects_an_answer_that_echoes_the_prompt():
    prompt = "Passage:\n" + "Cells divide by mitosis to make two identical daughter cells for growth and repair. " * 3
    with pytest.raises(InvalidOutput, match="repeats the prompt"):
        clean_answer(completion(prompt.split("\n", 1)[1]), prompt)


def test_a_dialogue_records_its_provenance_and_alternative_answers():
    result = run_dialogue(
        backend=FakeBackend(), passage_text="Chloroplasts capture sunlight for photosynthesis in leaves.",
        answers=3, temperature=0.5, seed=11,
    )
    assert result.question.endswith("?")
    assert len(result.alt_answers) == 2
    assert result.provenance["backend"] == "fake"
    assert result.provenance["seed"] == 11
    assert result.dialogue == [
        {"speaker": "tutor", "kind": "question", "content": result.question},
        {"speaker": "student", "kind": "answer", "content": result.answer},
    ]
    assert result.provenance["question_style"] in DEFAULT_QUESTION_STYLES


def test_the_critique_turn_is_kept_in_the_dialogue_when_the_lineage_wants_it():
    result = run_dialogue(
        backend=FakeBackend(), passage_text="Ribosomes translate messenger RNA into proteins in the cytoplasm.",
        answers=1, temperature=0.5, seed=5, critique=True,
    )
    assert [turn["kind"] for turn in result.dialogue] == ["question", "answer", "critique"]
    assert result.dialogue[2]["speaker"] == "tutor" and result.dialogue[2]["content"]


def test_question_styles_vary_with_the_seed():
    styles = {
        run_dialogue(backend=FakeBackend(), passage_text="Enzymes lower activation energy of reactions.",
                     answers=1, temperature=0.5, seed=seed).provenance["question_style"]
        for seed in range(30)
    }
    assert len(styles) >= 4


PASSAGE = ("Ribosomes build proteins from amino acids. They read messenger RNA three bases at a time and join "
           "the amino acids that transfer RNA brings in the order the codons give.")


def test_a_structured_turn_is_read_from_its_json():
    assert clean_question(completion('{"question": "What do ribosomes read?"}'), PASSAGE) == "What do ribosomes read?"
    assert clean_answer(completion('{ "answer": "Ribosomes read messenger RNA. They join amino acids."}'),
                        "prompt", question="What do ribosomes read?", material=PASSAGE) == (
        "Ribosomes read messenger RNA. They join amino acids.")


def test_a_structured_turn_cut_off_inside_its_json_is_refused_as_cut_off():
    with pytest.raises(InvalidOutput, match="cut off") as caught:
        clean_answer(completion('{"answer": "Ribosomes read messenger RNA and', "length"), "prompt",
                     question="q?", material=PASSAGE)
    assert caught.value.code == "answer.cut_off"


def test_plain_text_from_a_server_that_ignores_the_schema_is_still_parsed():
    assert clean_question(completion("Sure! What do ribosomes read? They read RNA."), PASSAGE) == (
        "What do ribosomes read?")
    answer = clean_answer(completion("Ribosomes read messenger RNA. They join amino acids. Transfer RNA brings "
                                     "them. Codons give the order."), "prompt", question="q?", material=PASSAGE)
    assert answer == "Ribosomes read messenger RNA. They join amino acids. Transfer RNA brings them."


def test_the_dialogue_asks_each_turn_with_its_schema():
    from generation.dialogue import schemas

    seen = []

    class Recording(FakeBackend):
        def generate(self, messages, params):
            seen.append(params.json_schema)
            return super().generate(messages, params)

    run_dialogue(backend=Recording(), passage_text=PASSAGE, answers=2, temperature=0.5, seed=1)
    assert seen == [schemas.QUESTION, schemas.ANSWER, schemas.ANSWER]


def test_a_refused_question_is_asked_again_with_a_new_seed_and_every_refusal_is_kept():
    replies = iter(['{"question": "What would you like to know next?"}', '{"question": "What do ribosomes read?"}',
                    '{"answer": "I will add more details about ribosomes later. They are small."}',
                    '{"answer": "Ribosomes read messenger RNA. They join amino acids in order."}'])
    seeds = []

    class Scripted(FakeBackend):
        def generate(self, messages, params):
            seeds.append(params.seed)
            return completion(next(replies))

    result = run_dialogue(backend=Scripted(), passage_text=PASSAGE, answers=2, temperature=0.5, seed=9)
    assert result.question == "What do ribosomes read?"
    assert result.answer == "Ribosomes read messenger RNA. They join amino acids in order."
    assert result.refusals == ["question.meta", "answer.meta"]
    assert seeds[0] != seeds[1], "the question is asked again with another seed"
    assert any("meta-question" in reason for reason in result.provenance["invalid_outputs"])


def test_a_failed_attempt_carries_its_completions_and_refusals():
    class Lecturing(FakeBackend):
        def generate(self, messages, params):
            return completion('{"question": "What would you like to know next?"}')

    with pytest.raises(InvalidOutput) as caught:
        run_dialogue(backend=Lecturing(), passage_text=PASSAGE, answers=1, temperature=0.5, seed=9)
    assert caught.value.code == "question.meta"
    assert caught.value.refusals == ["question.meta", "question.meta"]
    assert len(caught.value.completions) == 2
