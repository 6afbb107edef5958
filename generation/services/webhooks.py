"""Telling an external trainer that a training set is published: a signed webhook, retried, every try logged.

1. When a set is published, curation sends `training_set_published`
   (curation/extensions.py) after the publication commits; `webhook_queue` then
   writes one WebhookDelivery (only if the lineage has a webhook URL) with its
   JSON body fixed, and queues `generation.deliver_webhook` after that commits.
2. `webhook_deliver` claims the delivery (a conditional update), signs the body
   and POSTs it through the egress policy (the URL's host and its resolved
   addresses are checked, the connection goes to a checked address). Every try
   becomes a WebhookAttempt row: status code or error, and timestamps.
3. A 2xx answer delivers it. Any other answer, a timeout or a refused
   connection is tried again after WEBHOOK_RETRY_DELAY seconds, doubling,
   up to WEBHOOK_MAX_ATTEMPTS tries. A URL the policy refuses, or a secret
   that is not named or not set, fails at once: trying again cannot help.
   A delivery whose message was lost is queued again by the periodic sweep.

Signature: `X-Ouroboros-Signature: sha256=<hex>` where hex is
HMAC-SHA256(secret, f"{timestamp}." + raw body) and the timestamp (Unix seconds)
is in `X-Ouroboros-Timestamp`; a receiver checks both and refuses old timestamps,
so a captured delivery cannot be replayed later.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from curation.models import Generation, TrainingSet
from generation.models import GeneratorSettings, WebhookAttempt, WebhookDelivery
from ouroboros import egress

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Ouroboros-Signature"
TIMESTAMP_HEADER = "X-Ouroboros-Timestamp"
MAX_ERROR_CHARS = 500


def webhook_signature(*, secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_signature_valid(*, secret: str | bytes, timestamp: str, body: bytes, signature: str,
                            max_age_seconds: int = 300, now: float | None = None) -> bool:
    """What a receiver checks: the signature over this timestamp and body, and a recent timestamp."""
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > max_age_seconds:
        return False
    return hmac.compare_digest(webhook_signature(secret=secret, timestamp=int(timestamp), body=body), signature)


def _absolute(path: str) -> str:
    return settings.OUROBOROS["PUBLIC_URL"] + path


def webhook_payload(*, training_set: TrainingSet) -> dict:
    """The body: which set, its manifest, where to download each file, and where to register the student."""
    lineage, generation = training_set.lineage, training_set.generation
    formats = [export.format for export in training_set.exports.order_by("format")]
    downloads = {fmt: _absolute(reverse("api-training-set-download", args=[training_set.pk, fmt])) for fmt in formats}
    downloads["manifest"] = _absolute(reverse("api-training-set-download", args=[training_set.pk, "manifest"]))
    following = Generation.objects.filter(lineage=lineage, number=generation.number + 1).first()
    return {
        "event": WebhookDelivery.EVENT_PUBLISHED,
        "lineage": {"slug": lineage.slug, "name": lineage.name},
        "generation": {"id": generation.pk, "number": generation.number},
        "training_set": {"id": training_set.pk, "sha256": training_set.sha256, "seed": training_set.seed,
                         "published_at": training_set.published_at.isoformat() if training_set.published_at else None,
                         "url": _absolute(reverse("api-training-set", args=[training_set.pk]))},
        "manifest": training_set.manifest,
        "downloads": downloads,
        # The student trained on this set generates the next generation: register it there.
        "next_generation": None if following is None else {
            "id": following.pk, "number": following.number,
            "register_student": _absolute(reverse("api-generation-student", args=[following.pk])),
        },
    }


def webhook_queue(*, training_set: TrainingSet) -> WebhookDelivery | None:
    """Write the delivery for a just-published set (if its lineage has a webhook) and queue it after commit.

    A second call for the same set does nothing (one delivery per set and event).
    """
    generator = GeneratorSettings.objects.filter(lineage_id=training_set.lineage_id).first()
    if generator is None or not generator.webhook_url:
        return None
    body = json.dumps(webhook_payload(training_set=training_set), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    delivery, created = WebhookDelivery.objects.get_or_create(
        training_set=training_set, event=WebhookDelivery.EVENT_PUBLISHED,
        defaults={"lineage_id": training_set.lineage_id, "url": generator.webhook_url,
                  "secret_env": generator.webhook_secret_env, "body": body},
    )
    if created:
        webhooks_send_later(delivery_ids=[delivery.pk])
    return delivery


def webhooks_send_later(*, delivery_ids: list[int], countdown: float = 0) -> None:
    from generation.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        transaction.on_commit(lambda delivery_id=delivery_id: deliver_webhook.apply_async(
            (delivery_id,), countdown=countdown or None))


@dataclass(frozen=True)
class DeliveryOutcome:
    claimed: bool
    delivered: bool = False
    retry_in: float | None = None  # seconds until the next try, when there is one


class _Refused(Exception):
    """A try that cannot succeed however often it is repeated."""


def _lease() -> timedelta:
    return timedelta(seconds=2 * settings.OUROBOROS["WEBHOOK_TIMEOUT"] + 30)


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text[:200] + ("…" if len(text) > 200 else "")


def _send(delivery: WebhookDelivery, number: int) -> int:
    """One signed POST; returns the status code. Raises _Refused, or OSError/HTTPException when it could not."""
    policy = egress.current_policy()
    try:
        name = egress.key_env_check(delivery.secret_env, policy=policy)
    except egress.EgressRefused as exc:
        raise _Refused(f"webhook_secret_env: {exc}") from None
    if not name:
        raise _Refused("webhook_secret_env: the lineage names no secret variable; a webhook is always signed")
    secret = os.environ.get(name, "")
    if not secret:
        raise _Refused(f"webhook_secret_env: {name} is not set in the worker's environment")
    body = delivery.body.encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json", "User-Agent": "Ouroboros-Webhook/1",
        "X-Ouroboros-Event": delivery.event, "X-Ouroboros-Delivery": str(delivery.pk),
        "X-Ouroboros-Attempt": str(number), TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
    }
    try:
        response = egress.request("POST", delivery.url, body=body, headers=headers,
                                  timeout=settings.OUROBOROS["WEBHOOK_TIMEOUT"], policy=policy)
    except egress.EgressRefused as exc:
        raise _Refused(f"webhook_url: {exc}") from None
    if not 200 <= response.status < 300:
        raise _Answered(response.status, _excerpt(response.body))
    return response.status


class _Answered(Exception):
    def __init__(self, status: int, excerpt: str):
        super().__init__(f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}")
        self.status = status


def webhook_deliver(*, delivery_id: int) -> DeliveryOutcome:
    """Try a delivery once (see the module's docstring). Running it twice at once sends it once."""
    conf = settings.OUROBOROS
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claim_token=token, claimed_until=now + _lease(), attempts=F("attempts") + 1)
    )
    if not claimed:
        return DeliveryOutcome(claimed=False)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    number = delivery.attempts
    started, clock = timezone.now(), time.monotonic()
    status_code, error, permanent = None, "", False
    try:
        status_code = _send(delivery, number)
    except _Refused as exc:
        error, permanent = str(exc), True
    except _Answered as exc:
        status_code, error = exc.status, str(exc)
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finished = timezone.now()
    ok = status_code is not None and 200 <= status_code < 300
    retry_in = None
    if ok:
        changes = {"status": WebhookDelivery.Status.DELIVERED, "delivered_at": finished, "last_error": ""}
    elif permanent or number >= conf["WEBHOOK_MAX_ATTEMPTS"]:
        changes = {"status": WebhookDelivery.Status.FAILED, "last_error": error[:MAX_ERROR_CHARS]}
    else:
        retry_in = conf["WEBHOOK_RETRY_DELAY"] * 2 ** (number - 1)
        changes = {"next_attempt_at": finished + timedelta(seconds=retry_in), "last_error": error[:MAX_ERROR_CHARS]}
    with transaction.atomic():
        WebhookAttempt.objects.create(delivery=delivery, number=number, url=delivery.url, status_code=status_code,
                                      error=error[:MAX_ERROR_CHARS], started_at=started, finished_at=finished,
                                      duration_ms=round((time.monotonic() - clock) * 1000))
        WebhookDelivery.objects.filter(pk=delivery_id, claim_token=token).update(
            last_status_code=status_code, claim_token=None, claimed_until=None, **changes)
    log.log(logging.INFO if ok else logging.WARNING, "webhook delivery %s try %s to %s: %s", delivery_id, number,
            delivery.url, f"HTTP {status_code}" if ok else error)
    return DeliveryOutcome(claimed=True, delivered=ok, retry_in=retry_in)


