"""Work held by a dead worker comes back within 2 minutes, with the default leases.

A worker is SIGKILLed mid-job (its whole process group, as the OOM killer or a
crash would); the stack, systemd or a pod restart starts a new worker on the
same host. With nothing set but the defaults, the job must move again (a new
sample stored) within MOVE_BOUND_S of the kill and then finish with every item
exactly once. The periodic sweep runs on its production schedule (every two
minutes, on the even minute), called here as beat would.

The measured times are printed as one JSON line (run with `-s` to see them).
"""
from __future__ import annotations

import json
import os
import time

import pytest

from curation.models import Sample
from generation.models import GenerationJob
from generation.services import job_create
from generation.tasks import requeue_stale_jobs
from ouroboros.celery import app
from tests.factories import make_lineage
from tests.support.processes import CeleryProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MOVE_BOUND_S = float(os.environ.get("OUROBOROS_MEASURE_MOVE_BOUND_S", "120"))  # raise it to measure old code
SLOW_FAKE = {"OUROBOROS_FAKE_LATENCY_MS": "120"}  # ~0.5 s an item: slow enough to die mid-chunk; no lease set


def test_a_job_held_by_a_sigkilled_worker_moves_again_within_two_minutes(tmp_path):
    app.control.purge()
    lineage = make_lineage(passages=6, backend="fake")
    job = job_create(lineage=lineage, requested=16, seed=5, chunk_size=16)
    samples = Sample.objects.filter(job=job)

    doomed = CeleryProcess.worker("claims-doomed", tmp_path, SLOW_FAKE, queues="generation")
    rescuer = None
    try:
        wait_for(lambda: samples.count() >= 3, timeout=180, what="the first samples", processes=[doomed])
        doomed.kill()
        killed_at = time.monotonic()
        stored_at_kill = samples.count()
        assert GenerationJob.objects.get(pk=job.pk).is_active and stored_at_kill < 16, "must die mid-job"

        rescuer = CeleryProcess.worker("claims-rescuer", tmp_path, SLOW_FAKE, queues="generation")
        swept_minute = None

        def moved() -> bool:
            nonlocal swept_minute
            minute = int(time.time() // 60)
            if minute % 2 == 0 and minute != swept_minute:  # beat's crontab */2 for this sweep
                swept_minute = minute
                requeue_stale_jobs.delay()
            return samples.count() > stored_at_kill

        wait_for(moved, timeout=MOVE_BOUND_S, what="the job to move again after the kill", processes=[rescuer],
                 interval=0.5)
        moving_after = time.monotonic() - killed_at
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=180,
                 what="the job to finish", processes=[rescuer])
        done_after = time.monotonic() - killed_at
    finally:
        doomed.stop()
        if rescuer:
            rescuer.stop()
        app.control.purge()

    print(json.dumps({"sigkill_to_job_moving_s": round(moving_after, 1), "sigkill_to_job_done_s": round(done_after, 1)}))
    # The starting worker freed its dead predecessor's claim (not the lease running out).
    assert f"jobs_release_dead: queued again [{job.pk}]" in rescuer.log_path.read_text(errors="replace")
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE and job.done_count == 16
    assert sorted(samples.values_list("item_index", flat=True)) == list(range(16)), "every item exactly once"
