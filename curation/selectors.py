"""Reads of the curation app."""
from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from curation.models import DuplicateCluster, Flag, Generation, Lineage, Review, Sample, SourcePassage


def lineage_list() -> QuerySet[Lineage]:
    return Lineage.objects.order_by("name")


def lineage_open_generation(*, lineage: Lineage) -> Generation | None:
    return Generation.objects.filter(lineage=lineage, status=Generation.Status.OPEN).first()


def lineage_open_generation_number(*, lineage: Lineage) -> int | None:
    """The open generation's number, read once per lineage object (a decision's read carries it)."""
    if not hasattr(lineage, "_open_generation_number"):
        lineage._open_generation_number = (Generation.objects.filter(lineage=lineage, status=Generation.Status.OPEN)
                                           .values_list("number", flat=True).first())
    return lineage._open_generation_number


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


def _compiled(queryset: QuerySet) -> tuple[str, list]:
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def _start_of_day():
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def review_stats_sql(*, reviewer_id: int, lineage_id: int, samples: QuerySet[Sample], day_start) -> tuple[str, list]:
    """Three scalar subqueries (remaining, waiting for flags, decided since
    `day_start`) as SQL select-list items, for a statement that reads the card
    in the same round trip."""
    remaining, params = _compiled(samples.order_by().values("id")[: REMAINING_COUNT_CAP + 1])
    unflagged, more = _compiled(
        Sample.objects.filter(lineage_id=lineage_id, status=Sample.Status.PENDING, flagged_at__isnull=True,
                              generation__status=Generation.Status.OPEN)
        .order_by().values("id")[: REMAINING_COUNT_CAP + 1])
    params += more
    today, more = _compiled(
        Review.objects.filter(reviewer_id=reviewer_id, sample__lineage_id=lineage_id, created_at__gte=day_start)
        .exclude(decision=Review.Decision.UNDO).filter(undone_by__isnull=True).order_by().values("id"))
    params += more
    return (f"(SELECT count(*) FROM ({remaining}) AS remaining) AS stats_remaining, "
            f"(SELECT count(*) FROM ({unflagged}) AS unflagged) AS stats_unflagged, "
            f"(SELECT count(*) FROM ({today}) AS today) AS stats_today"), params


def cluster_members_sql(alias: str) -> str:
    """A select-list item: the (id, status) pairs of the cluster of the sample
    row `alias`, as JSON text; a sample in a second review (decided already)
    leaves itself out, so its status cannot give the first decision away."""
    return (f"(SELECT json_agg(json_build_array(m.id, m.status) ORDER BY m.id)::text FROM curation_sample AS m "
            f"WHERE m.cluster_id = {alias}.cluster_id AND ({alias}.status = 'pending' OR m.id <> {alias}.id)) "
            "AS cluster_members")


def review_card_extras(*, reviewer, lineage: Lineage, samples: QuerySet[Sample], sample: Sample | None = None
                       ) -> tuple[QueueStats, ClusterSummary | None]:
    """The queue's counts, and the card's near-duplicate cluster, in one statement.

    Counts stop at REMAINING_COUNT_CAP + 1. A card of a decided sample is a
    blind second review: the cluster's counts leave the sample itself out.
    """
    stats_sql, params = review_stats_sql(reviewer_id=reviewer.pk, lineage_id=lineage.pk, samples=samples,
                                         day_start=_start_of_day())
    cluster_sql = "NULL"
    if sample is not None and sample.cluster_id is not None:
        cluster_sql = cluster_members_sql("c")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {stats_sql}, {cluster_sql} FROM (SELECT %s::bigint AS id, %s::bigint AS cluster_id, "
                       "%s::text AS status) AS c",
                       [*params, sample.pk if sample else None, sample.cluster_id if sample else None,
                        sample.status if sample else None])
        row = cursor.fetchone()
    return card_extras_from_row(sample, row)


def card_extras_from_row(sample: Sample | None, row) -> tuple[QueueStats, ClusterSummary | None]:
    """(remaining, unflagged, today, cluster members JSON) as the card shows them."""
    n_remaining, n_unflagged, n_today, members = row
    stats = QueueStats(remaining=n_remaining, waiting_for_flags=n_unflagged, decided_today=n_today)
    blind = sample is not None and sample.status != Sample.Status.PENDING
    return stats, _cluster_summary(sample, json.loads(members) if members else [], blind=blind)


def review_queue_stats(*, reviewer, lineage: Lineage, samples: QuerySet[Sample]) -> QueueStats:
    """How much is left in the reviewer's view of the queue, and what they decided today."""
    return review_card_extras(reviewer=reviewer, lineage=lineage, samples=samples)[0]


