"""Gates: per-lineage thresholds on a generation's metrics that stop the loop before it collapses.

Crossing a gate marks the generation "at risk" with the reasons, and pauses the
lineage's schedules until a curator resumes them (through the `gate_crossed` and
`gate_resumed` signals of curation.extensions: generation's receivers pause and
resume its schedules, so curation never imports generation); both the pause and
the resume are recorded in a GatePause row. A generation pauses the schedules
at most once: after a curator has resumed them, recomputing the same
generation's metrics shows it still at risk but does not pause again; the next
generation that crosses a gate does.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from curation.models import GatePause, Generation, GenerationMetrics, LineagePolicy
from curation.services.training_sets import lineage_policy


class GateError(Exception):
    """A gate action that cannot be done; the message says why."""


@dataclass(frozen=True)
class GateBreach:
    gate: str
    message: str


def gates_evaluate(*, values: GenerationMetrics, baseline: GenerationMetrics | None,
                   policy: LineagePolicy) -> list[GateBreach]:
    """The gates a generation's metrics cross (pure: reads the values, writes nothing).

    Gates on accepted samples judge a generation once it has `gate_min_samples`
    accepted ones, gates on generated samples once it has that many generated:
    a handful of samples says little about a distribution.
    """
    if values.generation.number == 0:
        return []
    breaches = []
    enough_accepted = values.accepted >= policy.gate_min_samples
    enough_generated = values.generated >= policy.gate_min_samples
    ratio = policy.gate_min_diversity_ratio
    if (ratio is not None and enough_accepted and values.pairwise_distance is not None
            and baseline is not None and baseline.pairwise_distance):
        share = values.pairwise_distance / baseline.pairwise_distance
        if share < ratio:
            breaches.append(GateBreach(
                "diversity",
                f"diversity (mean pairwise cosine distance of accepted samples) is {values.pairwise_distance:.3f}, "
                f"{share:.0%} of generation 0's {baseline.pairwise_distance:.3f}; the gate is {ratio:.0%}",
            ))
    limit = policy.gate_max_duplicate_rate
    if limit is not None and enough_generated and values.duplicate_rate is not None and values.duplicate_rate > limit:
        breaches.append(GateBreach(
            "duplicates", f"{values.duplicate_rate:.0%} of generated samples are near-duplicates; the gate is {limit:.0%}"
        ))
    floor = policy.gate_min_coverage
    if floor is not None and enough_accepted and values.coverage is not None and values.coverage < floor:
        breaches.append(GateBreach(
            "coverage",
            f"accepted samples cover {values.coverage:.0%} of the real passages (radius {policy.coverage_radius}); "
            f"the gate is {floor:.0%}",
        ))
    limit = policy.gate_max_hallucination_rate
    if (limit is not None and enough_generated and values.hallucination_rate is not None
            and values.hallucination_rate > limit):
        breaches.append(GateBreach(
            "hallucinations",
            f"{values.hallucination_rate:.0%} of generated samples are flagged as likely hallucinations; "
            f"the gate is {limit:.0%}",
        ))
    return breaches


def gates_check(*, metrics: GenerationMetrics) -> GatePause | None:
    """Evaluate the gates on stored metrics, mark the generation, and pause schedules on a breach.

    1. Evaluate the lineage's gates against generation 0's metrics.
    2. Store "at risk" and the reasons on the metrics row.
    3. On a breach, the first time for this generation: pause every running
       schedule of the lineage (the `gate_crossed` receivers) and record which,
       and why, in a GatePause.
    Returns the generation's GatePause, if it has one.
    """
    from curation.extensions import gate_crossed

    generation = metrics.generation
    lineage = generation.lineage
    baseline = GenerationMetrics.objects.filter(generation__lineage=lineage, generation__number=0).first()
    breaches = gates_evaluate(values=metrics, baseline=baseline, policy=lineage_policy(lineage=lineage))
    reasons = [breach.message for breach in breaches]
    GenerationMetrics.objects.filter(pk=metrics.pk).update(at_risk=bool(breaches), risk_reasons=reasons)
    metrics.at_risk, metrics.risk_reasons = bool(breaches), reasons
    if not breaches:
        return GatePause.objects.filter(generation=generation).first()
    try:
        with transaction.atomic():
            # Lock the generation: two metric runs at once must not both pause and record.
            Generation.objects.select_for_update().get(pk=generation.pk)
            existing = GatePause.objects.filter(generation=generation).first()
            if existing is not None:
                return existing
            reason = f"gate: generation {generation.number} is at risk: " + "; ".join(reasons)
            paused = [pk for _receiver, ids in gate_crossed.send(
                sender=GatePause, lineage=lineage, generation=generation, reason=reason) for pk in (ids or [])]
            return GatePause.objects.create(
                lineage=lineage, generation=generation, reasons=reasons, schedule_ids=paused
            )
    except IntegrityError:
        return GatePause.objects.get(generation=generation)


def gate_resume(*, pause: GatePause, resumed_by, note: str = "") -> int:
    """A curator resumes what a gate paused; returns how many schedules run again.

    Only the schedules this gate paused and that are still paused are resumed; a
    schedule someone paused for another reason stays as it is.
    """
    from curation.extensions import gate_resumed

    with transaction.atomic():
        changed = GatePause.objects.filter(pk=pause.pk, resumed_at__isnull=True).update(
            resumed_at=timezone.now(), resumed_by=resumed_by, note=note[:500]
        )
        if not changed:
            raise GateError(f"the gate on generation {pause.generation.number} was already resumed")
        resumed = sum(count or 0 for _receiver, count in gate_resumed.send(sender=GatePause, pause=pause))
    return resumed
