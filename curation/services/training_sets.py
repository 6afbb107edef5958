"""Building the next generation: a training set of accepted samples plus fresh real data.

The set for generation N is made of
- generation N's accepted samples;
- under the lineage's policy, every earlier accepted sample too ("accumulate",
  the default: Gerstgrasser et al. 2024, "Is Model Collapse Inevitable? Breaking
  the Curse of Recursion by Accumulating Real and Synthetic Data",
  arXiv:2404.01413) or none of them ("replace");
- at least the policy's fraction of real data: source passages of the lineage's
  corpus, drawn fresh each round (the ones used least in earlier sets first),
  after Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD",
  arXiv:2307.01850.

Building checks the composition against the policy and refuses, naming each rule
that failed and by how much. It then freezes the membership, closes the
generation and queues the exports (curation/services/exports.py), which publish
the set with its checksummed manifest once every file is written. The same
seed and the same inputs always give byte-identical files.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from curation.models import (
    Generation,
    Lineage,
    LineagePolicy,
    Sample,
    SourcePassage,
    TrainingSet,
    TrainingSetExport,
)
from curation.selectors import lineage_open_generation


class TrainingSetError(Exception):
    """A training set that cannot be built; the message says which rule failed."""


@dataclass(frozen=True)
class PolicyBreach:
    """One rule of the policy that a composition breaks, and by how much."""

    rule: str
    message: str
    shortfall: float  # in the rule's own unit: samples, passages or percentage points


class PolicyViolation(TrainingSetError):
    def __init__(self, breaches: list[PolicyBreach]):
        self.breaches = breaches
        super().__init__("; ".join(breach.message for breach in breaches))


@dataclass(frozen=True)
class Composition:
    """What a training set would hold, counted by source, before anything is written."""

    generation: int
    mode: str
    min_real_fraction: float
    # accepted samples in the set, by the generation they come from
    synthetic_by_generation: dict[int, int]
    # every accepted sample of the lineage up to this generation, by generation (what accumulate needs)
    accepted_by_generation: dict[int, int]
    real: int
    real_needed: int
    corpus: int
    passage_ids: list[int] = field(default_factory=list, compare=False)

    @property
    def synthetic(self) -> int:
        return sum(self.synthetic_by_generation.values())

    @property
    def records(self) -> int:
        return self.synthetic + self.real

    @property
    def real_fraction(self) -> float:
        return self.real / self.records if self.records else 0.0

    def by_source(self) -> list[dict]:
        """The manifest's composition: one row per (source generation, real/synthetic)."""
        rows = [{"generation": 0, "origin": "real", "records": self.real}]
        rows += [
            {"generation": number, "origin": "synthetic", "records": count}
            for number, count in sorted(self.synthetic_by_generation.items())
        ]
        return rows


def real_needed(*, synthetic: int, min_fraction: float) -> int:
    """The fewest real records R with R / (R + synthetic) >= min_fraction."""
    if not 0 <= min_fraction < 1:
        raise TrainingSetError(f"the minimum real fraction must be at least 0 and below 1, not {min_fraction}")
    if min_fraction == 0 or synthetic == 0:
        return 0
    needed = max(0, math.ceil(min_fraction * synthetic / (1 - min_fraction) - 1e-9))
    while needed / (needed + synthetic) < min_fraction:  # guard against rounding just below
        needed += 1
    return needed