def sample_for_card(*, pk: int) -> Sample:
    """One sample with everything its review card shows, in a fixed number of queries."""
    return (
        Sample.objects.select_related("passage", "generation", "job", "lineage", "leased_to")
        .prefetch_related(Prefetch("flags", queryset=Flag.objects.order_by("kind")))
        .defer("embedding", "minhash", "minhash_bands", "passage__embedding")
        .get(pk=pk)
    )


def sample_for_decision(*, pk: int) -> Sample:
    """A sample about to be decided, with its lineage and the lineage's open
    generation, in one query: no text, no vectors (the decision writes them).

    Raw SQL because the ORM's select_related + only + annotate costs more to
    build than the query takes to run, and this is on every decision.
    """
    rows = list(Lineage.objects.raw(
        """SELECT l.*, s.id AS decision_sample_id, s.generation_id AS decision_generation_id,
                  s.status AS decision_status, s.double_review AS decision_double_review,
                  s.cluster_id AS decision_cluster_id, g.id AS open_generation_id, g.number AS open_generation_number
           FROM curation_sample AS s
           JOIN curation_lineage AS l ON l.id = s.lineage_id
           LEFT JOIN curation_generation AS g ON g.lineage_id = l.id AND g.status = 'open'
           WHERE s.id = %s""", [pk]))
    if not rows:
        raise Sample.DoesNotExist(f"no sample {pk}")
    lineage = rows[0]
    lineage._open_generation_id = lineage.open_generation_id
    lineage._open_generation_number = lineage.open_generation_number
    sample = Sample.from_db("default", ["id", "lineage_id", "generation_id", "status", "double_review", "cluster_id"],
                            [lineage.decision_sample_id, lineage.pk, lineage.decision_generation_id,
                             lineage.decision_status, lineage.decision_double_review, lineage.decision_cluster_id])
    sample.lineage = lineage
    return sample


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


def samples_with_blindness(queryset: QuerySet, *, user) -> QuerySet:
    """The samples annotated with `blind`: whether `user` may still give the sample its blind
    second review, and so must not see the first one. The rule of `sample_is_blind`
    (curation/api/serializers.py), in SQL: a double-review sample, decided, with no standing
    second review yet and no standing decision of `user`'s."""
    standing = (Review.objects.filter(sample=OuterRef("pk"), undone_by__isnull=True)
                .exclude(decision=Review.Decision.UNDO))
    blind = (Q(double_review=True) & ~Q(status=Sample.Status.PENDING)
             & ~Exists(standing.filter(Q(overlap=True) | Q(reviewer=user))))
    return queryset.annotate(blind=ExpressionWrapper(blind, output_field=BooleanField()))


def reviewer_agreement(*, lineage: Lineage | None = None) -> list[dict]:
    """Cohen's kappa per reviewer pair, over samples that had a second, blind review.

    Labels are accept/reject (an edit counts as accept); undone decisions are left out.
    Each second review is paired with the sample's latest standing first decision.
    The database counts the pairs: one row per (first reviewer, first decision,
    second reviewer, second decision), so the page reads a few rows, not every
    overlap review.
    """
    from curation import metrics

    # The system reviewer (auto review) decides by the flags: it is no rater, so it is left out.
    standing = Review.objects.filter(undone_by__isnull=True, system=False).exclude(decision=Review.Decision.UNDO)
    first = standing.filter(sample_id=OuterRef("sample_id"), overlap=False).order_by("-created_at", "-id")
    seconds = standing.filter(overlap=True)
    if lineage is not None:
        seconds = seconds.filter(sample__lineage=lineage)
    rows = (seconds.annotate(first_reviewer=Subquery(first.values("reviewer__username")[:1]),
                             first_decision=Subquery(first.values("decision")[:1]))
            .filter(first_reviewer__isnull=False)
            .values("first_reviewer", "first_decision", "reviewer__username", "decision")
            .annotate(n=Count("id")).order_by())

    def label(decision: str) -> str:
        return "reject" if decision == Review.Decision.REJECT else "accept"

    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in rows:
        (a, la), (b, lb) = sorted([(row["first_reviewer"], label(row["first_decision"])),
                                   (row["reviewer__username"], label(row["decision"]))])
        by_pair.setdefault((a, b), []).extend([(la, lb)] * row["n"])
    return [
        {"pair": pair, "n": len(pairs), "agreement": sum(x == y for x, y in pairs) / len(pairs),
         "kappa": metrics.cohens_kappa(metrics.agreement_table(pairs, ["accept", "reject"]))}
        for pair, pairs in sorted(by_pair.items())
    ]


