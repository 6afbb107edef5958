"""A worker killed mid-job loses and doubles nothing: real worker processes,
real Redis and PostgreSQL, the real embedder for flagging. The generator is the
fake backend, slowed to model speed, because these tests are about the job
machinery, not the model.

A SIGKILLed worker never acknowledges the task it was running, and Redis would
hand it out again only after the visibility timeout (an hour). What rescues the
work sooner is the periodic sweeps, which the tests call as beat would:
`generation.requeue_stale_jobs` (a job whose claim went stale) and
`curation.flag_missing_samples` (a sample stored but never flagged).
"""
from __future__ import annotations

import re
from collections import Counter

import pytest

from curation.models import Flag, Sample
from curation.services.flagging import DETECTOR_VERSION
from curation.tasks import flag_missing_samples
from generation.models import GenerationJob
from generation.services import job_create
from generation.tasks import requeue_stale_jobs
from ouroboros.celery import app
from tests.factories import make_lineage
from tests.support.processes import CeleryProcess, queued, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "OUROBOROS_FAKE_LATENCY_MS": "120",  # ~0.5 s an item with 3 answers: slow enough to die mid-chunk
    "OUROBOROS_JOB_LEASE_SECONDS": "5",  # a dead worker's claim goes stale quickly
    "OUROBOROS_FLAG_MISSING_AFTER_SECONDS": "5",  # and so does a sample whose flagging died with it
    "OUROBOROS_FLAG_BATCH_SIZE": "4",  # a flag task takes 4 of the 20 samples, so there is a mid-way to die in
}
MODEL_LOAD_BOUND_S = 300


def flag_tasks_in_flight(worker: CeleryProcess) -> int:
    """flag_sample tasks the worker has received and not finished, from its log."""
    log = worker.log_path.read_text(errors="replace")
    return (len(re.findall(r"Task curation\.flag_sample\[\S+\] received", log))
            - len(re.findall(r"Task curation\.flag_sample\[\S+\] (?:succeeded|failed|retry)", log)))


def assert_flagged_once(samples) -> None:
    """Every sample has its flags: scored by the current detectors, one flag per kind at most,
    and the queue's risk equal to its highest flag."""
    samples = list(samples)
    flags = list(Flag.objects.filter(sample__in=samples).values_list("sample_id", "kind", "score"))
    assert max(Counter((s, k) for s, k, _ in flags).values(), default=1) == 1, "a flag was written twice"
    for sample in samples:
        assert sample.flagged_at is not None and sample.detector_version == DETECTOR_VERSION, sample.pk
        assert sample.embedding is not None
        assert sample.risk == max((score for s, _, score in flags if s == sample.pk), default=0.0)


def test_a_job_survives_a_sigkilled_worker_with_no_sample_lost_or_doubled(tmp_path):
    app.control.purge()
    lineage = make_lineage(passages=6, backend="fake")
    job = job_create(lineage=lineage, requested=16, seed=9, chunk_size=6)

    first = CeleryProcess.worker("doomed", tmp_path, WORKER_ENV, queues="generation")
    second = None
    try:
        # 1. Let the first worker get part-way into the job, then kill it without warning.
        wait_for(lambda: Sample.objects.filter(job=job).count() >= 3, timeout=120, what="the first samples",
                 processes=[first])
        first.kill()
        stored_at_kill = Sample.objects.filter(job=job).count()
        job.refresh_from_db()
        assert job.is_active and stored_at_kill < 16, "the worker must die mid-job for this test to mean anything"

        # 2. A new worker starts. The dead worker's chunk is unacknowledged and its claim
        #    still held; once the claim goes stale, the periodic sweep re-queues the job.
        second = CeleryProcess.worker("rescuer", tmp_path, WORKER_ENV, queues="generation")

        def rescued() -> bool:
            requeue_stale_jobs.delay()  # what beat does every two minutes
            return not GenerationJob.objects.get(pk=job.pk).is_active

        wait_for(rescued, timeout=180, what="the job to finish on the second worker", processes=[second],
                 interval=3)
    finally:
        first.stop()
        if second:
            second.stop()

    job.refresh_from_db()
    indices = sorted(Sample.objects.filter(job=job).values_list("item_index", flat=True))
    assert job.status == GenerationJob.Status.DONE
    assert indices == list(range(16)), "every item exactly once"
    assert job.done_count == 16 and job.failed_count == 0


def test_flagging_survives_a_sigkilled_worker_and_every_sample_gets_its_flags_once(tmp_path):
    """1. A generation-only worker runs the job: its samples' flag_sample tasks wait in the queue.
    2. A curation-only worker starts on them and is SIGKILLed mid-way.
    3. A second curation worker takes the rest; the sweep re-queues the one that died in flight."""
    app.control.purge()
    lineage = make_lineage(passages=6, backend="fake")
    job = job_create(lineage=lineage, requested=20, seed=4, chunk_size=20)
    samples = Sample.objects.filter(job=job)

    generator = CeleryProcess.worker("generator", tmp_path, queues="generation")
    try:
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=120,
                 what="the job to finish", processes=[generator])
    finally:
        generator.stop()
    assert samples.count() == 20 and not samples.filter(flagged_at__isnull=False).exists()

    doomed = CeleryProcess.worker("doomed-flagger", tmp_path, WORKER_ENV, queues="curation")
    rescuer = None
    try:
        # Each worker process loads the embedder on its first sample: ~10 s on a quiet 2-core machine,
        # minutes on a crowded one, hence the generous bound.
        wait_for(lambda: samples.filter(flagged_at__isnull=False).count() >= 3, timeout=MODEL_LOAD_BOUND_S,
                 what="the first flags", processes=[doomed])
        wait_for(lambda: flag_tasks_in_flight(doomed) == 1, timeout=30, what="a flagging in progress",
                 processes=[doomed], interval=0.05)
        doomed.kill()
        assert flag_tasks_in_flight(doomed) == 1, "the worker must die mid-flagging for this test to mean anything"
        assert samples.filter(flagged_at__isnull=False).count() < 20

        rescuer = CeleryProcess.worker("rescuer-flagger", tmp_path, WORKER_ENV, queues="curation")

        def all_flagged() -> bool:
            if not samples.filter(flagged_at__isnull=True).exists():
                return True
            if not queued("curation"):  # the queue has run dry and a sample is still unflagged:
                flag_missing_samples.delay()  # what beat does every five minutes
            return False

        wait_for(all_flagged, timeout=MODEL_LOAD_BOUND_S, what="every sample to be flagged", processes=[rescuer],
                 interval=3)
    finally:
        doomed.stop()
        if rescuer:
            rescuer.stop()

    # The message of the flagging that died stays unacknowledged for the visibility timeout (an hour), but its
    # claims died with its connection: the rescuer's batches (oldest pending first) or the sweep, when the
    # queue ran dry first, took its samples. Either way the rescuer flagged some.
    log = rescuer.log_path.read_text()
    assert re.search(r"curation\.flag_sample\[\S+\] succeeded in \S+: [1-9]", log), log[-3000:]

    assert sorted(samples.values_list("item_index", flat=True)) == list(range(20))
    assert_flagged_once(samples)
