"""The tutor/student dialogue that turns the tutor's material into a sample.

1. The tutor reads its material (a real passage, or an accepted question and
   answer of an earlier generation when the item is seeded) and asks one
   question about it, in a style drawn per item, optionally after a few
   accepted questions shown as style examples.
2. The student answers k times, each with its own seed; the first valid answer
   is the sample's answer, the others feed self-consistency checks.
3. Optionally the tutor critiques the answer; the critique is kept in the dialogue.

Both turns are asked with a JSON schema (`schemas`): a backend that can
constrain decoding to it (llama.cpp's grammar, an OpenAI-compatible server's
structured outputs) returns one question ending in "?" and two or three
declarative sentences; a server that ignores the schema returns plain text,
which is parsed the old way. Either way every turn then passes the
validators (`validators`), which refuse what is well-shaped but useless.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from generation.backends import Backend, Completion, GenerationParams, Message

from . import schemas
from .validators import (
    MAX_OUTPUT_CHARS,
    MIN_ANSWER_CHARS,
    MIN_QUESTION_CHARS,
    InvalidOutput,
    answer_refusal,
    mostly_latin,
    question_refusal,
)


@dataclass(frozen=True)
class Prompts:
    """The words of one prompt version; `tutor_system` may use {style}."""

    version: str
    tutor_system: str
    student_system: str
    critique_system: str = ""
    question_styles: tuple[str, ...] = ()


DEFAULT_QUESTION_STYLES = (
    "a factual question about one specific detail",
    "a 'why' question about a cause or a reason",
    "a 'how' question about a process or mechanism",
    "a question that compares two things the passage mentions",
    "a question asking what a key term in the passage means",
    "a question about what would change if one condition in the passage were different",
)

DEFAULT_STUDENT_SYSTEM = (
    "You are a student. Answer the question in two or three short, plain sentences, using only facts "
    "from the passage. State the facts directly; do not mention the passage, the question or yourself."
)

DEFAULT_PROMPTS = Prompts(
    version="default-2",
    tutor_system=(
        "You are a tutor. Read the passage and write exactly one short question "
        "that a student can answer from the passage. Ask {style}. Reply with the question only."
    ),
    student_system=DEFAULT_STUDENT_SYSTEM,
    critique_system=(
        "You are a tutor. In one or two sentences, say whether the student's answer is "
        "correct according to the passage and what it misses."
    ),
    question_styles=DEFAULT_QUESTION_STYLES,
)

QUESTION_MAX_TOKENS = 64
ANSWER_MAX_TOKENS = 160
CRITIQUE_MAX_TOKENS = 96
QUESTION_TRIES = 2  # a refused question is asked again with a new seed before any answer is spent on it


@dataclass
class DialogueResult:
    question: str
    answer: str
    alt_answers: list[str]
    dialogue: list[dict]  # turns: {"speaker": tutor|student, "kind": question|answer|critique, "content"}
    provenance: dict
    completions: list[Completion] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # reason codes of every output refused on the way


def _style_block(examples: list[str]) -> str:
    if not examples:
        return ""
    lines = "\n".join(f"- {q}" for q in examples)
    return f"\n\nQuestions asked before, for their style only (ask something new):\n{lines}"


def tutor_messages(passage_text: str, prompts: Prompts = DEFAULT_PROMPTS, style: str = "",
                   examples: list[str] | None = None) -> list[Message]:
    style = style or (prompts.question_styles[0] if prompts.question_styles else "a question")
    return [
        {"role": "system", "content": prompts.tutor_system.format(style=style) + _style_block(examples or [])},
        {"role": "user", "content": f"Passage:\n{passage_text}"},
    ]


def student_messages(passage_text: str, question: str, prompts: Prompts = DEFAULT_PROMPTS) -> list[Message]:
    return [
        {"role": "system", "content": prompts.student_system},
        {"role": "user", "content": f"Passage:\n{passage_text}\n\nQuestion: {question}"},
    ]


def critique_messages(passage_text: str, question: str, answer: str, prompts: Prompts) -> list[Message]:
    return [
        {"role": "system", "content": prompts.critique_system},
        {"role": "user", "content": f"Passage:\n{passage_text}\n\nQuestion: {question}\n\nStudent's answer: {answer}"},
    ]


def _echoes(text: str, prompt: str) -> bool:
    """True when the output is mostly a verbatim copy of a long stretch of the prompt."""
    normalized = " ".join(text.split())
    if len(normalized) < 60:
        return normalized.lower() in {"passage:", "question:"}
    return normalized[:120] in " ".join(prompt.split())


def clean_question(completion: Completion, material: str = "") -> str:
    """Validate the tutor's turn and return the question it asks.

    A constrained backend returns {"question": "..."}; anything else is read
    as plain text, where the first sentence that asks something is taken
    (small models add preambles and answers). With `material`, the question
    must also pass `question_refusal`.
    """
    text = completion.text.strip()
    if not text:
        raise InvalidOutput("tutor returned an empty question", code="question.empty")
    if len(text) > MAX_OUTPUT_CHARS:
        raise InvalidOutput(f"tutor question is over {MAX_OUTPUT_CHARS} characters", code="question.long")
    structured = schemas.field_of(text, "question")
    if structured is None and text.startswith("{") and completion.finish_reason == "length":
        raise InvalidOutput("tutor question was cut off at the token limit", code="question.cut_off")
    if not mostly_latin(structured or text):
        raise InvalidOutput("tutor question is not in English", code="question.language")
    question = ""
    # The first stretch that ends in "?", after any sentence before it ("Sure! What ...?").
    for candidate in re.findall(r"[^.!?\n]+\?", structured if structured is not None else text):
        candidate = candidate.strip().strip('"').strip()
        candidate = re.sub(r"^(question|q)\s*[:.-]\s*", "", candidate, flags=re.IGNORECASE)
        if candidate.endswith("?") and len(candidate) >= MIN_QUESTION_CHARS:
            question = candidate
            break
    if not question:
        if completion.finish_reason == "length":
            raise InvalidOutput("tutor question was cut off at the token limit", code="question.cut_off")
        raise InvalidOutput("tutor did not ask a question", code="question.not_a_question")
    if material:
        refusal = question_refusal(question, material)
        if refusal:
            raise InvalidOutput(refusal.message, code=refusal.code)
    return question


def clean_answer(completion: Completion, prompt: str, *, question: str = "", material: str = "") -> str:
    """Validate one student answer and return it.

    A constrained backend returns {"answer": "..."}; plain text is taken as
    the answer, cut to its first three sentences. With `material`, the answer
    must also pass `answer_refusal`.
    """
    text = completion.text.strip()
    if not text:
        raise InvalidOutput("student returned an empty answer", code="answer.empty")
    structured = schemas.field_of(text, "answer")
    if structured is not None:
        text = structured.strip()
    elif text.startswith("{") and completion.finish_reason == "length":
        raise InvalidOutput("student answer was cut off at the token limit", code="answer.cut_off")
    elif completion.finish_reason == "length":
        # Keep the complete sentences of a cut-off answer, if there are any.
        sentences = re.findall(r"[^.!?]*[.!?]", text)
        text = "".join(sentences).strip()
        if len(text) < MIN_ANSWER_CHARS:
            raise InvalidOutput("student answer was cut off at the token limit", code="answer.cut_off")
    if structured is None:
        sentences = re.findall(r"[^.!?]+[.!?]+", text)
        if len(sentences) > 3:
            text = "".join(sentences[:3]).strip()
    if len(text) < MIN_ANSWER_CHARS:
        raise InvalidOutput(f"student answer is shorter than {MIN_ANSWER_CHARS} characters", code="answer.short")
    if len(text) > MAX_OUTPUT_CHARS:
        raise InvalidOutput(f"student answer is over {MAX_OUTPUT_CHARS} characters", code="answer.long")
    if not mostly_latin(text):
        raise InvalidOutput("student answer is not in English", code="answer.language")
    if _echoes(text, prompt):
        raise InvalidOutput("student answer repeats the prompt", code="answer.echo")
    if material:
        refusal = answer_refusal(text, question=question, material=material)
        if refusal:
            raise InvalidOutput(refusal.message, code=refusal.code)
    return text


def _ask(backend: Backend, messages: list[Message], *, temperature: float, max_tokens: int, seed: int,
         schema: dict | None) -> Completion:
    return backend.generate(
        messages, GenerationParams(temperature=temperature, max_tokens=max_tokens, seed=seed, json_schema=schema)
    )


def run_dialogue(
    *,
    backend: Backend,
    passage_text: str,
    answers: int,
    temperature: float,
    seed: int,
    prompts: Prompts = DEFAULT_PROMPTS,
    critique: bool = False,
    examples: list[str] | None = None,
    student_backend: Backend | None = None,
) -> DialogueResult:
    """Ask one question about the material and collect `answers` student answers.

    `student_backend` answers (the generation's student, e.g. a model trained on
    the last set); the tutor's `backend` asks and critiques. One model plays both
    when it is left out.

    Raises InvalidOutput when the tutor's question (after QUESTION_TRIES seeds)
    or every student answer is unusable; the exception carries the attempt's
    completions and the code of every refusal. A critique that fails
    validation is left out (and noted); it never sinks the sample.
    """
    styles = prompts.question_styles or DEFAULT_QUESTION_STYLES
    style = random.Random(seed).choice(styles)
    tutor = tutor_messages(passage_text, prompts, style, examples)
    completions: list[Completion] = []
    refusals: list[str] = []
    reasons: list[str] = []
    question = ""
    for q_try in range(QUESTION_TRIES):
        asked = _ask(backend, tutor, temperature=temperature, max_tokens=QUESTION_MAX_TOKENS,
                     seed=(seed + q_try * 104_729) % (2**31), schema=schemas.QUESTION)
        completions.append(asked)
        try:
            question = clean_question(asked, passage_text)
            break
        except InvalidOutput as exc:
            refusals.append(exc.code)
            reasons.append(str(exc))
            if q_try == QUESTION_TRIES - 1:
                raise InvalidOutput(str(exc), code=exc.code, completions=completions, refusals=refusals) from None

    student = student_messages(passage_text, question, prompts)
    prompt_text = "\n".join(m["content"] for m in student)
    valid: list[str] = []
    answerer = student_backend or backend
    first_answer = len(completions)
    for k in range(max(1, answers)):
        completion = _ask(answerer, student, temperature=temperature, max_tokens=ANSWER_MAX_TOKENS,
                          seed=(seed * 1000 + k + 1) % (2**31), schema=schemas.ANSWER)
        completions.append(completion)
        try:
            valid.append(clean_answer(completion, prompt_text, question=question, material=passage_text))
        except InvalidOutput as exc:
            refusals.append(exc.code)
            reasons.append(str(exc))
    if not valid:
        answer_reasons = sorted({r for r in reasons if r.startswith("student")})
        raise InvalidOutput("; ".join(answer_reasons), code=refusals[-1], completions=completions,
                            refusals=refusals)
    answer, alternatives = valid[0], valid[1:]
    turns = [
        {"speaker": "tutor", "kind": "question", "content": question},
        {"speaker": "student", "kind": "answer", "content": answer},
    ]

    if critique and prompts.critique_system:
        reviewed = _ask(backend, critique_messages(passage_text, question, answer, prompts),
                        temperature=temperature, max_tokens=CRITIQUE_MAX_TOKENS, seed=(seed * 1000) % (2**31),
                        schema=None)
        completions.append(reviewed)
        text = reviewed.text.strip()
        if text and mostly_latin(text) and len(text) <= MAX_OUTPUT_CHARS:
            turns.append({"speaker": "tutor", "kind": "critique", "content": text})
        else:
            reasons.append("critique left out: empty, not English or too long")

    return DialogueResult(
        question=question,
        answer=answer,
        alt_answers=alternatives,
        dialogue=turns,
        provenance={
            "backend": backend.name,
            "model": completions[0].model,
            "student_model": completions[first_answer].model,
            "prompt_version": prompts.version,
            "question_style": style,
            "temperature": temperature,
            "seed": seed,
            "latency_ms": sum(c.latency_ms for c in completions),
            "prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "invalid_outputs": reasons,
            "refusals": refusals,
            "style_examples": list(examples or []),
        },
        completions=completions,
        refusals=refusals,
    )


__all__ = [
    "DEFAULT_PROMPTS",
    "DEFAULT_QUESTION_STYLES",
    "DEFAULT_STUDENT_SYSTEM",
    "MIN_ANSWER_CHARS",
    "DialogueResult",
    "InvalidOutput",
    "Prompts",
    "clean_answer",
    "clean_question",
    "critique_messages",
    "run_dialogue",
    "student_messages",
    "tutor_messages",
]
