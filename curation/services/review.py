"""Reviewer decisions and the queue's leases.

Every decision is a conditional update of one sample's status plus an
append-only Review row, so two decisions racing on one sample record exactly
one, and an undo is a new row that points at the decision it reverts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from curation.models import Flag, Generation, Lineage, Review, Sample

MAX_EDIT_CHARS = 8000


class ReviewError(Exception):
    """A decision that cannot be recorded; the message is shown to the reviewer."""


class AlreadyDecided(ReviewError):
    pass


class LeasedElsewhere(ReviewError):
    pass


# ------------------------------------------------------------------ the queue


class Order:
    RISK = "risk"
    NOVEL = "novel"
    RANDOM = "random"
    OLDEST = "oldest"
    CHOICES = [(RISK, "Highest risk first"), (NOVEL, "Most novel first"), (RANDOM, "Random"), (OLDEST, "Oldest first")]


@dataclass(frozen=True)
class QueueFilter:
    """What a reviewer asked to see. `flag` is a Flag.Kind, "none" (unflagged) or "" (any)."""

    generation: int | None = None
    flag: str = ""
    min_risk: float | None = None
    max_risk: float | None = None
    order: str = Order.RISK
    cluster: int | None = None  # a near-duplicate cluster's id


def _open_generation_id(lineage: Lineage) -> int | None:
    """The one open generation's id, looked up once per lineage object. Filtering
    on it, rather than joining on generation status, keeps the queue's queries on
    the sample table's partial indexes."""
    if not hasattr(lineage, "_open_generation_id"):
        lineage._open_generation_id = Generation.objects.filter(
            lineage=lineage, status=Generation.Status.OPEN).values_list("id", flat=True).first()
    return lineage._open_generation_id


def queue_samples(*, lineage: Lineage, filters: QueueFilter) -> QuerySet[Sample]:
    """Pending, flagged samples of the lineage's open generation matching the filters (no lease check)."""
    samples = Sample.objects.filter(
        lineage=lineage, status=Sample.Status.PENDING, generation_id=_open_generation_id(lineage),
        flagged_at__isnull=False,
    )
    return _filtered(samples, filters)


def overlap_samples(*, lineage: Lineage, reviewer, filters: QueueFilter) -> QuerySet[Sample]:
    """Samples drawn for a second, blind review that this reviewer did not decide and nobody has yet."""
    mine = Review.objects.filter(sample=OuterRef("pk"), reviewer=reviewer, undone_by__isnull=True).exclude(
        decision=Review.Decision.UNDO)
    second = Review.objects.filter(sample=OuterRef("pk"), overlap=True, undone_by__isnull=True)
    samples = Sample.objects.filter(
        lineage=lineage, double_review=True, status__in=[Sample.Status.ACCEPTED, Sample.Status.REJECTED],
        generation_id=_open_generation_id(lineage),
    ).exclude(Exists(mine)).exclude(Exists(second))
    return _filtered(samples, filters)


def _filtered(samples: QuerySet[Sample], filters: QueueFilter) -> QuerySet[Sample]:
    if filters.cluster is not None:
        samples = samples.filter(cluster_id=filters.cluster)
    if filters.generation is not None:
        samples = samples.filter(generation__number=filters.generation)
    if filters.flag == "none":
        samples = samples.filter(~Exists(Flag.objects.filter(sample=OuterRef("pk"))))
    elif filters.flag:
        samples = samples.filter(Exists(Flag.objects.filter(sample=OuterRef("pk"), kind=filters.flag)))
    if filters.min_risk is not None:
        samples = samples.filter(risk__gte=filters.min_risk)
    if filters.max_risk is not None:
        samples = samples.filter(risk__lte=filters.max_risk)
    return samples


def _ordered(samples: QuerySet[Sample], order: str) -> QuerySet[Sample]:
    if order == Order.NOVEL:
        return samples.order_by("-novelty", "id")
    if order == Order.OLDEST:
        return samples.order_by("id")
    if order == Order.RANDOM:
        # A random starting point in id order: an index scan, not a sort of the whole queue.
        bounds = samples.order_by("id").values_list("id", flat=True)
        first, last = bounds.first(), samples.order_by("-id").values_list("id", flat=True).first()
        if first is None:
            return samples.order_by("id")
        pivot = random.randint(first, last)
        after = samples.filter(id__gte=pivot).order_by("id")
        return after if after.exists() else samples.order_by("id")
    return samples.order_by("-risk", "id")


