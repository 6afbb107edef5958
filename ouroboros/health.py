"""`/healthz`: the state of the database, the broker and the workers, as JSON.

Answers 503 when any of them is down, so a load balancer or a person can see
at a glance what is wrong.
"""
from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ouroboros.celery import app


def _timed(check) -> dict:
    started = time.monotonic()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # a health check reports every failure, whatever it is
        detail = {"error": f"{type(exc).__name__}: {exc}"}
        ok = False
    return {"ok": ok, "ms": round((time.monotonic() - started) * 1000, 1), **detail}


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the pgvector extension is not installed")
    return {"pgvector": row[0]}


def _broker() -> dict:
    """One try on a fresh connection, bounded by HEALTH_BROKER_TIMEOUT.

    No retry and no pooled connection: a health check must say "down" at once
    (a refused connection answers in milliseconds, a Redis that accepts and
    never answers within the timeout) rather than wait out kombu's reconnect
    backoff, which took 2 s a request here.
    """
    timeout = settings.OUROBOROS["HEALTH_BROKER_TIMEOUT"]
    with app.connection_for_write(connect_timeout=timeout, transport_options={
            "socket_connect_timeout": timeout, "socket_timeout": timeout}) as conn:
        conn.ensure_connection(max_retries=0)
        client = conn.default_channel.client
        client.ping()
        queued = {name: client.llen(name) for name in ("generation", "curation")}
    return {"queued": queued}


def _workers() -> dict:
    replies = app.control.inspect(timeout=settings.OUROBOROS["HEALTH_WORKER_TIMEOUT"]).ping() or {}
    if not replies:
        raise RuntimeError("no Celery worker answered a ping")
    return {"workers": sorted(replies)}


@never_cache
@require_GET
def healthz(request):
    checks = {"database": _timed(_database), "broker": _timed(_broker)}
    # Without a broker no worker can answer; skip the slow ping and report why.
    checks["workers"] = _timed(_workers) if checks["broker"]["ok"] else {"ok": False, "error": "broker is down"}
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "down", **checks}, status=200 if healthy else 503)
