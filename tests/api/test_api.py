"""The API's behaviour: cursor pages and indexed filters, batches naming their items, decisions,
jobs, settings, training sets, and bad input that is answered with a JSON 400/404, never a 500."""
from __future__ import annotations

import base64

import pytest
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from curation.models import Lineage, Review, Sample, TrainingSet
from curation.services.exports import export_run
from curation.services.lineages import lineage_create
from curation.services.review import sample_accept
from generation.models import GenerationJob
from tests.api.conftest import token_client



def walk(api, url, **params) -> list[dict]:
    """Every item of a cursor-paginated list, following `next`."""
    items, response = [], api.get(url, params)
    while True:
        assert response.status_code == 200, response.json()
        items += response.json()["results"]
        if not response.json()["next"]:
            return items
        response = api.get(response.json()["next"])


# ---------------------------------------------------------------- samples


def test_sample_pages_follow_the_cursor_through_every_sample_once(api, world):
    lineage = world["lineage"]
    url = reverse("api-samples", args=[lineage.slug])
    ids = [item["id"] for item in walk(api, url, page_size=2)]
    assert ids == sorted(Sample.objects.filter(lineage=lineage).values_list("id", flat=True))
    risky = walk(api, url, page_size=1, ordering="-risk", status="pending")
    assert [item["risk"] for item in risky] == [0.9, 0.7, 0.5, 0.1]


def test_sample_filters(api, world):
    url = reverse("api-samples", args=[world["lineage"].slug])
    hallucinated = api.get(url, {"flag": "hallucination"}).json()["results"]
    assert [s["id"] for s in hallucinated] == [world["samples"][2].pk]
    assert hallucinated[0]["flags"] == ["hallucination"]
    unflagged = {s["id"] for s in api.get(url, {"flag": "none", "status": "pending"}).json()["results"]}
    assert unflagged == {world["samples"][0].pk, world["samples"][1].pk}
    middle = api.get(url, {"min_risk": 0.4, "max_risk": 0.8}).json()["results"]
    assert {s["risk"] for s in middle} == {0.5, 0.7}
    assert api.get(url, {"min_risk": 0.9, "max_risk": 0.1}).json()["results"] == []
    first = api.get(url, {"generation": 1}).json()["results"]
    assert len(first) == 3 and {s["status"] for s in first} == {"accepted"}
    assert api.get(url, {"generation": 7}).json()["results"] == []


