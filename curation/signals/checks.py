"""Mismatch checks and de-contextualisation on plain strings.

A sentence that names a number, a year, a month or a proper name its source
does not contain is the classic invented detail: embeddings place "born 1958"
and "born 1985" side by side, and a 135M language model barely notices either.
These checks report *which* tokens are missing, so the review card can say
"the number 14 is not in the passage".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from curation import lexical

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_PRONOUNS = {"he": "", "she": "", "they": "", "his": "'s", "her": "'s", "their": "'s"}
# Capitalised words that name no fact: sentence openers and function words written with a capital.
_NOT_NAMES = frozenset(
    """the a an he she it they his her their its this that these those in on at of for with by from as and but or
    after before during since until while when where who which what however also later today i we our you
    mr mrs ms dr st""".split()
) | set(MONTHS)


def numbers(text: str) -> list[str]:
    """Numbers as written, normalised ("1,200" → "1200", "3.0" → "3"), in order, without repeats."""
    out = []
    for raw in _NUMBER.findall(text):
        value = raw.replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".") or "0"
        if value not in out:
            out.append(value)
    return out


def months(text: str) -> list[str]:
    found = []
    for word in lexical.tokens(text):
        if word in MONTHS and word not in found:
            found.append(word)
    # "may" is mostly a verb: count it only beside a number ("May 4", "4 May", "May 1990").
    if "may" in found and not re.search(r"\bMay\s+\d|\d\s+May\b", text):
        found.remove("may")
    return found


def names(text: str) -> list[str]:
    """Capitalised words that are not sentence-initial function words: names, places, nationalities, titles."""
    out = []
    for match in _WORD.finditer(text):
        word = match.group(0)
        if not word[0].isupper() or word.lower() in _NOT_NAMES:
            continue
        base = word.lower().removesuffix("'s")
        if base not in out:
            out.append(base)
    return out


@dataclass(frozen=True)
class Mismatch:
    """What a sentence states that its source does not contain."""

    numbers: list[str] = field(default_factory=list)
    months: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sentence_numbers: int = 0
    sentence_names: int = 0

    def describe(self) -> list[str]:
        parts = [f"the number {n} is not in the passage" for n in self.numbers]
        parts += [f"{m.capitalize()} is not in the passage" for m in self.months]
        parts += [f"the name {n!r} is not in the passage" for n in self.names]
        return parts


def mismatch(sentence: str, source: str) -> Mismatch:
    """Numbers, months and names of `sentence` that `source` lacks (case-insensitive, whole words)."""
    source_numbers = set(numbers(source))
    source_words = {w.removesuffix("'s") for w in re.findall(r"[a-z][a-z'\-]*", source.lower())}
    source_months = set(months(source)) | ({"may"} if "may" in source_words else set())
    sentence_names = names(sentence)
    return Mismatch(
        numbers=[n for n in numbers(sentence) if n not in source_numbers],
        months=[m for m in months(sentence) if m not in source_months],
        names=[n for n in sentence_names if n not in source_words],
        sentence_numbers=len(numbers(sentence)),
        sentence_names=len(sentence_names),
    )


def subject(first_sentence: str) -> str:
    """The name a biography-like answer is about: the leading run of capitalised words of its first sentence."""
    words = []
    for word in first_sentence.split():
        clean = word.strip(",;:()\"'")
        if not clean or not clean[0].isupper() or clean.lower() in _NOT_NAMES:
            break
        words.append(clean)
        if word != clean:  # "Hughes," or "Hughes (born": the name ends at the punctuation
            break
    return " ".join(words)


def decontextualise(sentences: list[str]) -> list[str]:
    """Make each sentence stand alone: a leading He/She/They (His/Her/Their) becomes the answer's subject.

    "He released six albums." says nothing checkable on its own; "Brian Hughes
    released six albums." can be retrieved and compared. The first sentence
    names the subject; sentences without a leading pronoun are left unchanged.
    """
    if not sentences:
        return []
    name = subject(sentences[0])
    if not name:
        return list(sentences)
    out = [sentences[0]]
    for sentence in sentences[1:]:
        first, _, rest = sentence.partition(" ")
        suffix = _PRONOUNS.get(first.lower())
        out.append(f"{name}{suffix} {rest}" if suffix is not None and rest else sentence)
    return out


_WORDS = re.compile(r"\w+")


@lru_cache(maxsize=8192)
def _words(text: str) -> str:
    """The text's words, lower-cased, one space apart. Cached: a passage's chunks are checked against every
    sentence of every sample of that passage."""
    return " ".join(_WORDS.findall(text.lower()))


def copied(sentence: str, texts: list[str]) -> bool:
    """Whether the sentence stands word for word in one of the texts (case, spacing and punctuation aside).

    A student that copies its passage writes such sentences; the answer-level
    features must not let them vouch for the answer's other sentences.
    """
    words = _words(sentence)
    return bool(words) and any(words in _words(t) for t in texts)
