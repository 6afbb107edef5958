"""Computing and storing a generation's metrics (the math is in curation/metrics.py).

Metrics are computed by the `curation.compute_generation_metrics` task: after a
generation's training set is built, every ten minutes for generations whose
samples or decisions changed (`metrics_refresh_stale`), and when a curator asks
for it on the dashboard. A request only ever reads the stored row.

Generation 0 is the real corpus: its metrics are those of the source passages,
the baseline the gates compare later generations with.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import numpy as np
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from curation import metrics as math
from curation.models import Flag, Generation, GenerationMetrics, Review, Sample, SourcePassage
from curation.services.training_sets import lineage_policy

EMBEDDING_CHUNK = 5000


def generation_metrics_compute_later(*, generation_id: int) -> None:
    """Queue the metrics of a generation for after the surrounding transaction commits."""
    from curation.tasks import compute_generation_metrics

    transaction.on_commit(lambda: compute_generation_metrics.delay(generation_id))


def generation_fingerprint(*, generation: Generation) -> str:
    """A digest of what a generation's metrics depend on; when it changes, the stored metrics are stale."""
    policy = lineage_policy(lineage=generation.lineage)
    if generation.number == 0:
        state = SourcePassage.objects.filter(lineage_id=generation.lineage_id).aggregate(
            n=Count("id"), last=Max("id"), embedded=Count("id", filter=Q(embedding__isnull=False))
        )
    else:
        state = Sample.objects.filter(generation=generation).aggregate(
            n=Count("id"), last=Max("id"), decided=Max("decided_at"), flagged=Max("flagged_at"),
            accepted=Count("id", filter=Q(status=Sample.Status.ACCEPTED)),
            rejected=Count("id", filter=Q(status=Sample.Status.REJECTED)),
        )
        # Counted apart: joining reviews into the aggregate above would multiply its counts.
        state["reviews"] = Review.objects.filter(sample__generation=generation).count()
    state["params"] = [policy.metrics_seed, policy.metrics_sample_size, policy.coverage_radius]
    return hashlib.sha256(json.dumps(state, default=str, sort_keys=True).encode()).hexdigest()


def _vectors(queryset) -> np.ndarray:
    """Embeddings of a queryset's non-null rows as one float32 array, fetched in chunks."""
    rows = [np.asarray(v, dtype=np.float32)
            for v in queryset.filter(embedding__isnull=False).values_list("embedding", flat=True)
            .iterator(chunk_size=EMBEDDING_CHUNK)]
    return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def _agreement(generation: Generation) -> list[list[int]]:
    """Accept/reject pairs of two different reviewers on one sample, as a 2×2 table.

    For each sample decided by two or more reviewers, the latest decision of the
    first two (by when they first decided) form one pair: rows the first reviewer,
    columns the second.
    """
    # Decisions that stand: undo rows and the decisions they reverted are left out,
    # and an edit is an accept of the edited text. The system reviewer (auto review) is no rater.
    standing = Review.objects.filter(undone_by__isnull=True, system=False).exclude(decision=Review.Decision.UNDO)
    twice = (standing.filter(sample__generation=generation).values("sample_id")
             .annotate(reviewers=Count("reviewer_id", distinct=True)).filter(reviewers__gte=2)
             .values_list("sample_id", flat=True))
    by_sample: dict[int, dict[int, str]] = defaultdict(dict)
    for sample_id, reviewer_id, decision in (standing.filter(sample_id__in=twice)
                                             .order_by("sample_id", "created_at", "id")
                                             .values_list("sample_id", "reviewer_id", "decision")):
        decisions = by_sample[sample_id]
        decisions.pop(reviewer_id, None)  # re-inserting keeps first-decision order; the value is the latest
        decisions[reviewer_id] = Review.Decision.ACCEPT if decision == Review.Decision.EDIT else decision
    pairs = []
    for decisions in by_sample.values():
        first_two = list(decisions.items())[:2]
        pairs.append((first_two[0][1], first_two[1][1]))
    return math.agreement_table(pairs, [Review.Decision.ACCEPT, Review.Decision.REJECT])


def _real_corpus_values(generation: Generation, policy) -> dict:
    """Generation 0's metrics: the source passages themselves (the baseline of the gates)."""
    passages = SourcePassage.objects.filter(lineage_id=generation.lineage_id)
    vectors = _vectors(passages)
    count = passages.count()
    return {
        "generated": count, "accepted": count, "rejected": 0, "pending": 0, "accept_rate": None,
        "flag_rates": {}, "duplicate_rate": None, "hallucination_rate": None, "reject_reasons": {},
        "distinct_1": math.distinct_n(passages.values_list("text", flat=True).iterator(), 1),
        "distinct_2": math.distinct_n(passages.values_list("text", flat=True).iterator(), 2),
        "pairwise_distance": math.mean_pairwise_cosine_distance(vectors),
        "vendi": math.vendi_score(vectors, max_items=policy.metrics_sample_size, seed=policy.metrics_seed),
        "coverage": None, "centroid_drift": 0.0 if len(vectors) else None, "selection_bias": None,
        "agreement": {}, "kappa": None,
        "params": {"passages_embedded": len(vectors), "sample_size": policy.metrics_sample_size,
                   "seed": policy.metrics_seed},
    }


