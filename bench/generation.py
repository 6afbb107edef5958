"""Tokens/s through the whole generation path (Celery task → backend → stored
sample) against the same dialogues run on the same backend directly, in the
same run.

    make bench-generation        # = python -m ouroboros.stack bench bench.generation

1. Baseline: the job's items (same seeds, same passages) produced in this
   process by calling the backend directly; nothing is stored.
2. Full path: a real worker process on the `generation` queue runs the job
   with the same seed; the clock runs from queuing to the job's end.
Prints one JSON line last: both rates and their ratio (goal ≥ 0.9).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--answers", type=int, default=2)
    parser.add_argument("--backend", default="llama_cpp")
    args = parser.parse_args()

    import signal

    import django

    # `timeout` or Ctrl-C must still reach the `finally` that stops the worker
    # process, or an orphaned worker would take the next run's tasks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django.setup()
    from django.db import connection

    from curation.models import Sample
    from curation.services.lineages import lineage_create, passages_add
    from generation.backends import GenerationParams, get_backend
    from generation.models import GenerationJob, GeneratorSettings
    from generation.services import jobs as job_services
    from generation.services import lineage_backend_config, lineage_prompts
    from ouroboros.celery import app
    from tests.factories import demo_passages
    from tests.support.processes import CeleryProcess

    stamp = time.strftime("%Y%m%d-%H%M%S")
    lineage = lineage_create(name=f"bench generation {stamp}", slug=f"bench-generation-{stamp}")
    passages_add(lineage=lineage, passages=demo_passages())
    GeneratorSettings.objects.filter(lineage=lineage).update(backend=args.backend, student_answers=args.answers)
    lineage.refresh_from_db()
    seed = 20261126

    # 1. Baseline: the same items, straight to the backend.
    backend = get_backend(lineage.generator.backend, lineage_backend_config(lineage=lineage))
    prompts = lineage_prompts(lineage=lineage)
    probe = GenerationJob(lineage=lineage, generation=lineage.generations.get(number=1), requested=args.items,
                          seed=seed)
    backend.generate([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=2))  # warm-up
    started = time.perf_counter()
    direct_tokens = 0
    for index in range(args.items):
        produced = job_services._produce_item(probe, backend, prompts, index)
        if not isinstance(produced, str):
            direct_tokens += produced[1].provenance["completion_tokens"]
    direct_s = time.perf_counter() - started

    # 2. The full path: queue → worker → backend → stored sample.
    app.control.purge()
    logs = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    worker = CeleryProcess("worker", ["worker", "-Q", "generation", "-c", "1", "-n", f"bench-{os.getpid()}@%h",
                                      "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
                           logs / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while not app.control.inspect(timeout=1).ping():
            if time.monotonic() > deadline or not worker.alive():
                print(worker.log_tail(), file=sys.stderr)
                return 1
        # Load the model in the worker before the clock starts, as a long-running worker has.
        warm = job_services.job_create(lineage=lineage, requested=1, seed=1)
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
    task_tokens = sum(s.provenance["completion_tokens"] for s in Sample.objects.filter(job=job))
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
        "task_tokens": task_tokens,
        "task_seconds": round(task_s, 2),
        "task_tokens_per_s": round(task_rate, 1),
        "ratio": round(task_rate / direct_rate, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
