"""A worker SIGKILLed mid-import leaves no passage behind, and the import then
completes exactly once on another worker. Real worker processes, real Redis and
PostgreSQL; the doomed worker loads the test hook tests.support.slow_imports (a
sleep after each written batch, inside the import's transaction; production code
has none) so that the kill lands while the transaction is open."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from curation.models import PassageImport, SourcePassage
from curation.tasks import requeue_stale_imports
from ouroboros.celery import app
from tests.factories import CURATOR, make_lineage, make_user
from tests.support.processes import CeleryProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROWS = 60
WORKER_ENV = {
    "OUROBOROS_IMPORT_BATCH_SIZE": "5",  # 12 batches, each a progress update
    "OUROBOROS_IMPORT_LEASE_SECONDS": "5",  # a dead worker's claim goes stale quickly
}


def test_an_import_survives_a_sigkilled_worker_with_nothing_half_written_or_doubled(client, tmp_path):
    app.control.purge()
    lineage = make_lineage(passages=2)
    original = list(lineage.passages.values_list("pk", flat=True))
    client.force_login(make_user("carl", CURATOR))
    data = "".join(json.dumps({"text": f"Imported passage number {n}.", "title": f"P{n}"}) + "\n"
                   for n in range(ROWS)).encode()
    response = client.post(reverse("api-lineage-imports", args=[lineage.slug]),
                           {"file": SimpleUploadedFile("big.jsonl", data)})
    assert response.status_code == 202
    url = response.json()["url"]
    job_id = response.json()["id"]

    first = CeleryProcess.worker("import-doomed", tmp_path, WORKER_ENV, include=("tests.support.slow_imports",))
    second = None
    seen_progress = []
    try:
        # 1. Progress is visible over the API while the transaction is still open.
        def part_way() -> bool:
            state = client.get(url).json()
            if state["status"] == "running" and 0 < state["rows_done"] < state["rows_total"]:
                seen_progress.append(state["rows_done"])
            return len(seen_progress) >= 2

        wait_for(part_way, timeout=180, what="the import to report progress", processes=[first], interval=0.3)
        first.kill()
        job = PassageImport.objects.get(pk=job_id)
        assert job.status == "running" and 0 < job.rows_done < ROWS, "the worker must die mid-import"
        assert job.rows_total == ROWS and seen_progress == sorted(seen_progress)
        assert SourcePassage.objects.filter(lineage=lineage).count() == 2, "no passage of the import survives"

        # 2. A new worker; once the dead worker's claim is stale, the sweep queues the import again.
        second = CeleryProcess.worker("import-rescuer", tmp_path, WORKER_ENV)

        def finished() -> bool:
            requeue_stale_imports.delay()  # what beat does every five minutes
            return client.get(url).json()["status"] == "done"

        wait_for(finished, timeout=180, what="the import to finish on the second worker", processes=[second],
                 interval=2)
    finally:
        first.stop()
        if second:
            second.stop()
        app.control.purge()

    state = client.get(url).json()
    assert (state["imported"], state["duplicates"], state["rows_done"], state["errors"]) == (ROWS, 0, ROWS, [])
    imported = SourcePassage.objects.filter(lineage=lineage).exclude(pk__in=original)
    assert sorted(imported.values_list("text", flat=True)) == sorted(
        f"Imported passage number {n}." for n in range(ROWS)), "every row exactly once"
