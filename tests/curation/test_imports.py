"""Passage imports through the API and the task's service: every bad-input case, all or
nothing, skip_bad_lines, duplicates, limits, roles, and a run that is safe to repeat."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.authtoken.models import Token

from curation.models import PassageImport, SourcePassage
from curation.services.imports import import_run, imports_requeue_stale
from curation.services.lineages import MAX_PASSAGE_CHARS, passages_insert
from tests.factories import CURATOR, REVIEWER, make_lineage, make_user

pytestmark = pytest.mark.django_db


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode("utf-8")


def field_error(response, field: str) -> str:
    """The API's message about one field (the shape of curation.api.errors), or ''."""
    return " ".join(item["message"] for item in response.json()["errors"] if item["field"] == field)


def upload(client, lineage, data: bytes, name: str = "passages.jsonl", **fields):
    return client.post(reverse("api-lineage-imports", args=[lineage.slug]),
                       {"file": SimpleUploadedFile(name, data), **fields})


def run(response) -> PassageImport:
    """Run the queued import's task body here, as a worker would, and return the row."""
    assert response.status_code == 202, response.content
    import_run(import_id=response.json()["id"])
    return PassageImport.objects.get(pk=response.json()["id"])


def detail(client, job) -> dict:
    response = client.get(reverse("api-import", args=[job.pk]))
    assert response.status_code == 200
    return response.json()


GOOD = [{"text": "Mitochondria  make ATP\nby oxidative phosphorylation.", "title": "Cells"},
        {"text": "Ribosomes translate messenger RNA into protein."}]
BAD_LINES = ['{"text": "cut off', "[1, 2]", '{"title": "no text"}', '{"text": 5}']


# The happy path, and what a client sees ------------------------------------------


def test_a_curator_uploads_jsonl_and_the_task_imports_it_after_commit(
        curator_client, lineage, django_capture_on_commit_callbacks):
    before = lineage.passages.count()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = upload(curator_client, lineage, jsonl(*GOOD, {"text": "Extra", "source": "web"}))
    assert response.status_code == 202 and len(queued) == 1, "one task, queued after commit"
    body = response.json()
    assert body["status"] == "queued" and body["lineage"] == lineage.slug and body["format"] == "jsonl"
    assert response["Location"] == body["url"] and body["url"].endswith(f"/api/imports/{body['id']}/")
    assert lineage.passages.count() == before, "nothing is written in the request"

    job = run(response)
    state = detail(curator_client, job)
    assert state["status"] == "done"
    assert (state["rows_total"], state["rows_done"], state["imported"], state["duplicates"]) == (3, 3, 3, 0)
    assert state["errors"] == [] and state["skipped"] == [] and state["ignored_columns"] == ["source"]
    stored = SourcePassage.objects.get(lineage=lineage, title="Cells")
    assert stored.text == "Mitochondria make ATP by oxidative phosphorylation.", "normalised like every passage"
    assert lineage.passages.count() == before + 3
    assert bytes(PassageImport.objects.get(pk=job.pk).data) == b"", "the upload is dropped once imported"


def test_imported_passages_are_embedded_for_grounding_a_chunk_per_task(
        curator_client, django_capture_on_commit_callbacks, monkeypatch, settings):
    from ouroboros.celery import app

    settings.OUROBOROS = {**settings.OUROBOROS, "PASSAGE_EMBED_CHUNK_SIZE": 1}  # each task queues the next
    lineage = make_lineage(passages=1)

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    response = upload(curator_client, lineage, jsonl(*GOOD))
    with django_capture_on_commit_callbacks(execute=True) as queued:
        run(response)
    assert len(queued) == 1, "the embedding is queued once the passages are committed"
    passages = list(lineage.passages.all())
    assert len(passages) == 3 and all(p.embedding is not None and p.chunks.exists() for p in passages)


