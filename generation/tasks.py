"""Celery tasks on the `generation` queue. Thin: they take ids and call services."""
from __future__ import annotations

from celery import shared_task
from celery.exceptions import MaxRetriesExceededError

from ouroboros.retry import retry_on_lost_database

from . import services
from .backends import BackendError


@shared_task(
    name="generation.run_job_chunk",
    bind=True,
    acks_late=True,
    soft_time_limit=1500,
    time_limit=1800,
    # One count for both policies: a lost database connection (below) and a
    # transient backend error (the chunk is retried 10 s, 20 s, 40 s... later).
    **retry_on_lost_database(max_retries=5),
)
def run_job_chunk(self, job_id: int) -> dict:
    try:
        outcome = services.job_run_chunk(job_id=job_id)
    except BackendError as exc:  # only transient ones reach here
        try:
            raise self.retry(exc=exc, countdown=min(300, 10 * 2**self.request.retries))
        except MaxRetriesExceededError:
            services.job_fail(job_id=job_id, reason=f"backend kept failing: {exc}")
            raise
    return {"claimed": outcome.claimed, "stored": outcome.stored, "failed": outcome.failed,
            "finished": outcome.finished}


@shared_task(name="generation.requeue_stale_jobs", acks_late=True, expires=600)
def requeue_stale_jobs() -> list[int]:
    return services.jobs_requeue_stale()


@shared_task(name="generation.run_schedule", acks_late=True, expires=300)
def run_schedule(schedule_id: int) -> str:
    run = services.schedule_run(schedule_id=schedule_id)
    return f"job {run.job_id}" if run.job_id else f"skipped: {run.skipped_reason}"


@shared_task(name="generation.record_heldout_perplexity", acks_late=True, soft_time_limit=1500, time_limit=1800,
             **retry_on_lost_database(max_retries=3))
def record_heldout_perplexity(generation_id: int) -> float | None:
    """The generation's student on the held-out split (queued on `training`: it loads the model with transformers)."""
    from curation.models import Generation

    from .services.loop import heldout_perplexity_record

    return heldout_perplexity_record(generation=Generation.objects.select_related("lineage").get(pk=generation_id))
