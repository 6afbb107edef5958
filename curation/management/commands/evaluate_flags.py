"""Measure a detector on a labelled JSONL file.

    python manage.py evaluate_flags hallucination FILE.jsonl [--answers auto|items|sentences] [--no-lm]
    python manage.py evaluate_flags near_duplicate FILE.jsonl

Every item is scored with the code, settings and default models the app flags
with. One line per signal gives that signal's ROC-AUC and PR-AUC alone (a name
with a leading "-" is a support: lower means riskier). The last line printed is
one JSON object: n, roc_auc, pr_auc, best_f1, threshold_at_best_f1, seconds and
signals (label 1 is the positive class).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation import detector_metrics as metrics
from curation.evaluation import KINDS, DatasetError, signal_aucs


class Command(BaseCommand):
    help = "Score a labelled JSONL file with a detector and print ROC-AUC, PR-AUC and the best F1, per signal too."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("file", type=Path)
        parser.add_argument("--answers", choices=["auto", "items", "sentences"], default="auto",
                            help="hallucination: whether consecutive one-sentence items with one source form an answer")
        parser.add_argument("--no-lm", action="store_true", help="hallucination: score without LM grounding")

    def handle(self, *args, kind: str, file: Path, answers: str, no_lm: bool, **options):
        load, score = KINDS[kind]
        started = time.perf_counter()
        try:
            items = load(file)
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
        scored = score(items, mode=answers, use_lm=not no_lm) if kind == "hallucination" else score(items)
        labels = [item.label for item in items]
        best = metrics.best_f1(labels, scored.scores)
        signals = signal_aucs(labels, scored.rows)
        for name, figures in signals.items():
            self.stdout.write(f"  {name:<24} ROC-AUC {figures['roc_auc']:.4f}  PR-AUC {figures['pr_auc']:.4f}"
                              f"  (n={figures['n']})")
        self.stdout.write(json.dumps({
            "n": len(items),
            "roc_auc": round(metrics.roc_auc(labels, scored.scores), 4),
            "pr_auc": round(metrics.pr_auc(labels, scored.scores), 4),
            "best_f1": round(best.f1, 4),
            "threshold_at_best_f1": round(best.threshold, 4),
            "seconds": round(time.perf_counter() - started, 2),
            "signals": signals,
        }))
