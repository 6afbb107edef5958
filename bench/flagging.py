"""Samples per second through the whole flagging path vs raw `model.encode` of the same texts, same run.

    .venv/bin/python -m ouroboros.stack bench bench.flagging [--chunk N] [--collapse 10000]

The samples are the 96 answers of tests/data/answers.json (faithful, altered,
with three alternative answers each) in a throw-away lineage over the 24 demo
passages. The passages are embedded and chunked before the clock starts (a
once-per-lineage cost, reported apart). Then, with the embedder's cache
emptied:

* raw: `model.encode` of each DISTINCT text the flagging path embeds for these
  samples (question + answer, each answer sentence, each sentence of each
  alternative), once, batch EMBEDDING_BATCH_SIZE: the model's own speed, no
  database, no scoring, and nothing for the cache to save;
* flagging: `samples_flag` in batches of `--chunk` (default FLAG_BATCH_SIZE,
  what a flag task takes): the same embeddings plus the batch/lineage/real-data
  pgvector searches, MinHash LSH, top-k chunk retrieval per sentence, scoring
  and the writes.

Prints one JSON line last; `ratio` is flagging samples/s over raw samples/s
(goal ≥ 0.8). The alternatives repeat across a question's answers;
`ratio_vs_all_texts` is the older figure against encoding every text,
repeats included, which credits the cache with the repeats the bench made.

`--collapse N` adds the cost of flagging one more copy in a lineage that
already holds N identical samples, against 10 (issue 14.7): the median of 5
flaggings each, in ms, and their ratio (goal: about 1).
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
    parser.add_argument("--chunk", type=int, default=None, help="samples per batch (default FLAG_BATCH_SIZE)")
    parser.add_argument("--collapse", type=int, default=0, help="also time one more copy among N copies")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    chunk = args.chunk or settings.OUROBOROS["FLAG_BATCH_SIZE"]
    batch_size = settings.OUROBOROS["EMBEDDING_BATCH_SIZE"]
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
        embedder.encode(texts[:16], batch_size=batch_size)  # warm the model outside both timings

        started = time.perf_counter()
        embedder.encode(texts, batch_size=batch_size)
        raw_s = time.perf_counter() - started
        # The fair baseline: the model embedding each distinct text once (what the cache saves is not counted).
        unique = list(dict.fromkeys(texts))
        started = time.perf_counter()
        embedder.encode(unique, batch_size=batch_size)
        raw_unique_s = time.perf_counter() - started

        embedder.cache_clear()
        started = time.perf_counter()
        for i in range(0, len(ids), chunk):
            flagging.samples_flag(sample_ids=ids[i : i + chunk])
        flag_s = time.perf_counter() - started
        flagged = Sample.objects.filter(pk__in=ids, flagged_at__isnull=False).count()
        assert flagged == len(ids), f"only {flagged} of {len(ids)} samples were flagged"
        stats = embedder.cache_stats()
        collapse = collapse_cost(lineage, args.collapse) if args.collapse else {}
    finally:
        Sample.objects.filter(lineage=lineage).delete()  # samples protect their passages
        Lineage.objects.filter(pk=lineage.pk).delete()

    flag_rate = len(ids) / flag_s
    print(json.dumps({
        "bench": "flagging",
        "samples": len(ids),
        "batch": chunk,
        "device": settings.OUROBOROS["EMBEDDING_DEVICE"],
        "texts": len(texts),
        "unique_texts": len(set(texts)),
        "passage_setup_s": round(setup_s, 2),
        "raw_encode_unique_samples_per_s": round(len(ids) / raw_unique_s, 2),
        "flagging_samples_per_s": round(flag_rate, 2),
        "ratio": round(raw_unique_s / flag_s, 3),
        "raw_encode_all_texts_samples_per_s": round(len(ids) / raw_s, 2),
        "ratio_vs_all_texts": round(raw_s / flag_s, 3),
        "cache_hits": stats["hits"],
        "cache_misses": stats["misses"],
        **collapse,
    }))


def collapse_cost(lineage, n: int) -> dict:
    """ms to flag one more copy among 10 identical samples, and among n (median of 5 each)."""
    import statistics

    from curation import detectors, lexical
    from curation.models import Sample
    from curation.services import flagging

    question, answer = "What makes the tides?", "Tides rise and fall twice a day because the Moon pulls on the oceans."
    text = detectors.duplicate_text(question, answer)
    signature, [vector] = lexical.minhash(text), flagging.embedder.embed([text])
    generation, passage = lineage.generations.get(status="open"), lineage.passages.first()
    out = {}
    have = 0
    for size in (10, n):
        Sample.objects.bulk_create(
            [Sample(lineage=lineage, generation=generation, passage=passage, question=question, answer=answer,
                    embedding=vector, minhash=signature, minhash_bands=lexical.minhash_bands(signature),
                    flagged_at=django_now()) for _ in range(size - have)], batch_size=1000)
        have = size
        timings = []
        for _ in range(5):
            sample = Sample.objects.create(lineage=lineage, generation=generation, passage=passage,
                                           question=question, answer=answer)
            started = time.perf_counter()
            flagging.sample_flag(sample_id=sample.pk)
            timings.append((time.perf_counter() - started) * 1000)
            have += 1
        out[f"collapse_one_more_ms_among_{size}"] = round(statistics.median(timings), 1)
    out["collapse_ratio"] = round(out[f"collapse_one_more_ms_among_{n}"] / out["collapse_one_more_ms_among_10"], 2)
    return out


def django_now():
    from django.utils import timezone

    return timezone.now()


if __name__ == "__main__":
    main()
