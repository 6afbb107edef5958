"""Issue 14.1 from the outside: the settings that point the generator somewhere, refused where they are saved.

The fault drill's own examples: a backend URL at the cloud metadata service or a private host, and
DJANGO_SECRET_KEY as the key variable. Each save path refuses them naming the field and the rule: the
API (400), the admin (a form error), and any code that saves the row (a command, the shell).
"""
from __future__ import annotations

import pytest
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms.models import model_to_dict
from django.urls import reverse

from curation.models import Lineage
from generation.models import GeneratorSettings, generator_settings_for
from tests.api.conftest import token_client

REFUSED = [
    ("backend_base_url", "http://169.254.169.254/latest/v1", "link-local"),
    ("backend_base_url", "http://10.1.2.3:8000/v1", "host 10.1.2.3 port 8000 is not on the backend allowlist"),
    ("backend_base_url", "http://[::ffff:a9fe:a9fe]/latest/v1", "link-local"),
    ("backend_api_key_env", "DJANGO_SECRET_KEY", "must start with OUROBOROS_BACKEND_KEY_"),
    ("backend_api_key_env", "OPENAI_API_KEY", "must start with OUROBOROS_BACKEND_KEY_"),
    ("webhook_url", "http://169.254.169.254/latest/meta-data/", "link-local"),
    ("webhook_url", "http://10.1.2.3:8000/hook", "not on the backend allowlist"),
    ("webhook_secret_env", "DJANGO_SECRET_KEY", "must start with OUROBOROS_BACKEND_KEY_"),
]


@pytest.mark.parametrize("field,value,rule", REFUSED)
def test_the_api_refuses_it_with_a_400_naming_the_field_and_the_rule(curator, lineage, field, value, rule):
    response = token_client(curator).patch(reverse("api-lineage", args=[lineage.slug]), {field: value}, format="json")
    assert response.status_code == 400, response.content
    (error,) = response.json()["errors"]
    assert error["field"] == field and rule in error["message"]
    assert getattr(generator_settings_for(lineage), field) == ""


def test_the_api_accepts_a_loopback_server_and_a_key_under_the_prefix(curator, lineage):
    body = {"backend": "openai", "backend_base_url": "http://127.0.0.1:8001/v1", "backend_model": "m",
            "backend_api_key_env": "OUROBOROS_BACKEND_KEY_VLLM"}
    response = token_client(curator).patch(reverse("api-lineage", args=[lineage.slug]), body, format="json")
    assert response.status_code == 200, response.content
    assert generator_settings_for(lineage).backend_base_url == "http://127.0.0.1:8001/v1"


def test_the_operator_allowlist_admits_a_pinned_host(curator, lineage, settings):
    from ouroboros.egress import parse_allowed_hosts

    settings.OUROBOROS = {**settings.OUROBOROS, "BACKEND_ALLOWED_HOSTS": parse_allowed_hosts("10.1.2.3:8000")}
    client = token_client(curator)
    url = reverse("api-lineage", args=[lineage.slug])
    assert client.patch(url, {"backend_base_url": "http://10.1.2.3:8000/v1"}, format="json").status_code == 200
    response = client.patch(url, {"backend_base_url": "http://10.1.2.3:8001/v1"}, format="json")
    assert response.status_code == 400 and "10.1.2.3:8000" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("field,value,rule", REFUSED)
def test_the_admin_refuses_it_with_a_form_error(rf, admin_user, lineage, field, value, rule):
    """The lineage's admin page edits generator settings in an inline: its form reports the rule on the field."""
    request = rf.post("/")
    request.user = admin_user
    inline = next(i for i in admin.site._registry[Lineage].get_inline_instances(request, lineage)
                  if i.model is GeneratorSettings)
    form_class = inline.get_formset(request, lineage).form
    generator = generator_settings_for(lineage)
    form = form_class(data={**model_to_dict(generator), field: value}, instance=generator)
    assert not form.is_valid()
    assert rule in " ".join(form.errors[field])
    assert set(form.errors) == {field}  # nothing else about the form was wrong


@pytest.mark.parametrize("field,value,rule", REFUSED)
def test_code_that_saves_the_row_directly_is_refused_too(lineage, field, value, rule):
    """A management command or the shell: the model refuses to be saved."""
    generator = generator_settings_for(lineage)
    setattr(generator, field, value)
    with pytest.raises(ValidationError) as caught:
        generator.save()
    assert rule in " ".join(caught.value.message_dict[field])
    assert getattr(GeneratorSettings.objects.get(pk=generator.pk), field) == ""


def test_a_setting_stored_before_the_rule_is_refused_by_the_worker_and_nothing_is_sent(
        lineage, monkeypatch, django_capture_on_commit_callbacks):
    """A URL saved before the operator narrowed the allowlist (written here past every check): the job's items
    fail with the rule as their reason, and no connection is opened."""
    import socket

    from generation.models import GenerationFailure
    from generation.services import job_create, job_run_chunk

    allowed = {"backend": "openai", "backend_base_url": "http://127.0.0.1:9/v1", "backend_model": "m"}
    GeneratorSettings.objects.filter(lineage=lineage).update(**allowed)
    opened = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(
        AssertionError("a connection was opened")))
    with django_capture_on_commit_callbacks(execute=False):
        job = job_create(lineage=lineage, requested=2, chunk_size=2)  # recorded while the URL was allowed
    GeneratorSettings.objects.filter(lineage=lineage).update(backend_base_url="http://169.254.169.254/latest/v1")
    with django_capture_on_commit_callbacks(execute=False):
        job_run_chunk(job_id=job.pk)
    reasons = list(GenerationFailure.objects.filter(job=job).values_list("reason", flat=True))
    assert len(reasons) == 2 and all("link-local" in reason and "never allowed" in reason for reason in reasons)
    assert opened == [] and not lineage.samples.exists()


def test_a_first_job_with_a_url_stored_before_the_rule_is_refused_where_it_is_created(lineage, monkeypatch):
    """The generation's models are recorded with its first job: a stored URL the rules now refuse stops the
    job there, naming the rule, and writes neither a job nor a model record."""
    import socket

    from generation.errors import JobError
    from generation.models import ModelRecord
    from generation.services import job_create

    GeneratorSettings.objects.filter(lineage=lineage).update(
        backend="openai", backend_base_url="http://169.254.169.254/latest/v1", backend_model="m")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("a connection was opened")))
    with pytest.raises(JobError, match="link-local"):
        job_create(lineage=lineage, requested=2)
    assert not lineage.jobs.exists() and not ModelRecord.objects.filter(lineage=lineage).exists()
