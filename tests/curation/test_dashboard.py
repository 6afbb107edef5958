"""The dashboard, a generation's page and a sample's page: roles, stored metrics, bounded queries, escaping."""
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from curation.models import GatePause, GenerationMetrics, Lineage, Sample
from curation.services.review import sample_accept, sample_reject
from generation.models import GenerationJob, LineageSchedule
from generation.services import schedule_pause
from tests.factories import make_flag, make_lineage, make_sample, make_user

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
INERT = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


def store_metrics(generation, **fields):
    values = dict(fingerprint="f", computed_at=timezone.now(), generated=20, accepted=15, rejected=5,
                  accept_rate=0.75, pairwise_distance=0.5, vendi=9.0, distinct_1=0.4, distinct_2=0.8,
                  coverage=0.6, centroid_drift=0.2, selection_bias=0.9, duplicate_rate=0.1, hallucination_rate=0.2,
                  flag_rates={"near_duplicate": 0.1, "hallucination": 0.2}, reject_reasons={"off-topic": 5},
                  agreement={"labels": ["accept", "reject"], "table": [[0, 0], [0, 0]]})
    return GenerationMetrics.objects.create(generation=generation, **{**values, **fields})


def lineage_with_history(generations=3, **fields):
    """A lineage whose generations 0..n have stored metrics, with a job and some decisions."""
    from curation.models import Generation

    lineage = make_lineage(passages=3, **fields)
    Generation.objects.filter(lineage=lineage, number=1).update(status="closed")
    for number in range(2, generations + 1):
        Generation.objects.create(lineage=lineage, number=number, status="closed")
    Generation.objects.create(lineage=lineage, number=generations + 1)
    for generation in lineage.generations.filter(number__lte=generations):
        store_metrics(generation, pairwise_distance=0.6 - 0.1 * generation.number)
    GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(status="open"), requested=10,
                                 done_count=4, status=GenerationJob.Status.RUNNING)
    return lineage


def test_anonymous_visitors_log_in_and_reviewers_are_refused(client, reviewer, lineage):
    for name, args in [("dashboard", []), ("dashboard-live", []), ("sample-detail", [1]),
                       ("generation-detail", [1])]:
        response = client.get(reverse(name, args=args))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name
    client.force_login(reviewer)
    sample = make_sample(lineage)
    for url in [reverse("dashboard"), reverse("dashboard-live"), reverse("sample-detail", args=[sample.pk]),
                reverse("generation-detail", args=[sample.generation_id])]:
        assert client.get(url).status_code == 403, url
    pause = GatePause.objects.create(lineage=lineage, generation=sample.generation, reasons=["x"])
    assert client.post(reverse("gate-resume", args=[pause.pk])).status_code == 403
    assert client.post(reverse("metrics-recompute", args=[sample.generation_id])).status_code == 403


def test_an_admin_sees_the_dashboard(client, db):
    client.force_login(make_user("ada", is_superuser=True, is_staff=True))
    assert client.get(reverse("dashboard")).status_code == 200


def test_the_dashboard_charts_stored_metrics_across_generations(curator_client):
    lineage = lineage_with_history(generations=3)
    html = curator_client.get(reverse("dashboard"), {"lineage": lineage.slug}).content.decode()
    assert lineage.name in html
    assert html.count("<svg") == 10, "one chart per metric"
    assert 'id="chart-pairwise_distance"' in html and "<polyline" in html
    # Generations 0..3 on the diversity chart, the gate line at 80% of generation 0's 0.6.
    assert "generation 3: 0.3" in html and "gate 0.48" in html
    assert "n/a" in html, "no sample has two reviewers yet: agreement is n/a"
    for number in range(4):
        assert f'href="{reverse("generation-detail", args=[lineage.generations.get(number=number).pk])}"' in html


def test_the_dashboard_shows_gate_warnings_and_a_curator_resumes(curator_client, curator):
    lineage = lineage_with_history(generations=2)
    generation = lineage.generations.get(number=2)
    schedule = LineageSchedule.objects.create(lineage=lineage, name="nightly")
    schedule_pause(schedule=schedule, reason="gate: generation 2 is at risk: diversity")
    GenerationMetrics.objects.filter(generation=generation).update(at_risk=True, risk_reasons=["diversity fell"])
    pause = GatePause.objects.create(lineage=lineage, generation=generation, reasons=["diversity fell"],
                                     schedule_ids=[schedule.pk])
    html = curator_client.get(reverse("dashboard")).content.decode()
    assert 'id="gate-warnings"' in html and "generation 2 is at risk" in html and "diversity fell" in html
    assert "At risk:" in html

    response = curator_client.post(reverse("gate-resume", args=[pause.pk]), {"note": "checked by hand"},
                                   follow=True)
    assert "Resumed 1 schedule of" in response.content.decode()
    pause.refresh_from_db()
    assert pause.resumed_by == curator and pause.note == "checked by hand"
    assert LineageSchedule.objects.get(pk=schedule.pk).paused_at is None
    html = curator_client.get(reverse("dashboard")).content.decode()
    assert 'id="gate-warnings"' not in html and "Resumed gates" in html


