"""Recompute a lineage's generation metrics now, in this process (the dashboard queues a task instead).

    python manage.py compute_metrics biology-tutor-qa             # every generation
    python manage.py compute_metrics biology-tutor-qa --generation 3
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from curation.models import Lineage
from curation.services.metrics import generation_metrics_compute


class Command(BaseCommand):
    help = "Compute and store the metrics of a lineage's generations, then check its gates."

    def add_arguments(self, parser):
        parser.add_argument("lineage", help="the lineage's slug")
        parser.add_argument("--generation", type=int, help="only this generation number")

    def handle(self, *args, lineage: str, generation: int | None, **options):
        found = Lineage.objects.filter(slug=lineage).first()
        if found is None:
            raise CommandError(f"no lineage with slug {lineage!r}")
        generations = found.generations.order_by("number")
        if generation is not None:
            generations = generations.filter(number=generation)
            if not generations.exists():
                raise CommandError(f"lineage {lineage!r} has no generation {generation}")
        for row in generations:
            metrics = generation_metrics_compute(generation=row)
            risk = f"AT RISK: {'; '.join(metrics.risk_reasons)}" if metrics.at_risk else "ok"
            self.stdout.write(f"generation {row.number}: {metrics.generated} samples, "
                              f"pairwise distance {metrics.pairwise_distance}, vendi {metrics.vendi} — {risk}")
