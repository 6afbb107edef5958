"""Reviewer decisions. One decision per sample wins; every decision is logged."""
from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from curation.models import Generation, Review, Sample


class ReviewError(Exception):
    """A decision that cannot be recorded; the message is shown to the reviewer."""


class AlreadyDecided(ReviewError):
    pass


def sample_decide(*, sample: Sample, reviewer, decision: str, reason: str = "") -> Review:
    """Record a reviewer's decision on a pending sample.

    The status changes with a conditional update, so when two reviewers decide
    the same sample at once exactly one update matches and the other is told.
    """
    if decision not in Review.Decision.values:
        raise ReviewError(f"unknown decision {decision!r}; use one of {', '.join(Review.Decision.values)}")
    new_status = Sample.Status.ACCEPTED if decision == Review.Decision.ACCEPT else Sample.Status.REJECTED
    with transaction.atomic():
        # A share lock on the generation: deciding goes on in parallel, but not
        # while a training set is being built from it (that takes FOR UPDATE).
        with connection.cursor() as cursor:
            cursor.execute("SELECT status FROM curation_generation WHERE id = %s FOR SHARE", [sample.generation_id])
            row = cursor.fetchone()
        if row is None or row[0] != Generation.Status.OPEN:
            raise ReviewError(f"sample {sample.pk} belongs to a closed generation")
        # The conditional update touches only this row (no join), so PostgreSQL
        # re-checks `status` after waiting for a concurrent decision: one wins.
        changed = Sample.objects.filter(pk=sample.pk, status=Sample.Status.PENDING).update(
            status=new_status, decided_at=timezone.now()
        )
        if not changed:
            current = Sample.objects.filter(pk=sample.pk).values_list("status", flat=True).first()
            if current is None:
                raise ReviewError(f"sample {sample.pk} no longer exists")
            raise AlreadyDecided(f"sample {sample.pk} was already decided ({current})")
        return Review.objects.create(sample=sample, reviewer=reviewer, decision=decision, reason=reason[:200])


def sample_accept(*, sample: Sample, reviewer) -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.ACCEPT)


def sample_reject(*, sample: Sample, reviewer, reason: str = "") -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.REJECT, reason=reason)
