"""Samples per second through the whole flagging path vs raw `model.encode` of the same texts, same run.

    # with the services up (python -m ouroboros.stack services prints DATABASE_URL):
    .venv/bin/python -m bench.flagging [--chunk 50]

The samples are the 96 answers of tests/data/answers.json (faithful, altered,
with three alternative answers each) in a throw-away lineage over the 24 demo
passages. The passages are embedded and chunked before the clock starts (a
once-per-lineage cost, reported apart). Then, with the embedder's cache
emptied:

* raw: `model.encode` of every text the flagging path embeds for these samples
  (question + answer, each answer sentence, each sentence of each alternative),
  batch 64: the model's own speed, no database, no scoring;
* flagging: `samples_flag` in chunks of `--chunk` (as a re-flag job runs): the
  same embeddings plus the batch/lineage/real-data pgvector searches, MinHash
  LSH, top-k chunk retrieval per sentence, scoring and the writes.

Prints one JSON line last; `ratio` is flagging samples/s over raw samples/s
(goal ≥ 0.8). The alternatives repeat across a question's answers, so the
content-hash cache saves encoder work; `ratio_vs_unique` compares with the
model encoding each distinct text once instead, which credits the cache nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def answer_samples(lineage) -> list:
    """Unsaved samples of the lineage: the four answers of each tests/data/answers.json entry (faithful,
    faithful with an extra sentence, another faithful one, one with a sentence made false), each with
    the entry's alternatives. The lineage needs the 24 demo passages, which the entries name."""
    from curation.models import Sample

    entries = json.loads((Path(__file__).resolve().parent.parent / "tests/data/answers.json").read_text())["entries"]
    by_title = {p.title: p for p in lineage.passages.all()}
    generation = lineage.generations.get(status="open")
    samples = []
    for entry in entries:
        sentences = entry["a"].split(". ")
        wrong_index, wrong = entry["a_wrong"]
        variants = [entry["a"], entry["b"], entry["b"] + " " + entry["b_extra"],
                    ". ".join(wrong.rstrip(".") if i == wrong_index else s.rstrip(".")
                              for i, s in enumerate(sentences)) + "."]
        for answer in variants:
            samples.append(Sample(lineage=lineage, generation=generation, passage=by_title[entry["title"]],
                                  question=entry["q"], answer=answer, alt_answers=entry["alts"] + [entry["a"]]))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()

    import django

    django.setup()
    from curation import embedder
    from curation.models import Lineage, Sample
    from curation.services import flagging
    from curation.services.lineages import lineage_create, passages_add
    from tests.factories import demo_passages

    tag = uuid.uuid4().hex[:8]
    lineage = lineage_create(name=f"bench flagging {tag}", slug=f"bench-flagging-{tag}")
    try:
        passages_add(lineage=lineage, passages=demo_passages())
        samples = Sample.objects.bulk_create(answer_samples(lineage))
        ids = [s.pk for s in samples]

        started = time.perf_counter()
        flagging.passages_embed_missing(lineage_id=lineage.pk)
        setup_s = time.perf_counter() - started

        texts = []
        for sample in Sample.objects.filter(pk__in=ids).order_by("id"):
            dup_text, sentences, alt_sentences = flagging._texts(sample)
            texts += [dup_text, *sentences, *alt_sentences]
        embedder.encode(texts[:16], batch_size=64)  # warm the model outside both timings

        started = time.perf_counter()
        embedder.encode(texts, batch_size=64)
        raw_s = time.perf_counter() - started
        # The stricter baseline: the model embedding each distinct text once (what the cache saves is not counted).
        unique = list(dict.fromkeys(texts))
        started = time.perf_counter()
        embedder.encode(unique, batch_size=64)
        raw_unique_s = time.perf_counter() - started

        embedder.cache_clear()
        started = time.perf_counter()
        for i in range(0, len(ids), args.chunk):
            flagging.samples_flag(sample_ids=ids[i : i + args.chunk])
        flag_s = time.perf_counter() - started
        flagged = Sample.objects.filter(pk__in=ids, flagged_at__isnull=False).count()
        assert flagged == len(ids), f"only {flagged} of {len(ids)} samples were flagged"
        stats = embedder.cache_stats()
    finally:
        Sample.objects.filter(lineage=lineage).delete()  # samples protect their passages
        Lineage.objects.filter(pk=lineage.pk).delete()

    raw_rate, flag_rate = len(ids) / raw_s, len(ids) / flag_s
    print(json.dumps({
        "bench": "flagging",
        "samples": len(ids),
        "texts": len(texts),
        "unique_texts": len(set(texts)),
        "passage_setup_s": round(setup_s, 2),
        "raw_encode_samples_per_s": round(raw_rate, 2),
        "flagging_samples_per_s": round(flag_rate, 2),
        "ratio": round(flag_rate / raw_rate, 3),
        "raw_encode_unique_samples_per_s": round(len(ids) / raw_unique_s, 2),
        "ratio_vs_unique": round(flag_s and (raw_unique_s / flag_s), 3),
        "cache_hits": stats["hits"],
        "cache_misses": stats["misses"],
    }))


if __name__ == "__main__":
    main()