def test_csv_and_parquet_import_the_same_way(curator_client, lineage):
    csv_job = run(upload(curator_client, lineage, b"title,text\nA,Alpha passage.\nB,Beta passage.\n", "p.csv"))
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["Gamma passage.", "Alpha passage."], "title": ["G", None]}), sink)
    parquet_job = run(upload(curator_client, lineage, sink.getvalue(), "p.parquet"))
    assert (csv_job.status, csv_job.imported) == ("done", 2)
    assert (parquet_job.status, parquet_job.imported, parquet_job.duplicates) == ("done", 1, 1)


# All or nothing, and skip_bad_lines -------------------------------------------------


def test_any_bad_line_fails_the_import_with_every_error_named_and_nothing_written(curator_client, lineage):
    before = lineage.passages.count()
    data = jsonl(GOOD[0], *BAD_LINES) + b'{"text": "caf\xe9"}\n' + jsonl(GOOD[1], {"text": ""})
    job = run(upload(curator_client, lineage, data))
    state = detail(curator_client, job)
    assert state["status"] == "failed" and lineage.passages.count() == before
    assert [(e["line"], e["field"]) for e in state["errors"]] == [
        (2, None), (3, None), (4, "text"), (5, "text"), (6, None), (8, "text")]
    assert state["errors"][0]["error"].startswith("is not valid JSON")
    assert "not valid UTF-8" in state["errors"][4]["error"]
    assert state["errors_total"] == 6 and state["imported"] == 0 and state["rows_total"] == 8


def test_skip_bad_lines_imports_the_good_rows_and_reports_the_skipped_ones(curator_client, lineage):
    before = lineage.passages.count()
    job = run(upload(curator_client, lineage, jsonl(GOOD[0], *BAD_LINES, GOOD[1]), skip_bad_lines="true"))
    state = detail(curator_client, job)
    assert state["status"] == "done" and state["skip_bad_lines"] is True
    assert state["imported"] == 2 and lineage.passages.count() == before + 2
    assert [s["line"] for s in state["skipped"]] == [2, 3, 4, 5] and state["skipped_total"] == 4
    assert state["errors"] == [] and state["rows_done"] == state["rows_total"] == 6


def test_a_text_over_the_limit_is_named_by_its_line(curator_client, lineage):
    job = run(upload(curator_client, lineage, jsonl(GOOD[0], {"text": "x" * (MAX_PASSAGE_CHARS + 1)})))
    assert job.status == "failed"
    assert job.errors == [{"line": 2, "field": "text",
                           "error": f"text is {MAX_PASSAGE_CHARS + 1} characters; the limit is {MAX_PASSAGE_CHARS}"}]


def test_the_error_list_is_capped_and_says_how_many_there_were(curator_client, lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "IMPORT_MAX_ERRORS_LISTED": 5}
    job = run(upload(curator_client, lineage, jsonl(*["not json"] * 12)))
    assert job.status == "failed" and len(job.errors) == 5 and job.errors_total == 12
    assert [e["line"] for e in job.errors] == [1, 2, 3, 4, 5]


def test_a_whole_file_problem_fails_with_one_error_naming_it(curator_client, lineage):
    no_text = run(upload(curator_client, lineage, b"title,body\nA,B\n", "p.csv"))
    assert no_text.status == "failed" and no_text.errors_total == 1
    assert no_text.errors[0]["line"] == 1 and no_text.errors[0]["field"] == "text"
    assert 'no "text" column' in no_text.errors[0]["error"]

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {n} " * 30 for n in range(300)]}), sink)
    good = sink.getvalue()
    corrupt = run(upload(curator_client, lineage, good[:4] + bytes(len(good) - 12) + good[-8:], "p.parquet"))
    assert corrupt.status == "failed" and "Parquet file" in corrupt.errors[0]["error"]
    assert corrupt.errors[0]["line"] is None


