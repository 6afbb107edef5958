"""Fitting a lineage's own flag models on its reviewers' decisions (issue 15, items 3 and 4).

Per kind, a logistic regression over the default model's features is fitted
on the lineage's decided samples: rejected for this kind's reason is 1,
accepted is 0. It replaces the default for that lineage only when it has
enough decisions and beats the default in cross-validation with folds by
passage (`curation.signals.lineage.compare`). Adopted, its probability is the
flag's score (calibrated on the lineage's own decisions) and its version is
`<default version>+lineage<fit id>`; the lineage page then offers a re-flag.

Which decisions count: each sample's standing decision (its latest, not
undone, not a second blind review). The system reviewer's (`Review.system`,
auto review) are left out, since they are the flags' own output; so are edits
(the stored answer is the reviewer's, not the one that was scored) and
rejections for other reasons (they say nothing about this detector).

Where the features come from (recomputed, nothing new is stored at flag time):
- hallucination: the default scoring run again on the stored sample, its
  lineage's stored chunk embeddings and its parent (`flagging.samples_hallucination_rescore`;
  it embeds the answer's sentences, a few texts a sample). Flags keep their
  signals only for samples they flagged, and the fit needs the others too.
- near-duplicate: the candidate matches stored on the sample at flag time
  (`Sample.neighbours`: cosine, MinHash Jaccard) and the matches' texts, through
  the default pair features (`signals.features.duplicate_row`); no model runs.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from curation import detectors, selectors
from curation.models import Flag, Lineage, LineageFit, Review, Sample
from curation.signals import features as signal_features
from curation.signals import lineage as lineage_signals
from curation.signals import weights as default_weights
from curation.signals.combiner import Model

log = logging.getLogger(__name__)

RESCORE_BATCH = 64  # samples re-scored per embedder call
STALE_AFTER_S = 2 * 1900  # twice the fit task's hard time limit (a queued fit may wait behind flagging)


class LineageFitError(Exception):
    pass


def default_version(kind: str) -> str:
    return detectors.HALLUCINATION_VERSION if kind == Flag.Kind.HALLUCINATION else detectors.DUPLICATE_VERSION


def duplicate_probability(model: Model, text: str, other: str | None, match: dict) -> float:
    """P(near-duplicate) of a sample and one candidate match under a lineage's pair model.

    A match whose text is gone scores 0.
    """
    if other is None:
        return 0.0
    row = signal_features.duplicate_row(text, other, cosine=float(match.get("cosine") or 0.0),
                                        jaccard=float(match.get("jaccard") or 0.0))
    return float(model.predict([row])[0])


# ----------------------------------------------------------------------------- requests


def lineage_fit_request(*, lineage: Lineage, created_by=None) -> list[LineageFit]:
    """Queue a fit of each kind (one task each, on `curation`); refused while one of the lineage's is running."""
    from curation.tasks import fit_lineage_flags

    with transaction.atomic():
        Lineage.objects.select_for_update().get(pk=lineage.pk)
        # A fit still "running" past the task's hard limit lost its worker: it no longer blocks a new one.
        LineageFit.objects.filter(lineage=lineage, status__in=[LineageFit.Status.QUEUED, LineageFit.Status.RUNNING],
                                  created_at__lt=timezone.now() - timedelta(seconds=STALE_AFTER_S)).update(
            status=LineageFit.Status.FAILED, last_error="its worker stopped before it finished",
            finished_at=timezone.now())
        if LineageFit.objects.filter(lineage=lineage, status__in=[LineageFit.Status.QUEUED,
                                                                  LineageFit.Status.RUNNING]).exists():
            raise LineageFitError(f"lineage {lineage.slug!r} is already being fitted")
        fits = [LineageFit.objects.create(lineage=lineage, kind=kind, created_by=created_by,
                                          default_version=default_version(kind))
                for kind in (Flag.Kind.HALLUCINATION, Flag.Kind.NEAR_DUPLICATE)]
        for fit in fits:
            transaction.on_commit(lambda pk=fit.pk: fit_lineage_flags.delay(pk))
    return fits


def lineage_fit_fail(*, fit_id: int, reason: str) -> None:
    LineageFit.objects.filter(pk=fit_id).exclude(status=LineageFit.Status.DONE).update(
        status=LineageFit.Status.FAILED, last_error=reason[:2000], finished_at=timezone.now())


# ----------------------------------------------------------------------------- decisions and their features


def lineage_decisions(*, lineage: Lineage, kind: str, limit: int | None = None) -> tuple[dict[int, int], dict[str, int]]:
    """The lineage's standing decisions for a kind: {sample id: label}, and how many were left out by why.

    With `limit`, the latest that many (by sample id) are kept, and the older ones counted as left out: the
    fit's cost grows with them (hallucination features are recomputed), and recent reviews say most about
    what the lineage's reviewers want now.
    """
    standing = (Review.objects.filter(sample__lineage=lineage, overlap=False, undone_by__isnull=True)
                .exclude(decision=Review.Decision.UNDO)
                .order_by("sample_id", "-created_at", "-id").distinct("sample_id")
                .values_list("sample_id", "decision", "reason", "system", "sample__status"))
    labels, left_out = {}, {"system reviewer": 0, "edited": 0, "other reason": 0}
    reason = selectors.REVIEW_REASONS[kind]
    for sample_id, decision, why, system, status in standing:
        if status == Sample.Status.PENDING:
            continue
        if system:
            left_out["system reviewer"] += 1
        elif decision == Review.Decision.EDIT:
            left_out["edited"] += 1
        elif decision == Review.Decision.ACCEPT:
            labels[sample_id] = 0
        elif why == reason:
            labels[sample_id] = 1
        else:
            left_out["other reason"] += 1
    if limit is not None and len(labels) > limit:
        kept = sorted(labels)[-limit:]
        left_out["older"] = len(labels) - limit
        labels = {pk: labels[pk] for pk in kept}
    return labels, left_out


