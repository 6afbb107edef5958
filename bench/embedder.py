"""Embedding throughput of the flagging path: batched (as the worker embeds) vs
one text at a time (the baseline), measured in the same run.

    .venv/bin/python -m bench.embedder [--texts 512]

Prints one JSON line last: sentences per second for both and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=512)
    args = parser.parse_args()

    import django

    django.setup()
    from curation import embedder
    from curation.similarity import split_sentences
    from tests.factories import demo_passages

    sentences = [s for p in demo_passages() for s in split_sentences(p["text"])]
    texts = (sentences * (args.texts // len(sentences) + 1))[: args.texts]
    embedder.embed(texts[:8])  # load the model outside the timing

    started = time.perf_counter()
    embedder.embed(texts, batch_size=64)
    batched = time.perf_counter() - started

    baseline_texts = texts[: max(32, args.texts // 8)]
    started = time.perf_counter()
    for text in baseline_texts:
        embedder.embed([text])
    one_by_one = time.perf_counter() - started

    batched_rate = len(texts) / batched
    baseline_rate = len(baseline_texts) / one_by_one
    print(json.dumps({
        "bench": "embedder",
        "texts": len(texts),
        "batched_per_s": round(batched_rate, 1),
        "one_by_one_per_s": round(baseline_rate, 1),
        "speedup_vs_one_by_one": round(batched_rate / baseline_rate, 2),
    }))


if __name__ == "__main__":
    main()
