"""Celery tasks on the `curation` queue. Thin: they take ids and call services."""
from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from curation.models import FlagRun, Sample
from curation.services import flagging, reflag
from curation.services.review import sample_risk_refresh


@shared_task(name="curation.flag_sample", acks_late=True, max_retries=3, soft_time_limit=300, time_limit=360)
def flag_sample(sample_id: int) -> int:
    try:
        flags = flagging.sample_flag(sample_id=sample_id)
    except Sample.DoesNotExist:
        return 0  # deleted since it was queued: nothing to flag
    sample_risk_refresh(sample_id=sample_id)
    return len(flags)


@shared_task(name="curation.flag_missing_samples", acks_late=True, expires=600)
def flag_missing_samples() -> list[int]:
    return flagging.samples_flag_missing()


@shared_task(name="curation.reflag_chunk", bind=True, acks_late=True, max_retries=3, soft_time_limit=900,
             time_limit=960)
def reflag_chunk(self, run_id: int) -> bool:
    """One chunk of a lineage re-flag. A crash retries the chunk (it is idempotent); the last failure is recorded."""
    try:
        return reflag.flag_run_chunk(run_id=run_id)
    except FlagRun.DoesNotExist:
        return False
    except SoftTimeLimitExceeded:
        reflag.flag_run_fail(run_id=run_id, reason="a chunk ran past its time limit; lower REFLAG_CHUNK_SIZE")
        raise
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            reflag.flag_run_fail(run_id=run_id, reason=f"{type(exc).__name__}: {exc}")
            raise
        raise self.retry(exc=exc, countdown=10 * (self.request.retries + 1))
