"""Seconds per sample of hallucination scoring with LM grounding on, vs the same scoring with it off, same run.

    .venv/bin/python -m bench.lm_grounding [--samples 12]

The samples are answers of tests/data/answers.json (its first answer, with
its three alternatives) over their demo passage: what a flagged sample costs
the hallucination detector (`detectors.hallucination_in_memory`, no
database: retrieval and the writes are the flagging bench's business). The
embedder's cache is warmed first, so both arms pay the same (zero) embedding
cost and the difference is the language model: PMI against the source and LM
consistency against each alternative. Goal: full flagging of a sample with LM
grounding ≤ 1.5 s. Prints one JSON line last; `ratio` is LM-on seconds over
LM-off seconds per sample.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=12)
    args = parser.parse_args()
    import django

    django.setup()
    from curation import detectors
    from curation.signals import lm

    root = Path(__file__).resolve().parent.parent
    entries = json.loads((root / "tests/data/answers.json").read_text())["entries"][: args.samples]
    passages = {p["title"]: p["text"] for p in json.loads((root / "curation/demo/passages.json").read_text())["passages"]}
    cases = [(e["a"], [passages[e["title"]]], e["alts"][:3]) for e in entries]

    started = time.perf_counter()
    lm.scorer()
    load_s = time.perf_counter() - started
    for answer, sources, alts in cases:  # warm the embedder's cache for both arms
        detectors.hallucination_in_memory(answer=answer, sources=sources, alternatives=alts, use_lm=False)

    def arm(use_lm: bool) -> float:
        started = time.perf_counter()
        for answer, sources, alts in cases:
            detectors.hallucination_in_memory(answer=answer, sources=sources, alternatives=alts, use_lm=use_lm)
        return (time.perf_counter() - started) / len(cases)

    off = arm(False)
    on = arm(True)
    sentences = sum(len(detectors.answer_sentences(a)) for a, _, _ in cases) / len(cases)
    print(json.dumps({"bench": "lm_grounding", "samples": len(cases), "sentences_per_sample": round(sentences, 2),
                      "alternatives": 3, "lm_load_s": round(load_s, 2), "lm_off_s_per_sample": round(off, 3),
                      "lm_on_s_per_sample": round(on, 3), "goal_s": 1.5, "ratio": round(on / off, 2)}))


if __name__ == "__main__":
    main()
