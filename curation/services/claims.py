"""What the claimed units of work share (exports, imports): taking one, and finding the ones nobody works on.

A unit is claimed by one worker at a time (a token and a lease on its row);
while it runs the worker pushes `claimed_until` forward. One whose lease ran
out, or that sat queued and untouched, lost its worker or its message.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from django.db.models import Model, Q
from django.utils import timezone


def stale_ids(model: type[Model], *, idle_seconds: int) -> list[int]:
    """Ids of the model's unfinished rows nobody works on: an expired claim, or queued and untouched."""
    now = timezone.now()
    stale = model.objects.filter(
        Q(status=model.Status.RUNNING, claimed_until__lt=now)
        | Q(status=model.Status.QUEUED, updated_at__lt=now - timedelta(seconds=idle_seconds))
    )
    return list(stale.values_list("id", flat=True))


def claim(model: type[Model], pk: int, *, lease: timedelta, **reset) -> uuid.UUID | None:
    """Take a row with a conditional update: queued, or running with an expired claim.

    Returns the new claim token, or None when the row is finished or someone
    else holds it. `reset` names the progress fields a fresh run starts from.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        model.objects.filter(pk=pk)
        .filter(Q(status=model.Status.QUEUED) | Q(status=model.Status.RUNNING, claimed_until__lt=now))
        .update(status=model.Status.RUNNING, claim_token=token, claimed_until=now + lease, started_at=now, **reset)
    )
    return token if claimed else None
