"""Answers that copy their passage and add one sentence: hallucination training rows the public set lacks.

WikiBio's answers are GPT-3 biographies: no sentence of them is copied from
the Wikipedia lead they are judged against. A student answering from a
passage often copies it, and adds a sentence of its own. Fitted on WikiBio
alone, the answer-level features (the answer's mean coverage, mean PMI…)
then vouch for the added sentence: with its rest copied, an invented sentence
looked like a supported one (P 0.13 with the LM model fitted on WikiBio
alone, against the 0.30 threshold).

So the default hallucination model is also fitted on answers *built* from
the public set's own: `copied` consecutive sentences of the passage, as
written (label 0: the passage states them), with one of the public set's
sentences put among them at a random place (its own label). Per passage, one
built answer for an accurate sentence and one for an inaccurate one, when it
has them. A built answer carries its passage's group, so it sits in that
passage's cross-validation fold and no sentence is in training and test at
once. Seeded: the same input gives the same answers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from curation.similarity import split_sentences

MIN_WORDS = 4  # passage sentences shorter than this (headings, fragments) are not copied


@dataclass(frozen=True)
class SourceAnswer:
    source: str
    sentences: list[str]
    labels: list[int]
    group: int


@dataclass(frozen=True)
class BuiltAnswer:
    source: str
    sentences: list[str]
    labels: list[int]
    added: int  # the index of the public set's sentence among `sentences`
    group: int


def build(answers: list[SourceAnswer], *, copied: int = 2, seed: int = 15) -> list[BuiltAnswer]:
    """Up to two built answers per source answer (one per label it has), in the source answers' order."""
    if copied < 1:
        raise ValueError(f"a built answer copies at least one passage sentence, got copied={copied}")
    rng = random.Random(seed)
    out = []
    for answer in answers:
        if len(answer.sentences) != len(answer.labels):
            raise ValueError(f"answer of group {answer.group}: {len(answer.sentences)} sentences but "
                             f"{len(answer.labels)} labels")
        passage = split_sentences(answer.source)
        starts = [i for i in range(len(passage) - copied + 1)
                  if all(len(s.split()) >= MIN_WORDS for s in passage[i : i + copied])]
        if not starts:
            continue
        for label in (0, 1):
            which = [i for i, value in enumerate(answer.labels) if value == label]
            if not which:
                continue
            sentence = answer.sentences[rng.choice(which)]
            start = rng.choice(starts)
            at = rng.randrange(copied + 1)
            kept = passage[start : start + copied]
            out.append(BuiltAnswer(answer.source, kept[:at] + [sentence] + kept[at:],
                                   [0] * at + [label] + [0] * (copied - at), at, answer.group))
    return out
