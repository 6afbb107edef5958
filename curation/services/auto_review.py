"""Auto review, for experiments: a system reviewer decides by the flags alone.

With a lineage's `auto_review` on, every flagged-and-checked pending sample of
its open generation is accepted when no detector marked it and rejected (with
the flag's reason) when one did. The decisions go through the same service as
a person's (`sample_decide`), so the log, the status rules and the leases hold;
each is marked `Review.system` and made by the system reviewer, a user without
a usable password who belongs to no group, and agreement (κ) leaves them out.

It is meant for unattended experiments (`manage.py run_loop`, the recursion
bench), where waiting for people would stop the loop: it is only as good as the
detectors, which is the point the curated arm of the bench measures.

Mode `accept-all` is the bench's uncurated arm: the same system reviewer accepts
every checked sample, flagged or not (no curation at all), still waiting for the
detectors so that the flag rates of what it let through are measured. It is an
argument of the call, never a lineage setting: nothing a curator can switch on
by mistake.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from curation.models import Flag, Generation, Lineage, Review, Sample
from curation.services.review import ReviewError, sample_decide

SYSTEM_REVIEWER = "ouroboros-auto-review"
# The reject reason each flag gives, when the lineage offers it; else "other: <why>".
FLAG_REASONS = {Flag.Kind.NEAR_DUPLICATE: "duplicate", Flag.Kind.HALLUCINATION: "hallucination"}
BY_FLAGS = "flags"  # accept what no flag marked, reject what one did
ACCEPT_ALL = "accept-all"  # accept every checked sample: the uncurated arm of the recursion bench
MODES = (BY_FLAGS, ACCEPT_ALL)


class AutoReviewError(ValueError):
    """Auto review asked of a lineage that does not allow it."""


@dataclass
class AutoReviewOutcome:
    accepted: int = 0
    rejected: int = 0
    skipped: int = 0  # decided meanwhile by someone else, or leased to a person
    waiting: int = 0  # pending samples the detectors have not checked yet


def system_reviewer():
    """The system reviewer's user (created on first use; it can never log in)."""
    user, created = get_user_model().objects.get_or_create(username=SYSTEM_REVIEWER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _reason(lineage: Lineage, kinds: list[str]) -> str:
    allowed = lineage.reject_reasons or []
    for kind in kinds:
        reason = FLAG_REASONS.get(kind)
        if reason and (not allowed or reason in allowed):
            return reason
    return f"other: auto review: flagged as {', '.join(sorted(set(kinds)))}"


def samples_auto_review(*, lineage: Lineage, limit: int | None = None, mode: str = BY_FLAGS) -> AutoReviewOutcome:
    """Decide the open generation's checked pending samples by their flags, as the system reviewer.

    Samples not yet checked by the detectors (`flagged_at` empty) wait; a sample
    someone decided or leased meanwhile is skipped. Running it twice decides
    nothing twice. `mode` ACCEPT_ALL accepts flagged samples too.
    """
    if mode not in MODES:
        raise AutoReviewError(f"unknown auto review mode {mode!r}; use {' or '.join(MODES)}")
    if not lineage.auto_review:
        raise AutoReviewError(f"lineage {lineage.slug} does not have auto review on")
    outcome = AutoReviewOutcome()
    generation = Generation.objects.filter(lineage=lineage, status=Generation.Status.OPEN).first()
    if generation is None:
        return outcome
    pending = Sample.objects.filter(generation=generation, status=Sample.Status.PENDING)
    outcome.waiting = pending.filter(flagged_at__isnull=True).count()
    reviewer = system_reviewer()
    checked = pending.filter(flagged_at__isnull=False).select_related("lineage")
    if mode == BY_FLAGS:  # only this mode reads the flags
        checked = checked.prefetch_related("flags")
    for sample in checked.order_by("id")[:limit]:
        kinds = [flag.kind for flag in sample.flags.all()] if mode == BY_FLAGS else []
        try:
            with transaction.atomic():
                if kinds:
                    review = sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.REJECT,
                                           reason=_reason(lineage, kinds))
                else:
                    review = sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.ACCEPT)
                Review.objects.filter(pk=review.pk).update(system=True)
        except ReviewError:
            outcome.skipped += 1
            continue
        if kinds:
            outcome.rejected += 1
        else:
            outcome.accepted += 1
    return outcome
