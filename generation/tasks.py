"""Celery tasks on the `generation` queue. Thin: they take ids and call services."""
from __future__ import annotations

from celery import shared_task
from celery.exceptions import MaxRetriesExceededError

from ouroboros.retry import LOST_DATABASE_ERRORS, retry_on_lost_database

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
    if run.skipped_reason:
        return f"skipped: {run.skipped_reason}"
    return f"loop: {run.loop_step}" if run.loop_step else f"job {run.job_id}"


@shared_task(
    name="generation.train_student",
    bind=True,
    acks_late=True,
    # One chunk is `checkpoint_every` steps (~5 s each on 2 CPU cores) plus, on a fresh worker, ~25 s of
    # loading; the limits leave room for a slow machine and stay under the broker's visibility timeout.
    soft_time_limit=2400,
    time_limit=2700,
    **retry_on_lost_database(),
)
def train_student(self, run_id: int) -> dict:
    from .services.training import training_run_chunk, training_run_fail

    try:
        outcome = training_run_chunk(run_id=run_id)
    except LOST_DATABASE_ERRORS:
        raise  # retried by the policy above; the run resumes from its checkpoint
    except Exception as exc:
        # Anything else (out of memory, a full disk, a torch error) will not get better by itself.
        training_run_fail(run_id=run_id, reason=f"training stopped: {type(exc).__name__}: {exc}")
        raise
    return {"claimed": outcome.claimed, "steps": outcome.steps, "finished": outcome.finished}


@shared_task(name="generation.requeue_stale_training_runs", acks_late=True, expires=110)
def requeue_stale_training_runs() -> list[int]:
    from .services.training import training_runs_requeue_stale

    return training_runs_requeue_stale()


@shared_task(name="generation.deliver_webhook", acks_late=True, soft_time_limit=120, time_limit=180,
             **retry_on_lost_database())
def deliver_webhook(delivery_id: int) -> dict:
    """One try of a webhook delivery; the next try (with backoff) is queued from here."""
    from .services.webhooks import webhook_deliver

    outcome = webhook_deliver(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        deliver_webhook.apply_async((delivery_id,), countdown=outcome.retry_in)
    return {"claimed": outcome.claimed, "delivered": outcome.delivered, "retry_in": outcome.retry_in}


@shared_task(name="generation.requeue_stale_webhooks", acks_late=True, expires=290)
def requeue_stale_webhooks() -> list[int]:
    from .services.webhooks import webhooks_requeue_stale

    return webhooks_requeue_stale()
@shared_task(name="generation.record_heldout_perplexity", acks_late=True, soft_time_limit=1500, time_limit=1800,
             **retry_on_lost_database(max_retries=3))
def record_heldout_perplexity(generation_id: int) -> float | None:
    """The generation's student on the held-out split (queued on `training`: it loads the model with transformers)."""
    from curation.models import Generation

    from .services.loop import heldout_perplexity_record

    return heldout_perplexity_record(generation=Generation.objects.select_related("lineage").get(pk=generation_id))
