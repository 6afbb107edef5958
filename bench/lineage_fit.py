"""What a lineage's own hallucination fit costs, against flagging the same samples, and what it reaches.

    .venv/bin/python -m ouroboros.stack bench bench.lineage_fit

The samples are bench.flagging's: the 96 answers of tests/data/answers.json in
a throw-away lineage over the 24 demo passages, each with its alternatives.
One in four has a sentence made false; a bench reviewer rejects those for
"hallucination" and accepts the rest (96 decisions, 24 rejected). The
passages are embedded before either clock starts. Then, with the embedder's
cache emptied before each:

* flagging: `samples_flag` in FLAG_BATCH_SIZE batches (the baseline: the same
  samples through the whole flagging path);
* fit: `lineage_fit_run` for hallucination: the default scoring again for
  every decided sample (`flagging.samples_hallucination_rescore`), the grouped
  cross-validation against the default, and the stored fit.

Prints one JSON line last: `ratio` is flagging seconds over fit seconds (above
1: the fit costs less than re-flagging its samples), and the fit's figures
(both cross-validated ROC-AUCs, Brier scores, adopted or not and why). The
labels come from the same in-repo set the default's regression check uses,
so the AUCs say how the parts behave, not how good the detector is.
"""
from __future__ import annotations

import json
import os
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from bench.flagging import answer_samples
    from curation import embedder
    from curation.models import Flag, Lineage, LineageFit, Review, Sample
    from curation.services import flagging
    from curation.services.lineage_fit import default_version, lineage_fit_run
    from curation.services.lineages import lineage_create, passages_add
    from curation.services.review import sample_decide
    from tests.factories import demo_passages

    chunk = settings.OUROBOROS["FLAG_BATCH_SIZE"]
    tag = uuid.uuid4().hex[:8]
    lineage = lineage_create(name=f"bench lineage fit {tag}", slug=f"bench-lineage-fit-{tag}")
    # The no-LM default's features, as in the figures of its README paragraph.
    Lineage.objects.filter(pk=lineage.pk).update(lm_grounding=False)
    reviewer, _ = get_user_model().objects.get_or_create(username=f"bench-reviewer-{tag}")
    try:
        passages_add(lineage=lineage, passages=demo_passages())
        samples = Sample.objects.bulk_create(answer_samples(lineage))
        ids = [s.pk for s in samples]
        flagging.passages_embed_missing(lineage_id=lineage.pk)

        embedder.cache_clear()
        started = time.perf_counter()
        for i in range(0, len(ids), chunk):
            flagging.samples_flag(sample_ids=ids[i : i + chunk])
        flag_s = time.perf_counter() - started

        # answer_samples makes four variants per entry; the fourth has a sentence made false.
        for n, sample in enumerate(Sample.objects.filter(pk__in=ids).select_related("lineage").order_by("id")):
            altered = n % 4 == 3
            sample_decide(sample=sample, reviewer=reviewer, decision="reject" if altered else "accept",
                          reason="hallucination" if altered else "")

        fit = LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.HALLUCINATION,
                                        default_version=default_version(Flag.Kind.HALLUCINATION))
        embedder.cache_clear()
        started = time.perf_counter()
        fit = lineage_fit_run(fit_id=fit.pk)
        fit_s = time.perf_counter() - started
    finally:
        Review.objects.filter(sample__lineage=lineage).delete()  # reviews protect their samples
        Sample.objects.filter(lineage=lineage).delete()  # samples protect their passages
        Lineage.objects.filter(pk=lineage.pk).delete()
        get_user_model().objects.filter(pk=reviewer.pk).delete()

    print(json.dumps({
        "bench": "lineage_fit",
        "samples": len(ids),
        "decisions": fit.decisions,
        "rejected": fit.positives,
        "flagging_s": round(flag_s, 2),
        "fit_s": round(fit_s, 2),
        "fit_ms_per_decision": round(1000 * fit_s / max(fit.decisions, 1), 1),
        "ratio": round(flag_s / fit_s, 3),
        "lineage_auc": None if fit.lineage_auc is None else round(fit.lineage_auc, 4),
        "default_auc": None if fit.default_auc is None else round(fit.default_auc, 4),
        "lineage_brier": None if fit.lineage_brier is None else round(fit.lineage_brier, 4),
        "default_brier": None if fit.default_brier is None else round(fit.default_brier, 4),
        "reliability": fit.reliability,
        "adopted": fit.adopted,
        "reason": fit.reason,
    }))


if __name__ == "__main__":
    main()
