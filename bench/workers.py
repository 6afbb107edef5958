"""Throughput of the two kinds of Celery work with 1 and with 2 worker processes on this machine.

    CELERY_BROKER_URL=redis://127.0.0.1:6379/N \\
    .venv/bin/python -m ouroboros.stack bench bench.workers flagging [--processes 1,2] [--threads T]
    .venv/bin/python -m ouroboros.stack bench bench.workers generation [--jobs 2] [--items 4] [--answers 2]

Each round starts P real `celery worker` processes (`-c 1` each, prefetch 1,
acks late: the app's settings) on one queue, warms them, queues the same work,
and times it from queuing to the last result in the database:

* flagging (`curation` queue): the 96 samples of bench/flagging.py
  (tests/data/answers.json) in one lineage whose passages were embedded before
  the clock, each queued as the `curation.flag_sample` task a stored sample
  queues. Between rounds the samples are deleted and made again, so every
  round compares each sample with the same earlier ones. Samples flagged/s.
* generation (`generation` queue): `--jobs` jobs of `--items` items at once
  with the embedded SmolLM2 backend (a fresh lineage per round, the same
  seeds). A job runs its chunks one after another, so a second process can
  only help when there is a second job: that is what this measures. Items/s
  (and tokens/s).

`--threads` sets the torch / llama.cpp threads per process (default: the app's,
2 each; on 2 cores two processes then oversubscribe). Prints one JSON line
last with each round's rate and the ratio of the last round to the first.
Uses the bench services (`.data/bench`); stops every worker it started.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

ROUND_TIMEOUT_S = 600.0


def start_workers(count: int, queue: str, logs: Path, env: dict[str, str]) -> list:
    """`count` worker processes on `queue`, each answering a ping before this returns."""
    from ouroboros.celery import app
    from tests.support.processes import CeleryProcess

    prefix = f"bench-workers-{os.getpid()}-{queue}"
    workers = [
        CeleryProcess(f"{queue}-{i}", ["worker", "-Q", queue, "-c", "1", "-n", f"{prefix}-{i}@%h",
                                       "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
                      logs / f"{queue}-{count}-{i}.log", env)
        for i in range(count)
    ]
    deadline = time.monotonic() + 120
    while True:
        replies = app.control.inspect(timeout=1).ping() or {}
        if sum(1 for name in replies if name.startswith(prefix)) >= count:
            return workers
        dead = [w for w in workers if not w.alive()]
        if dead or time.monotonic() > deadline:
            stop_workers(workers)
            tail = dead[0].log_tail() if dead else workers[0].log_tail()
            raise RuntimeError(f"the workers did not come up:\n{tail}")


def stop_workers(workers: list) -> None:
    for worker in workers:
        worker.stop()


def wait_until(predicate, workers: list, what: str) -> None:
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {ROUND_TIMEOUT_S:.0f} s waiting for {what}:\n"
                               + workers[0].log_tail())
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError(f"a worker died waiting for {what}:\n{dead[0].log_tail()}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- flagging


def flagging_round(processes: int, logs: Path, env: dict[str, str], lineage) -> dict:
    from bench.flagging import answer_samples
    from curation.models import Sample
    from curation.tasks import flag_sample

    workers = start_workers(processes, "curation", logs, env)
    try:
        # Warm every process: each loads the embedder on its first task. With prefetch 1,
        # 2 × P short tasks queued at once reach every idle process. They are deleted
        # before the clock, so each round compares its samples with the same (no) earlier ones.
        warm = Sample.objects.bulk_create(answer_samples(lineage)[: 2 * processes])
        for sample in warm:
            flag_sample.delay(sample.pk)
        wait_until(lambda: not Sample.objects.filter(pk__in=[s.pk for s in warm], flagged_at__isnull=True).exists(),
                   workers, "the warm-up samples")
        Sample.objects.filter(lineage=lineage).delete()

        ids = [s.pk for s in Sample.objects.bulk_create(answer_samples(lineage))]
        started = time.perf_counter()
        for pk in ids:
            flag_sample.delay(pk)
        wait_until(lambda: not Sample.objects.filter(pk__in=ids, flagged_at__isnull=True).exists(), workers,
                   "the samples' flags")
        seconds = time.perf_counter() - started
    finally:
        stop_workers(workers)
    Sample.objects.filter(lineage=lineage).delete()
    return {"processes": processes, "samples": len(ids), "seconds": round(seconds, 2),
            "samples_per_s": round(len(ids) / seconds, 2)}


def bench_flagging(args, logs: Path, env: dict[str, str]) -> dict:
    from curation.models import Lineage, Sample
    from curation.services import flagging
    from curation.services.lineages import lineage_create, passages_add
    from tests.factories import demo_passages

    stamp = time.strftime("%Y%m%d%H%M%S")
    lineage = lineage_create(name=f"bench workers flagging {stamp}", slug=f"bench-workers-flagging-{stamp}")
    # The embedder's scaling, as measured before LM grounding was on by default (bench.flagging --lm has the LM).
    Lineage.objects.filter(pk=lineage.pk).update(lm_grounding=False)
    try:
        passages_add(lineage=lineage, passages=demo_passages())
        started = time.perf_counter()
        flagging.passages_embed_missing(lineage_id=lineage.pk)  # once per lineage, before any clock
        setup_s = time.perf_counter() - started
        rounds = [flagging_round(p, logs, env, lineage) for p in args.processes]
    finally:
        Sample.objects.filter(lineage=lineage).delete()  # samples protect their passages
        Lineage.objects.filter(pk=lineage.pk).delete()
    return {"bench": "workers", "work": "flagging", "passage_setup_s": round(setup_s, 1), "rounds": rounds,
            "rate": "samples_per_s",
            "ratio": round(rounds[-1]["samples_per_s"] / rounds[0]["samples_per_s"], 3)}


# ---------------------------------------------------------------------------------------------- generation


def generation_round(processes: int, args, logs: Path, env: dict[str, str]) -> dict:
    from curation.models import Sample
    from curation.services.lineages import lineage_create, passages_add
    from generation.models import GenerationJob, GeneratorSettings
    from generation.services import jobs as job_services
    from tests.factories import demo_passages

    stamp = f"{time.strftime('%Y%m%d%H%M%S')}-{processes}"
    lineage = lineage_create(name=f"bench workers generation {stamp}", slug=f"bench-workers-generation-{stamp}")
    passages_add(lineage=lineage, passages=demo_passages())
    GeneratorSettings.objects.filter(lineage=lineage).update(backend="llama_cpp", student_answers=args.answers)
    lineage.refresh_from_db()
    workers = start_workers(processes, "generation", logs, env)
    try:
        # Load the model in every process before the clock, as long-running workers have it loaded.
        warm = [job_services.job_create(lineage=lineage, requested=1, seed=1 + i) for i in range(processes)]
        wait_until(lambda: not any(GenerationJob.objects.get(pk=j.pk).is_active for j in warm), workers,
                   "the warm-up jobs")
        started = time.perf_counter()
        jobs = [job_services.job_create(lineage=lineage, requested=args.items, seed=20261126 + i,
                                        chunk_size=args.chunk)
                for i in range(args.jobs)]
        wait_until(lambda: not any(GenerationJob.objects.get(pk=j.pk).is_active for j in jobs), workers,
                   "the jobs")
        seconds = time.perf_counter() - started
    finally:
        stop_workers(workers)
    done = list(GenerationJob.objects.filter(pk__in=[j.pk for j in jobs]))
    samples = Sample.objects.filter(job__in=done)
    tokens = sum(s.provenance.get("completion_tokens", 0) for s in samples)
    items = sum(j.done_count + j.failed_count for j in done)
    return {"processes": processes, "jobs": len(done), "items": items, "samples": samples.count(),
            "failed_items": sum(j.failed_count for j in done), "tokens": tokens, "seconds": round(seconds, 2),
            "items_per_s": round(items / seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def bench_generation(args, logs: Path, env: dict[str, str]) -> dict:
    rounds = [generation_round(p, args, logs, env) for p in args.processes]
    return {"bench": "workers", "work": "generation", "backend": "llama_cpp", "jobs": args.jobs,
            "items_per_job": args.items, "answers_per_item": args.answers, "rounds": rounds, "rate": "items_per_s",
            "ratio": round(rounds[-1]["items_per_s"] / rounds[0]["items_per_s"], 3),
            "ratio_tokens": round(rounds[-1]["tokens_per_s"] / rounds[0]["tokens_per_s"], 3)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", choices=["flagging", "generation"])
    parser.add_argument("--processes", default="1,2", help="worker processes per round, comma-separated")
    parser.add_argument("--threads", type=int, help="torch and llama.cpp threads per process (default: the app's)")
    parser.add_argument("--jobs", type=int, default=2, help="generation: jobs queued at once")
    parser.add_argument("--items", type=int, default=4, help="generation: items per job")
    parser.add_argument("--answers", type=int, default=2, help="generation: student answers per item")
    parser.add_argument("--chunk", type=int, default=2, help="generation: items per chunk task")
    args = parser.parse_args()
    args.processes = [int(p) for p in args.processes.split(",")]

    import django

    # `timeout` or Ctrl-C must still reach the `finally` blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django.setup()
    from django.conf import settings

    from ouroboros.celery import app

    env = {}
    if args.threads:
        env = {"OUROBOROS_EMBEDDING_THREADS": str(args.threads), "OUROBOROS_LLAMA_THREADS": str(args.threads)}
    threads = args.threads or (settings.OUROBOROS["EMBEDDING_THREADS"] if args.work == "flagging"
                               else settings.OUROBOROS["LLAMA_THREADS"])
    logs = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    app.control.purge()
    try:
        result = (bench_flagging if args.work == "flagging" else bench_generation)(args, logs, env)
    finally:
        app.control.purge()  # the flagging tasks of generated samples, which no worker here consumes
    print(json.dumps({**result, "threads_per_process": threads, "cpu_cores": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
