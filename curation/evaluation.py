"""Scoring labelled items with the app's detectors, for `evaluate_flags` and `calibrate_flags`.

The scores come from the same functions and settings the flagging service
uses (`curation.detectors`); what differs is only where the references come
from. The service retrieves a lineage's passage chunks with pgvector HNSW; here
each item brings its own sources, which are chunked the same way and searched
exactly (the same top-k), since a handful of chunks needs no index. (The
service also adds every chunk of the question's own passage; an item does not
say which of its sources that is, so here the top-k alone are used.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation import detector_metrics as metrics
from curation import detectors, embedder


class DatasetError(ValueError):
    """A labelled file that cannot be used; the message names the line."""


@dataclass(frozen=True)
class HallucinationItem:
    sources: list[str]
    text: str
    label: int
    samples: list[str]
    question: str


@dataclass(frozen=True)
class DuplicateItem:
    a: str
    b: str
    label: int
    score: float | None = None  # a graded similarity (STS-B: 0–5) when the file has one


def _string_list(value, *, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where}: {what!r} must be a string or a list of strings")
    return value


def _label(row: dict, where: str) -> int:
    label = row.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise DatasetError(f"{where}: 'label' must be 0 or 1, got {label!r}")
    return int(label)


def _rows(path: Path):
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            where = f"{path.name} line {number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except UnicodeDecodeError:
                raise DatasetError(f"{where}: not UTF-8 text") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def load_hallucination(path: Path) -> list[HallucinationItem]:
    items = []
    for where, row in _rows(path):
        for key in ("source", "text", "label"):
            if key not in row:
                raise DatasetError(f"{where}: missing {key!r}")
        sources = [s for s in _string_list(row["source"], what="source", where=where) if s.strip()]
        if not sources:
            raise DatasetError(f"{where}: 'source' is empty")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DatasetError(f"{where}: 'text' must be a non-empty string")
        samples = _string_list(row.get("samples", []), what="samples", where=where)
        question = row.get("question", "")
        if not isinstance(question, str):
            raise DatasetError(f"{where}: 'question' must be a string")
        items.append(HallucinationItem(sources, row["text"], _label(row, where), samples, question))
    _check_not_empty(items, path)
    return items


def load_duplicates(path: Path) -> list[DuplicateItem]:
    items = []
    for where, row in _rows(path):
        for key in ("a", "b", "label"):
            if key not in row:
                raise DatasetError(f"{where}: missing {key!r}")
        if not isinstance(row["a"], str) or not isinstance(row["b"], str):
            raise DatasetError(f"{where}: 'a' and 'b' must be strings")
        score = row.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 5):
            raise DatasetError(f"{where}: 'score' must be a number from 0 to 5, got {score!r}")
        items.append(DuplicateItem(row["a"], row["b"], _label(row, where), None if score is None else float(score)))
    _check_not_empty(items, path)
    return items


def _check_not_empty(items: list, path: Path) -> None:
    if not items:
        raise DatasetError(f"{path.name}: no items")
    if len({i.label for i in items}) < 2:
        raise DatasetError(f"{path.name}: every item has label {items[0].label}; both classes are needed")


@dataclass(frozen=True)
class Scored:
    """Each item's score, its signals (named values) and its group (items of one answer share one)."""

    scores: list[float]
    rows: list[dict]
    groups: list[int]


def answers_of(items: list[HallucinationItem], *, mode: str = "auto") -> list[list[int]]:
    """Which items are scored together as one answer.

    "items": each item is an answer. "sentences": consecutive items with the
    same source (and no alternatives) are the sentences of one answer, in order
    (as in WikiBio, where each labelled sentence belongs to one GPT-3 passage),
    so each is scored in its answer's context, as the service scores an
    answer's sentences. "auto" picks "sentences" when no item has a question
    or alternatives and most items are single sentences (WikiBio's are; the
    sentence splitter cuts a few at "St. Louis", so not all).
    """
    if mode not in ("auto", "items", "sentences"):
        raise DatasetError(f"unknown answer mode {mode!r}")
    if mode == "auto":
        bare = not any(i.samples or i.question for i in items)
        single = sum(len(detectors.answer_sentences(i.text)) == 1 for i in items) >= 0.9 * len(items)
        mode = "sentences" if bare and single else "items"
    if mode == "items":
        return [[n] for n in range(len(items))]
    groups: list[list[int]] = []
    for n, item in enumerate(items):
        prev = items[groups[-1][-1]] if groups else None
        if prev is not None and prev.sources == item.sources and not item.samples and not prev.samples:
            groups[-1].append(n)
        else:
            groups.append([n])
    return groups


