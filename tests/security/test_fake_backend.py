"""The fake backend (canned text, for development and tests) cannot be chosen or built with DJANGO_DEBUG=0:
not over the API, not in the admin, not by a service or command, not in the worker."""
from __future__ import annotations

import pytest
from django.urls import reverse

from curation.services.lineages import SettingsError, lineage_settings_update
from generation.admin import GeneratorSettingsForm
from generation.backends import BackendNotAllowed, backend_allowed, get_backend
from generation.models import GeneratorSettings
from tests.factories import make_lineage
from tests.security.test_deploy_settings import production_env, run

REFUSAL = "the 'fake' backend is for development and tests only; it cannot be used with DJANGO_DEBUG=0"


@pytest.fixture
def production(settings):
    """What DJANGO_DEBUG=0 sets (checked in a real process below), without starting one per test."""
    settings.OUROBOROS = {**settings.OUROBOROS, "ALLOW_DEVELOPMENT_BACKENDS": False}


def test_debug_off_turns_the_development_backends_off_and_debug_on_keeps_them():
    code = ("import django; django.setup(); from django.conf import settings; "
            "from generation.backends import backend_allowed, get_backend\n"
            "print(settings.OUROBOROS['ALLOW_DEVELOPMENT_BACKENDS'], backend_allowed('fake'), "
            "backend_allowed('openai'))\n"
            "try:\n    get_backend('fake')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    production = run(["-c", code], production_env())
    assert production.returncode == 0, production.stderr
    assert production.stdout.splitlines() == ["False False True", f"BackendNotAllowed {REFUSAL}"]
    development = run(["-c", code], production_env(DJANGO_DEBUG=None, DJANGO_SECRET_KEY=None))
    assert development.returncode == 0, development.stderr
    assert development.stdout.splitlines()[0] == "True True True"


@pytest.mark.django_db
def test_the_api_refuses_the_fake_backend_naming_the_field_and_the_rule(production, curator_client):
    lineage = make_lineage(backend="llama_cpp")
    url = reverse("api-lineage", args=[lineage.slug])
    response = curator_client.patch(url, {"backend": "fake"}, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["errors"][0]
    assert error["field"] == "backend" and "DJANGO_DEBUG=0" in error["message"], error
    assert GeneratorSettings.objects.get(lineage=lineage).backend == "llama_cpp"
    assert curator_client.patch(url, {"backend": "openai"}, content_type="application/json").status_code == 200


@pytest.mark.django_db
def test_the_service_that_commands_call_refuses_it_too(production):
    lineage = make_lineage(backend="llama_cpp")
    with pytest.raises(SettingsError, match="backend: the 'fake' backend is for development"):
        lineage_settings_update(lineage=lineage, settings={"backend": "fake"})
    assert GeneratorSettings.objects.get(lineage=lineage).backend == "llama_cpp"


@pytest.mark.django_db
def test_the_admin_form_refuses_it_and_accepts_it_in_development(production, settings):
    lineage = make_lineage(backend="llama_cpp")
    data = {"backend": "fake", "student_answers": 3, "temperature": 0.7, "synthetic_context_fraction": 0,
            "style_examples": 0, "loop_mode": "fixed"}
    form = GeneratorSettingsForm(instance=lineage.generator, data=data)
    assert not form.is_valid()
    assert form.errors["backend"] == [REFUSAL]
    settings.OUROBOROS = {**settings.OUROBOROS, "ALLOW_DEVELOPMENT_BACKENDS": True}
    form = GeneratorSettingsForm(instance=lineage.generator, data=data)
    form.is_valid()
    assert "backend" not in form.errors


def test_the_worker_refuses_to_build_it_even_for_a_lineage_saved_before(production, settings):
    assert not backend_allowed("fake")
    with pytest.raises(BackendNotAllowed) as refused:
        get_backend("fake")
    assert refused.value.permanent and str(refused.value) == REFUSAL
    settings.OUROBOROS = {**settings.OUROBOROS, "DEFAULT_BACKEND": "fake"}  # OUROBOROS_BACKEND=fake
    with pytest.raises(BackendNotAllowed):
        get_backend()
