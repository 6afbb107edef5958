"""One retry policy for tasks whose database connection breaks under them.

A PostgreSQL restart, a failover or a connection killed by an administrator
(`pg_terminate_backend`) surfaces in a task as Django's `OperationalError` or
`InterfaceError`. Every task keeps its writes in transactions and is safe to
run twice (STYLE.md §4), so the right answer is to run it again a little later
on a fresh connection: Celery's Django fix-up closes the broken connection
after the task, and the retry opens a new one.

Tasks take the policy with `@shared_task(..., **retry_on_lost_database())`.
"""
from __future__ import annotations

from django.db import InterfaceError, OperationalError

LOST_DATABASE_ERRORS = (OperationalError, InterfaceError)
#: Exponential backoff: about 2, 4, 8, 16, 32 s (with full jitter), then the task fails.
DEFAULT_MAX_RETRIES = 5
BACKOFF_FACTOR_S = 2
BACKOFF_MAX_S = 60


def retry_on_lost_database(*, max_retries: int = DEFAULT_MAX_RETRIES) -> dict:
    """Celery task options: retry on a lost database connection, with jittered exponential backoff.

    `max_retries` is shared with any retry the task does itself (Celery counts
    one number per task message), so a task with its own policy passes its own.
    """
    return {
        "autoretry_for": LOST_DATABASE_ERRORS,
        "retry_backoff": BACKOFF_FACTOR_S,
        "retry_backoff_max": BACKOFF_MAX_S,
        "retry_jitter": True,
        "max_retries": max_retries,
    }