def _hallucination_decided(samples: list[Sample], labels: dict[int, int]) -> list[lineage_signals.Decided]:
    from curation.services import flagging

    decided = []
    for start in range(0, len(samples), RESCORE_BATCH):
        results = flagging.samples_hallucination_rescore(samples=samples[start : start + RESCORE_BATCH])
        for sample in samples[start : start + RESCORE_BATCH]:
            result = results.get(sample.pk)
            if result is None or not result.rows:
                continue
            risks = [s.risk for s in result.sentences]
            shown = max(range(len(risks)), key=risks.__getitem__)
            rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in result.rows]
            decided.append(lineage_signals.Decided(labels[sample.pk], sample.passage_id, rows[shown], rows,
                                                   float(result.score)))
    return decided


def _duplicate_decided(samples: list[Sample], labels: dict[int, int]) -> list[lineage_signals.Decided]:
    from curation.services import flagging

    matches = {s.pk: {scope: m for scope, m in (s.neighbours or {}).items() if isinstance(m, dict) and m.get("id")}
               for s in samples}
    found = flagging.match_objects(m for ms in matches.values() for m in ms.values())
    decided = []
    for sample in samples:
        text = detectors.duplicate_text(sample.question, sample.answer)
        instances = []
        for match in matches[sample.pk].values():
            other = flagging._match_text(match, found)
            if other is None:
                continue
            row = signal_features.duplicate_row(text, other, cosine=float(match.get("cosine") or 0.0),
                                                jaccard=float(match.get("jaccard") or 0.0))
            instances.append((flagging._duplicate_score(text, match, found), row))
        if not instances:
            continue
        score, shown = max(instances, key=lambda pair: pair[0])
        decided.append(lineage_signals.Decided(labels[sample.pk], sample.passage_id, shown,
                                               [row for _, row in instances], float(score)))
    return decided


def _default_features(kind: str, lineage: Lineage) -> tuple[str, ...]:
    if kind == Flag.Kind.NEAR_DUPLICATE:
        return default_weights.duplicate().features
    return default_weights.hallucination(with_lm=lineage.lm_grounding).features


# ----------------------------------------------------------------------------- the fit


def lineage_fit_run(*, fit_id: int) -> LineageFit | None:
    """Fit one queued LineageFit; returns it, or None when another worker has it or it is finished.

    1. Claim it (queued → running, a conditional update).
    2. Read the lineage's standing decisions for the kind (`lineage_decisions`).
    3. Their feature rows and the default's scores (see the module's docstring).
    4. Cross-validate against the default and decide (`signals.lineage.compare`).
    5. Store the figures, the weights if fitted, and the version in force after it.
    """
    claimed = LineageFit.objects.filter(pk=fit_id, status=LineageFit.Status.QUEUED).update(
        status=LineageFit.Status.RUNNING)
    if not claimed:
        return None
    fit = LineageFit.objects.select_related("lineage").get(pk=fit_id)
    lineage, kind = fit.lineage, fit.kind
    previous = selectors.lineage_fitted_models(lineage_id=lineage.pk).get(kind)
    options = settings.OUROBOROS
    labels, left_out = lineage_decisions(lineage=lineage, kind=kind, limit=options["LINEAGE_FIT_MAX_DECISIONS"])
    samples = list(Sample.objects.filter(pk__in=labels).select_related("lineage", "parent").order_by("id"))
    decided = (_hallucination_decided if kind == Flag.Kind.HALLUCINATION else _duplicate_decided)(samples, labels)
    left_out["no features"] = len(labels) - len(decided)
    features = _default_features(kind, lineage)
    comparison = lineage_signals.compare(
        decided=decided, features=features, min_decisions=options["LINEAGE_FIT_MIN_DECISIONS"],
        min_per_class=options["LINEAGE_FIT_MIN_PER_CLASS"], margin=options["LINEAGE_FIT_MARGIN"],
        folds=options["LINEAGE_FIT_FOLDS"],
        provenance=f"lineage {lineage.slug} fit {fit.pk}: {len(decided)} review decisions, against {fit.default_version}",
    )
    own_version = f"{fit.default_version}+lineage{fit.pk}"
    LineageFit.objects.filter(pk=fit.pk).update(
        status=LineageFit.Status.DONE, finished_at=timezone.now(),
        decisions=comparison.n, positives=comparison.positives, left_out=left_out,
        model=comparison.model.as_dict() if comparison.model else None,
        lineage_auc=comparison.lineage_auc, default_auc=comparison.default_auc,
        lineage_brier=comparison.lineage_brier, default_brier=comparison.default_brier,
        reliability=comparison.reliability, adopted=comparison.adopted, reason=comparison.reason,
        previous_version=previous.version if previous else fit.default_version,
        detector_version=own_version if comparison.adopted else fit.default_version,
    )
    log.info("lineage %s %s fit %s: %s", lineage.slug, kind, fit.pk, comparison.reason)
    fit.refresh_from_db()
    return fit


__all__ = ["LineageFitError", "duplicate_probability", "lineage_decisions", "lineage_fit_fail", "lineage_fit_request",
           "lineage_fit_run"]
