"""What a model output must be to become part of a sample: pure functions on text.

A 135M model lectures instead of asking, asks the reader what they would like
to know next, answers with "I'll make sure to add more details", drifts into
French or copies the passage back. Constrained decoding (see `schemas`) fixes
the shape of a turn; these checks refuse what is well-shaped but useless, each
with a reason code (for counting) and a message (for people). They take only
strings, so they are tested on recorded outputs of the real model
(tests/data/smollm2_outputs.json) without loading it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MIN_QUESTION_CHARS = 10
MIN_ANSWER_CHARS = 20
MAX_OUTPUT_CHARS = 2000


class InvalidOutput(Exception):
    """A model output that must not become a sample.

    `code` names the rule (e.g. "question.meta") so refusals can be counted;
    the message says what was wrong. `completions` carries the completions of
    the attempt that failed, so their tokens are counted too.
    """

    def __init__(self, message: str, *, code: str = "invalid", completions: list | None = None,
                 refusals: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.completions = list(completions or [])
        # Every refusal of the attempt, kept or not: the answers refused before the last one too.
        self.refusals = list(refusals or [code])


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


# Function words: English text is full of them, other languages (written in
# Latin letters) have their own. Counting both tells a drift into Spanish or
# German apart from English, where a letter-script check cannot.
ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the of to in on at by for from with into onto about as is are was were be been being it its this that "
    "these those and or but not no than then so if because which who whom whose what when where why how can could "
    "may might must will would shall should do does did has have had there their they them he she his her we our "
    "you your i my me also each every both such only more most other some any all one two three".split()
)
OTHER_FUNCTION_WORDS = frozenset(
    # Spanish, French, German, Italian, Portuguese, Dutch: frequent words that are not English words.
    "el los las del una unos por para con como pero más es está son también que se su sus "
    "le les des une du est sont avec pour dans sur pas qui ce cette aussi mais ou très "
    "der die das und ist nicht ein eine mit von zu den dem auf für sich auch werden wird "
    "il lo gli della delle che sono anche per una non è "
    "os da das dos em um uma não são também "
    "het een van en ook niet zijn".split()
) - ENGLISH_FUNCTION_WORDS

# Words that name no content of any passage: a question built only of these
# (plus function words) asks about nothing in particular.
GENERIC_WORDS = frozenset(
    "passage text article paragraph author tutor student question questions answer answers topic topics "
    "thing things something anything everything way ways kind kinds type types part parts main key important "
    "example examples information fact facts idea ideas point points mentioned mention mentions describe "
    "described describes explain explained explains discuss discussed discusses say says said tell told "
    "know known like want next learn learned understand mean means meaning happen happens happened "
    "role roles play plays purpose reason reasons process processes difference differences between "
    "different same first second last called name named term terms word words define definition "
    "according based given provided use used uses using make makes made help helps affect affects "
    "would could should might also more most less many much very well just really please sure".split()
)

META_QUESTION = re.compile(
    r"\b(would you like|do you (?:want|have|know|think)|can i\b|may i\b|shall (?:i|we)\b|anything else|"
    r"any (?:other |more |further )?questions|know next|learn next|discuss next|talk about next|"
    r"help you|tell me (?:about yourself|more)|what (?:else|is next)|your (?:question|opinion|thoughts)|"
    r"this conversation|our conversation|the (?:tutor|student)\b|the answer to (?:the|this|that) question|"
    r"the question (?:about|above)|(?:this|the) (?:passage|text|article) "
    r"(?:about|mainly about)\??$)",
    re.IGNORECASE,
)

# An answer that talks about itself, the conversation or the passage instead of answering.
META_ANSWER = re.compile(
    r"(\bI(?:'ll|'m|'d|'ve| will| am| would| have| can| hope| think)\b|\bI\b(?=\s+[a-z])|\blet me\b|"
    r"\bhere(?:'s| is| are)\b|\brevised\b|\brewrite\b|\brephrase\b|\bas an ai\b|\blanguage model\b|"
    r"\b(?:great|good|excellent|interesting) question\b|\byour question\b|\bthe question\b|\bthis question\b|"
    r"\bthe (?:passage|text|article|author|tutor|paragraph)\b|\bthis (?:passage|text|article|paragraph)\b|"
    r"\bconversation\b|\bfeel free\b|\bmore details\b|\bin summary\b|\bto summarize\b|"
    r"\bmake sure to\b|\bhappy to\b|\bglad to\b)",
    re.IGNORECASE,
)

WORD = re.compile(r"[A-Za-zÀ-ÿ]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def _stem(word: str) -> str:
    """A crude stem, enough to match "chloroplasts" with "chloroplast" and "dividing" with "divide"."""
    for suffix in ("ies", "es", "s", "ing", "ed", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:7]


def content_stems(text: str) -> set[str]:
    """The stems of the words that carry content: not function words, not generic ones, 4+ letters."""
    return {
        _stem(w) for w in words(text)
        if len(w) >= 4 and w not in ENGLISH_FUNCTION_WORDS and w not in GENERIC_WORDS
    }


def mostly_latin(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ch.isascii())
    return latin / len(letters) >= 0.9


def looks_english(text: str) -> bool:
    """Latin letters, and not more of another language's function words than of English ones.

    Short technical English ("Ribosomes read messenger RNA.") has few function
    words of either kind, so it is the other languages' that decide; a long
    text with no English function word at all is not English either.
    """
    if not mostly_latin(text):
        return False
    tokens = words(text)
    english = sum(1 for w in tokens if w in ENGLISH_FUNCTION_WORDS)
    other = sum(1 for w in tokens if w in OTHER_FUNCTION_WORDS)
    if other >= 2 and other > english:
        return False
    return english > 0 or len(tokens) < 10


def _normalize(text: str) -> str:
    return " ".join(words(text))


def echo_share(text: str, source: str, *, run: int = 6) -> float:
    """The share of the text's words that lie in runs of `run`+ words copied verbatim from `source`."""
    tokens = words(text)
    if len(tokens) < run:
        return 1.0 if tokens and " ".join(tokens) in _normalize(source) else 0.0
    source_grams = set()
    source_tokens = words(source)
    for i in range(len(source_tokens) - run + 1):
        source_grams.add(tuple(source_tokens[i:i + run]))
    covered = [False] * len(tokens)
    for i in range(len(tokens) - run + 1):
        if tuple(tokens[i:i + run]) in source_grams:
            for j in range(i, i + run):
                covered[j] = True
    return sum(covered) / len(tokens)