def webhook_send_again(*, delivery: WebhookDelivery) -> bool:
    """Queue a failed delivery again (after the operator fixed the URL, the secret or the receiver)."""
    with transaction.atomic():
        changed = WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.FAILED).update(
            status=WebhookDelivery.Status.PENDING, next_attempt_at=None, claim_token=None, claimed_until=None)
        if changed:
            webhooks_send_later(delivery_ids=[delivery.pk])
    return bool(changed)


def webhooks_requeue_stale(*, grace_seconds: int = 60) -> list[int]:
    """Queue again every pending delivery whose next try is overdue by `grace_seconds` and that nobody holds:
    its message was lost (a dead worker, a Redis restart).

    It also writes the delivery of a set published in the last day without one, while its lineage had the
    webhook configured: the announcement after the publication's commit was lost (the process died between).
    """
    now = timezone.now()
    unannounced = (
        TrainingSet.objects.filter(status=TrainingSet.Status.PUBLISHED, published_at__gte=now - timedelta(days=1),
                                   published_at__lt=now - timedelta(seconds=grace_seconds),
                                   published_at__gt=F("lineage__generator__updated_at"))
        .exclude(lineage__generator__webhook_url="")
        .exclude(webhook_deliveries__event=WebhookDelivery.EVENT_PUBLISHED)
        .select_related("lineage", "generation")
    )
    for training_set in unannounced:
        with transaction.atomic():
            webhook_queue(training_set=training_set)
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True, updated_at__lt=now - timedelta(seconds=grace_seconds))
                | Q(next_attempt_at__lt=now - timedelta(seconds=grace_seconds)))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .values_list("id", flat=True)
    )
    with transaction.atomic():
        webhooks_send_later(delivery_ids=ids)
    return ids
