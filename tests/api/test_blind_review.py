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


def _listed(client, lineage, **params) -> dict[int, dict]:
    response = client.get(f"/api/lineages/{lineage.slug}/samples/", params)
    assert response.status_code == 200, response.content
    return {row["id"]: row for row in response.json()["results"]}


def test_the_sample_list_is_blind_for_a_possible_second_reviewer(edited, lineage, reviewer):
    plain = make_sample(lineage, answer="A plain answer.")
    sample_decide(sample=plain, reviewer=reviewer, decision="reject", reason="off-topic")
    second = token_client(make_user("sam", REVIEWER))

    rows = _listed(second, lineage)
    row = rows[edited.pk]
    assert row["second_review"] is True and row["answer"] == "The generated answer."
    assert not {"status", "decided_at"} & row.keys() and "FIRST REVIEWER" not in str(row)
    assert rows[plain.pk]["status"] == "rejected" and "second_review" not in rows[plain.pk], "only the blind one"
    mine = _listed(token_client(reviewer), lineage)[edited.pk]
    assert mine["status"] == "accepted" and mine["answer"] == "The FIRST REVIEWER's edit.", "the first reviewer's own"


def test_the_status_filter_does_not_give_the_first_decision_away(edited, lineage, reviewer):
    second = token_client(make_user("sam", REVIEWER))
    # A blind sample has no status for its possible second reviewer: no status filter finds it.
    for status in ("accepted", "rejected", "pending"):
        assert edited.pk not in _listed(second, lineage, status=status), status
    assert edited.pk in _listed(token_client(reviewer), lineage, status="accepted")

    response = second.post(f"/api/samples/{edited.pk}/decision/", {"decision": "reject", "reason": "off-topic",
                                                                     "overlap": True}, format="json")
    assert response.status_code == 201
    after = _listed(second, lineage, status="accepted")[edited.pk]
    assert after["answer"] == "The FIRST REVIEWER's edit." and "second_review" not in after, "decided: nothing hidden"
