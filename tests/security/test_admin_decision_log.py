"""The decision log cannot be rewritten through the admin, by a curator or a superuser."""
import pytest
from django.contrib.auth.models import Permission
from django.db.models import ProtectedError
from django.urls import reverse

from curation.models import Lineage, Review, Sample
from curation.services.review import sample_decide
from tests.factories import CURATOR, make_sample, make_user


@pytest.fixture
def staff_curator(db):
    """A curator as `seed_demo` makes one: staff, with every curation and generation permission."""
    user = make_user("cora", CURATOR, is_staff=True)
    user.groups.get().permissions.add(
        *Permission.objects.filter(content_type__app_label__in=["curation", "generation"]))
    return user


@pytest.fixture
def superuser(db):
    return make_user("suzy", is_staff=True, is_superuser=True)


@pytest.fixture
def reviewed(lineage, reviewer):
    sample = make_sample(lineage, answer="The generated answer.")
    review = sample_decide(sample=sample, reviewer=reviewer, decision="edit", edited_answer="The edited answer.")
    sample.refresh_from_db()
    return sample, review


@pytest.mark.parametrize("who", ["staff_curator", "superuser"])
def test_nobody_adds_changes_or_deletes_a_review_in_the_admin(client, request, who, reviewed, reviewer):
    sample, review = reviewed
    client.force_login(request.getfixturevalue(who))

    assert client.get(reverse("admin:curation_review_changelist")).status_code == 200, "the log can be read"
    assert client.get(reverse("admin:curation_review_add")).status_code == 403
    assert client.post(reverse("admin:curation_review_add"), {
        "sample": sample.pk, "reviewer": reviewer.pk, "decision": "reject", "reason": "forged"}).status_code == 403

    change = client.get(reverse("admin:curation_review_change", args=[review.pk]))
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode(), "shown read-only"
    assert client.post(reverse("admin:curation_review_change", args=[review.pk]),
                       {"decision": "reject", "reason": "forged"}).status_code == 403

    assert client.get(reverse("admin:curation_review_delete", args=[review.pk])).status_code == 403
    assert client.post(reverse("admin:curation_review_delete", args=[review.pk]), {"post": "yes"}).status_code == 403
    client.post(reverse("admin:curation_review_changelist"),
                {"action": "delete_selected", "_selected_action": [review.pk], "post": "yes"})

    review.refresh_from_db()
    assert (review.decision, review.reason) == ("edit", "")
    assert Review.objects.filter(sample=sample).count() == 1


@pytest.mark.parametrize("who", ["staff_curator", "superuser"])
def test_a_reviewed_sample_cannot_be_deleted_or_its_decision_fields_changed(client, request, who, reviewed,
                                                                            reviewer):
    sample, _ = reviewed
    client.force_login(request.getfixturevalue(who))

    assert client.get(reverse("admin:curation_sample_delete", args=[sample.pk])).status_code == 403
    client.post(reverse("admin:curation_sample_delete", args=[sample.pk]), {"post": "yes"})
    client.post(reverse("admin:curation_sample_changelist"),
                {"action": "delete_selected", "_selected_action": [sample.pk], "post": "yes"})
    # Deleting the lineage would cascade to the sample: the admin lists it as protected and deletes nothing.
    page = client.post(reverse("admin:curation_lineage_delete", args=[sample.lineage_id]), {"post": "yes"})
    assert page.status_code == 200 and "Cannot delete lineage" in page.content.decode()
    assert Sample.objects.filter(pk=sample.pk).exists() and Lineage.objects.filter(pk=sample.lineage_id).exists()

    change_url = reverse("admin:curation_sample_change", args=[sample.pk])
    html = client.get(change_url).content.decode()
    for field in ("status", "answer", "leased_to"):
        assert f'name="{field}"' not in html, f"{field} is shown read-only"
    assert "The edited answer." in html and "Accepted" in html
    saved = client.post(change_url, {"question": "An edited question?", "status": "pending", "answer": "Forged.",
                                     "leased_to": reviewer.pk, "lineage": sample.lineage_id,
                                     "generation": sample.generation_id, "risk": 0, "alt_answers": "[]",
                                     "flags-TOTAL_FORMS": 0, "flags-INITIAL_FORMS": 0,
                                     "reviews-TOTAL_FORMS": 1, "reviews-INITIAL_FORMS": 1})
    assert saved.status_code == 302, "a valid save: what it could change, it changed"
    sample.refresh_from_db()
    assert sample.question == "An edited question?"
    assert (sample.status, sample.answer, sample.leased_to) == ("accepted", "The edited answer.", None)


def test_the_database_refuses_to_delete_a_reviewed_sample(reviewed):
    sample, _ = reviewed
    with pytest.raises(ProtectedError):
        sample.delete()
    assert Review.objects.filter(sample=sample).exists()


def test_an_unreviewed_sample_can_still_be_deleted_by_a_curator(client, staff_curator, lineage):
    sample = make_sample(lineage)
    client.force_login(staff_curator)
    response = client.post(reverse("admin:curation_sample_delete", args=[sample.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Sample.objects.filter(pk=sample.pk).exists()
