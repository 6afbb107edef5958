"""The review queue and curator pages over HTTP: roles, htmx swaps, escaping."""
import pytest
from django.urls import reverse

from curation.models import Review, Sample
from tests.factories import make_flag, make_sample

HTMX = {"HTTP_HX_REQUEST": "true"}
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)><a href="javascript:alert(1)">link</a>'


@pytest.mark.parametrize("name,args", [("review", []), ("lineage-list", []), ("training-set-download", [1]),
                                       ("review-bulk", [])])
def test_anonymous_visitors_are_sent_to_log_in(client, db, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["review", "lineage-list"])
def test_a_user_without_a_role_is_refused(client, outsider, name):
    client.force_login(outsider)
    assert client.get(reverse(name)).status_code == 403


def test_a_reviewer_cannot_reach_curator_pages(reviewer_client, lineage):
    assert reviewer_client.get(reverse("lineage-detail", args=[lineage.slug])).status_code == 403
    assert reviewer_client.get(reverse("review-bulk"), {"lineage": lineage.slug}).status_code == 403
    response = reviewer_client.post(reverse("training-set-create", args=[lineage.slug]))
    assert response.status_code == 403


def test_the_card_shows_the_sample_with_its_flag_evidence(reviewer_client, lineage):
    sample = make_sample(lineage, question="Why do leaves look green?")
    make_flag(sample, duplicate_id=999, similarity=0.97, duplicate_question="Why are leaves green?",
              duplicate_answer="Chlorophyll.", duplicate_status="accepted")
    response = reviewer_client.get(reverse("review"), {"lineage": lineage.slug})
    html = response.content.decode()
    assert f'id="sample-{sample.pk}"' in html
    assert "Why do leaves look green?" in html
    assert "Near-duplicate of sample 999" in html and "Why are leaves green?" in html
    assert "P(duplicate) 0.95" in html  # the flag's score is the pair model's probability


