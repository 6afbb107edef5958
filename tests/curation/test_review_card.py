"""The review card's hot path (statements per decision), the blind second review, and the generation filter."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation.models import DuplicateCluster, Generation, Review, Sample
from curation.services.review import sample_decide
from tests.factories import REVIEWER, make_flag, make_sample, make_user

HTMX = {"HTTP_HX_REQUEST": "true"}
MAX_STATEMENTS = 8


def _clustered(lineage, count: int, **fields) -> list[Sample]:
    samples = [make_sample(lineage, **fields) for _ in range(count)]
    cluster = DuplicateCluster.objects.create(lineage=lineage, representative=samples[0])
    Sample.objects.filter(pk__in=[s.pk for s in samples]).update(cluster=cluster)
    for sample in samples:
        sample.refresh_from_db()
    return samples


@pytest.mark.django_db(transaction=True)
def test_an_htmx_decision_and_the_next_card_take_at_most_eight_statements(client, lineage, reviewer):
    """Every statement counts, BEGIN and COMMIT included (a transactional test would hide them)."""
    lineage.overlap_fraction = 0.2  # the lease then also looks for second reviews
    lineage.save()
    first, second, third = _clustered(lineage, 3, risk=0.9)
    for sample in (first, second, third):
        make_flag(sample, score=0.9, duplicate_id=first.pk, similarity=0.95)
        make_flag(sample, kind="hallucination", score=0.5, sentences=[], unsupported=[])
    client.force_login(reviewer)
    query = f"lineage={lineage.slug}&flag=near_duplicate&min_risk=0.5"
    page = client.get(f"{reverse('review')}?{query}")
    assert page.context["sample"].pk == first.pk

    with CaptureQueriesContext(connection) as captured:
        response = client.post(reverse("review-decide", args=[first.pk]), {"decision": "accept", "q": query}, **HTMX)

    html = response.content.decode()
    assert response.status_code == 200 and f'id="sample-{second.pk}"' in html
    assert "Duplicate cluster" in html and "hallucination" in html.lower()
    statements = [q["sql"] for q in captured.captured_queries]
    assert len(statements) <= MAX_STATEMENTS, "\n\n".join(statements)
    assert Review.objects.get(sample=first).decision == "accept"
    assert Sample.objects.get(pk=second.pk).leased_to == reviewer


@pytest.mark.django_db(transaction=True)
def test_the_statement_count_does_not_grow_with_the_queue(client, lineage, reviewer):
    counts = []
    client.force_login(reviewer)
    for size in (3, 30):
        samples = [make_sample(lineage, risk=0.9 - i / 100) for i in range(size)]
        client.get(f"{reverse('review')}?lineage={lineage.slug}")
        with CaptureQueriesContext(connection) as captured:
            client.post(reverse("review-decide", args=[samples[0].pk]),
                        {"decision": "accept", "q": f"lineage={lineage.slug}"}, **HTMX)
        counts.append(len(captured.captured_queries))
        Sample.objects.filter(lineage=lineage, status="pending").update(status="rejected")
    assert counts[0] == counts[1] <= MAX_STATEMENTS


# ----------------------------------------------------------------------------- the blind second review


@pytest.fixture
def second_reviewer(db):
    return make_user("sam", REVIEWER)


def _edited_by_first(lineage, reviewer, **fields) -> Sample:
    """A double-review sample the first reviewer edited then accepted."""
    lineage.overlap_fraction = 0.5
    lineage.save()
    sample = make_sample(lineage, double_review=True, answer="The generated answer.", **fields)
    sample_decide(sample=sample, reviewer=reviewer, decision="edit", edited_answer="The FIRST REVIEWER's edit.")
    return sample


def test_the_second_reviewers_card_shows_the_answer_as_generated(client, lineage, reviewer, second_reviewer):
    sample = _edited_by_first(lineage, reviewer)
    client.force_login(second_reviewer)
    html = client.get(reverse("review"), {"lineage": lineage.slug}).content.decode()
    assert f'id="sample-{sample.pk}"' in html and "second-review-note" in html
    assert "The generated answer." in html
    assert "FIRST REVIEWER" not in html, "the first reviewer's edit is not on a blind card"
    assert 'name="overlap" value="1"' in html


def test_the_second_reviewers_cluster_counts_leave_the_sample_out(client, lineage, reviewer, second_reviewer):
    lineage.overlap_fraction = 0.5
    lineage.save()
    sample, other = _clustered(lineage, 2, double_review=True)
    sample_decide(sample=sample, reviewer=reviewer, decision="reject", reason="duplicate")
    client.force_login(second_reviewer)
    response = client.get(reverse("review"), {"lineage": lineage.slug})
    assert response.context["sample"].pk == sample.pk
    cluster = response.context["cluster"]
    assert (cluster.size, cluster.pending, cluster.accepted, cluster.rejected) == (2, 1, 0, 0)
    assert cluster.member_ids == [other.pk]
    assert "The others: 1 pending · 0 accepted · 0 rejected" in response.content.decode()


def test_the_first_reviewer_still_sees_cluster_counts_with_their_own_sample(client, lineage, reviewer):
    sample, other = _clustered(lineage, 2)
    client.force_login(reviewer)
    response = client.get(reverse("review"), {"lineage": lineage.slug})
    cluster = response.context["cluster"]
    assert response.context["sample"].pk == sample.pk
    assert (cluster.size, cluster.pending) == (2, 2) and cluster.member_ids == [sample.pk, other.pk]


# ----------------------------------------------------------------------------- the generation filter, and where a decision returns


def test_the_queue_offers_only_the_open_generation(client, lineage, reviewer, curator):
    open_generation = lineage.generations.get(status="open")
    Generation.objects.filter(pk=open_generation.pk).update(status="closed")
    newer = Generation.objects.create(lineage=lineage, number=open_generation.number + 1)
    client.force_login(curator)
    html = client.get(reverse("review"), {"lineage": lineage.slug}).content.decode()
    options = html.split('name="generation"')[1].split("</select>")[0]
    assert f'value="{newer.number}"' in options and f'value="{open_generation.number}"' not in options
    assert reverse("generation-detail", args=[open_generation.pk]) in html, "closed ones link to their pages"


def test_asking_the_queue_for_a_closed_generation_says_why(client, lineage, reviewer):
    closed = lineage.generations.get(status="open")
    make_sample(lineage)
    Generation.objects.filter(pk=closed.pk).update(status="closed")
    Generation.objects.create(lineage=lineage, number=closed.number + 1)
    client.force_login(reviewer)
    response = client.get(reverse("review"), {"lineage": lineage.slug, "generation": closed.number})
    html = response.content.decode()
    assert response.context["sample"] is None
    assert f"generation {closed.number} of {lineage.name} is not open for review" in html


def test_a_decision_without_the_queue_state_returns_to_the_samples_own_lineage(client, reviewer):
    from tests.factories import make_lineage

    make_lineage(name="AAA first by name")  # the old fallback: the first lineage by name
    mine = make_lineage(name="ZZZ the sample's own")
    first, second = make_sample(mine), make_sample(mine)
    client.force_login(reviewer)
    response = client.post(reverse("review-decide", args=[first.pk]), {"decision": "accept"})
    assert response.status_code == 302 and response["Location"] == f"/review/?lineage={mine.slug}"
    response = client.post(reverse("review-decide", args=[first.pk]), {"decision": "accept"}, **HTMX)
    assert response.context["lineage"] == mine and response.context["sample"] == second
