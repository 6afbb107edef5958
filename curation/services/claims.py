"""What claimed units of work share (generation jobs, imports, exports, training runs): taking one,
renewing its lease, finding the ones nobody works on, and freeing those whose worker died.

A unit is claimed by one worker process at a time: a token and a lease on its
row, and who holds it (the worker's name, host and pid). While it runs, the
worker pushes `claimed_until` forward after each item or batch, so a lease
can be short (OUROBOROS_*_LEASE_SECONDS).

Work held by a dead worker comes back in one of three ways, fastest first:
1. a worker starting on the same host (celery's `worker_ready`, see
   ouroboros/celery.py) frees every claim held there by a pid that is no
   longer alive, and the work is queued again at once;
2. a worker that gets the unit's message again (a pool process that died is
   rejected and redelivered: `task_reject_on_worker_lost` with `acks_late`)
   takes over a claim whose holder on its own host is dead (`claim_take`);
3. on another host, nobody can tell a dead worker from a slow one: the lease
   runs out and the periodic sweep queues the unit again.

Every claimed model takes its fields from `ClaimedWork`. Generation may import
this module; it never imports generation. What a starting worker releases is
listed in curation/extensions.py (`dead_claims_releasers`), where generation
adds its jobs and training runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from django.db import models
from django.db.models import Model, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

log = logging.getLogger(__name__)


class ClaimedWork(models.Model):
    """The fields of a unit of work a worker claims: the claim, its lease, and who holds it."""

    # The claim: whoever set claim_token holds the unit until claimed_until.
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Who holds the claim (claim_owner): a starting worker releases the claims of
    # a dead predecessor on its host (that pid no longer alive).
    claimed_by = models.CharField(max_length=255, blank=True, help_text="The worker's name.")
    claimed_host = models.CharField(max_length=255, blank=True)
    claimed_pid = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True


def claim_owner() -> dict:
    """The claim's holder: this process's worker name, host and pid (the fields every claimed model has).

    The pid is this process's own: in a prefork worker that is the pool process
    doing the work, so a pool process that dies is seen as dead even while its
    parent lives on.
    """
    host = socket.gethostname()
    name = ""
    try:
        from celery import current_task

        if current_task and current_task.request and current_task.request.hostname:
            name = current_task.request.hostname  # the worker's node name, e.g. worker@host
    except Exception:  # outside a worker (a test, a command): no task context
        name = ""
    return {"claimed_by": (name or f"{os.getpid()}@{host}")[:255], "claimed_host": host[:255],
            "claimed_pid": os.getpid()}


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid runs on this host; a zombie counts as dead.

    Unknown (None) counts as alive: without a pid we cannot tell, and the lease decides.
    A pid reused by an unrelated process also counts as alive, so the lease decides then too.
    """
    if not pid:
        return True
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _held_by_the_dead_here(model: type[Model], **filters) -> list[tuple[int, uuid.UUID]]:
    """(id, token) of the model's claims held on this host by a process that is no longer alive."""
    held = model.objects.filter(claim_token__isnull=False, claimed_host=socket.gethostname(), **filters)
    return [(pk, token) for pk, token, pid in held.values_list("pk", "claim_token", "claimed_pid")
            if pid and pid != os.getpid() and not pid_alive(pid)]


def claims_release_dead(model: type[Model]) -> list[int]:
    """Expire the claims of `model` that dead processes on this host hold; returns their ids.

    The lease is ended, not the unit: it stays running (or queued), and the next
    claim takes it at once. The caller queues the units again.
    """
    released = []
    for pk, token in _held_by_the_dead_here(model):
        if model.objects.filter(pk=pk, claim_token=token).update(claimed_until=timezone.now()):
            released.append(pk)
    if released:
        log.warning("released %s claim(s) of %s held by dead processes on this host: %s",
                    len(released), model._meta.label, released)
    return released