def test_an_htmx_decision_returns_the_next_card_only(reviewer_client, lineage, reviewer):
    first, second = make_sample(lineage), make_sample(lineage)
    response = reviewer_client.post(reverse("review-decide", args=[first.pk]), {"decision": "accept"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html, "a partial, not a page"
    assert f'id="sample-{second.pk}"' in html and f"Sample {first.pk} accepted." in html
    assert Review.objects.get(sample=first).reviewer == reviewer


def test_without_javascript_a_decision_redirects_back_to_the_queue(reviewer_client, lineage):
    sample = make_sample(lineage)
    response = reviewer_client.post(reverse("review-decide", args=[sample.pk]),
                                    {"decision": "reject", "reason": "off-topic", "q": f"lineage={lineage.slug}"})
    assert response.status_code == 302 and response["Location"] == f"/review/?lineage={lineage.slug}"
    sample.refresh_from_db()
    assert sample.status == Sample.Status.REJECTED
    assert Review.objects.get(sample=sample).reason == "off-topic"


def test_deciding_an_already_decided_sample_tells_the_reviewer(reviewer_client, lineage, reviewer):
    from curation.services.review import sample_accept

    sample = make_sample(lineage)
    sample_accept(sample=sample, reviewer=reviewer)
    response = reviewer_client.post(reverse("review-decide", args=[sample.pk]),
                                    {"decision": "reject", "reason": "unsafe"}, **HTMX)
    assert "already decided" in response.content.decode()
    assert Review.objects.filter(sample=sample).count() == 1


def test_generated_text_is_escaped_on_the_card(reviewer_client, lineage):
    sample = make_sample(lineage, question=XSS, answer=XSS + " It is inert. **bold** [x](javascript:alert(1))")
    make_flag(sample, kind="hallucination", score=0.9, threshold=0.35,
              unsupported=[{"sentence": XSS, "support": 0.1, "passage_id": None, "passage_title": XSS,
                            "passage_text": ""}],
              sentences=[{"sentence": XSS, "support": 0.1}])
    html = reviewer_client.get(reverse("review"), {"lineage": lineage.slug}).content.decode()
    assert f'id="sample-{sample.pk}"' in html
    assert "<script>alert" not in html and "<img src=x" not in html and 'href="javascript:' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_a_curator_starts_a_job_and_builds_a_training_set_from_the_lineage_page(
    curator_client, lineage, reviewer, django_capture_on_commit_callbacks, tmp_path, settings
):
    from curation.services.review import sample_accept

    settings.EXPORT_ROOT = tmp_path
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = curator_client.post(reverse("job-start", args=[lineage.slug]), {"requested": "3"})
    assert response.status_code == 302 and len(callbacks) == 1
    job = lineage.jobs.get()
    assert job.requested == 3
    assert curator_client.get(reverse("job-progress", args=[job.pk])).status_code == 200

    response = curator_client.post(reverse("job-start", args=[lineage.slug]), {"requested": "0"}, follow=True)
    assert "Samples: Ensure this value is greater than or equal to 1." in response.content.decode()

    job.status = job.Status.DONE
    job.save()
    sample_accept(sample=make_sample(lineage), reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        response = curator_client.post(reverse("training-set-create", args=[lineage.slug]), follow=True)
    assert "Built the training set of generation 1 (1 samples + 1 real passages)" in response.content.decode()
    training_set = lineage.training_sets.get()
    # The exports are written by tasks on the `curation` queue; run them here as a worker would.
    from curation.services.exports import export_run

    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    download = curator_client.get(reverse("training-set-download", args=[training_set.pk]))
    assert download.status_code == 200
    assert b"".join(download.streaming_content).count(b"\n") == 2, "the accepted sample and one real passage"


def test_job_progress_polling_stops_once_the_job_has_ended(curator_client, lineage):
    from generation.models import GenerationJob

    job = GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=2,
                                       status=GenerationJob.Status.DONE, done_count=2)
    response = curator_client.get(reverse("job-progress", args=[job.pk]), **HTMX)
    assert response.status_code == 286
    assert f'id="job-{job.pk}"' in response.content.decode()


def test_a_reject_without_a_reason_keeps_the_card_and_says_why(reviewer_client, lineage):
    sample = make_sample(lineage)
    response = reviewer_client.post(reverse("review-decide", args=[sample.pk]),
                                    {"decision": "reject", "q": f"lineage={lineage.slug}"}, **HTMX)
    html = response.content.decode()
    assert "A rejection needs a reason." in html and f'id="sample-{sample.pk}"' in html
    sample.refresh_from_db()
    assert sample.status == Sample.Status.PENDING


def test_reject_with_other_and_text_over_http(reviewer_client, lineage):
    sample = make_sample(lineage)
    reviewer_client.post(reverse("review-decide", args=[sample.pk]),
                         {"decision": "reject", "reason": "other", "reason_text": "wrong organism"}, **HTMX)
    assert Review.objects.get(sample=sample).reason == "other: wrong organism"


def test_skip_and_undo_over_http(reviewer_client, lineage):
    first, second = make_sample(lineage), make_sample(lineage)
    q = f"lineage={lineage.slug}&order=oldest"
    html = reviewer_client.post(reverse("review-skip", args=[first.pk]), {"q": q}, **HTMX).content.decode()
    assert f'id="sample-{second.pk}"' in html and f"Sample {first.pk} skipped." in html
    reviewer_client.post(reverse("review-decide", args=[second.pk]), {"decision": "accept", "q": q}, **HTMX)
    html = reviewer_client.post(reverse("review-undo"), {"q": q}, **HTMX).content.decode()
    assert f"Undid your accept of sample {second.pk}." in html and f'id="sample-{second.pk}"' in html
    second.refresh_from_db()
    assert second.status == Sample.Status.PENDING


def test_the_queue_filters_are_kept_from_card_to_card(reviewer_client, lineage):
    low, high = make_sample(lineage, risk=0.1), make_sample(lineage, risk=0.9)
    other_high = make_sample(lineage, risk=0.8)
    q = f"lineage={lineage.slug}&min_risk=0.5"
    page = reviewer_client.get(reverse("review") + "?" + q)
    assert page.context["sample"] == high
    html = reviewer_client.post(reverse("review-decide", args=[high.pk]), {"decision": "accept", "q": q},
                                **HTMX).content.decode()
    assert f'id="sample-{other_high.pk}"' in html and f'id="sample-{low.pk}"' not in html


def test_a_bad_filter_is_reported_by_name(reviewer_client, lineage):
    response = reviewer_client.get(reverse("review"), {"lineage": lineage.slug, "min_risk": "0.9",
                                                       "max_risk": "0.1"})
    assert "The risk range is empty" in response.content.decode()
    response = reviewer_client.get(reverse("review"), {"lineage": lineage.slug, "order": "sideways"})
    assert "order: Select a valid choice." in response.content.decode()


def test_bulk_confirms_the_count_then_decides(curator_client, lineage):
    for _ in range(2):
        make_flag(make_sample(lineage, risk=0.96), score=0.96)
    keep = make_sample(lineage)
    q = f"lineage={lineage.slug}&flag=near_duplicate"
    page = curator_client.get(reverse("review-bulk") + "?" + q)
    assert page.context["count"] == 2 and "Decide all 2 samples" in page.content.decode()
    response = curator_client.post(reverse("review-bulk"), {"q": q, "decision": "reject", "reason": "duplicate",
                                                           "expected_count": "2"})
    assert response.status_code == 302
    assert Sample.objects.filter(lineage=lineage, status=Sample.Status.REJECTED).count() == 2
    keep.refresh_from_db()
    assert keep.status == Sample.Status.PENDING


def test_generated_text_is_escaped_in_the_admin(client, lineage, db):
    from tests.factories import make_user

    admin_user = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    sample = make_sample(lineage, question=XSS, answer=XSS)
    for url in (reverse("admin:curation_sample_change", args=[sample.pk]), reverse("admin:curation_sample_changelist")):
        html = client.get(url).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html and 'href="javascript:' not in html


def test_a_curator_rejects_a_whole_duplicate_cluster(curator_client, lineage):
    from curation.models import DuplicateCluster

    first = make_sample(lineage)
    cluster = DuplicateCluster.objects.create(lineage=lineage, representative=first)
    members = [first, make_sample(lineage), make_sample(lineage)]
    Sample.objects.filter(pk__in=[m.pk for m in members]).update(cluster=cluster)
    outsider = make_sample(lineage)
    q = f"lineage={lineage.slug}&cluster={cluster.pk}"
    page = curator_client.get(reverse("review-bulk") + "?" + q)
    assert page.context["count"] == 3
    curator_client.post(reverse("review-bulk"), {"q": q, "decision": "reject", "reason": "duplicate",
                                                 "expected_count": "3"})
    assert set(Sample.objects.filter(status=Sample.Status.REJECTED).values_list("pk", flat=True)) == {
        m.pk for m in members}
    outsider.refresh_from_db()
    assert outsider.status == Sample.Status.PENDING


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_posting_at_once_get_one_decision_and_one_notice(lineage):
    """Real concurrent requests through the whole Django stack, each on its own PostgreSQL connection."""
    import threading

    from django.db import connection
    from django.test import Client

    from tests.factories import REVIEWER, make_user

    sample = make_sample(lineage)
    clients = []
    for name in ("uma", "vic"):
        client = Client()
        client.force_login(make_user(name, REVIEWER))
        clients.append(client)
    barrier = threading.Barrier(2)
    pages = []

    def post(client, decision):
        try:
            barrier.wait()
            response = client.post(reverse("review-decide", args=[sample.pk]),
                                   {"decision": decision, "reason": "unsafe"}, **HTMX)
            pages.append(response.content.decode())
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c, d)) for c, d in zip(clients, ["accept", "reject"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Review.objects.filter(sample=sample).count() == 1
    told = [p for p in pages if "already decided" in p]
    done = [p for p in pages if f"Sample {sample.pk} accepted." in p or f"Sample {sample.pk} rejected." in p]
    assert len(told) == 1 and len(done) == 1
