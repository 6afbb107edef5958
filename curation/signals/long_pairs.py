"""Sample-shaped (multi-sentence) near-duplicate pairs built from labelled sentence pairs such as STS-B's.

STS-B pairs are one short sentence each; the flagging service compares a
question + answer of a few sentences. No public labelled set of such pairs may
be used here, so the default pair model is also fitted on pairs *built* from
STS-B's own: texts of k sentences whose i-th sentences are an STS-B pair.

A built pair's score is the mean of its sentence pairs' STS scores (0–5; a
sentence repeated as it is scores 5), and it is positive when that mean is at
least 4, the threshold STS-B's own positives have. Four kinds, in equal shares:

1. *paraphrase*: every sentence pair is positive, the second text's sentences
   possibly in another order (a long paraphrase);
2. *near copy*: the first text repeated, some sentences swapped for their STS-B
   partner, possibly reordered, and now and then one sentence more on one
   side (a long repeat with edits; with one non-paraphrase swapped in, the
   mean may fall under 4). The added sentence does not count in the mean: a
   copy that says one thing more is still a copy, as in the in-repo domain
   sets, where a subset of an answer's sentences is a positive;
3. *mixed*: any k pairs of the fold, as they come (mostly hard negatives: the
   same scenes with details changed);
4. *unrelated*: sentences of different pairs (score 0).

Every built pair takes its sentences from one cross-validation fold of the
source pairs (source pair i is in fold i mod `folds`, as `combiner.grouped_folds`
puts it) and carries the index of its first source pair as its group, so no
sentence is in training and test at once. Seeded: the same input gives the
same pairs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

POSITIVE_SCORE = 4.0
KINDS = ("paraphrase", "near_copy", "mixed", "unrelated")


@dataclass(frozen=True)
class SourcePair:
    a: str
    b: str
    label: int
    score: float | None = None  # 0–5; without one, a positive counts 5 and a negative 0

    @property
    def value(self) -> float:
        return float(self.score) if self.score is not None else (5.0 if self.label else 0.0)


@dataclass(frozen=True)
class BuiltPair:
    a: str
    b: str
    label: int
    score: float
    kind: str
    group: int  # the index of its first source pair: what grouped cross-validation folds by


def _join(sentences: list[str]) -> str:
    return " ".join(s.strip() for s in sentences)


def build(pairs: list[SourcePair], *, folds: int = 5, per_fold: int = 60, seed: int = 15,
          sizes: tuple[int, int] = (3, 6)) -> list[BuiltPair]:
    """`per_fold` built pairs per fold (a quarter of each kind), k sentences each with k in `sizes` (inclusive)."""
    if folds < 1 or per_fold < 0 or sizes[0] < 1 or sizes[1] < sizes[0]:
        raise ValueError(f"need folds ≥ 1, per_fold ≥ 0 and 1 ≤ sizes[0] ≤ sizes[1], got {folds}, {per_fold}, {sizes}")
    rng = random.Random(seed)
    out: list[BuiltPair] = []
    for fold in range(folds):
        members = [i for i in range(len(pairs)) if i % folds == fold]
        positives = [i for i in members if pairs[i].value >= POSITIVE_SCORE]
        if len(members) < 2 * sizes[1]:
            continue
        for n in range(per_fold):
            kind = KINDS[n % len(KINDS)]
            k = rng.randint(*sizes)
            if kind == "paraphrase":
                if len(positives) < k:
                    continue
                chosen = rng.sample(positives, k)
                a = [pairs[i].a for i in chosen]
                b = [pairs[i].b for i in chosen]
                if rng.random() < 0.5:
                    rng.shuffle(b)
                values = [pairs[i].value for i in chosen]
            elif kind == "near_copy":
                chosen = rng.sample(members, k)
                a = [pairs[i].a for i in chosen]
                swap = [rng.random() < 0.3 for _ in chosen]
                b = [pairs[i].b if s else pairs[i].a for i, s in zip(chosen, swap)]
                values = [pairs[i].value if s else 5.0 for i, s in zip(chosen, swap)]
                if rng.random() < 0.3:
                    rng.shuffle(b)
                if rng.random() < 0.3:
                    # One sentence more on one side (from another pair of the fold): a copy with an addition.
                    extra = rng.choice([i for i in members if i not in chosen])
                    side = a if rng.random() < 0.5 else b
                    side.insert(rng.randint(0, len(side)), pairs[extra].a)
            elif kind == "mixed":
                chosen = rng.sample(members, k)
                a = [pairs[i].a for i in chosen]
                b = [pairs[i].b for i in chosen]
                values = [pairs[i].value for i in chosen]
            else:
                picked = rng.sample(members, 2 * k)
                chosen, others = picked[:k], picked[k:]
                a = [pairs[i].a for i in chosen]
                b = [pairs[i].b for i in others]
                values = [0.0] * k
            score = sum(values) / len(values)
            out.append(BuiltPair(_join(a), _join(b), int(score >= POSITIVE_SCORE), round(score, 4), kind, min(chosen)))
    return out
