"""External trainers (issue 13.4): a signed webhook when a training set is published, retried and logged,
and registering the student they trained through the API. Every peer is a real HTTP server on loopback;
no request goes anywhere else."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from curation.models import Generation, TrainingSet
from curation.services.exports import export_run
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.models import (
    GenerationModels,
    GeneratorSettings,
    ModelRecord,
    WebhookAttempt,
    WebhookDelivery,
    generator_settings_for,
)
from generation.services.webhooks import (
    webhook_deliver,
    webhook_signature,
    webhook_signature_valid,
    webhooks_requeue_stale,
)
from ouroboros.celery import app
from tests.api.conftest import token_client
from tests.factories import make_lineage, make_sample
from tests.support.processes import CeleryProcess, wait_for

SECRET_ENV, SECRET = "OUROBOROS_BACKEND_KEY_HOOK", "a-long-shared-secret"


class Peer(BaseHTTPRequestHandler):
    """A loopback peer: answers each POST with the next status of its script (then 200), records what it got.
    On /v1/chat/completions it speaks chat completions, as vLLM would."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        server.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status = server.script.pop(0) if server.script else 200
        if self.path.endswith("/chat/completions") and status == 200:
            payload = json.dumps({"model": json.loads(body)["model"], "choices": [
                {"message": {"role": "assistant", "content": "ready"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1}}).encode()
        else:
            payload = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def peer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    server.received, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _publish(lineage, reviewer, curator, capture, announce: bool = True) -> TrainingSet:
    """Build and export a set in this process; publishing it is what queues the webhook."""
    for i in range(3):
        sample_accept(sample=make_sample(lineage, question=f"Question {i}?"), reviewer=reviewer)
    with capture(execute=False):
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=4)
    # Publishing announces the set after commit; inside a test's transaction, run those callbacks by hand.
    with capture(execute=False) as callbacks:
        for export in training_set.exports.all():
            export_run(export_id=export.pk)
    for callback in callbacks if announce else ():
        if callback.__qualname__.startswith("training_set_publish_if_ready"):
            callback()
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED
    return training_set


def _hook(lineage, url: str, secret_env: str = SECRET_ENV) -> GeneratorSettings:
    generator = generator_settings_for(lineage)
    generator.webhook_url, generator.webhook_secret_env = url, secret_env
    generator.full_clean()
    generator.save()
    return generator


# ---------------------------------------------------------------- the webhook


def test_publishing_queues_one_delivery_with_the_manifest_and_download_urls(
        db, tmp_path, settings, reviewer, curator, django_capture_on_commit_callbacks):
    settings.EXPORT_ROOT = tmp_path / "exports"
    lineage = make_lineage()
    _hook(lineage, "http://127.0.0.1:9/hook")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        training_set = _publish(lineage, reviewer, curator, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(training_set=training_set)
    assert sum("webhooks_send_later" in callback.__qualname__ for callback in queued) == 1  # the task, after commit
    body = json.loads(delivery.body)
    assert body["event"] == "training_set.published" and body["manifest"] == training_set.manifest
    assert body["training_set"]["sha256"] == training_set.sha256
    public = settings.OUROBOROS["PUBLIC_URL"]
    assert body["downloads"]["chat"] == public + reverse("api-training-set-download", args=[training_set.pk, "chat"])
    assert set(body["downloads"]) == {"chat", "alpaca", "parquet", "manifest"}
    following = lineage.generations.get(number=training_set.generation.number + 1)
    assert body["next_generation"]["register_student"] == public + reverse("api-generation-student",
                                                                           args=[following.pk])


def test_a_lineage_without_a_webhook_queues_nothing(db, tmp_path, settings, reviewer, curator,
                                                    django_capture_on_commit_callbacks):
    settings.EXPORT_ROOT = tmp_path / "exports"
    _publish(make_lineage(), reviewer, curator, django_capture_on_commit_callbacks)
    assert not WebhookDelivery.objects.exists()


def test_the_sweep_writes_the_delivery_of_a_set_whose_announcement_was_lost(
        db, tmp_path, settings, reviewer, curator, django_capture_on_commit_callbacks):
    """The process died between the publication's commit and its announcement: the sweep finds the set."""
    settings.EXPORT_ROOT = tmp_path / "exports"
    lineage = make_lineage()
    _hook(lineage, "http://127.0.0.1:9/hook")
    training_set = _publish(lineage, reviewer, curator, django_capture_on_commit_callbacks, announce=False)
    assert not WebhookDelivery.objects.exists()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        webhooks_requeue_stale(grace_seconds=0)
    assert sum("webhooks_send_later" in callback.__qualname__ for callback in queued) == 1
    with django_capture_on_commit_callbacks(execute=False):
        webhooks_requeue_stale(grace_seconds=0)  # again: the set has its delivery now, no second one
    assert WebhookDelivery.objects.filter(training_set=training_set).count() == 1


def test_a_delivery_is_signed_and_the_receiver_verifies_it(
        db, tmp_path, settings, monkeypatch, peer, reviewer, curator, django_capture_on_commit_callbacks):
    settings.EXPORT_ROOT = tmp_path / "exports"
    monkeypatch.setenv(SECRET_ENV, SECRET)
    lineage = make_lineage()
    _hook(lineage, f"{peer.url}/hook")
    with django_capture_on_commit_callbacks(execute=False):
        training_set = _publish(lineage, reviewer, curator, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(training_set=training_set)
    assert webhook_deliver(delivery_id=delivery.pk).delivered
    (got,) = peer.received
    headers = got["headers"]
    assert webhook_signature_valid(secret=SECRET, timestamp=headers["X-Ouroboros-Timestamp"], body=got["body"],
                                   signature=headers["X-Ouroboros-Signature"])
    assert not webhook_signature_valid(secret="another-secret", timestamp=headers["X-Ouroboros-Timestamp"],
                                       body=got["body"], signature=headers["X-Ouroboros-Signature"])
    assert not webhook_signature_valid(secret=SECRET, timestamp=headers["X-Ouroboros-Timestamp"],
                                       body=got["body"] + b" ", signature=headers["X-Ouroboros-Signature"])
    assert got["body"] == delivery.body.encode()
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED and delivery.last_status_code == 200
    # Running the task again (a redelivered message) sends nothing more.
    assert not webhook_deliver(delivery_id=delivery.pk).claimed and len(peer.received) == 1


def test_a_stale_timestamp_fails_verification():
    body = b'{"event":"x"}'
    signature = webhook_signature(secret=SECRET, timestamp=1_000, body=body)
    assert webhook_signature_valid(secret=SECRET, timestamp="1000", body=body, signature=signature, now=1_100)
    assert not webhook_signature_valid(secret=SECRET, timestamp="1000", body=body, signature=signature, now=2_000)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_retries_a_failing_receiver_and_logs_both_attempts(
        tmp_path, settings, peer, reviewer, curator, django_capture_on_commit_callbacks):
    settings.EXPORT_ROOT = tmp_path / "exports"
    peer.script = [500]  # fails once, then answers 200
    app.control.purge()
    worker = CeleryProcess.worker("webhooks", tmp_path, {SECRET_ENV: SECRET, "OUROBOROS_WEBHOOK_RETRY_DELAY": "0.5"},
                                  queues="generation")
    try:
        lineage = make_lineage()
        _hook(lineage, f"{peer.url}/hook")
        training_set = _publish(lineage, reviewer, curator, django_capture_on_commit_callbacks)
        delivery = WebhookDelivery.objects.get(training_set=training_set)
        wait_for(lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status="delivered").exists(),
                 timeout=120, what="the webhook to be delivered", processes=[worker])
    finally:
        worker.stop()
        app.control.purge()  # the curation tasks publishing queued (metrics): no worker here runs them
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    assert "HTTP 500" in attempts[0].error and attempts[1].error == ""
    assert attempts[1].started_at >= attempts[0].finished_at
    assert len(peer.received) == 2
    for got in peer.received:
        assert webhook_signature_valid(secret=SECRET, timestamp=got["headers"]["X-Ouroboros-Timestamp"],
                                       body=got["body"], signature=got["headers"]["X-Ouroboros-Signature"])
    assert [got["headers"]["X-Ouroboros-Attempt"] for got in peer.received] == ["1", "2"]
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.delivered_at is not None


def test_the_last_failed_try_fails_the_delivery(db, tmp_path, settings, monkeypatch, peer, reviewer, curator,
                                                django_capture_on_commit_callbacks):
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.OUROBOROS = {**settings.OUROBOROS, "WEBHOOK_MAX_ATTEMPTS": 2, "WEBHOOK_RETRY_DELAY": 0}
    monkeypatch.setenv(SECRET_ENV, SECRET)
    peer.script = [503, 502]
    lineage = make_lineage()
    _hook(lineage, f"{peer.url}/hook")
    with django_capture_on_commit_callbacks(execute=False):
        delivery = WebhookDelivery.objects.get(
            training_set=_publish(lineage, reviewer, curator, django_capture_on_commit_callbacks))
    assert webhook_deliver(delivery_id=delivery.pk).retry_in == 0
    assert webhook_deliver(delivery_id=delivery.pk).retry_in is None
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED and "HTTP 502" in delivery.last_error
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [503, 502]


@pytest.mark.parametrize("secret_env,env,message", [
    ("", {}, "names no secret variable"),
    (SECRET_ENV, {}, f"{SECRET_ENV} is not set"),
])
def test_an_unsigned_delivery_is_never_sent(db, tmp_path, settings, monkeypatch, peer, reviewer, curator,
                                            django_capture_on_commit_callbacks, secret_env, env, message):
    settings.EXPORT_ROOT = tmp_path / "exports"
    monkeypatch.delenv(SECRET_ENV, raising=False)
    lineage = make_lineage()
    _hook(lineage, f"{peer.url}/hook", secret_env=secret_env)
    with django_capture_on_commit_callbacks(execute=False):
        delivery = WebhookDelivery.objects.get(
            training_set=_publish(lineage, reviewer, curator, django_capture_on_commit_callbacks))
    assert webhook_deliver(delivery_id=delivery.pk).retry_in is None
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED and message in delivery.last_error
    assert peer.received == [] and delivery.attempt_log.count() == 1


def test_a_webhook_url_the_allowlist_now_refuses_is_not_called(db, tmp_path, settings, monkeypatch, reviewer,
                                                                curator, django_capture_on_commit_callbacks):
    """The operator narrowed the allowlist after the URL was saved: the worker's own check refuses it."""
    settings.EXPORT_ROOT = tmp_path / "exports"
    monkeypatch.setenv(SECRET_ENV, SECRET)
    lineage = make_lineage()
    GeneratorSettings.objects.filter(lineage=lineage).update(webhook_url="http://10.1.2.3:8000/hook",
                                                             webhook_secret_env=SECRET_ENV)
    opened = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(
        AssertionError("a connection was opened")))
    with django_capture_on_commit_callbacks(execute=False):
        delivery = WebhookDelivery.objects.get(
            training_set=_publish(lineage, reviewer, curator, django_capture_on_commit_callbacks))
    webhook_deliver(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED and "not on the backend allowlist" in delivery.last_error
    assert opened == []


@pytest.mark.parametrize("field,value,message", [
    ("webhook_url", "http://169.254.169.254/latest/meta-data/", "link-local"),
    ("webhook_url", "http://10.1.2.3:8000/hook", "not on the backend allowlist"),
    ("webhook_secret_env", "DJANGO_SECRET_KEY", "must start with OUROBOROS_BACKEND_KEY_"),
])
def test_a_webhook_setting_the_policy_refuses_cannot_be_saved(lineage, field, value, message):
    generator = generator_settings_for(lineage)
    setattr(generator, field, value)
    with pytest.raises(ValidationError) as caught:
        generator.full_clean()
    assert message in " ".join(caught.value.message_dict[field])
    with pytest.raises(ValidationError) as caught:  # and a path that skips validation (a command, the shell)
        generator.save()
    assert field in caught.value.message_dict


# ---------------------------------------------------------------- registering an external student


@pytest.fixture
def api(curator):
    """A curator's token client: an external trainer's script."""
    return token_client(curator)


def _register(api, generation_id: int, **body):
    return api.post(reverse("api-generation-student", args=[generation_id]), body, format="json")


def _field_error(response, field: str) -> str:
    assert response.status_code == 400, response.content
    errors = {item["field"]: item["message"] for item in response.json()["errors"]}
    assert field in errors, response.json()
    return errors[field]


def test_an_external_student_is_tried_once_and_becomes_the_student(api, lineage, peer):
    generation = lineage.generations.get(status=Generation.Status.OPEN)
    response = _register(api, generation.pk, base_url=f"{peer.url}/v1", model="team-student-7")
    assert response.status_code == 201, response.content
    record = ModelRecord.objects.get(pk=response.json()["id"])
    assert (record.kind, record.status, record.remote_model, record.base_url) == (
        ModelRecord.Kind.REMOTE, ModelRecord.Status.READY, "team-student-7", f"{peer.url}/v1")
    assert GenerationModels.objects.get(generation=generation).student == record
    (probe,) = peer.received
    assert probe["path"] == "/v1/chat/completions" and json.loads(probe["body"])["model"] == "team-student-7"
    assert response.json()["generation"] == generation.pk and response.json()["status"] == "ready"


def test_an_unknown_generation_is_a_400_naming_it(api, db):
    assert "no generation with id 999999" in _field_error(
        _register(api, 999999, base_url="http://127.0.0.1:8001/v1", model="m"), "generation")


def test_a_closed_generation_is_a_400_naming_it(api, lineage, peer):
    closed = lineage.generations.get(number=0)
    assert "closed" in _field_error(_register(api, closed.pk, base_url=f"{peer.url}/v1", model="m"), "generation")
    assert peer.received == [] and not ModelRecord.objects.filter(kind="remote").exists()


def test_an_unreachable_endpoint_is_a_400_and_the_model_is_recorded_as_failed(api, lineage):
    generation = lineage.generations.get(status=Generation.Status.OPEN)
    message = _field_error(_register(api, generation.pk, base_url=f"http://127.0.0.1:{free_port()}/v1", model="m"),
                           "base_url")
    assert "cannot reach" in message
    record = ModelRecord.objects.get(kind="remote")
    assert record.status == ModelRecord.Status.FAILED and "cannot reach" in record.failure_reason
    assert not GenerationModels.objects.filter(generation=generation, student__isnull=False).exists()


def test_an_endpoint_that_fails_its_try_is_a_400(api, lineage, peer):
    peer.script = [404]  # e.g. the server does not serve this model
    generation = lineage.generations.get(status=Generation.Status.OPEN)
    assert "HTTP 404" in _field_error(_register(api, generation.pk, base_url=f"{peer.url}/v1", model="nope"),
                                      "base_url")
    assert ModelRecord.objects.get(kind="remote").status == ModelRecord.Status.FAILED


@pytest.mark.parametrize("body,field,message", [
    ({"base_url": "http://169.254.169.254/latest/v1", "model": "m"}, "base_url", "link-local"),
    ({"base_url": "http://10.1.2.3:8000/v1", "model": "m"}, "base_url", "not on the backend allowlist"),
    ({"base_url": "http://127.0.0.1:8001/v1", "model": "m", "api_key_env": "DJANGO_SECRET_KEY"}, "api_key_env",
     "must start with OUROBOROS_BACKEND_KEY_"),
    ({"base_url": "http://127.0.0.1:8001/v1"}, "model", "required"),
    ({"base_url": "not a url", "model": "m"}, "base_url", "valid URL"),
])
def test_a_refused_endpoint_is_a_400_naming_the_field_and_sends_nothing(api, lineage, monkeypatch, body, field,
                                                                        message):
    opened = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(
        AssertionError("a connection was opened")))
    generation = lineage.generations.get(status=Generation.Status.OPEN)
    assert message in _field_error(_register(api, generation.pk, **body), field)
    assert opened == [] and not ModelRecord.objects.filter(kind="remote").exists()


def test_a_generation_that_already_has_samples_keeps_its_student(api, lineage, peer):
    make_sample(lineage)
    generation = lineage.generations.get(status=Generation.Status.OPEN)
    assert "one student" in _field_error(_register(api, generation.pk, base_url=f"{peer.url}/v1", model="m"),
                                         "generation")
