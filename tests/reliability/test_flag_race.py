"""Two curation worker processes flagging two copies of one text at the same moment find each other
(issue 14.6): real worker processes, the real embedder, real PostgreSQL and Redis.

"The same moment" is made certain rather than hoped for: the test holds a share lock on the
earlier copy's row, so neither worker can finish with it until both have started. Before the fix
each worker looked only at samples whose flagging had already committed: the later copy's worker
looked, saw no embedded earlier copy, and stored "no duplicate" while the earlier copy's flagging
waited on the lock. Now each batch stores (and commits) the embeddings of its samples and of the
earlier samples still in flight before it looks, so the later copy waits for the earlier one's row
and finds it.
"""
from __future__ import annotations

import os

import psycopg
import pytest

from curation.models import DuplicateCluster, Flag, Sample
from curation.tasks import flag_sample
from ouroboros.celery import app
from tests.factories import make_lineage, make_sample
from tests.support.processes import CeleryProcess, test_database_url, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

COPY = dict(question="What makes the tides?",
            answer="Tides rise and fall twice a day because the Moon pulls on the oceans.")
MODEL_LOAD_BOUND_S = 300


def _flagger(name: str, tmp_path) -> CeleryProcess:
    """A curation worker that takes one message at a time and flags one sample per task, so that the two
    copies go to two processes."""
    argv = ["worker", "-Q", "curation", "-c", "1", "--prefetch-multiplier", "1", "-n", f"{name}-{os.getpid()}@%h",
            "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    env = {"DATABASE_URL": test_database_url(application_name=name), "OUROBOROS_FLAG_BATCH_SIZE": "1"}
    return CeleryProcess(name, argv, tmp_path / f"{name}.log", env)


def _waiting_on_locks(names: list[str]) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s) "
                       "AND wait_event_type = 'Lock'", [names])
        return cursor.fetchone()[0]


def test_two_workers_flagging_two_copies_at_once_find_each_other(tmp_path):
    app.control.purge()
    lineage = make_lineage(passages=3)
    first = make_sample(lineage, flagged=False, **COPY)
    second = make_sample(lineage, flagged=False, **COPY)
    names = [f"racer-a-{tmp_path.name}"[:60], f"racer-b-{tmp_path.name}"[:60]]
    workers = [_flagger(name, tmp_path) for name in names]
    lock = psycopg.connect(test_database_url())
    try:
        with lock.transaction():
            lock.execute("SELECT id FROM curation_sample WHERE id = %s FOR SHARE", [first.pk])
            flag_sample.delay(first.pk)
            flag_sample.delay(second.pk)
            # Before the fix the later copy was flagged while the earlier one waited; now both wait.
            wait_for(lambda: _waiting_on_locks(names) >= 2
                     or Sample.objects.filter(pk=second.pk, flagged_at__isnull=False).exists(),
                     timeout=MODEL_LOAD_BOUND_S, what="both flaggings to reach the earlier copy", processes=workers)
        wait_for(lambda: not Sample.objects.filter(pk__in=[first.pk, second.pk], flagged_at__isnull=True).exists(),
                 timeout=120, what="both copies to be flagged", processes=workers)
    finally:
        lock.close()
        for worker in workers:
            worker.stop()

    logs = "".join(w.log_path.read_text(errors="replace") for w in workers)
    assert logs.count("curation.flag_sample") >= 2
    for worker in workers:  # each process flagged one copy: the race really was between two processes
        assert "succeeded in" in worker.log_path.read_text(errors="replace"), worker.log_tail()
    duplicate = Flag.objects.get(sample=second, kind=Flag.Kind.NEAR_DUPLICATE)
    # A copy: the pair model's probability is high, and the similarities on the card say why.
    assert duplicate.evidence["duplicate_id"] == first.pk and duplicate.score >= 0.9
    assert duplicate.evidence["cosine"] == pytest.approx(1.0, abs=1e-3)
    assert not Flag.objects.filter(sample=first, kind=Flag.Kind.NEAR_DUPLICATE).exists()
    cluster = DuplicateCluster.objects.get(lineage=lineage)
    assert cluster.representative_id == first.pk
    assert set(Sample.objects.filter(cluster=cluster).values_list("id", flat=True)) == {first.pk, second.pk}