def sample_lease_next(*, reviewer, lineage: Lineage, filters: QueueFilter = QueueFilter(),
                      exclude_ids: tuple[int, ...] = ()) -> Sample | None:
    """Lease the reviewer their next card and return it.

    1. A card the reviewer already holds comes back first (a reload shows the same card).
    2. Otherwise the first matching sample that nobody holds (or whose lease
       expired) is locked with SKIP LOCKED, so two reviewers asking at the same
       moment get different samples, and leased for the lineage's lease time.
    """
    now = timezone.now()
    pending = queue_samples(lineage=lineage, filters=filters).exclude(id__in=exclude_ids)
    # Second reviews exist only where the lineage draws them; skip their queries otherwise.
    overlap = (overlap_samples(lineage=lineage, reviewer=reviewer, filters=filters).exclude(id__in=exclude_ids)
               if lineage.overlap_fraction > 0 else None)
    eligible = pending if overlap is None else (pending | overlap)
    held = eligible.filter(leased_to=reviewer, lease_expires_at__gt=now).order_by("id").first()
    if held is not None:
        return held
    # Second reviews first: they are few, and agreement can only be measured on them.
    queues = [(pending, filters.order)] if overlap is None else [(overlap, Order.OLDEST), (pending, filters.order)]
    for samples, order in queues:
        free = samples.exclude(leased_to__isnull=False, lease_expires_at__gt=now)
        with transaction.atomic():
            sample = _ordered(free, order).select_for_update(skip_locked=True, of=("self",)).first()
            if sample is None:
                continue
            expires = now + timedelta(seconds=lineage.lease_seconds)
            Sample.objects.filter(pk=sample.pk).update(leased_to=reviewer, lease_expires_at=expires)
        sample.leased_to, sample.lease_expires_at = reviewer, expires
        return sample
    return None


def sample_release(*, sample: Sample, reviewer) -> bool:
    """Give a card back (skip): anyone may then be shown it."""
    return bool(
        Sample.objects.filter(pk=sample.pk, leased_to=reviewer).update(leased_to=None, lease_expires_at=None)
    )


# ------------------------------------------------------------------ decisions


