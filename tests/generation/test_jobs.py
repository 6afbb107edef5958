"""Jobs end with exactly the samples they asked for, however often a chunk runs."""
import pytest
from django.utils import timezone

from curation.models import Sample
from generation.backends import BackendError
from generation.models import GenerationJob
from generation.services import JobError, job_cancel, job_create, job_run_chunk, jobs_requeue_stale


def run_to_end(job, limit=50):
    for _ in range(limit):
        job_run_chunk(job_id=job.pk)
        job.refresh_from_db()
        if not job.is_active:
            return job
    raise AssertionError("job did not finish")


@pytest.fixture
def job(lineage, curator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = job_create(lineage=lineage, requested=5, created_by=curator, seed=7, chunk_size=2)
    assert len(callbacks) == 1, "creating a job queues its first chunk after commit"
    return job


def test_a_job_ends_with_exactly_the_samples_it_asked_for(job):
    run_to_end(job)
    samples = Sample.objects.filter(job=job)
    assert job.status == GenerationJob.Status.DONE
    assert job.done_count == samples.count() == 5
    assert sorted(samples.values_list("item_index", flat=True)) == [0, 1, 2, 3, 4]
    assert all(s.provenance["backend"] == "fake" and s.provenance["job"] == job.pk for s in samples)


def test_running_a_chunk_again_stores_nothing_twice(job):
    run_to_end(job)
    # A redelivered task after the job ended, and one that finds the claim released.
    GenerationJob.objects.filter(pk=job.pk).update(status=GenerationJob.Status.RUNNING, claimed_until=None)
    job_run_chunk(job_id=job.pk)
    assert Sample.objects.filter(job=job).count() == 5


def test_a_chunk_queues_the_next_one_until_the_job_is_done(job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = job_run_chunk(job_id=job.pk)
    assert (outcome.stored, outcome.finished) == (2, False)
    # One flagging task per stored sample, then the next chunk.
    assert len(callbacks) == 3
    job.refresh_from_db()
    assert job.done_count == 2 and job.claim_token is None


def test_a_held_claim_keeps_a_second_worker_out(job):
    GenerationJob.objects.filter(pk=job.pk).update(claimed_until=timezone.now() + timezone.timedelta(minutes=5))
    outcome = job_run_chunk(job_id=job.pk)
    assert outcome.claimed is False
    assert not Sample.objects.filter(job=job).exists()


def test_an_expired_claim_is_requeued_and_taken_over(job, django_capture_on_commit_callbacks):
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.RUNNING, claimed_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert jobs_requeue_stale() == [job.pk]
    assert len(callbacks) == 1
    assert job_run_chunk(job_id=job.pk).claimed is True


def test_a_cancelled_job_stops_producing(job):
    assert job_cancel(job=job) is True
    assert job_run_chunk(job_id=job.pk).claimed is False
    assert job_cancel(job=job) is False


def test_invalid_outputs_become_failures_with_a_reason(lineage, monkeypatch):
    from generation.backends import Completion
    from generation.backends.fake import FakeBackend

    def silent(self, messages, params):
        return Completion(text="", model="fake", finish_reason="stop", prompt_tokens=1, completion_tokens=0,
                          latency_ms=0)

    monkeypatch.setattr(FakeBackend, "generate", silent)
    job = job_create(lineage=lineage, requested=2, seed=1)
    run_to_end(job)
    assert job.status == GenerationJob.Status.DONE
    assert (job.done_count, job.failed_count) == (0, 2)
    assert "empty question" in job.failures.first().reason
    assert not Sample.objects.filter(job=job).exists()


def test_a_transient_backend_error_releases_the_claim_for_a_retry(lineage, monkeypatch):
    from generation.backends.fake import FakeBackend

    def down(self, messages, params):
        raise BackendError("server busy", permanent=False)

    monkeypatch.setattr(FakeBackend, "generate", down)
    job = job_create(lineage=lineage, requested=1, seed=1)
    with pytest.raises(BackendError):
        job_run_chunk(job_id=job.pk)
    job.refresh_from_db()
    assert job.claim_token is None and job.is_active and "server busy" in job.last_error


def test_a_timeout_is_retried_for_the_item_then_fails_only_that_item(lineage, monkeypatch, settings):
    from generation.backends import BackendTimeout
    from generation.backends.fake import FakeBackend

    settings.OUROBOROS = {**settings.OUROBOROS, "BACKEND_ITEM_ATTEMPTS": 2, "BACKEND_RETRY_DELAY": 0}
    real = FakeBackend.generate
    calls = []

    def hangs_on_the_first_item(self, messages, params):
        calls.append(params.seed)
        if len(calls) <= 2:  # both tries of item 0's first request
            raise BackendTimeout("http://model/v1/chat/completions did not answer within 1s")
        return real(self, messages, params)

    monkeypatch.setattr(FakeBackend, "generate", hangs_on_the_first_item)
    job = job_create(lineage=lineage, requested=2, seed=1, chunk_size=2)
    run_to_end(job)
    assert calls[0] == calls[1], "the same request was sent again"
    assert job.status == GenerationJob.Status.DONE and (job.done_count, job.failed_count) == (1, 1)
    failure = job.failures.get()
    assert failure.item_index == 0
    assert failure.reason == "backend timed out 2 times: http://model/v1/chat/completions did not answer within 1s"


def test_every_writing_task_retries_a_lost_database_connection():
    from django.db import InterfaceError, OperationalError

    from curation.tasks import compute_generation_metrics, flag_sample
    from generation.tasks import run_job_chunk

    for task in (flag_sample, run_job_chunk, compute_generation_metrics):
        assert set(task.autoretry_for) == {OperationalError, InterfaceError}, task.name
        assert task.retry_backoff and task.retry_jitter and task.max_retries >= 2, task.name


@pytest.mark.parametrize("requested", [0, -1, 10_001])
def test_it_refuses_job_sizes_out_of_range(lineage, requested):
    with pytest.raises(JobError, match="1 to 10000"):
        job_create(lineage=lineage, requested=requested)


def test_passages_are_used_evenly(lineage):
    job = job_create(lineage=lineage, requested=6, seed=3, chunk_size=6)
    run_to_end(job)
    used = Sample.objects.filter(job=job).values_list("passage_id", flat=True)
    assert len(set(used)) == 6, "six items over six passages: each passage once"
