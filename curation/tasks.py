"""Celery tasks on the `curation` queue. Thin: they take ids and call services."""
from __future__ import annotations

from celery import shared_task

from curation.models import Sample
from curation.services import flagging
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
