"""Reads for the dashboard and the sample page (selectors).

Everything here is bounded whatever the number of samples: per-generation
numbers come from the stored GenerationMetrics rows (computed by tasks), and
the only reads of the samples and reviews tables are an indexed count of the
review backlog and the last day's decisions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from curation import metrics as math
from curation.charts import Chart, line_chart
from curation.models import (
    Flag,
    GatePause,
    Generation,
    GenerationMetrics,
    Lineage,
    Review,
    Sample,
    TrainingSet,
    TrainingSetExport,
)
from curation.services.training_sets import lineage_policy

# (field, title, percent, gate) — what the dashboard charts across generations.
CHARTED = [
    ("pairwise_distance", "Diversity: mean pairwise cosine distance", False, "diversity"),
    ("vendi", "Vendi score (effective number of samples)", False, None),
    ("distinct_1", "Distinct-1", True, None),
    ("distinct_2", "Distinct-2", True, None),
    ("coverage", "Coverage of the real corpus", True, "coverage"),
    ("centroid_drift", "Centroid drift from generation 0", False, None),
    ("accept_rate", "Accept rate", True, None),
    ("duplicate_rate", "Near-duplicate rate", True, "duplicates"),
    ("hallucination_rate", "Likely-hallucination rate", True, "hallucinations"),
    ("selection_bias", "Selection bias: accepted ÷ generated diversity", False, None),
]


@dataclass(frozen=True)
class LineageRow:
    lineage: Lineage
    generations: list[Generation]

    @property
    def open_generation(self) -> Generation | None:
        return next((g for g in self.generations if g.status == Generation.Status.OPEN), None)

    @property
    def at_risk(self) -> list[Generation]:
        return [g for g in self.generations if _metrics(g) is not None and _metrics(g).at_risk]


def _metrics(generation: Generation) -> GenerationMetrics | None:
    try:
        return generation.metrics
    except GenerationMetrics.DoesNotExist:
        return None


def dashboard_lineages() -> list[LineageRow]:
    """Every lineage with its generations and their stored metrics and training sets: three queries."""
    generations = Generation.objects.select_related("metrics", "training_set").order_by("number")
    lineages = Lineage.objects.select_related("policy").prefetch_related(
        Prefetch("generations", queryset=generations)
    ).order_by("name")
    return [LineageRow(lineage, list(lineage.generations.all())) for lineage in lineages]


def lineage_charts(*, row: LineageRow) -> list[Chart]:
    """One chart per metric across the lineage's generations, with the gate's line where there is one."""
    policy = lineage_policy(lineage=row.lineage)
    by_number = {g.number: _metrics(g) for g in row.generations}
    baseline = by_number.get(0)
    gates = {
        "diversity": (policy.gate_min_diversity_ratio * baseline.pairwise_distance
                      if policy.gate_min_diversity_ratio is not None and baseline and baseline.pairwise_distance
                      else None),
        "coverage": policy.gate_min_coverage,
        "duplicates": policy.gate_max_duplicate_rate,
        "hallucinations": policy.gate_max_hallucination_rate,
    }
    charts = []
    for field, title, percent, gate in CHARTED:
        points = [(number, getattr(m, field) if m else None) for number, m in sorted(by_number.items())]
        if field in {"accept_rate", "duplicate_rate", "hallucination_rate", "selection_bias", "coverage"}:
            points = [(n, v) for n, v in points if n != 0]  # generation 0 is real data: no reviews, no flags
        chart = line_chart(title=title, key=field, points=points, threshold=gates.get(gate) if gate else None,
                           percent=percent, y_max=1.0 if percent else None)
        charts.append(replace(chart, at_risk_generations=[n for n, m in by_number.items() if m and m.at_risk]))
    return charts


def lineage_agreement(*, row: LineageRow) -> dict:
    """Cohen's kappa over every two-reviewer pair in the lineage, pooled from the stored per-generation tables."""
    table = [[0, 0], [0, 0]]
    for generation in row.generations:
        stored = (_metrics(generation).agreement if _metrics(generation) else {}) or {}
        for i, line in enumerate(stored.get("table", [])):
            for j, count in enumerate(line):
                table[i][j] += count
    pairs = sum(map(sum, table))
    return {"pairs": pairs, "kappa": math.cohens_kappa(table) if pairs else None}


def open_gate_pauses() -> QuerySet[GatePause]:
    return GatePause.objects.filter(resumed_at__isnull=True).select_related("lineage", "generation")


def recent_gate_pauses(*, limit: int = 10) -> QuerySet[GatePause]:
    return GatePause.objects.filter(resumed_at__isnull=False).select_related(
        "lineage", "generation", "resumed_by"
    ).order_by("-resumed_at")[:limit]


def dashboard_exports() -> QuerySet[TrainingSetExport]:
    """Exports being written (or failed): what the curator is waiting for."""
    return TrainingSetExport.objects.exclude(status=TrainingSetExport.Status.DONE).select_related(
        "training_set__lineage", "training_set__generation"
    ).order_by("training_set_id", "format")[:30]


def review_backlog() -> int:
    """Samples waiting for a decision in open generations (an index scan of pending rows only)."""
    return Sample.objects.filter(status=Sample.Status.PENDING, generation__status=Generation.Status.OPEN).count()


def reviewer_throughput(*, now=None) -> list[dict]:
    """Decisions per reviewer in the last hour and per hour over the last 24 hours."""
    now = now or timezone.now()
    rows = (Review.objects.filter(created_at__gte=now - timedelta(hours=24))
            .values("reviewer__username")
            .annotate(day=Count("id"), hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))))
            .order_by("-day"))
    return [{"reviewer": row["reviewer__username"], "last_hour": row["hour"], "per_hour": row["day"] / 24}
            for row in rows]


def queue_depths() -> dict[str, int] | None:
    """Messages waiting in the broker's `generation` and `curation` queues; None when it cannot be asked."""
    from ouroboros.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=1)
            client = connection.default_channel.client
            return {name: int(client.llen(name)) for name in ("generation", "curation")}
    except Exception:  # the dashboard shows "n/a"; /healthz says what is wrong
        return None


def sample_trace(*, pk: int) -> Sample:
    """A sample with everything its page shows: generation, job, passage, flags, reviews, sets."""
    return (
        Sample.objects.select_related("lineage", "generation", "job", "job__created_by", "passage")
        .prefetch_related(
            Prefetch("reviews", queryset=Review.objects.select_related("reviewer").order_by("created_at", "id")),
            Prefetch("flags", queryset=Flag.objects.order_by("kind")),
            Prefetch("training_sets", queryset=TrainingSet.objects.select_related("generation")),
        )
        .get(pk=pk)
    )


def generation_samples(*, generation: Generation, status: str = Sample.Status.ACCEPTED, after: int = 0,
                       limit: int = 50) -> list[Sample]:
    """One page of a generation's samples by id (keyset paging: as fast on page 10⁴ as on page 1)."""
    return list(Sample.objects.filter(generation=generation, status=status, id__gt=after)
                .order_by("id").only("id", "question", "status", "novelty")[:limit])