def test_too_many_rows_fails_the_import(curator_client, lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "IMPORT_MAX_ROWS": 3}
    job = run(upload(curator_client, lineage, jsonl(*[{"text": f"t{n}"} for n in range(4)])))
    assert job.status == "failed" and "more than 3 rows" in job.errors[0]["error"]


# Duplicates ---------------------------------------------------------------------------


def test_duplicates_in_the_file_and_already_stored_are_counted_not_errors(curator_client, lineage):
    stored = lineage.passages.first()
    respaced = "  " + stored.text.replace(" ", "\n ", 1)  # the same text once normalised
    data = jsonl({"text": respaced}, GOOD[1], GOOD[1], {"text": "Brand new passage."})
    before = lineage.passages.count()
    job = run(upload(curator_client, lineage, data))
    assert (job.status, job.imported, job.duplicates, job.errors_total) == ("done", 2, 2, 0)
    assert lineage.passages.count() == before + 2

    again = run(upload(curator_client, lineage, data))
    assert (again.imported, again.duplicates) == (0, 4), "importing the same file twice adds nothing"


# Refused at upload (400 / 413), nothing stored ---------------------------------------


@pytest.mark.parametrize("name, data, message", [
    ("passages.txt", b'{"text": "a"}\n', "unsupported file type ('.txt')"),
    ("passages", b'{"text": "a"}\n', "unsupported file type (no extension)"),
    ("passages.jsonl", '{"text": "a"}\n'.encode("utf-16"), "UTF-16"),
    ("passages.csv", b"text\n\x00\x01\x02binary", "NUL bytes"),
    ("passages.parquet", b'{"text": "a"}\n', "not Parquet"),
])
def test_a_wrong_file_is_refused_at_upload_naming_the_field(curator_client, lineage, name, data, message):
    response = upload(curator_client, lineage, data, name)
    assert response.status_code == 400 and message in field_error(response, "file")
    assert not PassageImport.objects.exists()


def test_an_empty_file_or_none_or_a_bad_option_is_a_400_naming_the_field(curator_client, lineage):
    url = reverse("api-lineage-imports", args=[lineage.slug])
    empty = curator_client.post(url, {"file": SimpleUploadedFile("p.jsonl", b"")})
    assert empty.status_code == 400 and "empty" in field_error(empty, "file")
    missing = curator_client.post(url, {})
    assert missing.status_code == 400 and field_error(missing, "file")
    bad_option = upload(curator_client, lineage, jsonl(*GOOD), skip_bad_lines="perhaps")
    assert bad_option.status_code == 400 and field_error(bad_option, "skip_bad_lines")
    as_json = curator_client.post(url, {"file": "x"}, content_type="application/json")
    assert as_json.status_code == 415
    assert not PassageImport.objects.exists()


def test_a_file_over_the_size_limit_is_a_413(curator_client, lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "IMPORT_MAX_BYTES": 2048}
    response = upload(curator_client, lineage, jsonl(*[{"text": f"passage {n}"} for n in range(200)]))
    assert response.status_code == 413 and "the limit is 2048 bytes" in response.json()["detail"]
    assert not PassageImport.objects.exists()


class ExplodingBody(io.RawIOBase):
    def read(self, *args):  # noqa: D102
        raise AssertionError("the body of an oversized upload was read")

    readline = read


def test_an_oversized_upload_is_refused_from_its_headers_before_the_body_is_read(client, curator, lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "IMPORT_MAX_BYTES": 1024 * 1024}
    client.force_login(curator)
    response = client.generic(
        "POST", reverse("api-lineage-imports", args=[lineage.slug]), b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(10 * 1024 * 1024), **{"wsgi.input": ExplodingBody()},
    )
    assert response.status_code == 413 and "limit for an import file is 1048576 bytes" in response.json()["detail"]


# Roles and look-ups --------------------------------------------------------------------


