"""Tokens/s through the whole generation path (Celery task → backend → stored
sample) against the same dialogues run on the same backend directly, in the
same run, and the share of items that become valid samples.

    make bench-generation        # = python -m ouroboros.stack bench bench.generation [--items 20 --answers 2]

1. Baseline: the job's items produced in this process by calling the backend
   directly through the same `_produce_item` (same passages: item i takes the
   lineage's passage i mod n; same seeds); nothing is stored.
2. Full path: a real worker process on the `generation` queue runs a job with
   the same seed on the same lineage; the clock runs from queuing to the job's
   end. The worker loads its model on a job of another lineage first, so the
   measured job is the lineage's first and asks about the same passages.
Both count the tokens of every completion, kept or refused (a refused
attempt's tokens are in the sample's provenance or the failure's raw output),
so the ratio measures the path's overhead, not which outputs were lucky.
Prints one JSON line last: `ratio` (goal ≥ 0.9), `valid_fraction` (goal ≥ 0.9),
`seconds_per_valid_item` and the refusals by reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def _tokens_and_refusals(produced) -> tuple[int, list[str], bool]:
    if isinstance(produced, str):
        raw = json.loads(getattr(produced, "raw", "") or "{}")
        return raw.get("completion_tokens", 0), raw.get("refusals", []), False
    provenance = produced[1].provenance
    return (provenance["completion_tokens"] + provenance.get("refused_completion_tokens", 0),
            provenance.get("refusals", []), True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--answers", type=int, default=2)
    parser.add_argument("--backend", default="llama_cpp")
    parser.add_argument("--samples-out", default="", help="write the stored samples here (JSON)")
    args = parser.parse_args()

    import signal

    import django

    # `timeout` or Ctrl-C must still reach the `finally` that stops the worker
    # process, or an orphaned worker would take the next run's tasks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django.setup()
    from django.db import connection

    from curation.management.commands.seed_demo import DEMO_FILE
    from curation.models import Sample
    from curation.services.lineages import lineage_create, passages_add
    from generation.backends import GenerationParams, get_backend
    from generation.models import GenerationJob, GeneratorSettings
    from generation.services import jobs as job_services
    from generation.services import lineage_backend_config, lineage_prompts
    from ouroboros.celery import app
    from tests.factories import demo_passages
    from tests.support.processes import CeleryProcess

    demo = json.loads(DEMO_FILE.read_text(encoding="utf-8"))["lineage"]
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def bench_lineage(label: str):
        lineage = lineage_create(name=f"{demo['name']} (bench {label} {stamp})", slug=f"bench-{label}-{stamp}",
                                 description=demo["description"])
        passages_add(lineage=lineage, passages=demo_passages())
        fields = {"backend": args.backend, "student_answers": args.answers}
        GeneratorSettings.objects.filter(lineage=lineage).update(**fields)
        lineage.refresh_from_db()
        return lineage

    lineage = bench_lineage("generation")
    warm_lineage = bench_lineage("warm-up")
    seed = 20261126

    # 1. Baseline: the same items, straight to the backend.
    backend = get_backend(args.backend, lineage_backend_config(lineage=lineage))
    prompts = lineage_prompts(lineage=lineage)
    probe = GenerationJob(lineage=lineage, generation=lineage.generations.get(number=1), requested=args.items,
                          seed=seed)
    backend.generate([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=2))  # warm-up
    started = time.perf_counter()
    direct_tokens, direct_valid, direct_questions = 0, 0, {}
    for index in range(args.items):
        produced = job_services._produce_item(probe, backend, prompts, index)
        tokens, _, valid = _tokens_and_refusals(produced)
        direct_tokens += tokens
        direct_valid += valid
        if valid:
            direct_questions[index] = produced[1].question
        print(f"direct item {index}: {'valid' if valid else produced}", file=sys.stderr, flush=True)
    direct_s = time.perf_counter() - started

    # 2. The full path: queue → worker → backend → stored sample.
    app.control.purge()
    logs = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    worker = CeleryProcess("worker", ["worker", "-Q", "generation", "-c", "1", "-n", f"bench-{os.getpid()}@%h",
                                      "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
                           logs / "worker.log")
    try:
        deadline = time.monotonic() + 300
        while not app.control.inspect(timeout=1).ping():
            if time.monotonic() > deadline or not worker.alive():
                print(worker.log_tail(), file=sys.stderr)
                return 1
        # Load the model in the worker before the clock starts, as a long-running worker has.
        warm = job_services.job_create(lineage=warm_lineage, requested=1, seed=1)
        while GenerationJob.objects.get(pk=warm.pk).is_active:
            time.sleep(0.2)
        started = time.perf_counter()
        job = job_services.job_create(lineage=lineage, requested=args.items, seed=seed,
                                      chunk_size=max(1, args.items // 2))
        while GenerationJob.objects.get(pk=job.pk).is_active:
            if not worker.alive():
                print(worker.log_tail(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        task_s = time.perf_counter() - started
    finally:
        worker.stop()
        app.control.purge()  # the flagging tasks nobody consumed here

    samples = list(Sample.objects.filter(job=job).order_by("item_index"))
    failures = list(job.failures.all())
    task_tokens = 0
    refusals: Counter = Counter()
    for sample in samples:
        task_tokens += sample.provenance["completion_tokens"] + sample.provenance.get("refused_completion_tokens", 0)
        refusals.update(sample.provenance.get("refusals", []))
    for failure in failures:
        raw = json.loads(failure.raw_output or "{}")
        task_tokens += raw.get("completion_tokens", 0)
        refusals.update(raw.get("refusals", []))
    same = sum(1 for s in samples if direct_questions.get(s.item_index) == s.question)
    if args.samples_out:
        Path(args.samples_out).write_text(json.dumps(
            [{"item": s.item_index, "question": s.question, "answer": s.answer, "alt_answers": s.alt_answers,
              "passage": s.passage.title, "provenance": s.provenance} for s in samples]
            + [{"item": f.item_index, "failed": f.reason} for f in failures], indent=1) + "\n")
    connection.close()

    direct_rate = direct_tokens / direct_s
    task_rate = task_tokens / task_s
    print(json.dumps({
        "bench": "generation",
        "backend": args.backend,
        "items": args.items,
        "answers_per_item": args.answers,
        "direct_tokens": direct_tokens,
        "direct_seconds": round(direct_s, 2),
        "direct_tokens_per_s": round(direct_rate, 1),
        "direct_valid": direct_valid,
        "task_tokens": task_tokens,
        "task_seconds": round(task_s, 2),
        "task_tokens_per_s": round(task_rate, 1),
        "task_valid": len(samples),
        "same_question_as_direct": same,
        "failed_reasons": [f.reason[:200] for f in failures],
        "refusals": dict(refusals.most_common()),
        "ratio": round(task_rate / direct_rate, 3),
        "valid_fraction": round(len(samples) / args.items, 3),
        "seconds_per_valid_item": round(task_s / len(samples), 2) if samples else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
