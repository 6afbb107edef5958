"""Export file names cannot escape EXPORT_ROOT: hostile slugs, folders, stored paths and symlinks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse

from curation.models import Generation, Lineage, TrainingSet, TrainingSetExport
from curation.services.exports import (
    ExportError,
    _safe_path,
    export_folder,
    export_relative_path,
    export_run,
)
from curation.services.review import sample_accept
from curation.services.training_sets import TrainingSetError, training_set_build
from tests.factories import make_sample

HOSTILE_SLUGS = ["../escape", "..", "/tmp/absolute", "a/b", "a\x00b", "x" * 201, "ok/../../x", "C:\\win", "",
                 "dot.dot", "space here", "new\nline"]


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture(autouse=True)
def export_root(tmp_path, settings):
    """EXPORT_ROOT inside a scratch folder, so that "outside it" is a place the test can watch."""
    settings.EXPORT_ROOT = tmp_path / "media" / "exports"
    return settings.EXPORT_ROOT


@pytest.fixture
def accepted(lineage, reviewer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        for i in range(4):
            sample_accept(sample=make_sample(lineage, question=f"Q{i}?"), reviewer=reviewer)
    return lineage


@pytest.mark.parametrize("slug", HOSTILE_SLUGS)
def test_a_hostile_slug_cannot_name_an_export(slug):
    with pytest.raises(ExportError, match="lineage slug"):
        export_folder(slug=slug, number=1)
    with pytest.raises(ExportError, match="lineage slug"):
        export_relative_path(folder="fine/generation-001", slug=slug, number=1, fmt="chat")


@pytest.mark.parametrize("folder", ["../up", "/etc", "a/../../b", "a\x00b", "", "a//b", "a/./b", "a/"])
def test_a_hostile_folder_cannot_name_an_export(folder):
    with pytest.raises(ExportError, match="export folder"):
        export_relative_path(folder=folder, slug="fine", number=1, fmt="chat")


def test_a_good_slug_gives_the_expected_names():
    folder = export_folder(slug="bio-tutor_2", number=7)
    assert folder == "bio-tutor_2/generation-007"
    assert export_relative_path(folder=folder, slug="bio-tutor_2", number=7, fmt="alpaca") == \
        "bio-tutor_2/generation-007/bio-tutor_2-generation-007.alpaca.jsonl"


def test_the_longest_allowed_slug_still_fits_a_file_name(export_root):
    slug = "s" * 200
    relative = export_relative_path(folder=export_folder(slug=slug, number=999), slug=slug, number=999, fmt="alpaca")
    path = _safe_path(relative)
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")  # the file system takes it: the name is under 255 bytes
    assert len(path.name.encode()) + len(".") + 14 <= 255, "room for write_records' temporary-file affixes"


@pytest.mark.parametrize("relative,reason", [
    ("../outside.jsonl", "climbs out"),
    ("a/../../outside.jsonl", "climbs out"),
    ("/etc/passwd", "absolute"),
    ("a\x00b/x.jsonl", "NUL byte"),
    ("a/" + "n" * 300 + ".jsonl", "too long"),
    ("/".join(["d"] * 2100), "too long"),
    ("", "empty"),
])
def test_a_stored_path_that_would_escape_is_refused(relative, reason):
    with pytest.raises(ExportError, match=reason):
        _safe_path(relative)


def test_a_symlink_out_of_the_export_folder_is_refused(export_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    export_root.mkdir(parents=True)
    (export_root / "lineage-x").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExportError, match="outside the export folder"):
        _safe_path("lineage-x/generation-001/lineage-x-generation-001.chat.jsonl")
    (export_root / "loop").symlink_to(export_root / "loop")
    with pytest.raises(ExportError):
        _safe_path("loop/file.jsonl")
    inside = export_root / "real"
    inside.mkdir()
    (export_root / "alias").symlink_to(inside, target_is_directory=True)
    assert _safe_path("alias/file.jsonl") == inside.resolve() / "file.jsonl", "a link that stays inside is fine"


@pytest.mark.parametrize("slug", ["../escape", "/tmp/absolute-export", "a\x00b"])
def test_building_a_set_for_a_lineage_with_a_hostile_slug_stores_and_writes_nothing(accepted, curator, slug,
                                                                                   tmp_path,
                                                                                   django_capture_on_commit_callbacks):
    # Forms and the API validate slugs; this one was stored around them (a migration, a raw update, a bug).
    Lineage.objects.filter(pk=accepted.pk).update(slug=slug.replace("\x00", ""))
    accepted.refresh_from_db()
    if "\x00" in slug:
        accepted.slug = slug  # PostgreSQL cannot store NUL; the service must still refuse it
    before = files_under(tmp_path)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(TrainingSetError, match="lineage slug"):
        training_set_build(lineage=accepted, built_by=curator, seed=1)
    assert not TrainingSet.objects.exists() and not TrainingSetExport.objects.exists()
    assert Generation.objects.get(lineage=accepted, number=1).status == Generation.Status.OPEN
    assert files_under(tmp_path) == before
    assert not Path("/tmp/absolute-export").exists()


@pytest.fixture
def built(accepted, curator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        return training_set_build(lineage=accepted, built_by=curator, seed=1)


def test_an_export_whose_stored_path_was_tampered_with_fails_without_writing_outside(built, tmp_path):
    export = built.exports.get(format="chat")
    TrainingSetExport.objects.filter(pk=export.pk).update(path="../../escaped.chat.jsonl")
    before = files_under(tmp_path)
    assert export_run(export_id=export.pk) is False
    export.refresh_from_db()
    assert export.status == TrainingSetExport.Status.FAILED
    assert "climbs out" in export.error and "escaped.chat.jsonl" in export.error
    assert files_under(tmp_path) == before, "no file written anywhere"


def test_an_export_folder_replaced_by_a_symlink_out_is_refused(built, export_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = export_root / built.export_path
    folder.parent.mkdir(parents=True)
    folder.symlink_to(outside, target_is_directory=True)
    for export in built.exports.all():
        assert export_run(export_id=export.pk) is False
    assert list(outside.iterdir()) == []
    assert set(built.exports.values_list("status", flat=True)) == {TrainingSetExport.Status.FAILED}


def test_a_download_never_serves_a_file_outside_the_export_folder(built, curator_client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    TrainingSetExport.objects.filter(training_set=built, format="chat").update(
        path="../secret.txt", status=TrainingSetExport.Status.DONE)
    response = curator_client.get(reverse("training-set-download", args=[built.pk]), {"format": "chat"})
    assert response.status_code == 404
    assert b"not for download" not in b"".join(getattr(response, "streaming_content", [response.content]))
    api = curator_client.get(reverse("api-training-set-download", args=[built.pk, "chat"]))
    assert api.status_code == 404
    assert os.path.exists(secret)
