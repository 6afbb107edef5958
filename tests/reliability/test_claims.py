"""Claims record who holds them, and the claims of a dead worker process on this host come back at once
(curation/services/claims.py); leases are short and renewed per item or batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from curation.extensions import dead_claims_releasers
from curation.models import PassageImport, TrainingSet
from curation.services.claims import lease_kept
from curation.services.imports import imports_release_dead
from generation.models import GenerationJob, ModelRecord, TrainingRun
from generation.services import job_create, job_run_chunk
from generation.services import training
from generation.services.jobs import _claim, jobs_release_dead
from tests.factories import make_lineage

HOST = socket.gethostname()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hold(model, pk: int, *, pid: int, host: str = HOST) -> None:
    """A claim with an hour of lease left, as a worker that has just claimed it leaves it."""
    import uuid

    model.objects.filter(pk=pk).update(status="running", claim_token=uuid.uuid4(), claimed_until=timezone.now() +
                                       timedelta(hours=1), claimed_by=f"worker@{host}", claimed_host=host,
                                       claimed_pid=pid)


@pytest.fixture
def job(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        return job_create(lineage=make_lineage(passages=3), requested=2, seed=1, chunk_size=2)


def test_a_claim_records_the_worker_its_host_and_its_pid(job):
    assert _claim(job.pk) is not None
    job.refresh_from_db()
    assert (job.claimed_host, job.claimed_pid) == (HOST, os.getpid())
    assert job.claimed_by == f"{os.getpid()}@{HOST}"  # outside a worker; a worker writes its node name


def test_a_claim_held_by_a_dead_process_on_this_host_is_taken_over_at_once(job):
    hold(GenerationJob, job.pk, pid=dead_pid())
    outcome = job_run_chunk(job_id=job.pk)
    job.refresh_from_db()
    assert outcome.claimed and job.status == GenerationJob.Status.DONE and job.done_count == 2


@pytest.mark.parametrize("holder", ["alive here", "on another host", "unknown pid"])
def test_a_claim_whose_holder_may_be_alive_waits_for_its_lease(job, holder):
    pid = {"alive here": os.getppid(), "on another host": dead_pid(), "unknown pid": None}[holder]
    hold(GenerationJob, job.pk, pid=pid, host="elsewhere" if holder == "on another host" else HOST)
    assert not job_run_chunk(job_id=job.pk).claimed
    assert jobs_release_dead() == []


def test_a_starting_worker_requeues_the_work_its_dead_predecessor_held(job, django_capture_on_commit_callbacks):
    lineage = job.lineage
    dead, alive = (PassageImport.objects.create(lineage=lineage, filename=f"{n}.jsonl", format="jsonl",
                                                data=b'{"text": "x"}\n', size_bytes=14) for n in ("dead", "alive"))
    hold(PassageImport, dead.pk, pid=dead_pid())
    hold(PassageImport, alive.pk, pid=os.getppid())
    hold(GenerationJob, job.pk, pid=dead_pid())
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert jobs_release_dead() == [job.pk]
        assert imports_release_dead() == [dead.pk]
    assert len(queued) == 2, "a chunk of the job and the import are queued again"
    job.refresh_from_db()
    assert job.claimed_until <= timezone.now() and job.is_active, "the lease ended, the job goes on"
    assert PassageImport.objects.get(pk=alive.pk).claimed_until > timezone.now() + timedelta(minutes=50)


def test_leases_are_short_by_default_so_dead_work_on_another_host_comes_back_within_minutes():
    env = {key: value for key, value in os.environ.items() if not key.startswith("OUROBOROS_")}
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps({k: s.OUROBOROS[k] for k in ('JOB_LEASE_SECONDS', 'IMPORT_LEASE_SECONDS', "
            "'EXPORT_LEASE_SECONDS', 'TRAINING_LEASE_SECONDS')}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    leases = json.loads(done.stdout.strip().splitlines()[-1])
    assert leases["JOB_LEASE_SECONDS"] <= 90 and leases["IMPORT_LEASE_SECONDS"] <= 120
    assert leases["EXPORT_LEASE_SECONDS"] <= 90 and leases["TRAINING_LEASE_SECONDS"] <= 90
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST


# Training runs take their claim the same way ------------------------------


@pytest.fixture
def runs(db, curator):
    """Two queued training runs (no model is loaded: these tests only claim and release)."""
    lineage = make_lineage(passages=3)
    training_set = TrainingSet.objects.create(lineage=lineage, generation=lineage.generations.get(status="open"),
                                              sample_count=0, export_path="unused", built_by=curator)
    base = ModelRecord.objects.create(kind=ModelRecord.Kind.BASE_GGUF, name="base", path="/nowhere.gguf",
                                      status=ModelRecord.Status.READY)
    return [TrainingRun.objects.create(lineage=lineage, training_set=training_set, base_model=base)
            for _ in range(2)]


def test_a_training_run_claim_records_the_worker_its_host_and_its_pid_and_a_dead_holder_is_taken_over(runs):
    run, held = runs
    assert training._claim(run.pk) is not None
    run.refresh_from_db()
    assert (run.claimed_host, run.claimed_pid, run.claimed_by) == (HOST, os.getpid(), f"{os.getpid()}@{HOST}")
    assert run.claimed_until <= timezone.now() + timedelta(seconds=settings.OUROBOROS["TRAINING_LEASE_SECONDS"])

    hold(TrainingRun, held.pk, pid=os.getppid())
    assert training._claim(held.pk) is None, "a live holder keeps its run"
    hold(TrainingRun, held.pk, pid=dead_pid())
    assert training._claim(held.pk) is not None, "a redelivered chunk takes over a dead holder's run"
    assert TrainingRun.objects.get(pk=held.pk).claimed_pid == os.getpid()


def test_a_starting_worker_requeues_the_training_run_its_dead_predecessor_held(runs, django_capture_on_commit_callbacks):
    dead, alive = runs
    hold(TrainingRun, dead.pk, pid=dead_pid())
    hold(TrainingRun, alive.pk, pid=os.getppid())
    names = [release.__name__ for release in dead_claims_releasers()]
    assert {"jobs_release_dead", "training_runs_release_dead", "imports_release_dead",
            "exports_release_dead"} <= set(names), "what worker_ready calls (ouroboros/celery.py)"
    with django_capture_on_commit_callbacks(execute=False) as queued:
        released = {release.__name__: release() for release in dead_claims_releasers()}
    assert released["training_runs_release_dead"] == [dead.pk] and len(queued) == 1, "its next chunk is queued"
    dead.refresh_from_db()
    assert dead.claimed_until <= timezone.now() and dead.is_active, "the lease ended, the run goes on"
    assert TrainingRun.objects.get(pk=alive.pk).claimed_until > timezone.now() + timedelta(minutes=50)


@pytest.mark.django_db(transaction=True)  # the renewing thread has its own connection: it must see the row
def test_a_lease_kept_during_a_long_step_is_renewed_and_no_longer_once_it_ends():
    import time

    lineage = make_lineage(passages=3)
    job = GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(status="open"),
                                       requested=2)
    lease = timedelta(seconds=6)  # renewed every 2 s
    token = claims_take(job)
    GenerationJob.objects.filter(pk=job.pk).update(claimed_until=timezone.now() + lease)
    with lease_kept(GenerationJob, job.pk, token, lease=lease):
        time.sleep(5)  # a step that cannot renew the lease itself (a model loading)
        renewed = GenerationJob.objects.get(pk=job.pk).claimed_until
    assert renewed > timezone.now() + timedelta(seconds=2.5), "renewed while the step ran"
    time.sleep(2.5)
    assert GenerationJob.objects.get(pk=job.pk).claimed_until == renewed, "the renewals stop with the step"


def claims_take(job: GenerationJob):
    token = _claim(job.pk)
    assert token is not None
    return token
