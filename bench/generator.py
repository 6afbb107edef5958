"""Generation throughput of the embedded SmolLM2 backend: one full dialogue
(question + k answers) per item, against the baseline of raw completions.

    .venv/bin/python -m bench.generator [--items 6]

Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--answers", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from generation.backends import GenerationParams, get_backend
    from generation.dialogue import InvalidOutput, run_dialogue, tutor_messages
    from tests.factories import demo_passages

    started = time.perf_counter()
    backend = get_backend("llama_cpp")
    load_s = time.perf_counter() - started
    passages = demo_passages()

    started = time.perf_counter()
    tokens = 0
    for i in range(args.items):  # the baseline: one bare completion per item
        completion = backend.generate(tutor_messages(passages[i % len(passages)]["text"]),
                                      GenerationParams(max_tokens=64, seed=i))
        tokens += completion.completion_tokens
    raw_s = time.perf_counter() - started
    raw_tokens_per_s = tokens / raw_s

    started = time.perf_counter()
    valid = 0
    for i in range(args.items):
        try:
            run_dialogue(backend=backend, passage_text=passages[i % len(passages)]["text"], answers=args.answers,
                         temperature=0.7, seed=100 + i)
            valid += 1
        except InvalidOutput:
            pass
    dialogue_s = time.perf_counter() - started
    print(json.dumps({
        "bench": "generator",
        "model_load_s": round(load_s, 2),
        "raw_tokens_per_s": round(raw_tokens_per_s, 1),
        "items": args.items,
        "answers_per_item": args.answers,
        "seconds_per_item": round(dialogue_s / args.items, 2),
        "valid_fraction": round(valid / args.items, 2),
        # A dialogue is 1 + k completions; this ratio shows what validation and the extra turns cost.
        "item_vs_one_completion": round(dialogue_s / raw_s, 2),
    }))


if __name__ == "__main__":
    main()
