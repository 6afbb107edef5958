"""A worker killed mid-job loses and doubles nothing: real worker processes,
real Redis and PostgreSQL. The backend is the fake one, slowed to model speed,
because this test is about the job machinery, not the model."""
from __future__ import annotations

import pytest

from curation.models import Sample
from generation.models import GenerationJob
from generation.services import job_create
from generation.tasks import requeue_stale_jobs
from ouroboros.celery import app
from tests.factories import make_lineage
from tests.support.processes import CeleryProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WORKER_ENV = {
    "OUROBOROS_FAKE_LATENCY_MS": "120",  # ~0.5 s an item with 3 answers: slow enough to die mid-chunk
    "OUROBOROS_JOB_LEASE_SECONDS": "5",  # a dead worker's claim goes stale quickly
}


def test_a_job_survives_a_sigkilled_worker_with_no_sample_lost_or_doubled(tmp_path):
    app.control.purge()
    lineage = make_lineage(passages=6, backend="fake")
    job = job_create(lineage=lineage, requested=16, seed=9, chunk_size=6)

    first = CeleryProcess.worker("doomed", tmp_path, WORKER_ENV)
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
        second = CeleryProcess.worker("rescuer", tmp_path, WORKER_ENV)

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
