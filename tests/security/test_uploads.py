"""Request bodies are bounded, and uploaded files land where nothing runs, renders or serves them."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import path, reverse
from rest_framework.authtoken.views import obtain_auth_token

from curation.models import Review, Sample
from generation.models import GenerationJob
from ouroboros import urls as root_urls
from ouroboros.checks import check_upload_folders
from tests.factories import make_sample
from tests.security.test_authz import walk

# The project's URLs plus a DRF view that parses a JSON body, as the API's write endpoints do.
urlpatterns = [path("api/token/", obtain_auth_token, name="api-token"), *root_urls.urlpatterns]
handler400 = root_urls.handler400


def test_an_oversized_body_is_refused_with_the_limit_named_and_nothing_stored(reviewer_client, lineage, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    sample = make_sample(lineage, answer="The original answer.")
    response = reviewer_client.post(reverse("review-decide", args=[sample.pk]),
                                    {"decision": "edit", "answer": "x" * 20_000})
    assert response.status_code == 400
    text = response.content.decode()
    assert "larger than the 10,000-byte limit" in text and "DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE" in text
    assert "xxxx" not in text, "the body is not echoed back"
    sample.refresh_from_db()
    assert (sample.status, sample.answer) == (Sample.Status.PENDING, "The original answer.")
    assert not Review.objects.filter(sample=sample).exists()


@pytest.mark.urls(__name__)
def test_an_oversized_json_body_to_the_api_is_refused_the_same_way(client, db, settings):
    """DRF (3.17.2 on) parses JSON through request.body, so the same bound applies to the API."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = client.post(reverse("api-token"), {"username": "x" * 20_000, "password": "pw"},
                           content_type="application/json")
    assert response.status_code == 400
    assert "larger than the 10,000-byte limit" in response.content.decode()


def test_too_many_fields_are_refused_and_nothing_stored(curator_client, lineage, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 20
    fields = {"requested": "2", **{f"f{i}": "1" for i in range(30)}}
    response = curator_client.post(reverse("job-start", args=[lineage.slug]), fields)
    assert response.status_code == 400 and "more than 20 fields" in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_too_many_files_are_refused(reviewer_client, lineage, settings):
    sample = make_sample(lineage)
    too_many = settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1
    files = {f"file{i}": SimpleUploadedFile(f"f{i}.txt", b"x") for i in range(too_many)}
    response = reviewer_client.post(reverse("review-decide", args=[sample.pk]), {"decision": "accept", **files})
    assert response.status_code == 400 and f"more than {too_many - 1} files" in response.content.decode()
    assert not Review.objects.filter(sample=sample).exists()


def test_the_bounds_are_set_deliberately(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 2 * 1024 * 1024
    assert settings.DATA_UPLOAD_MAX_NUMBER_FIELDS == 1000
    assert settings.DATA_UPLOAD_MAX_NUMBER_FILES == 10
    assert settings.FILE_UPLOAD_PERMISSIONS == 0o640


def test_a_stored_upload_is_never_executable(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    small = default_storage.save("imports/run-me.sh", ContentFile(b"#!/bin/sh\necho owned\n"))
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10  # the next one goes through a temporary file, as a big upload does
    big = default_storage.save("imports/big.sh", SimpleUploadedFile("big.sh", b"#!/bin/sh\n" + b"#" * 100))
    for name in (small, big):
        path = Path(default_storage.path(name))
        assert path.resolve().is_relative_to((tmp_path / "media").resolve())
        assert path.stat().st_mode & 0o111 == 0, f"{name} must not be executable"


def test_the_default_folders_pass_the_upload_check():
    assert check_upload_folders() == []


@pytest.mark.parametrize("setting,inside", [
    ("MEDIA_ROOT", "static/uploads"),
    ("MEDIA_ROOT", "templates"),
    ("MEDIA_ROOT", "curation/uploads"),
    ("EXPORT_ROOT", "ouroboros/exports"),
    ("FILE_UPLOAD_TEMP_DIR", "generation"),
    ("MEDIA_ROOT", "."),  # the whole project: code would sit inside the media folder
])
def test_uploads_are_never_written_among_code_templates_or_static_files(settings, setting, inside):
    setattr(settings, setting, str(Path(settings.BASE_DIR) / inside))
    errors = check_upload_folders()
    assert [error.id for error in errors][:1] == ["ouroboros.E001"]
    assert setting in errors[0].msg


def test_executable_upload_permissions_are_refused(settings):
    settings.FILE_UPLOAD_PERMISSIONS = 0o755
    assert [error.id for error in check_upload_folders()] == ["ouroboros.E002"]


def test_no_url_serves_uploaded_files_as_they_are():
    served = [route.route for route in walk() if route.view == "django.views.static.serve"]
    assert served == []
