"""Redis stops mid-job and comes back: nothing is lost or doubled, and /healthz tells the truth meanwhile.

The broker is a private redis-server of this test (the test process and the
worker both point at it), so stopping it disturbs nobody else. It keeps
nothing on disk, so it comes back EMPTY: every queued message (the job's next
chunk, samples waiting to be flagged) is gone. That is the harder case, and the
one the design promises to survive: the periodic sweeps find the work that has
no message and queue it again. (A production Redis with `appendonly yes` would
keep most messages; the sweeps cover what it loses too.)

The worker consumes `generation` only: the samples' lost flag messages are
swept up the same way (`flag_missing_samples`), which the SIGKILL tests check
with the real embedder; leaving it out here keeps this test about the broker.
"""
from __future__ import annotations

import time

import pytest
from django.test import Client

from curation.models import Sample
from generation.models import GenerationJob
from generation.services import job_create
from generation.tasks import requeue_stale_jobs
from tests.factories import make_lineage
from tests.support.processes import CeleryProcess, RedisServer, celery_app_broker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OUTAGE_S = 8  # long enough for the worker to notice and start reconnecting
HEALTHZ_DOWN_BUDGET_S = 1.5  # /healthz must answer this fast while the broker is down


def healthz(client: Client) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = client.get("/healthz")
    return response.status_code, response.json(), time.monotonic() - started


def test_a_job_survives_a_redis_restart_and_healthz_reports_the_outage(tmp_path):
    redis = RedisServer(tmp_path).start()
    env = {
        "CELERY_BROKER_URL": redis.url(),
        "OUROBOROS_FAKE_LATENCY_MS": "150",
        "OUROBOROS_JOB_LEASE_SECONDS": "5",
        "OUROBOROS_JOB_IDLE_SECONDS": "3",
    }
    client = Client()
    worker = None
    try:
        with celery_app_broker(redis.url()):
            lineage = make_lineage(passages=6, backend="fake")
            job = job_create(lineage=lineage, requested=12, seed=2, chunk_size=3)
            samples = Sample.objects.filter(job=job)
            worker = CeleryProcess.worker("steadfast", tmp_path, env, queues="generation")

            # 1. Healthy while the job runs.
            wait_for(lambda: samples.count() >= 3, timeout=120, what="the first samples", processes=[worker])
            wait_for(lambda: healthz(client)[0] == 200, timeout=30, what="/healthz to see the worker",
                     processes=[worker])

            # 2. Redis goes away: /healthz says so at once, with 503, for as long as it lasts.
            redis.stop()
            down_until = time.monotonic() + OUTAGE_S
            slowest = 0.0
            while time.monotonic() < down_until:
                status, body, took = healthz(client)
                assert status == 503 and body["status"] == "down", body
                assert body["broker"]["ok"] is False and body["database"]["ok"] is True, body
                assert body["workers"] == {"ok": False, "error": "broker is down"}
                slowest = max(slowest, took)
                time.sleep(0.5)
            assert slowest < HEALTHZ_DOWN_BUDGET_S, f"/healthz took {slowest:.2f}s while the broker was down"
            assert GenerationJob.objects.get(pk=job.pk).is_active, "the outage must fall mid-job"

            # 3. Redis comes back, empty, on the same port. The worker reconnects by itself
            #    (it answers /healthz's ping again); this process's producer reconnects
            #    when the sweeps below publish through it.
            redis.start()
            wait_for(lambda: healthz(client)[0] == 200, timeout=60, what="/healthz to be healthy again",
                     processes=[worker], interval=1)

            def finished() -> bool:
                requeue_stale_jobs.delay()  # what beat does every two minutes
                return not GenerationJob.objects.get(pk=job.pk).is_active

            wait_for(finished, timeout=120, what="the job to finish", processes=[worker], interval=5)
            assert worker.alive(), "the same worker process carried on"
    finally:
        if worker:
            worker.stop()
        redis.stop()

    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE
    assert sorted(samples.values_list("item_index", flat=True)) == list(range(12)), "every item exactly once"
    assert (job.done_count, job.failed_count) == (12, 0)
