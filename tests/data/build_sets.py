"""Build the labelled JSONL sets of tests/data from answers.json and the demo passages.

    python tests/data/build_sets.py

Deterministic: running it again rewrites the same files. Passages 1–12 make the
*dev* sets (used to choose weights and defaults), 13–24 the *test* sets
(reported, never tuned on).

hallucination_{dev,test}.jsonl: per passage, two faithful answers (label 0), the
first with one sentence made false and the second with an invented sentence
appended (label 1). Every other passage gets its source as a list with two
unrelated passages, so retrieval has to find the right one. `samples` are the
student's other answers (faithful, as a model that knows the fact would give).
hallucination_test_nosamples.jsonl is the test set without them: grounding alone.

near_duplicate_{dev,test}.jsonl: label 1 for two answers to the same question
that say the same thing (an answer and a light edit of it: sentences dropped and
reordered; an answer and the student's other answer covering the same facts);
label 0 for two answers about the same passage that state different facts,
and for answers about different passages.

near_duplicate_stsb.jsonl is not built here: it is a slice of public data,
copied as it is (see README.md in this folder for its source and license).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _write(name: str, rows: list[dict]) -> None:
    with (HERE / name).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} items, {sum(r['label'] for r in rows)} positive")


def main() -> None:
    passages = {p["title"]: p["text"] for p in json.loads((ROOT / "curation/demo/passages.json").read_text())["passages"]}
    entries = json.loads((HERE / "answers.json").read_text())["entries"]
    titles = [e["title"] for e in entries]
    rng = random.Random(4)

    def sentences(text: str) -> list[str]:
        import re

        return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]

    halluc = {"dev": [], "test": []}
    dup = {"dev": [], "test": []}
    for number, entry in enumerate(entries):
        split = "dev" if number < 12 else "test"
        own = passages[entry["title"]]
        if number % 2:
            others = rng.sample([t for t in titles if t != entry["title"]], 2)
            source: str | list[str] = [passages[others[0]], own, passages[others[1]]]
        else:
            source = own
        a_sents = sentences(entry["a"])
        index, wrong = entry["a_wrong"]
        a_wrong = " ".join(wrong if i == index else s for i, s in enumerate(a_sents))
        b_extra = entry["b"] + " " + entry["b_extra"]
        base = {"source": source, "question": entry["q"], "samples": entry["alts"]}
        halluc[split] += [
            {**base, "text": entry["a"], "label": 0},
            {**base, "text": entry["b"], "label": 0},
            {**base, "text": a_wrong, "label": 1},
            {**base, "text": b_extra, "label": 1},
        ]
        edited = " ".join(list(reversed(a_sents))[:2])  # a copy with a sentence dropped and the rest reordered
        other = entries[(number + 5) % len(entries)]
        dup[split] += [
            {"a": entry["a"], "b": edited, "label": 1},
            {"a": entry["a"], "b": entry["alts"][0], "label": 1},
            {"a": entry["b"], "b": entry["alts"][1], "label": 1},
            {"a": entry["a"], "b": entry["b"], "label": 0},
            {"a": entry["a"], "b": other["a"], "label": 0},
        ]
    for split in ("dev", "test"):
        _write(f"hallucination_{split}.jsonl", halluc[split])
        _write(f"near_duplicate_{split}.jsonl", dup[split])
    _write("hallucination_test_nosamples.jsonl",
           [{k: v for k, v in row.items() if k != "samples"} for row in halluc["test"]])


if __name__ == "__main__":
    main()