def claim_release_if_dead(model: type[Model], pk: int) -> bool:
    """End the claim on one row when its holder is a dead process on this host; True when it did."""
    for _, token in _held_by_the_dead_here(model, pk=pk):
        if model.objects.filter(pk=pk, claim_token=token).update(claimed_until=timezone.now()):
            log.warning("took over %s %s from a dead process on this host", model._meta.label, pk)
            return True
    return False


def lease_renew(model: type[Model], pk: int, token: uuid.UUID, *, lease: timedelta, **fields) -> bool:
    """Push the lease forward (with `fields`, e.g. progress); False when the claim is no longer ours."""
    now = timezone.now()
    return bool(model.objects.filter(pk=pk, claim_token=token).update(claimed_until=now + lease, **fields))


def stale_ids(model: type[Model], *, idle_seconds: int) -> list[int]:
    """Ids of the model's unfinished rows nobody works on: an expired claim, or queued and untouched."""
    now = timezone.now()
    stale = model.objects.filter(
        Q(status=model.Status.RUNNING, claimed_until__lt=now)
        | Q(status=model.Status.QUEUED, updated_at__lt=now - timedelta(seconds=idle_seconds))
    )
    return list(stale.values_list("id", flat=True))


def claim(model: type[Model], pk: int, *, lease: timedelta, **reset) -> uuid.UUID | None:
    """Take a row with a conditional update: queued, or running with an expired claim
    (or one a dead process on this host holds).

    Returns the new claim token, or None when the row is finished or someone
    else holds it. `reset` names the progress fields a fresh run starts from.
    """
    for attempt in (1, 2):
        now = timezone.now()
        token = uuid.uuid4()
        claimed = (
            model.objects.filter(pk=pk)
            .filter(Q(status=model.Status.QUEUED) | Q(status=model.Status.RUNNING, claimed_until__lt=now))
            .update(status=model.Status.RUNNING, claim_token=token, claimed_until=now + lease, started_at=now,
                    **claim_owner(), **reset)
        )
        if claimed:
            return token
        if attempt == 1 and not claim_release_if_dead(model, pk):
            return None
    return None


def chunk_claim(model: type[Model], pk: int, *, lease: timedelta) -> uuid.UUID | None:
    """Take a unit that runs as a chain of chunks (a generation job, a training run) for its next chunk.

    The unit is active (`model.ACTIVE`) and unclaimed between chunks, or its claim
    expired, or a dead process on this host holds it. Its first start time is kept.
    Returns the new token, or None when the unit ended or someone alive holds it.
    """
    for attempt in (1, 2):
        now = timezone.now()
        token = uuid.uuid4()
        claimed = (
            model.objects.filter(pk=pk, status__in=model.ACTIVE)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .update(status=model.Status.RUNNING, claim_token=token, claimed_until=now + lease,
                    started_at=Coalesce("started_at", now), updated_at=now, **claim_owner())
        )
        if claimed:
            return token
        if attempt == 1 and not claim_release_if_dead(model, pk):
            return None
    return None


@contextlib.contextmanager
def lease_kept(model: type[Model], pk: int, token: uuid.UUID, *, lease: timedelta):
    """Renew the lease from a thread while the body does one long thing that cannot renew it itself
    (loading a model, writing and checking what it trained).

    The thread renews every third of the lease and stops when the claim is no
    longer ours. A process that dies renews nothing, so its lease still runs out
    as short as it is; only a live holder is kept.
    """
    done = threading.Event()

    def renew() -> None:
        from django.db import connection

        try:
            while not done.wait(max(1.0, lease.total_seconds() / 3)):
                if not lease_renew(model, pk, token, lease=lease):
                    return
        except Exception:  # a renewal that fails leaves the lease to run out; the body goes on
            log.exception("could not renew the lease of %s %s", model._meta.label, pk)
        finally:
            connection.close()  # the thread's own connection

    thread = threading.Thread(target=renew, name=f"lease-{model._meta.model_name}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=30)
