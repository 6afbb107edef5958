"""A lineage's own flag models, fitted on its reviewers' decisions, and the lineage page that shows and offers them."""
import numpy as np
import pytest
from django.urls import reverse

from curation import detectors
from curation.models import Flag, FlagRun, LineageFit, Review, Sample
from curation.services import flagging
from curation.services.auto_review import system_reviewer
from curation.services.lineage_fit import lineage_fit_request, lineage_fit_run
from curation.services.reflag import flag_run_chunk
from curation.services.review import sample_decide
from curation.signals import lineage as lineage_signals
from curation.signals import weights as default_weights
from tests.factories import make_lineage, make_sample

pytestmark = pytest.mark.django_db

PLACES = ["bridge", "library", "museum", "harbour", "observatory", "railway station", "hospital", "theatre",
          "university", "lighthouse", "aquarium", "cathedral", "stadium", "botanical garden", "power plant",
          "zoo", "airport", "market hall", "town hall", "opera house"]


# ----------------------------------------------------------------------------- the comparison, on plain arrays


def _decided(n: int, *, follow: str, seed: int = 0) -> list[lineage_signals.Decided]:
    """Samples whose label follows feature `follow`; the default's score is feature "a" (noise when follow is "b")."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.normal(), rng.normal()
        label = int((a if follow == "a" else b) + 0.3 * rng.normal() > 0)
        row = {"a": a, "b": b}
        out.append(lineage_signals.Decided(label, i % 7, row, [row], float(1 / (1 + np.exp(-a)))))
    return out


def test_a_fit_that_follows_a_feature_the_default_ignores_is_adopted_with_its_reliability():
    result = lineage_signals.compare(decided=_decided(120, follow="b"), features=("a", "b"), min_decisions=50,
                                     min_per_class=10, margin=0.01)
    assert result.adopted and result.lineage_auc > 0.85 and result.default_auc < 0.65
    assert result.lineage_brier < result.default_brier
    assert sum(b["n"] for b in result.reliability) == 120
    assert all(b["low"] <= b["predicted"] <= b["high"] for b in result.reliability)
    assert result.model.coef[1] > abs(result.model.coef[0]), "the fit leans on the feature the decisions follow"


def test_a_fit_that_only_matches_the_default_or_has_too_few_decisions_is_not_adopted():
    same = lineage_signals.compare(decided=_decided(120, follow="a"), features=("a", "b"), min_decisions=50,
                                   min_per_class=10, margin=0.01)
    assert not same.adopted and "does not beat the default" in same.reason and same.model is not None
    few = lineage_signals.compare(decided=_decided(30, follow="b"), features=("a", "b"), min_decisions=50,
                                  min_per_class=10, margin=0.01)
    assert not few.adopted and "a fit needs 50 decisions" in few.reason and few.lineage_auc is not None
    one_class = [d for d in _decided(40, follow="b") if d.label == 1]
    none = lineage_signals.compare(decided=one_class, features=("a", "b"), min_decisions=2, min_per_class=2,
                                   margin=0.0)
    assert not none.adopted and none.lineage_auc is None and "too few to cross-validate" in none.reason


def test_a_fit_that_ranks_better_but_is_worse_calibrated_is_not_adopted():
    """Twelve noise features and a weak signal on 60 decisions: the fit overfits. Its ranking edges past a
    constant default, but its probabilities (which would become the scores) are worse than the base rate."""
    rng = np.random.default_rng(0)
    decided = []
    for i in range(60):
        row = {f"noise{j}": rng.normal() for j in range(12)}
        row["signal"] = rng.normal()
        decided.append(lineage_signals.Decided(int(0.6 * row["signal"] + rng.normal() > 0), i % 6, row, [row], 0.5))
    result = lineage_signals.compare(decided=decided, features=tuple(sorted(decided[0].row)), min_decisions=50,
                                     min_per_class=10, margin=0.01)
    assert result.lineage_auc > result.default_auc + 0.01 and result.lineage_brier > result.default_brier
    assert not result.adopted and "worse calibrated" in result.reason


# ----------------------------------------------------------------------------- a lineage, end to end


@pytest.fixture
def small_fits(settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "LINEAGE_FIT_MIN_DECISIONS": 20, "LINEAGE_FIT_MIN_PER_CLASS": 6}


def _numbers_lineage(reviewer):
    """Pairs of answers about one place: a later one either says the same facts in other words, or repeats the
    first one's words with one number changed. This lineage's reviewers keep rewordings (accepted) and reject the
    templated near-copies as duplicates. The default pair model reads a changed number as a different fact and ranks
    the rewording higher; the reviewers' decisions teach the lineage's own model the reverse."""
    lineage = make_lineage(passages=6, duplicate_threshold=0.8)
    passages = list(lineage.passages.order_by("id"))
    firsts, laters = [], []
    for i, place in enumerate(PLACES):
        year, staff = 1890 + 3 * i, 40 + 7 * i
        passage = passages[i % len(passages)]
        firsts.append(make_sample(lineage, question=f"When did the {place} open?", flagged=False, passage=passage,
                                  answer=f"The {place} opened in {year} with {staff} staff."))
    for i, place in enumerate(PLACES):
        year, staff = 1890 + 3 * i, 40 + 7 * i
        passage = passages[i % len(passages)]
        templated = i % 2 == 1
        answer = (f"The {place} opened in {year} with {staff + 1} staff." if templated
                  else f"Its doors first opened to visitors back in {year}; {staff} people worked there.")
        laters.append((make_sample(lineage, question=f"When did the {place} open?", answer=answer, flagged=False,
                                   passage=passage), templated))
    flagging.samples_flag(sample_ids=[s.pk for s in firsts] + [s.pk for s, _ in laters])
    for sample, templated in laters:
        sample.refresh_from_db()
        sample_decide(sample=sample, reviewer=reviewer, decision=Review.Decision.REJECT if templated else "accept",
                      reason="duplicate" if templated else "")
    # The system reviewer rejects the first answers for hallucination: the flags' own output, to be left out.
    robot = system_reviewer()
    for sample in firsts[:8]:
        sample.refresh_from_db()
        review = sample_decide(sample=sample, reviewer=robot, decision=Review.Decision.REJECT, reason="hallucination")
        Review.objects.filter(pk=review.pk).update(system=True)
    return lineage, laters


def test_a_lineage_fit_on_decisions_the_default_ignores_is_adopted_offers_a_reflag_and_changes_the_scores(
        small_fits, curator_client, reviewer, django_capture_on_commit_callbacks):
    lineage, laters = _numbers_lineage(reviewer)
    before = {s.pk: Sample.objects.get(pk=s.pk).duplicate_score for s, _ in laters}
    novelty_before = {s.pk: Sample.objects.get(pk=s.pk).novelty for s, _ in laters}

    with django_capture_on_commit_callbacks() as queued:
        response = curator_client.post(reverse("lineage-fits", args=[lineage.slug]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Fitting both flag models" in response.content.decode()
    assert 'hx-trigger="every 2s"' in response.content.decode(), "the panel polls while the fits run"
    fits = list(LineageFit.objects.filter(lineage=lineage, status=LineageFit.Status.QUEUED))
    assert len(queued) == 2 and {f.kind for f in fits} == {Flag.Kind.HALLUCINATION, Flag.Kind.NEAR_DUPLICATE}
    for fit in fits:  # what the two queued tasks do on a worker
        assert lineage_fit_run(fit_id=fit.pk).status == LineageFit.Status.DONE
        assert lineage_fit_run(fit_id=fit.pk) is None, "a second delivery finds it done"

    dup = LineageFit.objects.get(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE)
    assert dup.decisions == len(laters) and dup.positives == sum(r for _, r in laters)
    assert dup.left_out["system reviewer"] == 8, "the system reviewer's decisions are left out"
    assert dup.adopted and dup.lineage_auc > dup.default_auc + 0.2, dup.reason
    assert dup.detector_version == f"{detectors.DUPLICATE_VERSION}+lineage{dup.pk}"
    assert dup.previous_version == detectors.DUPLICATE_VERSION and dup.model["features"] == list(
        default_weights.duplicate().features)
    halluc = LineageFit.objects.get(lineage=lineage, kind=Flag.Kind.HALLUCINATION)
    assert not halluc.adopted and halluc.decisions == 10 and halluc.positives == 0
    assert halluc.detector_version == detectors.HALLUCINATION_VERSION

    polled = curator_client.get(reverse("lineage-fits", args=[lineage.slug]), HTTP_HX_REQUEST="true")
    assert polled.status_code == 286, "no fit runs: the panel tells htmx to stop polling"
    page = curator_client.get(reverse("lineage-detail", args=[lineage.slug])).content.decode()
    assert f"{dup.lineage_auc:.3f}" in page and f"{dup.default_auc:.3f}" in page
    assert f"{dup.decisions} ({dup.positives} rejected)" in page and "left out: 8 system reviewer" in page
    assert "Adopted" in page and "Not adopted: 10 decisions (0 rejected, 10 accepted)" in page
    assert "too few to cross-validate" in page and 'id="reflag-offer"' in page
    assert not FlagRun.objects.filter(lineage=lineage).exists(), "a fit offers a re-flag; it does not start one"

    with django_capture_on_commit_callbacks():
        response = curator_client.post(reverse("lineage-reflag", args=[lineage.slug]), HTTP_HX_REQUEST="true")
    run = FlagRun.objects.get(lineage=lineage)
    assert f"run {run.pk}" in response.content.decode() and 'id="reflag-offer"' not in response.content.decode()
    while flag_run_chunk(run_id=run.pk):
        pass
    after = {s.pk: Sample.objects.get(pk=s.pk) for s, _ in laters}
    assert {s.detector_version for s in after.values()} == {f"{dup.detector_version}+{detectors.HALLUCINATION_VERSION}"}
    rejected = [after[s.pk].duplicate_score for s, r in laters if r]
    accepted = [after[s.pk].duplicate_score for s, r in laters if not r]
    assert np.mean([before[s.pk] for s, r in laters if r]) < np.mean([before[s.pk] for s, r in laters if not r])
    assert np.mean(rejected) > np.mean(accepted), "the lineage's model now ranks its reviewers' duplicates first"
    assert all(after[pk].novelty == pytest.approx(novelty_before[pk], abs=1e-3) for pk in before), \
        "novelty stays 1 - the similarity, whatever scores the duplicates"
    flag = Flag.objects.filter(sample__lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE).first()
    assert flag is None or flag.detector_version == dup.detector_version


def test_an_adopted_hallucination_fit_scores_flags_under_its_own_version(lineage):
    features = default_weights.hallucination(with_lm=False).features
    model = {"features": list(features), "mean": [0.0] * len(features), "scale": [1.0] * len(features),
             "coef": [0.0] * len(features), "intercept": float(np.log(0.8 / 0.2)), "provenance": "test"}
    fit = LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.HALLUCINATION, status=LineageFit.Status.DONE,
                                    adopted=True, model=model, default_version=detectors.HALLUCINATION_VERSION,
                                    previous_version=detectors.HALLUCINATION_VERSION,
                                    detector_version=f"{detectors.HALLUCINATION_VERSION}+lineage7")
    sample = make_sample(lineage, answer="Chlorophyll absorbs light. The Moon is made of cheese.", flagged=False,
                         alt_answers=["Plants are green because of chlorophyll."])
    [flag] = [f for f in flagging.sample_flag(sample_id=sample.pk) if f.kind == Flag.Kind.HALLUCINATION]
    sample.refresh_from_db()
    assert flag.score == pytest.approx(0.8, abs=1e-4), "the lineage model's probability is the score, unmixed"
    assert flag.detector_version == fit.detector_version == flag.evidence["detector"]
    assert sample.detector_version.endswith("+lineage7")
    LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.HALLUCINATION, status=LineageFit.Status.DONE,
                              adopted=False, default_version=detectors.HALLUCINATION_VERSION,
                              detector_version=detectors.HALLUCINATION_VERSION)
    flagging.sample_flag(sample_id=sample.pk)
    sample.refresh_from_db()
    assert sample.detector_version == flagging.DETECTOR_VERSION, "a later fit that is not adopted restores the default"


def test_the_fits_panel_escapes_everything_and_refuses_reviewers(curator_client, client, reviewer):
    lineage = make_lineage(passages=2, name="<script>alert('name')</script>")
    LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE, status=LineageFit.Status.DONE,
                              reason="<b>bold</b> reason", left_out={"<i>why</i>": 2},
                              detector_version="dup<em>x</em>", previous_version="dup")
    LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE, status=LineageFit.Status.FAILED,
                              last_error="<img src=x onerror=alert(1)>")
    for url in (reverse("lineage-detail", args=[lineage.slug]), reverse("lineage-fits", args=[lineage.slug])):
        html = curator_client.get(url).content.decode()
        for raw in ("<script>alert(", "<b>bold", "<i>why", "<em>x", "<img src=x"):
            assert raw not in html, (url, raw)
        assert "&lt;b&gt;bold&lt;/b&gt; reason" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        assert 'id="reflag-offer"' in html, "a finished fit that changed the version offers a re-flag"
    client.force_login(reviewer)
    assert client.post(reverse("lineage-fits", args=[lineage.slug])).status_code == 403
    assert client.post(reverse("lineage-reflag", args=[lineage.slug])).status_code == 403
    assert not LineageFit.objects.filter(lineage=lineage, status=LineageFit.Status.QUEUED).exists()


def test_a_second_fit_is_refused_while_one_runs(lineage, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        lineage_fit_request(lineage=lineage)
    from curation.services.lineage_fit import LineageFitError

    with pytest.raises(LineageFitError, match="already being fitted"):
        lineage_fit_request(lineage=lineage)


def test_the_api_shows_the_fits_and_fits_now(curator, lineage, django_capture_on_commit_callbacks):
    from tests.api.conftest import token_client

    LineageFit.objects.create(lineage=lineage, kind=Flag.Kind.HALLUCINATION, status=LineageFit.Status.DONE,
                              decisions=64, positives=20, lineage_auc=0.81, default_auc=0.74, adopted=True,
                              detector_version=f"{detectors.HALLUCINATION_VERSION}+lineage3",
                              previous_version=detectors.HALLUCINATION_VERSION)
    api = token_client(curator)
    url = reverse("api-lineage-flag-fits", args=[lineage.slug])
    body = api.get(url).json()
    [halluc] = [k for k in body["kinds"] if k["kind"] == Flag.Kind.HALLUCINATION]
    assert halluc["deciding"]["lineage_auc"] == 0.81 and halluc["deciding"]["default_auc"] == 0.74
    assert halluc["deciding"]["decisions"] == 64 and body["reflag_offered"] is True and body["fitting"] is False
    with django_capture_on_commit_callbacks() as queued:
        response = api.post(url)
    assert response.status_code == 202 and response.json()["fitting"] is True and len(queued) == 2
    assert api.post(url).status_code == 409


def test_only_standing_decisions_of_people_count(lineage, reviewer):
    from curation.services.lineage_fit import lineage_decisions
    from curation.services.review import review_undo
    from tests.factories import REVIEWER, make_user

    made = [make_sample(lineage) for _ in range(7)]
    sample_decide(sample=made[0], reviewer=reviewer, decision="accept")
    sample_decide(sample=made[1], reviewer=reviewer, decision="reject", reason="duplicate")
    sample_decide(sample=made[2], reviewer=reviewer, decision="reject", reason="off-topic")
    sample_decide(sample=made[3], reviewer=reviewer, decision="edit", edited_answer="A better answer.")
    review = sample_decide(sample=made[4], reviewer=system_reviewer(), decision="reject", reason="duplicate")
    Review.objects.filter(pk=review.pk).update(system=True)
    sample_decide(sample=made[5], reviewer=reviewer, decision="reject", reason="duplicate")
    made[5].refresh_from_db()
    # A second, blind review says reject; the first reviewer's accept stands.
    Sample.objects.filter(pk=made[0].pk).update(double_review=True)
    sample_decide(sample=Sample.objects.get(pk=made[0].pk), reviewer=make_user("otto", REVIEWER), decision="reject",
                  reason="duplicate", overlap=True)
    sample_decide(sample=made[6], reviewer=reviewer, decision="reject", reason="duplicate")
    review_undo(reviewer=reviewer, lineage=lineage)  # undoes made[6]: pending again, no decision
    labels, left_out = lineage_decisions(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE)
    assert labels == {made[0].pk: 0, made[1].pk: 1, made[5].pk: 1}
    assert left_out == {"system reviewer": 1, "edited": 1, "other reason": 1}
    latest, _ = lineage_decisions(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE, limit=2)
    assert latest == {made[1].pk: 1, made[5].pk: 1}
    halluc, _ = lineage_decisions(lineage=lineage, kind=Flag.Kind.HALLUCINATION)
    assert halluc == {made[0].pk: 0}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_fit_now_runs_on_a_real_curation_worker(curator_client, reviewer, tmp_path):
    from ouroboros.celery import app
    from tests.support.processes import CeleryProcess, wait_for

    lineage = make_lineage(passages=3)
    samples = [make_sample(lineage, answer=f"Chlorophyll absorbs light, item {i}.", passage=p, flagged=False)
               for i, p in enumerate(list(lineage.passages.all()) * 2)]
    for i, sample in enumerate(samples):
        sample_decide(sample=sample, reviewer=reviewer, decision="accept" if i % 2 else "reject",
                      reason="" if i % 2 else "hallucination")
    app.control.purge()  # nothing left over from other tests may reach this worker
    worker = CeleryProcess.worker("lineagefit", tmp_path, queues="curation")
    try:
        assert curator_client.post(reverse("lineage-fits", args=[lineage.slug])).status_code == 302
        wait_for(lambda: not LineageFit.objects.filter(lineage=lineage, status__in=["queued", "running"]).exists(),
                 timeout=180, what="the fits", processes=[worker])
    finally:
        worker.stop()
    halluc = LineageFit.objects.get(lineage=lineage, kind=Flag.Kind.HALLUCINATION)
    assert halluc.status == LineageFit.Status.DONE, halluc.last_error
    assert halluc.decisions == 6 and halluc.positives == 3 and not halluc.adopted
    assert halluc.lineage_auc is not None and "a fit needs 50 decisions" in halluc.reason
    dup = LineageFit.objects.get(lineage=lineage, kind=Flag.Kind.NEAR_DUPLICATE)
    # These samples were never flagged, so they have no stored candidate matches to fit on.
    assert dup.status == LineageFit.Status.DONE and dup.decisions == 0 and dup.left_out["no features"] == 3
    assert "too few" in dup.reason