def lineage_list_overview() -> list[tuple[Lineage, dict]]:
    """Every lineage with its open generation, passage count and the open
    generation's counts by status, in two queries whatever the number of lineages."""
    open_generation = Generation.objects.filter(lineage=OuterRef("pk"), status=Generation.Status.OPEN)
    passages = (SourcePassage.objects.filter(lineage=OuterRef("pk")).order_by().values("lineage")
                .annotate(n=Count("id")).values("n"))
    lineages = list(lineage_list().annotate(
        open_generation_id=Subquery(open_generation.values("id")[:1]),
        open_generation_number=Subquery(open_generation.values("number")[:1]),
        passage_count=Coalesce(Subquery(passages), 0)))
    counts: dict[int, dict[str, int]] = {}
    open_ids = [lineage.open_generation_id for lineage in lineages if lineage.open_generation_id]
    for row in (Sample.objects.filter(generation_id__in=open_ids).values("generation_id", "status")
                .annotate(n=Count("id")).order_by()):
        counts.setdefault(row["generation_id"], {})[row["status"]] = row["n"]
    return [
        (lineage, {
            "generation": {"number": lineage.open_generation_number} if lineage.open_generation_id else None,
            "passages": lineage.passage_count,
            "counts": {"pending": 0, "accepted": 0, "rejected": 0, **counts.get(lineage.open_generation_id, {})},
        })
        for lineage in lineages
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


def sample_cluster(*, sample: Sample, blind: bool = False) -> ClusterSummary | None:
    """What the review card says about the sample's cluster (None when it is in none of size ≥ 2).

    `blind`: the counts and ids leave the sample itself out (a second review must not see its status).
    """
    if sample.cluster_id is None:
        return None
    members = Sample.objects.filter(cluster_id=sample.cluster_id).order_by("id")
    if blind:
        members = members.exclude(pk=sample.pk)
    return _cluster_summary(sample, list(members.values_list("id", "status")), blind=blind)


def _cluster_summary(sample: Sample | None, members: list, *, blind: bool) -> ClusterSummary | None:
    """`members`: (id, status) of the cluster's members (without the sample itself when blind)."""
    size = len(members) + (1 if blind else 0)
    if sample is None or sample.cluster_id is None or size < 2:
        return None
    count = {status: sum(1 for _, s in members if s == status) for status in Sample.Status.values}
    return ClusterSummary(sample.cluster_id, size, count["pending"], count["accepted"], count["rejected"],
                          [m[0] for m in members])


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



@dataclass(frozen=True)
class FittedModel:
    """A lineage's adopted flag model of one kind (its latest finished fit beat the default) and its version."""

    model: object  # curation.signals.combiner.Model
    version: str


def lineage_fitted_models(*, lineage_id: int) -> dict[str, FittedModel]:
    """The lineage's own flag models in force, by kind: the latest finished fit of each kind, if adopted.

    One query; flagging reads it once per batch (`services.flagging`).
    """
    from curation.models import LineageFit
    from curation.signals.combiner import Model

    latest = (LineageFit.objects.filter(lineage_id=lineage_id, status=LineageFit.Status.DONE)
              .order_by("kind", "-id").distinct("kind").values("kind", "adopted", "model", "detector_version"))
    return {fit["kind"]: FittedModel(Model.from_dict(fit["model"]), fit["detector_version"])
            for fit in latest if fit["adopted"] and fit["model"]}


def lineage_fits_overview(*, lineage: Lineage) -> dict:
    """What the lineage page shows of its own flag models, in three queries whatever their number.

    Per kind: the latest fit (any status) and the one that decides (the latest
    finished). A re-flag is offered when a deciding fit changed a version and
    no re-flag run has started since it finished.
    """
    from curation.models import FlagRun, LineageFit

    fits = LineageFit.objects.filter(lineage=lineage).order_by("kind", "-id").distinct("kind")
    latest = {f.kind: f for f in fits}
    deciding = {f.kind: f for f in fits.filter(status=LineageFit.Status.DONE)}
    kinds = [{"kind": kind, "label": label, "latest": latest.get(kind), "deciding": deciding.get(kind)}
             for kind, label in Flag.Kind.choices]
    changed = [f.finished_at for f in deciding.values() if f.changes_version]
    last_run = FlagRun.objects.filter(lineage=lineage).order_by("-created_at").first()
    active = last_run if last_run is not None and last_run.status in (FlagRun.Status.QUEUED,
                                                                      FlagRun.Status.RUNNING) else None
    offered = bool(changed) and (last_run is None or last_run.created_at < max(changed))
    return {"kinds": kinds, "reflag_offered": offered, "active_run": active,
            "fitting": any(f.is_active for f in latest.values())}
