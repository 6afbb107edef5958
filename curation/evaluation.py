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

from curation import detectors


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
        items.append(DuplicateItem(row["a"], row["b"], _label(row, where)))
    _check_not_empty(items, path)
    return items


def _check_not_empty(items: list, path: Path) -> None:
    if not items:
        raise DatasetError(f"{path.name}: no items")
    if len({i.label for i in items}) < 2:
        raise DatasetError(f"{path.name}: every item has label {items[0].label}; both classes are needed")


def score_hallucinations(items: list[HallucinationItem]) -> list[float]:
    """Each item's sample score (its riskiest sentence), exactly as the flagging service computes it."""
    return [
        detectors.hallucination_in_memory(answer=item.text, sources=item.sources, alternatives=item.samples).score
        for item in items
    ]


def score_duplicates(items: list[DuplicateItem]) -> list[float]:
    """Each pair's near-duplicate score (the larger of cosine and MinHash Jaccard), as the service computes it."""
    return [detectors.duplicate_pair_score(item.a, item.b) for item in items]


KINDS = {
    "hallucination": (load_hallucination, score_hallucinations),
    "near_duplicate": (load_duplicates, score_duplicates),
}