def policy_check(composition: Composition) -> list[PolicyBreach]:
    """Every rule of the policy that the composition breaks; empty when it may be published."""
    breaches = []
    n = composition.generation
    own = composition.synthetic_by_generation.get(n, 0)
    if own == 0:
        breaches.append(PolicyBreach("accepted", f"generation {n} has no accepted samples yet", 1))
    earlier_in_set = composition.synthetic - own
    if composition.mode == LineagePolicy.Mode.REPLACE and earlier_in_set:
        breaches.append(PolicyBreach(
            "replace",
            f"policy 'replace' takes only generation {n}'s samples, but the set holds {earlier_in_set} "
            f"from earlier generations ({earlier_in_set} too many)",
            earlier_in_set,
        ))
    if composition.mode == LineagePolicy.Mode.ACCUMULATE:
        missing = {
            number: total - composition.synthetic_by_generation.get(number, 0)
            for number, total in composition.accepted_by_generation.items()
            if total > composition.synthetic_by_generation.get(number, 0)
        }
        if missing:
            detail = ", ".join(f"generation {g}: {k}" for g, k in sorted(missing.items()))
            breaches.append(PolicyBreach(
                "accumulate",
                f"policy 'accumulate' takes every accepted sample so far, but {sum(missing.values())} of "
                f"{sum(composition.accepted_by_generation.values())} are missing ({detail})",
                sum(missing.values()),
            ))
    if composition.records and composition.real_fraction + 1e-12 < composition.min_real_fraction:
        short_points = 100 * (composition.min_real_fraction - composition.real_fraction)
        breaches.append(PolicyBreach(
            "real_fraction",
            f"real data would be {composition.real_fraction:.1%} of the set, {short_points:.1f} points below "
            f"the minimum of {composition.min_real_fraction:.1%}: {composition.real_needed} real passages are "
            f"needed for {composition.synthetic} synthetic samples, the corpus has {composition.corpus} "
            f"({composition.real_needed - composition.real} short)",
            round(short_points, 4),
        ))
    return breaches


def lineage_policy(*, lineage: Lineage) -> LineagePolicy:
    """The lineage's policy; a lineage created before policies existed gets the defaults (unsaved)."""
    try:
        return lineage.policy
    except LineagePolicy.DoesNotExist:
        return LineagePolicy(lineage=lineage)


def _synthetic_samples(*, generation: Generation, mode: str):
    """The accepted samples a set for `generation` takes under the policy mode."""
    accepted = Sample.objects.filter(lineage_id=generation.lineage_id, status=Sample.Status.ACCEPTED)
    if mode == LineagePolicy.Mode.REPLACE:
        return accepted.filter(generation=generation)
    return accepted.filter(generation__number__gte=1, generation__number__lte=generation.number)


def _count_by_generation(queryset) -> dict[int, int]:
    rows = queryset.values("generation__number").annotate(n=Count("id")).order_by()
    return {row["generation__number"]: row["n"] for row in rows}


def _draw_real(*, lineage: Lineage, count: int, seed: int) -> tuple[list[int], int]:
    """Draw `count` passages, the ones used least in earlier sets first, ties broken by a seeded RNG.

    Returns the passage ids (ascending) and the size of the corpus. Drawing is
    without replacement: a corpus too small for the policy is a breach, not a
    reason to repeat real data.
    """
    passages = list(
        SourcePassage.objects.filter(lineage=lineage).annotate(uses=Count("training_sets")).order_by("id")
        .values_list("id", "uses")
    )
    rng = random.Random(f"{seed}/real-draw")
    ranked = sorted((uses, rng.random(), pk) for pk, uses in passages)
    return sorted(pk for _, _, pk in ranked[:count]), len(passages)


def training_set_plan(*, lineage: Lineage, seed: int = 0, generation: Generation | None = None) -> Composition:
    """What building now would put in the set, without writing anything (a read)."""
    generation = generation or lineage_open_generation(lineage=lineage)
    if generation is None:
        raise TrainingSetError(f"lineage {lineage.name!r} has no open generation to build from")
    policy = lineage_policy(lineage=lineage)
    synthetic = _count_by_generation(_synthetic_samples(generation=generation, mode=policy.mode))
    accepted_all = _count_by_generation(
        _synthetic_samples(generation=generation, mode=LineagePolicy.Mode.ACCUMULATE)
    )
    needed = real_needed(synthetic=sum(synthetic.values()), min_fraction=policy.min_real_fraction)
    passage_ids, corpus = _draw_real(lineage=lineage, count=needed, seed=seed)
    return Composition(
        generation=generation.number,
        mode=policy.mode,
        min_real_fraction=policy.min_real_fraction,
        synthetic_by_generation=synthetic,
        accepted_by_generation=accepted_all,
        real=len(passage_ids),
        real_needed=needed,
        corpus=corpus,
        passage_ids=passage_ids,
    )


