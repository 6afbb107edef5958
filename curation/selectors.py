"""Reads of the curation app."""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from curation.models import DuplicateCluster, Flag, Generation, Lineage, Review, Sample


def lineage_list() -> QuerySet[Lineage]:
    return Lineage.objects.order_by("name")


def lineage_open_generation(*, lineage: Lineage) -> Generation | None:
    return Generation.objects.filter(lineage=lineage, status=Generation.Status.OPEN).first()


# Counting a queue of 10^5 pending samples on every card would cost more than
# the rest of the request; past this, the card says "1000+".
REMAINING_COUNT_CAP = 1000


@dataclass(frozen=True)
class QueueStats:
    remaining: int
    waiting_for_flags: int
    decided_today: int

    @property
    def remaining_display(self) -> str:
        return f"{REMAINING_COUNT_CAP}+" if self.remaining > REMAINING_COUNT_CAP else str(self.remaining)


def review_queue_stats(*, reviewer, lineage: Lineage, samples: QuerySet[Sample]) -> QueueStats:
    """How much is left in the reviewer's view of the queue, and what they decided today."""
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    unflagged = Sample.objects.filter(
        lineage=lineage, status=Sample.Status.PENDING, flagged_at__isnull=True,
        generation__status=Generation.Status.OPEN,
    ).order_by()[: REMAINING_COUNT_CAP + 1].count()
    decided_today = (
        Review.objects.filter(reviewer=reviewer, sample__lineage=lineage, created_at__gte=start_of_day)
        .exclude(decision=Review.Decision.UNDO)
        .filter(undone_by__isnull=True)
        .count()
    )
    return QueueStats(remaining=samples.order_by()[: REMAINING_COUNT_CAP + 1].count(), waiting_for_flags=unflagged,
                      decided_today=decided_today)


def sample_for_card(*, pk: int) -> Sample:
    """One sample with everything its review card shows, in a fixed number of queries."""
    return (
        Sample.objects.select_related("passage", "generation", "job", "lineage", "leased_to")
        .prefetch_related(Prefetch("flags", queryset=Flag.objects.order_by("kind")))
        .get(pk=pk)
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


def reviewer_agreement(*, lineage: Lineage | None = None) -> list[dict]:
    """Cohen's kappa per reviewer pair, over samples that had a second, blind review.

    Labels are accept/reject (an edit counts as accept); undone decisions are left out.
    """
    from curation import metrics

    # The system reviewer (auto review) decides by the flags: it is no rater, so it is left out.
    standing = Review.objects.filter(undone_by__isnull=True, system=False).exclude(decision=Review.Decision.UNDO)
    seconds = standing.filter(overlap=True).select_related("reviewer")
    if lineage is not None:
        seconds = seconds.filter(sample__lineage=lineage)
    firsts = {
        r.sample_id: r
        for r in standing.filter(overlap=False, sample_id__in=[s.sample_id for s in seconds])
        .select_related("reviewer").order_by("created_at", "id")
    }

    def label(review: Review) -> str:
        return "reject" if review.decision == Review.Decision.REJECT else "accept"

    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for second in seconds:
        first = firsts.get(second.sample_id)
        if first is None:
            continue
        (a, la), (b, lb) = sorted([(first.reviewer.username, label(first)), (second.reviewer.username, label(second))])
        by_pair.setdefault((a, b), []).append((la, lb))
    return [
        {"pair": pair, "n": len(pairs), "agreement": sum(x == y for x, y in pairs) / len(pairs),
         "kappa": metrics.cohens_kappa(metrics.agreement_table(pairs, ["accept", "reject"]))}
        for pair, pairs in sorted(by_pair.items())
    ]


# ----------------------------------------------------------------------------- near-duplicate clusters


def duplicate_clusters(*, lineage: Lineage) -> QuerySet[DuplicateCluster]:
    """The lineage's clusters of two or more near-duplicates, biggest first, with member and pending counts."""
    return (
        DuplicateCluster.objects.filter(lineage=lineage)
        .annotate(size=Count("members"), pending=Count("members", filter=Q(members__status=Sample.Status.PENDING)))
        .filter(size__gte=2)
        .select_related("representative")
        .order_by("-size", "id")
    )


def duplicate_cluster_members(*, cluster: DuplicateCluster) -> QuerySet[Sample]:
    return cluster.members.order_by("id").only("id", "question", "answer", "status", "duplicate_score", "cluster_id")


@dataclass(frozen=True)
class ClusterSummary:
    id: int
    size: int
    pending: int
    accepted: int
    rejected: int
    member_ids: list[int]


def sample_cluster(*, sample: Sample) -> ClusterSummary | None:
    """What the review card says about the sample's cluster (None when it is in none of size ≥ 2)."""
    if sample.cluster_id is None:
        return None
    members = list(Sample.objects.filter(cluster_id=sample.cluster_id).order_by("id").values("id", "status"))
    if len(members) < 2:
        return None
    count = {status: sum(1 for m in members if m["status"] == status) for status in Sample.Status.values}
    return ClusterSummary(sample.cluster_id, len(members), count["pending"], count["accepted"], count["rejected"],
                          [m["id"] for m in members])


# ----------------------------------------------------------------------------- calibration and re-flag runs


REVIEW_REASONS = {Flag.Kind.HALLUCINATION: "hallucination", Flag.Kind.NEAR_DUPLICATE: "duplicate"}


def review_labels(*, lineage: Lineage, kind: str) -> tuple[list[int], list[float]]:
    """Labels and scores from past decisions: rejected for this kind's reason is 1, accepted is 0.

    Samples rejected for another reason say nothing about this detector and are
    left out, as are samples without a score. The latest decision counts.
    """
    score_field = "hallucination_score" if kind == Flag.Kind.HALLUCINATION else "duplicate_score"
    labels, scores = [], []
    samples = Sample.objects.filter(lineage=lineage, **{f"{score_field}__isnull": False}).exclude(
        status=Sample.Status.PENDING
    )
    latest = {}
    for review in Review.objects.filter(sample__in=samples).order_by("created_at", "id").values(
        "sample_id", "decision", "reason"
    ):
        latest[review["sample_id"]] = review
    for sample_id, score in samples.values_list("id", score_field):
        review = latest.get(sample_id)
        if review is None:
            continue
        if review["decision"] == Review.Decision.ACCEPT:
            labels.append(0)
        elif review["reason"] == REVIEW_REASONS[kind]:
            labels.append(1)
        else:
            continue
        scores.append(score)
    return labels, scores