def _generation_values(generation: Generation, policy) -> dict:
    """A generated generation's metrics.

    The counts come from the review log: accept rate = accepted ÷ decided; the
    reject reason of a sample is that of its latest rejecting decision. Flag
    rates are the share of flagged samples carrying each kind of flag, whose
    detectors cite their own sources (curation/similarity.py: SemDeDup for
    near-duplicates, SelfCheckGPT-style grounding for hallucinations). Every
    other value is a function of curation/metrics.py, which cites its paper.
    """
    samples = Sample.objects.filter(generation=generation)
    accepted = samples.filter(status=Sample.Status.ACCEPTED)
    counts = dict(samples.values("status").annotate(n=Count("id")).order_by().values_list("status", "n"))
    generated = sum(counts.values())
    n_accepted = counts.get(Sample.Status.ACCEPTED, 0)
    n_rejected = counts.get(Sample.Status.REJECTED, 0)

    flagged = samples.filter(flagged_at__isnull=False).count()
    by_kind = dict(Flag.objects.filter(sample__generation=generation).values("kind")
                   .annotate(n=Count("sample_id", distinct=True)).order_by().values_list("kind", "n"))
    flag_rates = {kind: math.rate(by_kind.get(kind, 0), flagged) for kind in Flag.Kind.values}
    # The latest rejecting decision of each rejected sample gives its reason.
    reasons = (Review.objects.filter(sample__generation=generation, sample__status=Sample.Status.REJECTED,
                                     decision=Review.Decision.REJECT)
               .order_by("sample_id", "-created_at", "-id").distinct("sample_id").values_list("reason", flat=True))

    texts = [f"{q}\n{a}" for q, a in accepted.values_list("question", "answer").iterator(chunk_size=EMBEDDING_CHUNK)]
    accepted_vectors = _vectors(accepted)
    generated_vectors = _vectors(samples)
    real_vectors = _vectors(SourcePassage.objects.filter(lineage_id=generation.lineage_id))
    table = _agreement(generation)
    return {
        "generated": generated, "accepted": n_accepted, "rejected": n_rejected,
        "pending": counts.get(Sample.Status.PENDING, 0),
        "accept_rate": math.rate(n_accepted, n_accepted + n_rejected),
        "flag_rates": flag_rates,
        "duplicate_rate": flag_rates[Flag.Kind.NEAR_DUPLICATE],
        "hallucination_rate": flag_rates[Flag.Kind.HALLUCINATION],
        "reject_reasons": math.count_reasons(reasons),
        "distinct_1": math.distinct_n(texts, 1),
        "distinct_2": math.distinct_n(texts, 2),
        "pairwise_distance": math.mean_pairwise_cosine_distance(accepted_vectors),
        "vendi": math.vendi_score(accepted_vectors, max_items=policy.metrics_sample_size, seed=policy.metrics_seed),
        "coverage": math.coverage(real_vectors, accepted_vectors, radius=policy.coverage_radius)
        if len(real_vectors) else None,
        "centroid_drift": math.centroid_drift(accepted_vectors, real_vectors),
        "selection_bias": math.selection_bias(accepted_vectors, generated_vectors),
        "agreement": {"labels": [Review.Decision.ACCEPT, Review.Decision.REJECT], "table": table},
        "kappa": math.cohens_kappa(table),
        "params": {
            "flagged": flagged, "accepted_embedded": len(accepted_vectors),
            "generated_embedded": len(generated_vectors), "passages_embedded": len(real_vectors),
            "sample_size": policy.metrics_sample_size, "seed": policy.metrics_seed,
            "vendi_sampled": len(accepted_vectors) > policy.metrics_sample_size,
            "coverage_radius": policy.coverage_radius,
        },
    }


def generation_metrics_compute(*, generation: Generation, check_gates: bool = True) -> GenerationMetrics:
    """Compute and store a generation's metrics, then check the lineage's gates.

    1. Embed any source passage still without an embedding (coverage and drift need them).
    2. Make sure generation 0 (the real corpus) has current metrics: it is every gate's baseline.
    3. Compute counts, rates, reasons, diversity, coverage, drift, selection bias and agreement.
    4. Store them (one row per generation, replaced) with the fingerprint of their inputs.
    5. Check the gates, which may mark the generation at risk and pause the lineage's schedules.
    Running it twice gives the same row.
    """
    from curation.services.flagging import passages_embed_missing
    from curation.services.gates import gates_check

    passages_embed_missing(lineage_id=generation.lineage_id)
    policy = lineage_policy(lineage=generation.lineage)
    if generation.number != 0:
        real = Generation.objects.filter(lineage_id=generation.lineage_id, number=0).first()
        if real is not None and not _is_current(real):
            generation_metrics_compute(generation=real, check_gates=False)
    fingerprint = generation_fingerprint(generation=generation)
    values = (_real_corpus_values if generation.number == 0 else _generation_values)(generation, policy)
    row, _ = GenerationMetrics.objects.update_or_create(
        generation=generation, defaults={**values, "fingerprint": fingerprint, "computed_at": timezone.now()}
    )
    if check_gates:
        gates_check(metrics=row)
    return row


def _is_current(generation: Generation) -> bool:
    stored = GenerationMetrics.objects.filter(generation=generation).values_list("fingerprint", flat=True).first()
    return stored == generation_fingerprint(generation=generation)


def metrics_refresh_stale() -> list[int]:
    """Queue metrics for every generation whose stored metrics are missing or stale.

    That is each lineage's open generation as samples are generated and decided,
    and any generation (0 included) that has no metrics yet. Closed generations
    do not change, so their metrics are not re-checked.
    """
    candidates = Generation.objects.filter(Q(status=Generation.Status.OPEN) | Q(metrics__isnull=True)).select_related(
        "lineage"
    )
    queued = []
    for generation in candidates:
        if not _is_current(generation):
            with transaction.atomic():
                generation_metrics_compute_later(generation_id=generation.pk)
            queued.append(generation.pk)
    return queued