INTERROGATIVE_START = re.compile(
    r"^(?:what|why|how|which|where|when|who|whom|whose|in what|in which|is|are|was|were|does|do|did|can|could|"
    r"would|will|should|has|have|had|if)\b",
    re.IGNORECASE,
)


def question_refusal(question: str, material: str) -> Refusal | None:
    """Why a well-formed question must not be asked, or None when it may.

    Refused: statements with a question mark stuck on (often a copy of the
    passage), meta-questions (about the conversation, what the reader wants
    next, what the passage is about) and questions that name no content word
    of the material.
    """
    if not looks_english(question):
        return Refusal("question.language", "tutor question is not in English")
    if not INTERROGATIVE_START.match(question.strip()):
        return Refusal("question.not_interrogative", f"tutor question does not ask anything: {question[:120]!r}")
    if META_QUESTION.search(question):
        return Refusal("question.meta", f"tutor asked a meta-question: {question[:120]!r}")
    asked = content_stems(question)
    if not asked & content_stems(material):
        return Refusal("question.off_material", f"tutor question names nothing from the passage: {question[:120]!r}")
    return None


def answer_refusal(answer: str, *, question: str, material: str) -> Refusal | None:
    """Why a well-formed answer must not be kept, or None when it may.

    Refused: answers that are questions, that talk about the passage or the
    conversation instead of answering, that drift into another language, that
    only echo the passage (or the question), and answers too short to say anything.
    """
    if len(answer) < MIN_ANSWER_CHARS:
        return Refusal("answer.short", f"student answer is shorter than {MIN_ANSWER_CHARS} characters")
    if len(answer) > MAX_OUTPUT_CHARS:
        return Refusal("answer.long", f"student answer is over {MAX_OUTPUT_CHARS} characters")
    if "?" in answer:
        return Refusal("answer.question", "student answer asks a question instead of answering")
    if not looks_english(answer):
        return Refusal("answer.language", "student answer drifts into another language")
    meta = META_ANSWER.search(answer)
    if meta:
        return Refusal("answer.meta",
                       f"student answer talks about the passage or the conversation ({meta.group(0)!r})")
    if echo_share(answer, question, run=4) >= 0.8:
        return Refusal("answer.echo_question", "student answer only repeats the question")
    tokens = words(answer)
    if len(tokens) >= 12 and echo_share(answer, material) >= 0.9:
        return Refusal("answer.echo", "student answer only echoes the passage")
    return None
