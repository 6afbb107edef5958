"""Exports: written by tasks with progress, loadable by the real `datasets` library, downloadable."""
import json
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from curation.models import TrainingSet, TrainingSetExport
from curation.services import exports
from curation.services.exports import export_fail, export_run, exports_requeue_stale, real_prompt
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from curation.tasks import export_training_set
from tests.factories import make_sample


@pytest.fixture(autouse=True)
def export_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


@pytest.fixture
def built(lineage, reviewer, curator, django_capture_on_commit_callbacks):
    """A built (not yet exported) set: 4 accepted samples of generation 1 and 1 real passage."""
    samples = [make_sample(lineage, question=f"Q{i}: what does <b>ATP</b> do?", answer=f"It stores energy, “{i}”.")
               for i in range(4)]
    for sample in samples:
        sample_accept(sample=sample, reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=3)
    return training_set, samples


def run_all(training_set):
    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    training_set.refresh_from_db()
    return training_set


def path_of(training_set, fmt):
    return Path(settings.EXPORT_ROOT) / training_set.exports.get(format=fmt).path


def load(kind, path, tmp_path):
    """The real `datasets` library on a local file, offline, with a private cache."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    return load_dataset(kind, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def test_every_format_loads_with_the_datasets_library(built, tmp_path):
    training_set, samples = run_all(built[0]), built[1]
    passage = training_set.passages.get()
    expected = {(s.question, s.answer) for s in samples} | {(real_prompt(passage), passage.text)}

    chat = load("json", path_of(training_set, "chat"), tmp_path)
    assert chat.column_names == ["messages"] and len(chat) == 5
    assert {(row["messages"][0]["content"], row["messages"][1]["content"]) for row in chat} == expected
    assert all([m["role"] for m in row["messages"]] == ["user", "assistant"] for row in chat)

    alpaca = load("json", path_of(training_set, "alpaca"), tmp_path)
    assert sorted(alpaca.column_names) == ["input", "instruction", "output"]
    assert {(row["instruction"], row["output"]) for row in alpaca} == expected

    parquet = load("parquet", path_of(training_set, "parquet"), tmp_path)
    assert len(parquet) == 5
    rows = list(parquet)
    assert [row["messages"] for row in rows] == [row["messages"] for row in chat], "the same order in every file"
    assert sorted(row["origin"] for row in rows) == ["real", "synthetic", "synthetic", "synthetic", "synthetic"]
    assert {row["sample_id"] for row in rows if row["origin"] == "synthetic"} == {s.pk for s in samples}
    assert [(row["passage_id"], row["source_generation"]) for row in rows if row["origin"] == "real"] == \
        [(passage.pk, 0)]


def test_an_export_records_its_progress_batch_by_batch(built, monkeypatch):
    training_set, _ = built
    monkeypatch.setattr(exports, "BATCH_SIZE", 2)
    seen = []
    real_write = exports.write_records

    def watching(**kwargs):
        progress = kwargs["progress"]

        def spy(rows):
            progress(rows)
            seen.append(TrainingSetExport.objects.get(format="chat", training_set=training_set).rows_written)
        return real_write(**{**kwargs, "progress": spy})

    monkeypatch.setattr(exports, "write_records", watching)
    export = training_set.exports.get(format="chat")
    assert export.status == "queued" and export.rows_total == 5 and export.progress_percent == 0
    assert export_run(export_id=export.pk)
    assert seen == [2, 4, 5]
    export.refresh_from_db()
    assert (export.status, export.rows_written, export.progress_percent) == ("done", 5, 100)


def test_the_set_is_published_when_its_last_export_is_done(built):
    training_set, _ = built
    chat, alpaca, parquet = (training_set.exports.get(format=f) for f in ("chat", "alpaca", "parquet"))
    export_run(export_id=chat.pk)
    export_run(export_id=alpaca.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.EXPORTING and not training_set.sha256
    export_run(export_id=parquet.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED and len(training_set.sha256) == 64


def test_running_an_export_twice_is_harmless(built):
    training_set = run_all(built[0])
    before = {e.pk: e.sha256 for e in training_set.exports.all()}
    assert not any(export_run(export_id=pk) for pk in before), "a finished export is not written again"
    assert {e.pk: e.sha256 for e in training_set.exports.all()} == before


def test_an_export_another_worker_holds_is_left_alone(built):
    export = built[0].exports.get(format="chat")
    TrainingSetExport.objects.filter(pk=export.pk).update(
        status="running", claimed_until=timezone.now() + timezone.timedelta(minutes=5))
    assert export_run(export_id=export.pk) is False
    assert not path_of(built[0], "chat").exists()


def test_a_failed_write_hands_the_export_back_and_leaves_no_file(built, monkeypatch):
    export = built[0].exports.get(format="parquet")

    def full_disk(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports, "write_records", full_disk)
    with pytest.raises(OSError):
        export_run(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == "queued" and export.claim_token is None
    assert "No space left on device" in export.error
    export_fail(export_id=export.pk, reason="OSError: No space left on device")
    export.refresh_from_db()
    assert export.status == "failed"
    assert not list(Path(settings.EXPORT_ROOT).rglob("*.parquet*"))


def test_stale_exports_are_queued_again(built, django_capture_on_commit_callbacks):
    training_set, _ = built
    chat = training_set.exports.get(format="chat")
    TrainingSetExport.objects.filter(pk=chat.pk).update(
        status="running", claimed_until=timezone.now() - timezone.timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert exports_requeue_stale() == [chat.pk]
    assert len(callbacks) == 1
    assert export_run(export_id=chat.pk), "an expired claim can be taken over"


def test_the_task_runs_the_export(built):
    export = built[0].exports.get(format="alpaca")
    assert export_training_set.apply(args=[export.pk]).get() is True
    export.refresh_from_db()
    assert export.status == "done"
    assert export_training_set.apply(args=[999999]).get() is False


def test_downloads_wait_for_the_export_and_then_serve_each_format(curator_client, built):
    training_set, _ = built
    url = reverse("training-set-download", args=[training_set.pk])
    response = curator_client.get(url, {"format": "parquet"})
    assert response.status_code == 404
    run_all(training_set)
    for fmt, name in [("chat", "chat.jsonl"), ("alpaca", "alpaca.jsonl"), ("parquet", ".parquet"),
                      ("manifest", "manifest.json")]:
        response = curator_client.get(url, {"format": fmt})
        assert response.status_code == 200, fmt
        assert name in response["Content-Disposition"]
    manifest = json.loads(b"".join(curator_client.get(url, {"format": "manifest"}).streaming_content))
    assert manifest["counts"]["records"] == 5
    assert curator_client.get(url, {"format": "csv"}).status_code == 404


def test_the_exports_partial_polls_until_published(curator_client, built):
    training_set, _ = built
    url = reverse("training-set-exports", args=[training_set.pk])
    response = curator_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'hx-trigger="every 2s"' in response.content.decode()
    assert "0/5 queued" in response.content.decode()
    run_all(training_set)
    response = curator_client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 286, "htmx stops polling"
    assert "Manifest" in response.content.decode()


def test_the_api_reports_progress_and_serves_the_files(client, curator, reviewer, built):
    training_set, _ = built
    url = reverse("api-training-set", args=[training_set.pk])
    client.force_login(reviewer)
    assert client.get(url).status_code == 403
    client.force_login(curator)
    body = client.get(url).json()
    assert body["status"] == "exporting" and body["manifest_download"] is None
    assert {e["format"]: e["status"] for e in body["exports"]} == {"chat": "queued", "alpaca": "queued",
                                                                    "parquet": "queued"}
    run_all(training_set)
    body = client.get(url).json()
    assert body["status"] == "published" and body["manifest_sha256"] == training_set.sha256
    assert body["manifest"]["composition"][0] == {"generation": 0, "origin": "real", "records": 1}
    chat = next(e for e in body["exports"] if e["format"] == "chat")
    download = client.get(chat["download"])
    assert download.status_code == 200
    lines = b"".join(download.streaming_content).decode().splitlines()
    assert len(lines) == 5 and chat["sha256"] == exports._sha256_of(path_of(training_set, "chat"))
    assert client.get(reverse("api-training-set-download", args=[training_set.pk, "nope"])).status_code == 404


def test_the_commands_verify_a_set_and_recompute_metrics(built):
    from io import StringIO

    from django.core.management import CommandError, call_command

    training_set = run_all(built[0])
    out = StringIO()
    call_command("verify_training_set", str(training_set.pk), "--rebuild", stdout=out)
    assert "rebuilds byte-identical" in out.getvalue()
    with pytest.raises(CommandError, match="no training set 999999"):
        call_command("verify_training_set", "999999")
    out = StringIO()
    call_command("compute_metrics", training_set.lineage.slug, "--generation", "1", stdout=out)
    assert out.getvalue().startswith("generation 1: 4 samples")
    with pytest.raises(CommandError, match="has no generation 9"):
        call_command("compute_metrics", training_set.lineage.slug, "--generation", "9")