def score_hallucinations(items: list[HallucinationItem], *, mode: str = "auto", use_lm: bool | None = None) -> Scored:
    """Each item's score exactly as the flagging service computes it.

    An item that is a whole answer scores its riskiest sentence (and reports
    that sentence's signals); an item that is one sentence of an answer scores
    that sentence's probability.
    """
    scores, rows, groups = [0.0] * len(items), [{}] * len(items), [0] * len(items)
    # Fill the embedder's cache in big batches first: batch size is what makes the model fast on a CPU.
    sources = list(dict.fromkeys(s for i in items for s in i.sources))
    embedder.embed([i.text for i in items] + [c for s in sources for c in detectors.chunk_passage(s)])
    grouped = answers_of(items, mode=mode)
    mode_of_groups = "items" if all(len(m) == 1 for m in grouped) and mode != "sentences" else "sentences"
    for g, members in enumerate(grouped):
        first = items[members[0]]
        if mode_of_groups == "items":
            result = detectors.hallucination_in_memory(answer=first.text, sources=first.sources,
                                                       alternatives=first.samples, use_lm=use_lm)
            risks = [s.risk for s in result.sentences]
            worst = int(np.argmax(risks)) if risks else None
            scores[members[0]] = result.score
            rows[members[0]] = result.signals(worst) if worst is not None else {}
            groups[members[0]] = g
            continue
        result = detectors.hallucination_in_memory(answer=[items[n].text for n in members], sources=first.sources,
                                                   alternatives=first.samples, use_lm=use_lm)
        for k, n in enumerate(members):
            scores[n], rows[n], groups[n] = result.sentences[k].risk, result.signals(k), g
    return Scored(scores, rows, groups)


def score_duplicates(items: list[DuplicateItem]) -> Scored:
    """Each pair's P(near-duplicate), as the service computes it for a candidate, with the pair's features."""
    embedder.embed([i.a for i in items] + [i.b for i in items])  # one big batch; the pairs then hit the cache
    rows = [detectors.duplicate_pair_row(item.a, item.b) for item in items]
    try:
        scores = [float(p) for p in detectors.duplicate_probability(rows)]
    except LookupError:  # before the first `fit_flags --write`
        scores = [r["cosine"] for r in rows]
    return Scored(scores, rows, list(range(len(items))))


def signal_aucs(labels: list[int], rows: list[dict]) -> dict:
    """ROC-AUC and PR-AUC of every signal alone, oriented so that higher means "positive".

    A support-like signal (higher = better supported, e.g. cosine) is negated;
    the orientation is the one with ROC-AUC ≥ 0.5 on these labels, marked by a
    leading "-" on the name when negated.
    """
    names = sorted({k for r in rows for k, v in r.items() if isinstance(v, float)})
    out = {}
    for name in names:
        have = [(y, r[name]) for y, r in zip(labels, rows) if isinstance(r.get(name), float)]
        ys = [y for y, _ in have]
        if len(set(ys)) < 2 or len({v for _, v in have}) < 2:
            continue
        values = [v for _, v in have]
        roc = metrics.roc_auc(ys, values)
        key = name
        if roc < 0.5:
            values, key, roc = [-v for v in values], f"-{name}", 1.0 - roc
        out[key] = {"roc_auc": round(roc, 4), "pr_auc": round(metrics.pr_auc(ys, values), 4), "n": len(have)}
    return out


KINDS = {
    "hallucination": (load_hallucination, score_hallucinations),
    "near_duplicate": (load_duplicates, score_duplicates),
}