def test_recompute_queues_the_task_after_commit(curator_client, lineage, django_capture_on_commit_callbacks):
    generation = lineage.generations.get(number=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = curator_client.post(reverse("metrics-recompute", args=[generation.pk]))
    assert response.status_code == 302 and len(callbacks) == 1
    assert not GenerationMetrics.objects.exists(), "nothing is computed in the request"


def test_the_live_panel_shows_jobs_queues_and_backlog(curator_client):
    lineage = lineage_with_history(generations=1)
    make_sample(lineage)
    response = curator_client.get(reverse("dashboard-live"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert 'hx-trigger="every 3s"' in html and "<html" not in html
    assert "4/10" in html and "review backlog <strong>1</strong>" in html
    assert "Queue depth: generation <strong>" in html, "the broker answered"


def test_throughput_and_agreement(curator_client, reviewer):
    lineage = lineage_with_history(generations=1)
    store = GenerationMetrics.objects.get(generation__lineage=lineage, generation__number=1)
    GenerationMetrics.objects.filter(pk=store.pk).update(
        agreement={"labels": ["accept", "reject"], "table": [[20, 5], [10, 15]]})
    samples = [make_sample(lineage) for _ in range(3)]
    sample_accept(sample=samples[0], reviewer=reviewer)
    sample_reject(sample=samples[1], reviewer=reviewer, reason="off-topic")
    html = curator_client.get(reverse("dashboard"), {"lineage": lineage.slug}).content.decode()
    assert "<td>rita</td><td>2</td><td>0.1</td>" in html
    assert "<strong>0.40</strong> from 50 pairs" in html


def test_the_dashboard_runs_a_bounded_number_of_queries(curator_client, django_assert_max_num_queries):
    lineage_with_history(generations=4)
    curator_client.get(reverse("dashboard"))  # warm the session and content types
    with CaptureQueriesContext(connection) as small:
        curator_client.get(reverse("dashboard"))
    for _ in range(4):
        lineage_with_history(generations=6)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = curator_client.get(reverse("dashboard"))
    assert response.status_code == 200
    assert len(small.captured_queries) <= 16, "session, user, roles, then a fixed handful of reads"


def test_generated_text_is_inert_on_the_dashboard(curator_client, reviewer):
    lineage = lineage_with_history(generations=1, name=XSS)
    generation = lineage.generations.get(number=1)
    GenerationMetrics.objects.filter(generation=generation).update(at_risk=True, risk_reasons=[XSS],
                                                                   reject_reasons={XSS: 2})
    GatePause.objects.create(lineage=lineage, generation=generation, reasons=[XSS])
    GenerationJob.objects.filter(lineage=lineage).update(last_error=XSS)
    sample = make_sample(lineage, question=XSS, answer=XSS)
    Sample.objects.filter(pk=sample.pk).update(generation=generation, status="accepted")
    for url in [reverse("dashboard"), reverse("dashboard-live"), reverse("generation-detail", args=[generation.pk])]:
        html = curator_client.get(url).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
        assert INERT in html, url


def test_the_sample_page_traces_an_accepted_sample(curator_client, reviewer, lineage, curator):
    job = GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=1,
                                       status="done", created_by=curator)
    passage = lineage.passages.first()
    sample = make_sample(lineage, job=job, item_index=0, passage=passage, question="What is ATP?",
                         answer="An energy carrier.", alt_answers=["A molecule."],
                         provenance={"backend": "llama_cpp", "model": "SmolLM2-135M-Instruct", "prompt_version": 3,
                                     "question_style": "definition", "temperature": 0.7, "seed": 99})
    make_flag(sample, kind="hallucination", score=0.4)
    sample_accept(sample=sample, reviewer=reviewer)
    html = curator_client.get(reverse("sample-detail", args=[sample.pk])).content.decode()
    for text in ["What is ATP?", "An energy carrier.", "A molecule.", f"job {job.pk}, item 0", "carl",
                 "llama_cpp / SmolLM2-135M-Instruct", "3 (question style: definition)", passage.title,
                 "rita", "Accept", "Likely hallucination", "seed 99"]:
        assert text in html, text
    assert f'href="{reverse("generation-detail", args=[sample.generation_id])}"' in html
    assert curator_client.get(reverse("sample-detail", args=[999999])).status_code == 404
    # The generation's page lists it and links to it.
    html = curator_client.get(reverse("generation-detail", args=[sample.generation_id])).content.decode()
    assert f'href="{reverse("sample-detail", args=[sample.pk])}"' in html


def test_generated_text_is_inert_on_the_sample_page(curator_client, reviewer, lineage):
    from curation.models import SourcePassage

    passage = lineage.passages.first()
    SourcePassage.objects.filter(pk=passage.pk).update(title=XSS, text=XSS)
    sample = make_sample(lineage, passage=passage, question=XSS, answer=XSS, alt_answers=[XSS],
                         provenance={"backend": XSS, "model": XSS, "prompt_version": XSS})
    sample_reject(sample=sample, reviewer=reviewer, reason="other: " + XSS)
    html = curator_client.get(reverse("sample-detail", args=[sample.pk])).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count(INERT) >= 7


def test_agreement_counts_standing_decisions_only_and_edits_as_accepts(lineage, reviewer):
    """Undone decisions and undo rows stay out of the kappa table; an edit is an accept."""
    from curation.models import Generation
    from curation.services.metrics import _agreement
    from curation.services.review import review_undo, sample_decide
    from tests.factories import REVIEWER, make_user

    second = make_user("sam", REVIEWER)
    Lineage.objects.filter(pk=lineage.pk).update(overlap_fraction=0.5)
    lineage.refresh_from_db()
    sample = make_sample(lineage, double_review=True)
    sample_decide(sample=sample, reviewer=reviewer, decision="reject", reason="unsafe")
    review_undo(reviewer=reviewer, lineage=lineage)
    sample_decide(sample=sample, reviewer=reviewer, decision="edit", edited_answer="Better.")
    sample_decide(sample=sample, reviewer=second, decision="accept", overlap=True)
    generation = Generation.objects.get(lineage=lineage, status="open")
    assert _agreement(generation) == [[1, 0], [0, 0]]
