"""Fit a lineage's threshold for one detector and report precision and recall at it.

    python manage.py calibrate_flags SLUG hallucination|near_duplicate [--file FILE.jsonl]
                                     [--min-precision 0.9] [--apply]

Labels come from FILE.jsonl (the `evaluate_flags` format, scored with the app's
detectors) or, without --file, from the lineage's review log: a sample rejected
for "hallucination" (or "duplicate") is a positive, an accepted one a negative.
The threshold is the best-F1 point, or with --min-precision the point with the
highest recall at that precision. --apply stores it on the lineage; then run
`reflag_lineage SLUG` to re-flag. The last line printed is one JSON object.
"""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation import selectors
from curation.evaluation import KINDS, DatasetError
from curation.models import Lineage
from curation.services.calibration import THRESHOLD_FIELDS, CalibrationError, lineage_threshold_set, threshold_fit


class Command(BaseCommand):
    help = "Fit a lineage's flag threshold from labelled data or past review decisions."

    def add_arguments(self, parser):
        parser.add_argument("lineage", help="the lineage's slug")
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("--file", type=Path, help="labelled JSONL (as for evaluate_flags); default: the review log")
        parser.add_argument("--min-precision", type=float, default=None)
        parser.add_argument("--apply", action="store_true", help="store the threshold on the lineage")

    def handle(self, *args, lineage: str, kind: str, file: Path | None, min_precision: float | None, apply: bool,
               **options):
        try:
            target = Lineage.objects.get(slug=lineage)
        except Lineage.DoesNotExist:
            raise CommandError(f"no lineage with slug {lineage!r}") from None
        if min_precision is not None and not 0.0 < min_precision <= 1.0:
            raise CommandError("--min-precision must lie in (0, 1]")
        if file is not None:
            load, score = KINDS[kind]
            try:
                items = load(file)
            except DatasetError as exc:
                raise CommandError(str(exc)) from None
            labels, scores, source = [i.label for i in items], score(items).scores, str(file)
        else:
            labels, scores = selectors.review_labels(lineage=target, kind=kind)
            source = "review log"
        current = getattr(target, THRESHOLD_FIELDS[kind])
        try:
            fit = threshold_fit(kind=kind, labels=labels, scores=scores, current=current, min_precision=min_precision)
        except CalibrationError as exc:
            raise CommandError(f"{target.slug} ({source}): {exc}") from None
        if apply:
            lineage_threshold_set(lineage=target, kind=kind, threshold=round(fit.chosen.threshold, 4))
        self.stdout.write(f"{target.slug} {kind} from {source}: {fit.n} labelled, rule {fit.rule}")
        self.stdout.write(json.dumps({
            "lineage": target.slug, "kind": kind, "source": source, "n": fit.n, "rule": fit.rule,
            "threshold": round(fit.chosen.threshold, 4), "precision": round(fit.chosen.precision, 4),
            "recall": round(fit.chosen.recall, 4), "f1": round(fit.chosen.f1, 4),
            "current_threshold": current, "current_precision": round(fit.current.precision, 4),
            "current_recall": round(fit.current.recall, 4), "applied": apply,
        }))
