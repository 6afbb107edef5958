"""Fit a detector's default model on a labelled JSONL file and report its cross-validated figures.

    python manage.py fit_flags hallucination ../shared/data/wikibio_dev.jsonl [--no-lm] [--answers N] [--copied N] [--write]
    python manage.py fit_flags near_duplicate ../shared/data/stsb_dev.jsonl [--built-per-fold N] [--write]

Rows are the app's own feature rows (`evaluate_flags` computes the same). The
figure reported is k-fold cross-validation with folds by answer (a passage's
sentences never sit in two folds); the model written with --write is fitted on
every row, and its provenance (file, rows, command, CV figures) is stored
beside its weights in `curation/signals/weights.py`. Bump the detector
version after a new fit. The last line printed is one JSON object.

near_duplicate also fits on multi-sentence pairs built from the file's own
(`curation.signals.long_pairs`, `--built-per-fold` per fold, 0 for none), so
that the model holds for a question + answer as well as for one-line pairs;
the CV figures are reported for the file's pairs and the built ones apart,
with a reliability table (mean probability against the observed rate per bin).

hallucination likewise also fits on answers built from the file's own
(`curation.signals.copied_answers`, `--copied` passage sentences each, 0 for
none): passage sentences copied as written with one of the file's sentences
among them, the shape of a student's answer that the public set lacks. Its
CV figures are reported for the file's sentences and the built answers apart.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from curation import detectors
from curation.evaluation import KINDS, DatasetError, DuplicateItem, answers_of
from curation.signals import copied_answers, fitting, long_pairs


class Command(BaseCommand):
    help = "Fit a detector's default logistic model on labelled data (grouped k-fold CV reported)."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("file", type=Path)
        parser.add_argument("--no-lm", action="store_true", help="hallucination: the model without LM grounding")
        parser.add_argument("--answers", type=int, default=None, help="hallucination: only the first N answers")
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--l2", type=float, default=1.0)
        parser.add_argument("--built-per-fold", type=int, default=60,
                            help="near_duplicate: multi-sentence pairs built per fold from the file's pairs")
        parser.add_argument("--copied", type=int, default=2,
                            help="hallucination: passage sentences copied into each built answer (0: no built answers)")
        parser.add_argument("--seed", type=int, default=15, help="the seed of the built pairs or answers")
        parser.add_argument("--write", action="store_true", help="store the fitted weights in curation/signals/weights.py")

    def handle(self, *args, kind: str, file: Path, no_lm: bool, answers: int | None, folds: int, l2: float,
               write: bool, built_per_fold: int, copied: int, seed: int, **options):
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
            if copied < 0:
                raise CommandError(f"--copied must be 0 or more, got {copied}")
            scored = score(items, use_lm=not no_lm)
            features = fitting.HALLUCINATION_FEATURES if no_lm else fitting.HALLUCINATION_LM_FEATURES
            name = "hallucination" if no_lm else "hallucination_lm"
        subsets, built, built_labels = None, [], []
        if kind == "hallucination" and copied:
            sources = [copied_answers.SourceAnswer(items[m[0]].sources[0], [items[n].text for n in m],
                                                   [items[n].label for n in m], scored.groups[m[0]])
                       for m in answers_of(items) if len(items[m[0]].sources) == 1]
            built = copied_answers.build(sources, copied=copied, seed=seed)
            rows, groups = list(scored.rows), list(scored.groups)
            for answer in built:  # scored as the file's answers are: the same call, the same settings
                result = detectors.hallucination_in_memory(answer=answer.sentences, sources=[answer.source],
                                                           alternatives=[], use_lm=not no_lm)
                rows += [result.signals(k) for k in range(len(answer.sentences))]
                groups += [answer.group] * len(answer.sentences)
                built_labels += answer.labels
            originals = len(items)
            scored = type(scored)(scored.scores + [0.0] * len(built_labels), rows, groups)
            subsets = {file.stem: [n < originals for n in range(len(rows))],
                       "built": [n >= originals for n in range(len(rows))]}
        if kind == "near_duplicate":
            if built_per_fold < 0:
                raise CommandError(f"--built-per-fold must be 0 or more, got {built_per_fold}")
            # Source pair i sits in fold i mod k (grouped_folds, groups 0..n-1 first), and so does every pair built from it.
            built = long_pairs.build([long_pairs.SourcePair(i.a, i.b, i.label, i.score) for i in items], folds=folds,
                                     per_fold=built_per_fold, seed=seed)
            originals = len(items)
            items = items + [DuplicateItem(p.a, p.b, p.label, p.score) for p in built]
            scored = score(items)
            scored = type(scored)(scored.scores, scored.rows, list(range(originals)) + [p.group for p in built])
            features, name = fitting.DUPLICATE_FEATURES, "near_duplicate"
            subsets = {file.stem: [n < originals for n in range(len(items))],
                       "built": [n >= originals for n in range(len(items))]} if built else None
        labels = [i.label for i in items] + built_labels  # near_duplicate's built pairs are in `items` already
        digest = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
        command = f"manage.py fit_flags {kind} {file.name}" + (" --no-lm" if kind == "hallucination" and no_lm else "") \
            + (f" --answers {answers}" if answers else "") + f" --folds {folds} --l2 {l2}" \
            + (f" --built-per-fold {built_per_fold} --seed {seed}" if kind == "near_duplicate" else "") \
            + (f" --copied {copied} --seed {seed}" if kind == "hallucination" else "")
        try:
            model, cv = fitting.fit_with_cv(scored.rows, labels, scored.groups, features=features, folds=folds, l2=l2,
                                            subsets=subsets)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        provenance = (f"{command}; {file.name} sha256 {digest}; {len(items)} rows; "
                      f"{folds}-fold CV by answer: ROC-AUC {cv['roc_auc']}, PR-AUC {cv['pr_auc']}, Brier {cv['brier']}")
        if subsets and kind == "hallucination":
            own, made = cv[file.stem], cv["built"]
            provenance = (f"{command}; {file.name} sha256 {digest}; {originals} sentences of the file plus "
                          f"{len(built_labels)} of {len(built)} answers built from it (synthetic: "
                          f"curation.signals.copied_answers, seed {seed}; {copied} passage sentences copied as "
                          f"written, label 0, with one of the file's sentences among them); {folds}-fold CV by "
                          f"answer: {file.stem} ROC-AUC {own['roc_auc']}, PR-AUC {own['pr_auc']}, Brier "
                          f"{own['brier']}; built ROC-AUC {made['roc_auc']}, PR-AUC {made['pr_auc']}, Brier "
                          f"{made['brier']}")
        elif subsets:
            own, made = cv[file.stem], cv["built"]
            provenance = (f"{command}; {file.name} sha256 {digest}; {originals} pairs of the file plus {len(built)} "
                          f"multi-sentence pairs built from them (synthetic: curation.signals.long_pairs, seed {seed}; "
                          f"each a concatenation of the file's sentences, scored by the mean of their pairs' scores); "
                          f"{folds}-fold CV grouped by source pair: {file.stem} ROC-AUC {own['roc_auc']}, "
                          f"PR-AUC {own['pr_auc']}, Brier {own['brier']}; built ROC-AUC {made['roc_auc']}, "
                          f"PR-AUC {made['pr_auc']}, Brier {made['brier']}; all Brier {cv['brier']}")
        model = type(model)(**{**model.__dict__, "provenance": provenance})
        if write:
            fitting.write_weights(name, model)
        self.stdout.write(json.dumps({"model": name, "file": file.name, "sha256": digest, "cv": cv,
                                      "weights": dict(zip(model.features, [round(c, 4) for c in model.coef])),
                                      "written": write, "seconds": round(time.perf_counter() - started, 2)}))
