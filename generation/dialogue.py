"""The tutor/student dialogue that turns a source passage into a sample.

1. The tutor reads a passage and asks one question about it, in a style drawn
   per item (a "why" question, a comparison, a definition...) for variety.
2. The student answers k times, each with its own seed; the first valid answer
   is the sample's answer, the others feed self-consistency checks.
3. Optionally the tutor critiques the answer; the critique is kept in the dialogue.
Every model output is validated: a small model often returns nothing, runs
past its budget, echoes the prompt or lectures instead of asking.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .backends import Backend, Completion, GenerationParams, Message


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

DEFAULT_PROMPTS = Prompts(
    version="default-2",
    tutor_system=(
        "You are a biology tutor. Read the passage and write exactly one short question "
        "that a student can answer from the passage. Ask {style}. Reply with the question only."
    ),
    student_system=(
        "You are a student. Answer the tutor's question about the passage in two or three "
        "plain sentences. Use only facts from the passage."
    ),
    critique_system=(
        "You are a biology tutor. In one or two sentences, say whether the student's answer is "
        "correct according to the passage and what it misses."
    ),
    question_styles=DEFAULT_QUESTION_STYLES,
)

QUESTION_MAX_TOKENS = 64
ANSWER_MAX_TOKENS = 160
MIN_ANSWER_CHARS = 20
MAX_OUTPUT_CHARS = 2000
CRITIQUE_MAX_TOKENS = 96


class InvalidOutput(Exception):
    """A model output that must not become a sample; the message is the reason."""


@dataclass
class DialogueResult:
    question: str
    answer: str
    alt_answers: list[str]
    dialogue: list[dict]  # turns: {"speaker": tutor|student, "kind": question|answer|critique, "content"}
    provenance: dict
    completions: list[Completion] = field(default_factory=list)


def tutor_messages(passage_text: str, prompts: Prompts = DEFAULT_PROMPTS, style: str = "") -> list[Message]:
    style = style or (prompts.question_styles[0] if prompts.question_styles else "a question")
    return [
        {"role": "system", "content": prompts.tutor_system.format(style=style)},
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


def _mostly_latin(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ch.isascii())
    return latin / len(letters) >= 0.9


def _echoes(text: str, prompt: str) -> bool:
    """True when the output is mostly a verbatim copy of a long stretch of the prompt."""
    normalized = " ".join(text.split())
    if len(normalized) < 60:
        return normalized.lower() in {"passage:", "question:"}
    return normalized[:120] in " ".join(prompt.split())


def clean_question(completion: Completion) -> str:
    """Validate the tutor's turn and return the question it asks."""
    text = completion.text.strip()
    if not text:
        raise InvalidOutput("tutor returned an empty question")
    if len(text) > MAX_OUTPUT_CHARS:
        raise InvalidOutput(f"tutor question is over {MAX_OUTPUT_CHARS} characters")
    if not _mostly_latin(text):
        raise InvalidOutput("tutor question is not in English")
    # Take the first sentence that asks something; small models add preambles and answers.
    for candidate in re.split(r"(?<=\?)\s+|\n+", text):
        candidate = candidate.strip().strip('"').strip()
        candidate = re.sub(r"^(question|q)\s*[:.-]\s*", "", candidate, flags=re.IGNORECASE)
        if candidate.endswith("?") and len(candidate) >= 10:
            return candidate
    if completion.finish_reason == "length":
        raise InvalidOutput("tutor question was cut off at the token limit")
    raise InvalidOutput("tutor did not ask a question")


def clean_answer(completion: Completion, prompt: str) -> str:
    """Validate one student answer."""
    text = completion.text.strip()
    if not text:
        raise InvalidOutput("student returned an empty answer")
    if completion.finish_reason == "length":
        # Keep the complete sentences of a cut-off answer, if there are any.
        sentences = re.findall(r"[^.!?]*[.!?]", text)
        text = "".join(sentences).strip()
        if len(text) < MIN_ANSWER_CHARS:
            raise InvalidOutput("student answer was cut off at the token limit")
    if len(text) < MIN_ANSWER_CHARS:
        raise InvalidOutput(f"student answer is shorter than {MIN_ANSWER_CHARS} characters")
    if len(text) > MAX_OUTPUT_CHARS:
        raise InvalidOutput(f"student answer is over {MAX_OUTPUT_CHARS} characters")
    if not _mostly_latin(text):
        raise InvalidOutput("student answer is not in English")
    if _echoes(text, prompt):
        raise InvalidOutput("student answer repeats the prompt")
    return text


def run_dialogue(
    *,
    backend: Backend,
    passage_text: str,
    answers: int,
    temperature: float,
    seed: int,
    prompts: Prompts = DEFAULT_PROMPTS,
    critique: bool = False,
    student_backend: Backend | None = None,
) -> DialogueResult:
    """Ask one question about the passage and collect `answers` student answers.

    `student_backend` answers (the generation's student, e.g. a model trained on
    the last set); the tutor's `backend` asks and critiques. One model plays both
    when it is left out.

    Raises InvalidOutput when the tutor's question or every student answer is unusable.
    A critique that fails validation is left out (and noted); it never sinks the sample.
    """
    styles = prompts.question_styles or DEFAULT_QUESTION_STYLES
    style = random.Random(seed).choice(styles)
    tutor = tutor_messages(passage_text, prompts, style)
    asked = backend.generate(
        tutor, GenerationParams(temperature=temperature, max_tokens=QUESTION_MAX_TOKENS, seed=seed)
    )
    question = clean_question(asked)

    student = student_messages(passage_text, question, prompts)
    prompt_text = "\n".join(m["content"] for m in student)
    completions = [asked]
    valid: list[str] = []
    reasons: list[str] = []
    answerer = student_backend or backend
    for k in range(max(1, answers)):
        completion = answerer.generate(
            student,
            GenerationParams(temperature=temperature, max_tokens=ANSWER_MAX_TOKENS, seed=seed * 1000 + k + 1),
        )
        completions.append(completion)
        try:
            valid.append(clean_answer(completion, prompt_text))
        except InvalidOutput as exc:
            reasons.append(str(exc))
    if not valid:
        raise InvalidOutput("; ".join(sorted(set(reasons))))
    answer, alternatives = valid[0], valid[1:]
    turns = [
        {"speaker": "tutor", "kind": "question", "content": question},
        {"speaker": "student", "kind": "answer", "content": answer},
    ]

    if critique and prompts.critique_system:
        reviewed = backend.generate(
            critique_messages(passage_text, question, answer, prompts),
            GenerationParams(temperature=temperature, max_tokens=CRITIQUE_MAX_TOKENS, seed=seed * 1000),
        )
        completions.append(reviewed)
        text = reviewed.text.strip()
        if text and _mostly_latin(text) and len(text) <= MAX_OUTPUT_CHARS:
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
            "model": asked.model,
            "student_model": completions[1].model if len(completions) > 1 else asked.model,
            "prompt_version": prompts.version,
            "question_style": style,
            "temperature": temperature,
            "seed": seed,
            "latency_ms": sum(c.latency_ms for c in completions),
            "prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "invalid_outputs": reasons,
        },
        completions=completions,
    )
