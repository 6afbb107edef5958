"""A lineage's own flag model, fitted on its reviewers' decisions, against the default: plain arrays, no database.

Each decided sample comes as
- its *instances*: the feature rows the detector scores (one per answer sentence
  for hallucination, one per candidate match for near-duplicates); the sample's
  score is the largest instance probability, as in flagging;
- its *shown row*: the instance the default scored riskiest, i.e. what the
  reviewer was shown as the reason;
- its label (1 rejected for this kind's reason, 0 accepted), its group (the
  passage, so that no passage is both fitted and scored), and the default's score.

The model is fitted on instances, as multiple-instance labels allow: every
instance of an accepted sample is a negative (no sentence of it was judged
unsupported, no candidate a duplicate), and a rejected sample gives its shown
row as a positive (its other instances are unknown, and left out). Fitting on
all of an accepted sample's instances also keeps the model sane on candidates
unlike the shown ones (a real passage far from the sample), which it scores
in flagging too.

`compare` cross-validates the lineage model over groups and scores the default
on the same samples. The lineage model is adopted only when there are enough
decisions of each class, its out-of-fold ROC-AUC beats the default's and its
Brier score is no worse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curation import detector_metrics
from curation.signals import combiner
from curation.signals.combiner import Model

RELIABILITY_BINS = 5


@dataclass(frozen=True)
class Decided:
    label: int
    group: object
    row: dict
    instances: list[dict]
    default_score: float


@dataclass
class Comparison:
    n: int
    positives: int
    lineage_auc: float | None = None
    default_auc: float | None = None
    lineage_brier: float | None = None
    default_brier: float | None = None
    reliability: list[dict] = field(default_factory=list)
    model: Model | None = None
    adopted: bool = False
    reason: str = ""

    @property
    def negatives(self) -> int:
        return self.n - self.positives


def sample_score(model: Model, instances: list[dict]) -> float:
    """A sample's probability under `model`: its riskiest instance's (what flagging stores)."""
    return float(model.predict(instances).max()) if instances else 0.0


def brier(labels, scores) -> float:
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def reliability(labels, scores, *, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Binned rates: for each probability band with samples, how many, the mean predicted and the observed rate."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if inside.any():
            out.append({"low": round(lo, 2), "high": round(hi, 2), "n": int(inside.sum()),
                        "predicted": round(float(p[inside].mean()), 4), "observed": round(float(y[inside].mean()), 4)})
    return out


def compare(*, decided: list[Decided], features: tuple[str, ...], min_decisions: int, min_per_class: int,
            margin: float, folds: int = 5, l2: float = 1.0, provenance: str = "") -> Comparison:
    """Fit the lineage model, cross-validate it by group against the default, and say whether it is adopted.

    1. Count the decisions of each class; with fewer than two of either, or
       fewer than two groups, there is nothing to cross-validate.
    2. Out-of-fold: for each of min(folds, groups) folds of whole groups, fit
       on the other folds' samples' training instances (see the module's
       docstring) and score the fold's samples (their riskiest instance). A
       fold whose training part lacks a class stops it.
    3. Both ROC-AUCs and Brier scores on the same samples; the lineage model's
       binned reliability (its out-of-fold probabilities against the rates).
    4. The model fitted on every decision; adopted only with at least
       `min_decisions` decisions, `min_per_class` of each class, an
       out-of-fold ROC-AUC above the default's by more than `margin`, and an
       out-of-fold Brier score no worse than the default's (adopted, its
       probability is the flag's score, so it must be as well calibrated).
    """
    labels = [d.label for d in decided]
    n, positives = len(labels), sum(labels)
    result = Comparison(n=n, positives=positives)
    groups = [d.group for d in decided]
    enough = f"a fit needs {min_decisions} decisions, at least {min_per_class} of each class"
    counted = f"{n} decision{'s' if n != 1 else ''} ({positives} rejected, {n - positives} accepted)"
    if min(positives, n - positives) < 2 or len(set(groups)) < 2:
        result.reason = (f"{counted} from {len(set(groups))} passage{'s' if len(set(groups)) != 1 else ''}: "
                         f"too few to cross-validate; {enough}")
        return result
    owner, rows = [], []
    for i, d in enumerate(decided):
        for row in (d.instances if d.label == 0 else [d.row]):
            owner.append(i)
            rows.append([float(row[f]) for f in features])
    owner = np.asarray(owner)
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(features))
    y = np.asarray(labels)[owner]
    out_of_fold = np.zeros(n)
    for test in combiner.grouped_folds(groups, min(folds, len(set(groups)))):
        if len(test) == 0:
            continue
        train = ~np.isin(owner, test)
        if len(np.unique(y[train])) < 2:
            result.reason = (f"{counted}: the decisions of one class all come from one or two passages, so a "
                             f"cross-validation fold has no example of it to fit on; {enough}")
            return result
        fold_model = combiner.fit(X[train], y[train], features=features, l2=l2)
        for i in test:
            out_of_fold[i] = sample_score(fold_model, decided[i].instances)
    default_scores = [d.default_score for d in decided]
    result.lineage_auc = detector_metrics.roc_auc(labels, out_of_fold.tolist())
    result.default_auc = detector_metrics.roc_auc(labels, default_scores)
    result.lineage_brier = brier(labels, out_of_fold)
    result.default_brier = brier(labels, default_scores)
    result.reliability = reliability(labels, out_of_fold)
    result.model = combiner.fit(X, y, features=features, l2=l2, provenance=provenance)
    figures = (f"cross-validated ROC-AUC {result.lineage_auc:.3f} for the lineage fit, "
               f"{result.default_auc:.3f} for the default")
    if n < min_decisions or min(positives, n - positives) < min_per_class:
        result.reason = f"{counted}: {enough} ({figures})"
    elif result.lineage_auc <= result.default_auc + margin:
        result.reason = f"{counted}: the lineage fit does not beat the default by more than {margin:.2f} ({figures})"
    elif result.lineage_brier > result.default_brier:
        # Adopted, its probability becomes the score: it must be at least as well calibrated as what it replaces.
        result.reason = (f"{counted}: the lineage fit ranks better ({figures}) but its probabilities are worse "
                         f"calibrated (Brier {result.lineage_brier:.3f} against {result.default_brier:.3f})")
    else:
        result.adopted = True
        result.reason = f"{counted}: the lineage fit beats the default ({figures})"
    return result
