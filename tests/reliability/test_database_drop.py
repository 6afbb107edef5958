"""A task whose database connection is killed under it retries, and leaves nothing half-written.

A real worker process works against the real PostgreSQL; the test kills the
worker's server-side connection with `pg_terminate_backend`, as a failover, a
restart or an administrator would. The worker's connections carry an
application_name so that the test can find them in pg_stat_activity.
"""
from __future__ import annotations

import psycopg
import pytest

from curation.models import DuplicateCluster, Flag, Sample
from curation.tasks import flag_sample
from generation.models import GenerationJob
from generation.services import job_create
from ouroboros.celery import app
from tests.factories import make_lineage, make_sample
from tests.support.processes import CeleryProcess, database_backend_pids, test_database_url, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _terminate(pids: list[int]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def _blocked_on_a_lock(application_name: str) -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                       [application_name])
        return [row[0] for row in cursor.fetchall()]


def test_flagging_killed_mid_write_rolls_back_whole_and_the_retry_writes_the_flags_once(tmp_path):
    """Flagging writes a sample's flags, its duplicate cluster and its scores in one transaction.

    1. Sample A is flagged; sample B repeats it word for word, so flagging B
       raises a near-duplicate flag and founds a cluster around A.
    2. The test holds a SHARE lock on the cluster table, so B's flagging
       transaction stops when it goes to found the cluster around A, with B's
       and A's rows locked and B's flag written. (B's embedding was stored and
       committed before, in a step of its own, so that concurrent flaggers see
       it: it is not part of this transaction.)
    3. The test kills that connection: none of those writes may survive.
    4. The task retries on a new connection (ouroboros.retry) and writes it all once.
    """
    app.control.purge()
    name = f"flagger-{tmp_path.name}"[:60]
    lineage = make_lineage(passages=3)
    text = dict(question="What does the passage say about tides?",
                answer="Tides rise and fall twice a day because the Moon pulls on the oceans.")
    first = make_sample(lineage, flagged=False, **text)

    worker = CeleryProcess.worker("flagger", tmp_path, {"DATABASE_URL": test_database_url(application_name=name)},
                                  queues="curation")
    lock = psycopg.connect(test_database_url())
    try:
        flag_sample.delay(first.pk)
        wait_for(lambda: Sample.objects.filter(pk=first.pk, flagged_at__isnull=False).exists(), timeout=120,
                 what="the first sample's flags", processes=[worker])
        # Stored only now: a pending B would have been flagged in A's batch.
        second = make_sample(lineage, flagged=False, **text)

        with lock.transaction():
            lock.execute("LOCK TABLE curation_duplicatecluster IN SHARE MODE")
            flag_sample.delay(second.pk)
            wait_for(lambda: _blocked_on_a_lock(name), timeout=60, what="the flagging to wait on the locked table",
                     processes=[worker])
            # The worker's transaction has written B's flag, and waits to found the cluster around A.
            killed = set(_blocked_on_a_lock(name))
            _terminate(list(killed))
            wait_for(lambda: not killed & set(database_backend_pids(application_name=name)), timeout=30,
                     what="the killed connection to go", processes=[worker])
            assert not Flag.objects.filter(sample=second).exists()
            assert not DuplicateCluster.objects.filter(lineage=lineage).exists()
            assert Sample.objects.get(pk=first.pk).cluster_id is None
            assert Sample.objects.get(pk=second.pk).flagged_at is None
        # The lock is released; the retry runs on a fresh connection.
        wait_for(lambda: Sample.objects.filter(pk=second.pk, flagged_at__isnull=False).exists(), timeout=60,
                 what="the retried flagging", processes=[worker])
    finally:
        lock.close()
        worker.stop()

    log = worker.log_path.read_text(errors="replace")
    assert "Retry in" in log and "OperationalError" in log, log[-3000:]
    second.refresh_from_db()
    flags = list(Flag.objects.filter(sample=second))
    assert [f.kind for f in flags if f.kind == Flag.Kind.NEAR_DUPLICATE] == [Flag.Kind.NEAR_DUPLICATE]
    assert second.risk == max(f.score for f in flags)
    cluster = DuplicateCluster.objects.get(lineage=lineage)
    assert cluster.representative_id == first.pk
    assert Sample.objects.get(pk=first.pk).cluster_id == second.cluster_id == cluster.pk


def test_a_generation_chunk_that_loses_its_connection_retries_at_once_and_stores_each_item_once(tmp_path):
    """The connection dies while the worker waits on the model (between two writes).

    The chunk gives its claim back on a fresh connection and retries; with the
    lease at its default (10 minutes) the job could only finish in time if it did.
    """
    app.control.purge()
    name = f"generator-{tmp_path.name}"[:60]
    lineage = make_lineage(passages=4)
    job = job_create(lineage=lineage, requested=8, seed=3, chunk_size=8)
    worker = CeleryProcess.worker("generator", tmp_path, {
        "DATABASE_URL": test_database_url(application_name=name),
        "OUROBOROS_FAKE_LATENCY_MS": "150",
    }, queues="generation")
    try:
        wait_for(lambda: Sample.objects.filter(job=job).count() >= 2, timeout=120, what="the first samples",
                 processes=[worker])
        _terminate(database_backend_pids(application_name=name))
        assert Sample.objects.filter(job=job).count() < 8, "the connection must die mid-job for this to mean anything"
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=90,
                 what="the job to finish after the retry", processes=[worker])
    finally:
        worker.stop()

    assert "Retry in" in worker.log_path.read_text(errors="replace")
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE
    assert sorted(Sample.objects.filter(job=job).values_list("item_index", flat=True)) == list(range(8))
    assert (job.done_count, job.failed_count) == (8, 0)
