"""A blind second review is blind through the API too: queue-next and sample detail hide the first decision."""
import pytest

from curation.models import Sample
from curation.services.review import sample_decide
from tests.api.conftest import token_client
from tests.factories import REVIEWER, make_sample, make_user

HIDDEN = {"status", "decided_at", "reviews", "original_answer"}


@pytest.fixture
def edited(lineage, reviewer):
    """A double-review sample its first reviewer edited, then accepted."""
    lineage.overlap_fraction = 0.5
    lineage.save()
    sample = make_sample(lineage, double_review=True, answer="The generated answer.")
    sample_decide(sample=sample, reviewer=reviewer, decision="edit", edited_answer="The FIRST REVIEWER's edit.")
    return sample


def _assert_blind(body: dict, sample: Sample) -> None:
    assert body["id"] == sample.pk and body["second_review"] is True
    assert not HIDDEN & body.keys(), f"{HIDDEN & body.keys()} give the first decision away"
    assert body["answer"] == "The generated answer."
    assert "FIRST REVIEWER" not in str(body)


def test_queue_next_gives_the_second_reviewer_the_blind_form(edited, lineage):
    second = token_client(make_user("sam", REVIEWER))
    response = second.post(f"/api/lineages/{lineage.slug}/queue/next/", {}, format="json")
    assert response.status_code == 200
    _assert_blind(response.json(), edited)


def test_sample_detail_is_blind_until_the_second_review_is_in(edited, reviewer):
    sam = make_user("sam", REVIEWER)
    second = token_client(sam)
    _assert_blind(second.get(f"/api/samples/{edited.pk}/").json(), edited)

    first = token_client(reviewer).get(f"/api/samples/{edited.pk}/").json()
    assert first["status"] == "accepted" and first["answer"] == "The FIRST REVIEWER's edit.", \
        "the first reviewer sees their own decision"

    response = second.post(f"/api/samples/{edited.pk}/decision/", {"decision": "accept", "overlap": True},
                           format="json")
    assert response.status_code == 201
    after = second.get(f"/api/samples/{edited.pk}/").json()
    assert after["status"] == "accepted" and len(after["reviews"]) == 2, "decided: nothing left to hide"


def test_a_plain_sample_is_never_blind(lineage, reviewer):
    sample = make_sample(lineage)
    sample_decide(sample=sample, reviewer=reviewer, decision="accept")
    body = token_client(make_user("sam", REVIEWER)).get(f"/api/samples/{sample.pk}/").json()
    assert body["status"] == "accepted" and "second_review" not in body