def _insert_members(training_set: TrainingSet, samples) -> None:
    """Freeze the synthetic membership with one INSERT … SELECT: 10⁶ rows never pass through Python."""
    through = TrainingSet.samples.through._meta.db_table
    select_sql, params = samples.order_by().values("id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {through} (trainingset_id, sample_id) SELECT %s, member.id FROM ({select_sql}) AS member",
            [training_set.pk, *params],
        )


def training_set_build(*, lineage: Lineage, built_by, seed: int | None = None) -> TrainingSet:
    """Freeze the open generation's training set under the lineage's policy and open the next generation.

    1. Lock the lineage's open generation, so two curators cannot build it twice,
       and refuse while another app says it cannot be built yet (the
       `build_refusal` signal: generation refuses while a job of it runs).
    2. Compose: accepted samples under the policy, plus real passages drawn with
       the seed; refuse with every broken rule (PolicyViolation) and write nothing.
    3. Record the set (membership, seed, policy in force, draft manifest) and one
       queued export per format; close the generation and open generation N+1.
    4. After commit, queue the exports and the generation's metrics on `curation`.
    Samples still pending review are left out and counted in the manifest.
    """
    from curation.extensions import first_refusal
    from curation.services.exports import ExportError, export_folder, export_relative_path, exports_queue
    from curation.services.metrics import generation_metrics_compute_later

    seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .filter(lineage=lineage, status=Generation.Status.OPEN)
            .first()
        )
        if generation is None:
            raise TrainingSetError(f"lineage {lineage.name!r} has no open generation to build from")
        refusal = first_refusal(generation=generation)  # e.g. generation's "still has 2 running job(s)"
        if refusal:
            raise TrainingSetError(refusal)
        policy = lineage_policy(lineage=lineage)
        composition = training_set_plan(lineage=lineage, seed=seed, generation=generation)
        breaches = policy_check(composition)
        if breaches:
            raise PolicyViolation(breaches)

        statuses = dict(
            Sample.objects.filter(generation=generation).values("status").annotate(n=Count("id"))
            .order_by().values_list("status", "n")
        )
        try:
            folder = export_folder(slug=lineage.slug, number=generation.number)
            paths = {fmt: export_relative_path(folder=folder, slug=lineage.slug, number=generation.number, fmt=fmt)
                     for fmt in TrainingSetExport.Format.values}
        except ExportError as exc:
            raise TrainingSetError(str(exc)) from None
        manifest = {
            "lineage": lineage.slug,
            "lineage_name": lineage.name,
            "generation": generation.number,
            "seed": seed,
            "policy": policy.snapshot(),
            "counts": {
                "records": composition.records,
                "synthetic": composition.synthetic,
                "real": composition.real,
                "accepted": statuses.get(Sample.Status.ACCEPTED, 0),
                "rejected": statuses.get(Sample.Status.REJECTED, 0),
                "left_out_pending": statuses.get(Sample.Status.PENDING, 0),
            },
            "real_fraction": round(composition.real_fraction, 6),
            "composition": composition.by_source(),
            "real_record": "a source passage as the assistant's turn, after a user turn asking about its title",
            "order": "records shuffled by random.Random(f'{seed}/order') over synthetic sample ids then real "
                     "passage ids, both ascending; the same in every file",
            "built_by": built_by.get_username(),
            "built_at": timezone.now().isoformat(),
        }
        training_set = TrainingSet.objects.create(
            lineage=lineage,
            generation=generation,
            status=TrainingSet.Status.EXPORTING,
            seed=seed,
            policy=policy.snapshot(),
            sample_count=composition.synthetic,
            real_count=composition.real,
            export_path=folder,
            manifest=manifest,
            built_by=built_by,
        )
        _insert_members(training_set, _synthetic_samples(generation=generation, mode=policy.mode))
        training_set.passages.set(composition.passage_ids)
        exports = TrainingSetExport.objects.bulk_create([
            TrainingSetExport(
                training_set=training_set, format=fmt, rows_total=composition.records,
                path=paths[fmt],
            )
            for fmt in TrainingSetExport.Format.values
        ])
        Generation.objects.filter(pk=generation.pk).update(status=Generation.Status.CLOSED, closed_at=timezone.now())
        Generation.objects.create(lineage=lineage, number=generation.number + 1)
        exports_queue(export_ids=[export.pk for export in exports])
        generation_metrics_compute_later(generation_id=generation.pk)
    return training_set
