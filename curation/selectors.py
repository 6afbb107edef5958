"""Reads of the curation app."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from curation.models import Flag, Generation, Lineage, Review, Sample


def lineage_list() -> QuerySet[Lineage]:
    return Lineage.objects.order_by("name")


def lineage_open_generation(*, lineage: Lineage) -> Generation | None:
    return Generation.objects.filter(lineage=lineage, status=Generation.Status.OPEN).first()


def _queue(lineage: Lineage) -> QuerySet[Sample]:
    return Sample.objects.filter(
        lineage=lineage,
        status=Sample.Status.PENDING,
        generation__status=Generation.Status.OPEN,
        flagged_at__isnull=False,
    )


def review_queue_next(*, reviewer, lineage: Lineage) -> Sample | None:
    """The next sample for a reviewer: flagged ones first (highest risk first), then oldest."""
    flagged = Flag.objects.filter(sample=OuterRef("pk"))
    return (
        _queue(lineage)
        .annotate(has_flags=Exists(flagged))
        .order_by("-has_flags", "id")
        .select_related("passage", "generation", "job")
        .prefetch_related(Prefetch("flags", queryset=Flag.objects.order_by("kind")))
        .first()
    )


@dataclass(frozen=True)
class QueueStats:
    remaining: int
    waiting_for_flags: int
    decided_today: int


def review_queue_stats(*, reviewer, lineage: Lineage) -> QueueStats:
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    unflagged = Sample.objects.filter(
        lineage=lineage, status=Sample.Status.PENDING, generation__status=Generation.Status.OPEN,
        flagged_at__isnull=True,
    ).count()
    return QueueStats(
        remaining=_queue(lineage).count(),
        waiting_for_flags=unflagged,
        decided_today=Review.objects.filter(
            reviewer=reviewer, sample__lineage=lineage, created_at__gte=start_of_day
        ).count(),
    )


def lineage_overview(*, lineage: Lineage) -> dict:
    """Counts for the curator's lineage page."""
    generation = lineage_open_generation(lineage=lineage)
    counts = {"pending": 0, "accepted": 0, "rejected": 0}
    if generation is not None:
        rows = Sample.objects.filter(generation=generation).values("status").annotate(n=Count("id"))
        counts.update({row["status"]: row["n"] for row in rows})
    return {
        "generation": generation,
        "counts": counts,
        "flagged": Sample.objects.filter(generation=generation).filter(Q(flags__isnull=False)).distinct().count()
        if generation
        else 0,
        "passages": lineage.passages.count(),
    }
