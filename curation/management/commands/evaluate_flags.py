"""Measure a detector on a labelled JSONL file.

    python manage.py evaluate_flags hallucination FILE.jsonl
    python manage.py evaluate_flags near_duplicate FILE.jsonl

Every item is scored with the code and settings the app flags with. The last
line printed is one JSON object: n, roc_auc, pr_auc, best_f1,
threshold_at_best_f1 and seconds (label 1 is the positive class).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation import detector_metrics as metrics
from curation.evaluation import KINDS, DatasetError


class Command(BaseCommand):
    help = "Score a labelled JSONL file with a detector and print ROC-AUC, PR-AUC and the best F1."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("file", type=Path)

    def handle(self, *args, kind: str, file: Path, **options):
        load, score = KINDS[kind]
        started = time.perf_counter()
        try:
            items = load(file)
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
        scores = score(items)
        labels = [item.label for item in items]
        best = metrics.best_f1(labels, scores)
        self.stdout.write(json.dumps({
            "n": len(items),
            "roc_auc": round(metrics.roc_auc(labels, scores), 4),
            "pr_auc": round(metrics.pr_auc(labels, scores), 4),
            "best_f1": round(best.f1, 4),
            "threshold_at_best_f1": round(best.threshold, 4),
            "seconds": round(time.perf_counter() - started, 2),
        }))