def _lock_open_generation(generation_id: int, sample_pk: int) -> None:
    """A share lock on the generation: decisions go on in parallel, but not
    while a training set is built from it (the builder takes FOR UPDATE)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM curation_generation WHERE id = %s FOR SHARE", [generation_id])
        row = cursor.fetchone()
    if row is None or row[0] != Generation.Status.OPEN:
        raise ReviewError(f"sample {sample_pk} belongs to a closed generation")


def _check_reason(lineage: Lineage, reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise ReviewError("a rejection needs a reason")
    allowed = lineage.reject_reasons or []
    head = reason.split(":", 1)[0].strip()
    if allowed and head not in allowed:
        raise ReviewError(f"unknown reject reason {head!r}; this lineage uses: {', '.join(allowed)}")
    if head == "other" and not reason.split(":", 1)[1:]:
        raise ReviewError("'other' needs a few words of explanation")
    return reason[:500]


def sample_decide(*, sample: Sample, reviewer, decision: str, reason: str = "", edited_answer: str = "",
                  bulk: bool = False, overlap: bool = False) -> Review:
    """Record a decision on a pending sample: accept, reject (with a reason) or edit-and-accept.

    The status changes with a conditional update that touches only the sample's
    row, so PostgreSQL re-checks `status` after waiting for a concurrent
    decision: exactly one wins, the other is told. A card leased to someone
    else cannot be decided by another reviewer until the lease runs out.
    """
    if decision not in (Review.Decision.ACCEPT, Review.Decision.REJECT, Review.Decision.EDIT):
        raise ReviewError(f"unknown decision {decision!r}; use accept, reject or edit")
    lineage = sample.lineage
    if decision == Review.Decision.REJECT:
        reason = _check_reason(lineage, reason)
    else:
        reason = ""
    if decision == Review.Decision.EDIT:
        edited_answer = edited_answer.strip()
        if not edited_answer:
            raise ReviewError("the edited answer is empty")
        if len(edited_answer) > MAX_EDIT_CHARS:
            raise ReviewError(f"the edited answer is over {MAX_EDIT_CHARS} characters")
    if overlap:
        return _second_review(sample=sample, reviewer=reviewer, decision=decision, reason=reason,
                              edited_answer=edited_answer)
    new_status = Sample.Status.REJECTED if decision == Review.Decision.REJECT else Sample.Status.ACCEPTED
    now = timezone.now()
    with transaction.atomic():
        _lock_open_generation(sample.generation_id, sample.pk)
        updates = {"status": new_status, "decided_at": now, "leased_to": None, "lease_expires_at": None}
        if decision == Review.Decision.EDIT:
            # Keep the generated answer the first time it is edited; an undo puts it back.
            updates["original_answer"] = Case(When(original_answer="", then=F("answer")), default=F("original_answer"))
            updates["answer"] = Value(edited_answer)
        matching = Sample.objects.filter(pk=sample.pk, status=Sample.Status.PENDING)
        if not bulk:  # a curator's bulk action overrides leases; a reviewer waits for them
            matching = matching.filter(
                Q(leased_to__isnull=True) | Q(leased_to=reviewer) | Q(lease_expires_at__lte=now)
            )
        changed = matching.update(**updates)
        if not changed:
            current = Sample.objects.filter(pk=sample.pk).values_list("status", "leased_to__username").first()
            if current is None:
                raise ReviewError(f"sample {sample.pk} no longer exists")
            if current[0] != Sample.Status.PENDING:
                raise AlreadyDecided(f"sample {sample.pk} was already decided ({current[0]})")
            raise LeasedElsewhere(f"sample {sample.pk} is being reviewed by {current[1]}")
        return Review.objects.create(sample=sample, reviewer=reviewer, decision=decision, reason=reason,
                                     edited_answer=edited_answer, bulk=bulk)


def _second_review(*, sample: Sample, reviewer, decision: str, reason: str, edited_answer: str) -> Review:
    """A blind second decision on a double-review sample: logged for agreement, status untouched."""
    with transaction.atomic():
        _lock_open_generation(sample.generation_id, sample.pk)
        locked = Sample.objects.select_for_update().get(pk=sample.pk)  # one second review wins
        if not locked.double_review or locked.status == Sample.Status.PENDING:
            raise ReviewError(f"sample {sample.pk} is not waiting for a second review")
        active = Review.objects.filter(sample=locked, undone_by__isnull=True).exclude(decision=Review.Decision.UNDO)
        if active.filter(overlap=True).exists():
            raise AlreadyDecided(f"sample {sample.pk} already has its second review")
        if active.filter(reviewer=reviewer).exists():
            raise ReviewError(f"you already decided sample {sample.pk}; a second review needs another reviewer")
        Sample.objects.filter(pk=sample.pk, leased_to=reviewer).update(leased_to=None, lease_expires_at=None)
        return Review.objects.create(sample=locked, reviewer=reviewer, decision=decision, reason=reason,
                                     edited_answer=edited_answer, overlap=True)


def sample_accept(*, sample: Sample, reviewer) -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.ACCEPT)


def sample_reject(*, sample: Sample, reviewer, reason: str) -> Review:
    return sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.REJECT, reason=reason)


def review_undo(*, reviewer, lineage: Lineage) -> Review | None:
    """Revert the reviewer's latest decision that still stands; None when there is none.

    The sample goes back to pending (an edit's original answer is restored) and
    is leased back to the reviewer, so it is the next card they see. Pressed
    again, it reverts the decision before that.
    """
    candidates = (
        Review.objects.filter(reviewer=reviewer, sample__lineage=lineage, undone_by__isnull=True, bulk=False,
                              decision__in=[Review.Decision.ACCEPT, Review.Decision.REJECT, Review.Decision.EDIT],
                              sample__generation__status=Generation.Status.OPEN)
        .select_related("sample")
        .order_by("-created_at", "-id")[:20]
    )
    for review in candidates:
        sample = review.sample
        if review.overlap:
            with transaction.atomic():
                Sample.objects.filter(pk=sample.pk).update(
                    leased_to=reviewer, lease_expires_at=timezone.now() + timedelta(seconds=lineage.lease_seconds))
                return Review.objects.create(sample=sample, reviewer=reviewer, decision=Review.Decision.UNDO,
                                             undoes=review, overlap=True)
        expected = Sample.Status.REJECTED if review.decision == Review.Decision.REJECT else Sample.Status.ACCEPTED
        with transaction.atomic():
            _lock_open_generation(sample.generation_id, sample.pk)
            reverted = Sample.objects.filter(pk=sample.pk, status=expected).update(
                status=Sample.Status.PENDING, decided_at=None, leased_to=reviewer,
                lease_expires_at=timezone.now() + timedelta(seconds=lineage.lease_seconds),
            )
            if not reverted:
                continue  # decided again since (by someone else): not this reviewer's to undo
            if review.decision == Review.Decision.EDIT:
                original = Sample.objects.filter(pk=sample.pk).values_list("original_answer", flat=True).first()
                Sample.objects.filter(pk=sample.pk).update(answer=original, original_answer="")
            return Review.objects.create(sample=sample, reviewer=reviewer, decision=Review.Decision.UNDO,
                                         undoes=review)
    return None


def samples_bulk_decide(*, samples: QuerySet[Sample], reviewer, decision: str, reason: str = "",
                        expected_count: int) -> int:
    """Decide a whole selection, after a confirmation that named its size.

    Refuses when the selection no longer has `expected_count` samples (someone
    decided some in between), so a curator never decides more than they saw.
    """
    if decision not in (Review.Decision.ACCEPT, Review.Decision.REJECT):
        raise ReviewError("bulk actions accept or reject")
    ids = list(samples.filter(status=Sample.Status.PENDING).order_by("id").values_list("id", flat=True))
    if len(ids) != expected_count:
        raise ReviewError(f"the selection now has {len(ids)} samples, not the {expected_count} you confirmed; "
                          "look again before deciding")
    decided = 0
    for sample in Sample.objects.filter(id__in=ids).select_related("lineage").order_by("id"):
        try:
            sample_decide(sample=sample, reviewer=reviewer, decision=decision, reason=reason, bulk=True)
            decided += 1
        except AlreadyDecided:
            continue
    return decided
