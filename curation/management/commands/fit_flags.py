"""Fit a detector's default model on a labelled JSONL file and report its cross-validated figures.

    python manage.py fit_flags hallucination ../shared/data/wikibio_dev.jsonl [--no-lm] [--answers N] [--write]
    python manage.py fit_flags near_duplicate ../shared/data/stsb_dev.jsonl [--write]

Rows are the app's own feature rows (`evaluate_flags` computes the same). The
figure reported is k-fold cross-validation with folds by answer (a passage's
sentences never sit in two folds); the model written with --write is fitted on
every row, and its provenance (file, rows, command, CV figures) is stored
beside its weights in `curation/signals/weights.py`. Bump the detector
version after a new fit. The last line printed is one JSON object.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation.evaluation import KINDS, DatasetError, answers_of
from curation.signals import fitting


class Command(BaseCommand):
    help = "Fit a detector's default logistic model on labelled data (grouped k-fold CV reported)."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("file", type=Path)
        parser.add_argument("--no-lm", action="store_true", help="hallucination: the model without LM grounding")
        parser.add_argument("--answers", type=int, default=None, help="hallucination: only the first N answers")
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--l2", type=float, default=1.0)
        parser.add_argument("--write", action="store_true", help="store the fitted weights in curation/signals/weights.py")

    def handle(self, *args, kind: str, file: Path, no_lm: bool, answers: int | None, folds: int, l2: float,
               write: bool, **options):
        load, score = KINDS[kind]
        started = time.perf_counter()
        try:
            items = load(file)
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
        if kind == "hallucination":
            if answers is not None:
                keep = [n for group in answers_of(items)[:answers] for n in group]
                items = [items[n] for n in keep]
            scored = score(items, use_lm=not no_lm)
            features = fitting.HALLUCINATION_FEATURES if no_lm else fitting.HALLUCINATION_LM_FEATURES
            name = "hallucination" if no_lm else "hallucination_lm"
        else:
            scored = score(items)
            features, name = fitting.DUPLICATE_FEATURES, "near_duplicate"
        labels = [i.label for i in items]
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
        command = f"manage.py fit_flags {kind} {file.name}" + (" --no-lm" if kind == "hallucination" and no_lm else "") \
            + (f" --answers {answers}" if answers else "") + f" --folds {folds} --l2 {l2}"
        try:
            model, cv = fitting.fit_with_cv(scored.rows, labels, scored.groups, features=features, folds=folds, l2=l2)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        provenance = (f"{command}; {file.name} sha256 {digest}; {len(items)} rows; "
                      f"{folds}-fold CV by answer: ROC-AUC {cv['roc_auc']}, PR-AUC {cv['pr_auc']}, Brier {cv['brier']}")
        model = type(model)(**{**model.__dict__, "provenance": provenance})
        if write:
            fitting.write_weights(name, model)
        self.stdout.write(json.dumps({"model": name, "file": file.name, "sha256": digest, "cv": cv,
                                      "weights": dict(zip(model.features, [round(c, 4) for c in model.coef])),
                                      "written": write, "seconds": round(time.perf_counter() - started, 2)}))