@pytest.mark.parametrize("params, field", [
    ({"status": "maybe"}, "status"),
    ({"flag": "spicy"}, "flag"),
    ({"min_risk": "high"}, "min_risk"),
    ({"max_risk": "NaN"}, "max_risk"),
    ({"page_size": "0"}, "page_size"),
    ({"status": ""}, "status"),
    ({"generation": "1.5"}, "generation"),
    ({"page_size": "ten"}, "page_size"),
    ({"generation": "99999999999999999999999"}, "generation"),
    ({"ordering": "question"}, "ordering"),
    ({"cursor": "not-a-cursor!"}, "cursor"),
    ({"cursor": base64.b64encode(b"p=abc").decode()}, "cursor"),
    ({"cursor": base64.b64encode(b"p=1e999&r=1").decode()}, "cursor"),
])
def test_bad_list_parameters_are_a_400_naming_the_parameter(api, world, params, field):
    response = api.get(reverse("api-samples", args=[world["lineage"].slug]), params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["errors"][0]["field"] == field, body


def test_sample_detail_carries_flags_with_evidence_and_reviews(api, world, reviewer):
    sample = world["samples"][2]
    body = api.get(reverse("api-sample", args=[sample.pk])).json()
    assert body["flags"][0]["kind"] == "hallucination"
    assert body["flags"][0]["evidence"]["sentences"][0]["support"] == 0.1
    assert body["passage"]["id"] == sample.passage_id
    assert body["reject_reasons"] == world["lineage"].reject_reasons
    accepted = world["lineage"].samples.filter(status="accepted").first()
    reviews = api.get(reverse("api-sample", args=[accepted.pk])).json()["reviews"]
    assert [(r["reviewer"], r["decision"], r["undone"]) for r in reviews] == [(reviewer.username, "accept", False)]


# ---------------------------------------------------------------- reviews


def test_a_reviewer_decides_over_the_api_and_one_decision_wins(world, reviewer, curator):
    rita, carl = token_client(reviewer), token_client(curator)
    sample = world["samples"][1]
    url = reverse("api-sample-decide", args=[sample.pk])
    no_reason = rita.post(url, {"decision": "reject"}, format="json")
    assert no_reason.status_code == 400 and no_reason.json()["errors"][0]["field"] == "reason"
    wrong_reason = rita.post(url, {"decision": "reject", "reason": "boring"}, format="json")
    assert wrong_reason.status_code == 400 and wrong_reason.json()["errors"][0]["field"] == "reason"
    assert "boring" in wrong_reason.json()["detail"]
    assert rita.post(url, {"decision": "maybe"}, format="json").json()["errors"][0]["field"] == "decision"
    sample.refresh_from_db()
    assert sample.status == "pending" and not sample.reviews.exists()

    decided = rita.post(url, {"decision": "reject", "reason": "hallucination"}, format="json")
    assert decided.status_code == 201 and decided.json()["decision"] == "reject"
    late = carl.post(url, {"decision": "accept"}, format="json")
    assert late.status_code == 409 and "already decided" in late.json()["detail"]
    sample.refresh_from_db()
    assert sample.status == "rejected" and sample.reviews.count() == 1

    undone = rita.post(reverse("api-review-undo", args=[world["lineage"].slug]))
    assert undone.status_code == 201 and undone.json()["undoes"] == decided.json()["id"]
    sample.refresh_from_db()
    assert sample.status == "pending" and sample.leased_to == reviewer
    # Leased back to rita: another reviewer waits.
    assert carl.post(url, {"decision": "accept"}, format="json").status_code == 409
    edited = rita.post(url, {"decision": "edit", "edited_answer": "A better answer."}, format="json")
    assert edited.status_code == 201
    sample.refresh_from_db()
    assert (sample.status, sample.answer) == ("accepted", "A better answer.")


def test_the_queue_leases_the_riskiest_card_then_says_204_when_empty(world, reviewer):
    rita = token_client(reviewer)
    url = reverse("api-queue-next", args=[world["lineage"].slug])
    card = rita.post(url, {"order": "risk"}, format="json")
    assert card.status_code == 200 and card.json()["id"] == world["samples"][2].pk
    assert card.json()["leased_to"] == reviewer.username
    assert rita.post(url, {}, format="json").json()["id"] == world["samples"][2].pk  # held card comes back
    Sample.objects.filter(lineage=world["lineage"], status="pending").update(status="accepted")
    assert rita.post(url, {}, format="json").status_code == 204
    assert rita.post(url, {"order": "sideways"}, format="json").json()["errors"][0]["field"] == "order"


# ---------------------------------------------------------------- passages, jobs, settings


def test_a_passage_batch_names_the_bad_item_and_stores_nothing(api, world):
    lineage = world["lineage"]
    url = reverse("api-passages", args=[lineage.slug])
    before = lineage.passages.count()
    bad = api.post(url, {"passages": [{"text": "Fine."}, {"title": "no text"}, {"text": "x" * 20001}]}, format="json")
    assert bad.status_code == 400
    assert [e["field"] for e in bad.json()["errors"]] == ["passages[1].text", "passages[2].text"]
    blank = api.post(url, {"passages": [{"text": "Fine."}, {"text": "   \n "}]}, format="json")
    assert blank.status_code == 400 and blank.json()["errors"][0]["field"] == "passages[1].text"
    assert lineage.passages.count() == before
    good = api.post(url, {"passages": [{"title": "New", "text": "A new passage."}, {"text": "A new passage."}]},
                    format="json")
    assert good.status_code == 201 and good.json() == {"added": 1, "received": 2, "passages": before + 1}
    texts = [p["text"] for p in walk(api, url, page_size=3)]
    assert len(texts) == before + 1 and texts[-1] == "A new passage."


def test_jobs_start_cancel_and_refuse(api, world, django_capture_on_commit_callbacks):
    lineage = world["lineage"]
    url = reverse("api-jobs", args=[lineage.slug])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        created = api.post(url, {"requested": 3, "seed": 11}, format="json")
    assert created.status_code == 201, created.json()
    assert len(queued) == 1, "the first chunk is queued after commit"
    job = GenerationJob.objects.get(pk=created.json()["id"])
    assert (job.requested, job.seed, job.created_by.username) == (3, 11, "carl")
    assert api.get(reverse("api-job", args=[job.pk])).json()["status"] == "queued"
    assert [j["id"] for j in api.get(url).json()["results"]][0] == job.pk
    assert api.get(url, {"status": "sleeping"}).json()["errors"][0]["field"] == "status"
    assert api.post(reverse("api-job-cancel", args=[job.pk])).json()["status"] == "cancelled"
    assert api.post(reverse("api-job-cancel", args=[job.pk])).status_code == 409
    for requested in (0, 10_001, "many", "3", 2.5, True, 10**30):
        response = api.post(url, {"requested": requested}, format="json")
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == "requested"
    empty = lineage_create(name="Empty", slug="empty")
    refused = api.post(reverse("api-jobs", args=[empty.slug]), {"requested": 1}, format="json")
    assert refused.status_code == 409 and "no source passages" in refused.json()["detail"]


def test_settings_change_all_or_nothing_and_errors_name_the_field(api, world):
    lineage = world["lineage"]
    url = reverse("api-lineage", args=[lineage.slug])
    changed = api.patch(url, {"hallucination_threshold": 0.4, "reject_reasons": ["wrong", "other"],
                              "policy": {"mode": "replace", "gate_min_coverage": 0.3}}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["policy"]["mode"] == "replace" and changed.json()["reject_reasons"] == ["wrong", "other"]
    lineage.refresh_from_db()
    assert lineage.hallucination_threshold == 0.4 and lineage.policy.gate_min_coverage == 0.3
    grounding = not lineage.lm_grounding  # issue 15.5: LM grounding is a lineage setting, off for speed
    toggled = api.patch(url, {"lm_grounding": grounding}, format="json")
    assert toggled.status_code == 200 and toggled.json()["lm_grounding"] is grounding
    lineage.refresh_from_db()
    assert lineage.lm_grounding is grounding and lineage.hallucination_threshold == 0.4
    for body, field in [
        ({"lm_grounding": "sometimes"}, "lm_grounding"),
        ({"duplicate_threshold": 1.5, "temperature": 0.1}, "duplicate_threshold"),
        ({"backend": "gpt-9"}, "backend"),
        ({"policy": {"min_real_fraction": 1}}, "policy.min_real_fraction"),
        ({"reject_reasons": ["a", "a"]}, "reject_reasons"),
        ({"reject_reasons": []}, "reject_reasons"),
        ({"name": Lineage.objects.exclude(pk=lineage.pk).first().name if Lineage.objects.count() > 1 else None},
         "name"),
    ]:
        response = api.patch(url, body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert response.json()["errors"][0]["field"] == field, response.json()
    lineage.refresh_from_db()
    assert lineage.generator.temperature != 0.1 and lineage.reject_reasons == ["wrong", "other"]


def test_a_lineage_created_over_the_api_has_its_generations_and_policy(api, db):
    created = api.post(reverse("api-lineages"), {"name": "Chemistry", "slug": "chemistry"}, format="json")
    assert created.status_code == 201 and created.json()["open_generation"] == 1
    assert created.json()["policy"]["min_real_fraction"] == 0.2
    again = api.post(reverse("api-lineages"), {"name": "Chemistry", "slug": "bad slug!"}, format="json")
    assert {e["field"] for e in again.json()["errors"]} == {"name", "slug"}


# ---------------------------------------------------------------- training sets and metrics


def test_build_publish_and_download_a_training_set(api, world, reviewer, django_capture_on_commit_callbacks):
    lineage = world["lineage"]
    url = reverse("api-training-sets", args=[lineage.slug])
    running = api.post(url, {"seed": 1}, format="json")
    assert running.status_code == 409 and "running job" in running.json()["detail"]
    assert api.post(reverse("api-job-cancel", args=[world["job"].pk])).status_code == 200
    refused = api.post(url, {"seed": 1}, format="json")
    assert refused.status_code == 409
    assert refused.json()["errors"][0]["field"] == "policy.accepted", refused.json()
    plan = api.get(reverse("api-training-set-plan", args=[lineage.slug])).json()
    assert plan["breaches"][0]["rule"] == "accepted"

    for sample in world["samples"]:
        sample_accept(sample=sample, reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        built = api.post(url, {"seed": 9}, format="json")
    assert built.status_code == 201, built.json()
    body = built.json()
    assert body["status"] == "exporting" and body["generation"] == 2 and body["synthetic"] == 7
    download = reverse("api-training-set-download", args=[body["id"], "chat"])
    assert api.get(download).status_code == 404 and "not" in api.get(download).json()["detail"]
    for export in TrainingSet.objects.get(pk=body["id"]).exports.all():
        export_run(export_id=export.pk)
    published = api.get(reverse("api-training-set", args=[body["id"]])).json()
    assert published["status"] == "published" and published["manifest"]["counts"]["synthetic"] == 7
    chat = next(e for e in published["exports"] if e["format"] == "chat")
    response = api.get(chat["download"])
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content).splitlines()) == chat["rows_written"]
    assert api.get(reverse("api-training-set-download", args=[body["id"], "csv"])).status_code == 404
    assert api.post(reverse("api-export-retry", args=[body["id"], "chat"])).status_code == 409


def test_metrics_and_overview(api, world):
    generation = world["generation"]
    metrics = api.get(reverse("api-generation-metrics", args=[generation.pk]))
    assert metrics.status_code == 200 and metrics.json()["accept_rate"] == 1.0
    open_generation = world["lineage"].generations.get(status="open")
    assert api.get(reverse("api-generation-metrics", args=[open_generation.pk])).status_code == 404
    overview = api.get(reverse("api-lineage-overview", args=[world["lineage"].slug])).json()
    assert overview["counts"] == {"pending": 4, "accepted": 0, "rejected": 0}
    assert overview["flagged"] == 2 and overview["open_generation"] == 2
    assert [g["training_set"] for g in overview["generations"]] == [None, world["training_set"].pk, None]


# ---------------------------------------------------------------- bad input is never a 500


def test_bad_requests_get_json_errors(api, world):
    sample = world["samples"][0]
    for url in ["/api/samples/99999999999999999999999/", "/api/samples/0/", "/api/jobs/9223372036854775808/",
                "/api/lineages/no-such-lineage/", "/api/no/such/thing/", "/api/lineages/%C3%A9t%C3%A9/"]:
        response = api.get(url)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", url
        assert response.json()["code"] == "not_found"
    decide = reverse("api-sample-decide", args=[sample.pk])
    malformed = api.post(decide, b'{"decision": "acc', content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["code"] == "parse_error"
    latin1 = api.post(decide, '{"decision": "accépt"}'.encode("latin-1"), content_type="application/json")
    assert latin1.status_code == 400 and latin1.json()["code"] == "parse_error"
    xml = api.post(decide, b"<decision/>", content_type="application/xml")
    assert xml.status_code == 415 and xml.json()["code"] == "unsupported_media_type"
    assert api.delete(decide).status_code == 405
    not_a_list = api.post(reverse("api-passages", args=[world["lineage"].slug]), {"passages": "text"}, format="json")
    assert not_a_list.status_code == 400 and not_a_list.json()["errors"][0]["field"] == "passages"
    sample.refresh_from_db()
    assert sample.status == "pending" and not Review.objects.filter(sample=sample).exists()


def test_a_token_for_a_username_and_password(world, curator):
    client = APIClient()
    wrong = client.post(reverse("api-token"), {"username": "carl", "password": "nope"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["errors"]
    token = client.post(reverse("api-token"), {"username": "carl", "password": "pw-carl"}, format="json").json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(reverse("api-lineages")).status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get(reverse("api-lineages")).status_code == 401


def test_the_schema_is_valid_without_warnings(db, capsys):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