def test_only_curators_may_import_or_read_imports(client, lineage, curator_client):
    job = run(upload(curator_client, lineage, jsonl(*GOOD)))
    curator_client.logout()
    post_url = reverse("api-lineage-imports", args=[lineage.slug])
    get_url = reverse("api-import", args=[job.pk])
    # Anonymous: 401 with the token challenge (token auth answers first, as everywhere in the API).
    assert client.post(post_url, {"file": SimpleUploadedFile("p.jsonl", jsonl(*GOOD))}).status_code == 401
    assert client.get(get_url).status_code == 401
    for user in (make_user("olga"), make_user("rita", REVIEWER)):
        client.force_login(user)
        refused = client.post(post_url, {"file": SimpleUploadedFile("p.jsonl", jsonl(*GOOD))})
        assert refused.status_code == 403 and "curator role" in refused.json()["detail"]
        assert client.get(get_url).status_code == 403
    assert PassageImport.objects.count() == 1


def test_a_curator_token_works_and_unknown_things_are_404(client, lineage):
    token = Token.objects.create(user=make_user("tess", CURATOR))
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    response = client.post(reverse("api-lineage-imports", args=[lineage.slug]),
                           {"file": SimpleUploadedFile("p.jsonl", jsonl(*GOOD))}, **auth)
    assert response.status_code == 202
    assert client.get(response.json()["url"], **auth).json()["status"] == "queued"
    missing_lineage = client.post(reverse("api-lineage-imports", args=["no-such-lineage"]),
                                  {"file": SimpleUploadedFile("p.jsonl", jsonl(*GOOD))}, **auth)
    assert missing_lineage.status_code == 404
    for pk in (response.json()["id"] + 1, 10**30):
        assert client.get(f"/api/imports/{pk}/", **auth).status_code == 404


# Running twice, and stale claims -----------------------------------------------------


def test_running_an_import_twice_is_harmless(curator_client, lineage):
    job = run(upload(curator_client, lineage, jsonl(*GOOD)))
    count = lineage.passages.count()
    assert import_run(import_id=job.pk) is False
    assert lineage.passages.count() == count and PassageImport.objects.get(pk=job.pk).imported == 2


def test_an_import_another_worker_holds_is_left_alone_until_its_claim_goes_stale(
        curator_client, lineage, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    response = upload(curator_client, lineage, jsonl(*GOOD))
    job_id = response.json()["id"]
    held = timezone.now() + timedelta(minutes=5)
    PassageImport.objects.filter(pk=job_id).update(status="running", claimed_until=held)
    assert import_run(import_id=job_id) is False and imports_requeue_stale() == []

    PassageImport.objects.filter(pk=job_id).update(claimed_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert imports_requeue_stale() == [job_id]
    assert len(queued) == 1
    assert import_run(import_id=job_id) is True
    assert PassageImport.objects.get(pk=job_id).status == "done"


def test_a_crash_mid_write_rolls_back_and_hands_the_import_back_for_the_retry(curator_client, lineage, monkeypatch,
                                                                             settings):
    from curation.services import imports

    calls = []

    def insert_then_fail(**kwargs):
        calls.append(passages_insert(**kwargs))
        if len(calls) == 2:
            raise ConnectionError("the database went away")
        return calls[-1]

    monkeypatch.setattr(imports, "passages_insert", insert_then_fail)
    settings.OUROBOROS = {**settings.OUROBOROS, "IMPORT_BATCH_SIZE": 1}
    before = lineage.passages.count()
    response = upload(curator_client, lineage, jsonl(*GOOD, {"text": "A third passage."}))
    with pytest.raises(ConnectionError):
        import_run(import_id=response.json()["id"])
    job = PassageImport.objects.get(pk=response.json()["id"])
    assert calls == [1, 1], "one batch written, the second one failed"
    assert lineage.passages.count() == before, "the written batch was rolled back with the rest"
    assert (job.status, job.claim_token) == ("queued", None)

    monkeypatch.undo()
    assert import_run(import_id=job.pk) is True
    assert PassageImport.objects.get(pk=job.pk).imported == 3 and lineage.passages.count() == before + 3
