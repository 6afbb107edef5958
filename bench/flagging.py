"""Samples per second through the whole flagging path vs raw `model.encode` of the same texts, same run.

    .venv/bin/python -m ouroboros.stack bench bench.flagging [--chunk N] [--collapse 10000] [--lm [--samples 24]]

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

`--lm` flags with LM grounding on (the lineage's `lm_grounding`): every
sample also gets PMI against its source and LM consistency against each
alternative (`curation.signals.lm`). The baseline then also pays the language
model's own work: every distinct (prefix, answer) the flagging path asked the
scorer for, decoded once each by plain llama.cpp on a fresh cache (one
sequence a decode, logits for the answer's rows only), with no prefix reuse
and no batching; `ratio` is (raw encode + raw LM) seconds over flagging
seconds. `s_per_sample` is the cost goal's figure (issue 15.5: ≤ 1.5 s for an
answer of three sentences with three alternatives). `--samples N` flags the
first N samples only (the LM costs seconds a sample on a loaded machine).

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
    the entry's alternatives (in a different order each). The lineage needs the 24 demo passages, which the entries name."""
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
        alternatives = entry["alts"] + [entry["a"]]
        for k, answer in enumerate(variants):
            # Each sample's alternatives in another order: in the app every sample has its own, so the LM
            # scorer, which reads a sample's alternatives as one prefix, must not find them already read.
            samples.append(Sample(lineage=lineage, generation=generation, passage=by_title[entry["title"]],
                                  question=entry["q"], answer=answer,
                                  alt_answers=alternatives[k % len(alternatives):] + alternatives[:k % len(alternatives)]))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=None, help="samples per batch (default FLAG_BATCH_SIZE)")
    parser.add_argument("--collapse", type=int, default=0, help="also time one more copy among N copies")
    parser.add_argument("--lm", action="store_true", help="flag with LM grounding on; the baseline adds raw llama.cpp")
    parser.add_argument("--samples", type=int, default=None, help="flag only the first N samples")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    chunk = args.chunk or settings.OUROBOROS["FLAG_BATCH_SIZE"]
    batch_size = settings.OUROBOROS["EMBEDDING_BATCH_SIZE"]
    from curation import detectors, embedder
    from curation.models import Lineage, Sample
    from curation.signals import lm
    from curation.services import flagging
    from curation.services.lineages import lineage_create, passages_add
    from tests.factories import demo_passages

    tag = uuid.uuid4().hex[:8]
    lineage = lineage_create(name=f"bench flagging {tag}", slug=f"bench-flagging-{tag}")
    # Explicit both ways: new lineages have LM grounding on by default (detector 4.0).
    Lineage.objects.filter(pk=lineage.pk).update(lm_grounding=args.lm)
    if args.lm:
        started = time.perf_counter()
        lm.scorer()
        lm_load_s = time.perf_counter() - started
        lm_asked = record_lm_calls()
    try:
        passages_add(lineage=lineage, passages=demo_passages())
        samples = Sample.objects.bulk_create(answer_samples(lineage)[: args.samples])
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
        lm_stats = dict(lm.scorer().stats) if args.lm else {}
        raw_lm = raw_lm_cost(lm_asked) if args.lm else {}
        collapse = collapse_cost(lineage, args.collapse) if args.collapse else {}
    finally:
        Sample.objects.filter(lineage=lineage).delete()  # samples protect their passages
        Lineage.objects.filter(pk=lineage.pk).delete()

    flag_rate = len(ids) / flag_s
    raw_lm_s = raw_lm.pop("raw_lm_s", 0.0)
    if args.lm:
        sentences = [detectors.answer_sentences(s.answer) for s in samples]
        raw_lm.update({
            "lm_load_s": round(lm_load_s, 2),
            "sentences_per_sample": round(sum(map(len, sentences)) / len(ids), 2),
            "alternatives_per_sample": round(sum(len(s.alt_answers) for s in samples) / len(ids), 2),
            "lm_evaluated_tokens": lm_stats["evaluated_tokens"],
            "lm_reused_prefix_tokens": lm_stats["reused_tokens"],
            "lm_threads": lm.scorer().n_threads,
        })
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
        "lm_grounding": args.lm,
        "s_per_sample": round(flag_s / len(ids), 3),
        "ratio": round((raw_unique_s + raw_lm_s) / flag_s, 3),
        "raw_lm_s_per_sample": round(raw_lm_s / len(ids), 3),
        **raw_lm,
        "raw_encode_all_texts_samples_per_s": round(len(ids) / raw_s, 2),
        "ratio_vs_all_texts": round(raw_s / flag_s, 3),
        "cache_hits": stats["hits"],
        "cache_misses": stats["misses"],
        **collapse,
    }))


def record_lm_calls() -> list:
    """Wrap the process's scorer so that every (prefixes, sentences) it is asked for is kept, for the baseline."""
    from curation.signals import lm

    scorer = lm.scorer()
    asked, inner = [], scorer.logprobs_after

    def logprobs_after(prefixes, sentences):
        asked.append((list(prefixes), list(sentences)))
        return inner(prefixes, sentences)

    scorer.logprobs_after = logprobs_after
    return asked


def raw_lm_cost(asked: list) -> dict:
    """Seconds for plain llama.cpp to read each distinct (prefix, answer) once: fresh cache, one sequence a decode.

    The same model, threads and tokens as the scorer (the prefix cut as it cuts
    it); logits for the answer's rows only. What the scorer saves by reusing
    prefixes and batching the answers is what this does not do.
    """
    import numpy as np

    from curation.signals import lm

    scorer = lm.scorer()
    runs = {}
    for prefixes, sentences in asked:
        answer = tuple(t for i, s in enumerate(sentences) for t in scorer.tokens(("" if i == 0 else " ") + s))
        room = scorer.window - len(answer) - 1
        for prefix in prefixes:
            head = scorer.tokens(prefix)
            runs[(tuple([scorer._bos] + head[max(0, len(head) - room + 1):]), answer)] = None
    tokens = 0
    started = time.perf_counter()
    with scorer._lock:
        for head, answer in runs:
            scorer._clear()
            scorer._fill([(0, head[:-1], 0, False)])
            scorer._decode()
            scorer._fill([(0, (head[-1],) + answer[:-1], len(head) - 1, True)])
            scorer._decode()
            rows = np.stack([np.ctypeslib.as_array(scorer._lib.llama_get_logits_ith(scorer._ctx.ctx, j),
                                                   shape=(scorer._n_vocab,)) for j in range(len(answer))])
            lm.token_logprobs(rows, np.asarray(answer))
            tokens += len(head) + len(answer) - 1
        scorer._clear()
    return {"raw_lm_s": time.perf_counter() - started, "raw_lm_sequences": len(runs), "raw_lm_tokens": tokens}


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
