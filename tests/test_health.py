"""/healthz tells which part is down."""

from ouroboros.celery import app


def test_it_reports_a_missing_worker_with_503(client, db):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "down"
    assert body["database"]["ok"] and body["database"]["pgvector"]
    assert body["broker"]["ok"]
    assert body["workers"] == {"ok": False, "ms": body["workers"]["ms"], "error": "RuntimeError: no Celery worker answered a ping"}


def test_it_reports_an_unreachable_broker(client, db, monkeypatch):
    for key in ("broker_url", "broker_write_url"):  # nothing listens on port 9
        monkeypatch.setattr(app.conf, key, "redis://127.0.0.1:9/0")
    body = client.get("/healthz").json()
    assert body["broker"]["ok"] is False and "Error" in body["broker"]["error"]
    assert body["workers"]["error"] == "broker is down"

