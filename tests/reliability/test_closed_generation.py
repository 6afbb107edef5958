"""A job never writes into a closed generation (its training set is built and frozen).

What happens to the items it still lacks: none is generated; the job ends as
cancelled, with the reason and how many items were left, and cannot be resumed.
"""
from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from curation.models import Generation, Sample
from generation.backends import get_backend
from generation.models import GenerationJob
from generation.services import jobs
from generation.services import job_create, job_resume, job_run_chunk
from tests.factories import make_lineage


def close(generation_id: int) -> None:
    """What building the training set does to the generation (curation.services.training_sets)."""
    Generation.objects.filter(pk=generation_id).update(status=Generation.Status.CLOSED, closed_at=timezone.now())


class ClosingBackend:
    """The fake backend; the generation is closed while the first item is being generated
    (e.g. the job was cancelled and the set built while its worker finished the item in progress)."""

    def __init__(self, generation_id: int):
        self.inner = get_backend("fake")
        self.generation_id = generation_id
        self.calls = 0

    def __getattr__(self, name):  # name, model, ...: the fake backend's
        return getattr(self.inner, name)

    def generate(self, messages, params):
        self.calls += 1
        if self.calls == 1:
            close(self.generation_id)
        return self.inner.generate(messages, params)


@pytest.mark.django_db
def test_an_item_finished_after_its_generation_closed_is_not_stored_and_the_job_ends(monkeypatch,
                                                                                      django_capture_on_commit_callbacks):
    lineage = make_lineage(passages=4)
    with django_capture_on_commit_callbacks(execute=False):
        job = job_create(lineage=lineage, requested=4, seed=3, chunk_size=4)
    backend = ClosingBackend(job.generation_id)
    monkeypatch.setattr(jobs, "get_backend", lambda *args, **kwargs: backend)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        job_run_chunk(job_id=job.pk)

    job.refresh_from_db()
    assert not Sample.objects.filter(generation_id=job.generation_id).exists()
    assert job.status == GenerationJob.Status.CANCELLED and job.finished_at is not None
    assert job.last_error == f"generation {job.generation.number} was closed before the job finished; " \
                             "4 item(s) were not generated"
    assert job.claim_token is None and queued == [], "no next chunk"
    assert not job_resume(job=job), "a job of a closed generation cannot be resumed"


@pytest.mark.django_db
def test_a_queued_job_of_a_closed_generation_ends_without_asking_the_model(monkeypatch):
    lineage = make_lineage(passages=4)
    job = job_create(lineage=lineage, requested=3, seed=3)
    close(job.generation_id)
    monkeypatch.setattr(jobs, "get_backend", lambda *a, **k: pytest.fail("the model must not be asked"))
    outcome = job_run_chunk(job_id=job.pk)
    job.refresh_from_db()
    assert not outcome.claimed and job.status == GenerationJob.Status.CANCELLED
    assert "3 item(s) were not generated" in job.last_error
    assert not Sample.objects.filter(job=job).exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_created_while_the_generation_is_being_closed_goes_into_the_next_one():
    """1. Another transaction (a training-set build) locks the open generation, closes it and opens
    the next, and holds its lock a moment. 2. job_create meanwhile waits for that lock, then
    creates its job in the new generation, never in the closed one."""
    lineage = make_lineage(passages=4)
    first = lineage.generations.get(status=Generation.Status.OPEN)
    locked, release = threading.Event(), threading.Event()

    def build() -> None:
        try:
            with transaction.atomic():
                Generation.objects.select_for_update().get(pk=first.pk)
                close(first.pk)
                Generation.objects.create(lineage=lineage, number=first.number + 1)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    builder = threading.Thread(target=build)
    builder.start()
    assert locked.wait(30)
    created = {}
    creator = threading.Thread(target=lambda: (created.setdefault("job", job_create(lineage=lineage, requested=1)),
                                               connections.close_all()))
    creator.start()
    creator.join(1.0)
    assert creator.is_alive(), "job_create waits for the generation's lock"
    release.set()
    builder.join(30)
    creator.join(30)
    job = created["job"]
    assert job.generation.number == first.number + 1
    assert job.generation.status == Generation.Status.OPEN
    assert not GenerationJob.objects.filter(generation=first).exists()
