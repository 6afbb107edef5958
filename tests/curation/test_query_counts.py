"""Pages and endpoints whose query count must not grow with the data (each at two sizes 10x apart)."""
import pytest
from django.urls import reverse

from curation.models import Generation, Review, Sample, TrainingSet
from curation.selectors import reviewer_agreement
from tests.factories import REVIEWER, make_lineage, make_sample, make_user

# session, user, groups, then the page's own reads
LINEAGE_LIST_QUERIES = 6
LINEAGE_DETAIL_QUERIES = 23  # 20, then 3 for the panel of flag models fitted to the lineage
SAMPLE_DETAIL_QUERIES = 10


@pytest.mark.parametrize("lineages", [2, 20])
def test_the_lineage_list_reads_a_fixed_number_of_queries(curator_client, django_assert_max_num_queries, lineages):
    made = [make_lineage(passages=2) for _ in range(lineages)]
    for lineage in made:
        make_sample(lineage)
        make_sample(lineage, status=Sample.Status.ACCEPTED)
    with django_assert_max_num_queries(LINEAGE_LIST_QUERIES):
        response = curator_client.get(reverse("lineage-list"))
    rows = {lineage.name: overview for lineage, overview in response.context["lineages"]}
    assert len(rows) == lineages
    overview = rows[made[-1].name]
    assert overview["passages"] == 2 and overview["counts"] == {"pending": 1, "accepted": 1, "rejected": 0}
    assert overview["generation"]["number"] == made[-1].generations.get(status="open").number


def _training_sets(lineage, curator, count: int) -> list[TrainingSet]:
    first = lineage.generations.get(status="open")
    sets = []
    for number in range(count):
        generation = Generation.objects.create(lineage=lineage, number=first.number + 1 + number, status="closed")
        sets.append(TrainingSet.objects.create(lineage=lineage, generation=generation, sample_count=0,
                                               export_path=f"{lineage.slug}/gen-{generation.number}",
                                               built_by=curator))
    return sets


def _double_reviewed(lineage, first, second, count: int) -> None:
    for i in range(count):
        sample = make_sample(lineage, double_review=True, status=Sample.Status.ACCEPTED)
        Review.objects.create(sample=sample, reviewer=first, decision="accept")
        Review.objects.create(sample=sample, reviewer=second, decision="reject" if i % 4 == 0 else "accept",
                              reason="duplicate", overlap=True)


@pytest.mark.parametrize("size", [3, 30])
def test_the_lineage_page_reads_a_fixed_number_of_queries(curator_client, curator, lineage, reviewer,
                                                          django_assert_max_num_queries, size):
    _training_sets(lineage, curator, size)
    _double_reviewed(lineage, reviewer, make_user("otto", REVIEWER), size * 4)
    with django_assert_max_num_queries(LINEAGE_DETAIL_QUERIES):
        response = curator_client.get(reverse("lineage-detail", args=[lineage.slug]))
    assert response.status_code == 200
    [row] = response.context["agreement"]
    assert row["pair"] == ("otto", "rita") and row["n"] == size * 4
    assert row["agreement"] == pytest.approx(0.75)
    assert len(response.context["training_sets"]) == min(size, 20)


def test_the_lineage_pages_training_sets_come_a_page_at_a_time_newest_first(curator_client, curator, lineage):
    sets = _training_sets(lineage, curator, 25)
    first = curator_client.get(reverse("lineage-detail", args=[lineage.slug]))
    shown = [ts.pk for ts in first.context["training_sets"]]
    assert shown == [ts.pk for ts in reversed(sets)][:20]
    assert 'href="?sets=2#training-set-pages"' in first.content.decode()
    second = curator_client.get(reverse("lineage-detail", args=[lineage.slug]), {"sets": 2})
    assert [ts.pk for ts in second.context["training_sets"]] == [ts.pk for ts in reversed(sets)][20:]


def test_agreement_reads_one_row_per_pair_and_decisions_not_every_review(lineage, reviewer,
                                                                          django_assert_max_num_queries):
    other = make_user("otto", REVIEWER)
    _double_reviewed(lineage, reviewer, other, 40)
    undone = Review.objects.filter(overlap=True).first()
    Review.objects.create(sample=undone.sample, reviewer=other, decision="undo", undoes=undone, overlap=True)
    with django_assert_max_num_queries(1):
        [row] = reviewer_agreement(lineage=lineage)
    assert row["n"] == 39, "an undone second review is left out"


@pytest.mark.parametrize("reviews", [2, 20])
def test_a_samples_api_detail_reads_a_fixed_number_of_queries(client, reviewer, lineage,
                                                                django_assert_max_num_queries, reviews):
    sample = make_sample(lineage)
    previous = None
    for i in range(reviews):
        if i % 2 == 0:
            previous = Review.objects.create(sample=sample, reviewer=reviewer, decision="accept")
        else:
            Review.objects.create(sample=sample, reviewer=reviewer, decision="undo", undoes=previous)
    client.force_login(reviewer)
    with django_assert_max_num_queries(SAMPLE_DETAIL_QUERIES):
        body = client.get(f"/api/samples/{sample.pk}/").json()
    undone = [r["undone"] for r in body["reviews"] if r["decision"] == "accept"]
    assert len(undone) == reviews // 2 and all(undone)
