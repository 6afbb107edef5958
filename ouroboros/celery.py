"""The Celery application. Workers run `celery -A ouroboros worker -Q generation,curation`."""
import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

app = Celery("ouroboros")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def release_claims_of_dead_predecessors(**_kwargs) -> None:
    """A worker that starts frees the work its dead predecessor on this host held, and queues it again.

    The claims record the holder's host and pid (curation/services/claims.py):
    those whose pid is no longer alive belong to a worker that was killed (or a
    `make run` worker the stack is restarting), and need not wait out their lease.
    A failure here is logged, not raised: the periodic sweeps remain.
    """
    import logging

    from django.db import connections

    from curation.extensions import dead_claims_releasers

    log = logging.getLogger(__name__)
    try:
        # Each app lists its own (curation's imports and exports; generation's jobs and training runs).
        # One that fails is logged and the others still run.
        for release in dead_claims_releasers():
            try:
                released = release()
            except Exception:
                log.exception("%s could not release the claims of dead workers; the periodic sweep will",
                              release.__name__)
                continue
            if released:
                log.warning("%s: queued again %s", release.__name__, released)
    except Exception:
        log.exception("could not release the claims of dead workers; the periodic sweeps will")
    finally:
        connections.close_all()
