"""A generation backend that hangs past its timeout costs one item, not the job.

A real worker process runs a job against a real HTTP server on loopback that
accepts the first requests and never answers them, then answers the rest like
a model would (with the fake backend's deterministic text: this test is about
the job machinery, not the model).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.models import Sample
from generation.backends import GenerationParams
from generation.backends.fake import FakeBackend
from generation.models import GenerationFailure, GenerationJob
from generation.services import job_create
from ouroboros.celery import app
from tests.factories import make_lineage
from tests.support.processes import CeleryProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ATTEMPTS = 3
WORKER_ENV = {
    "OUROBOROS_BACKEND_TIMEOUT": "1",  # seconds a request may take
    "OUROBOROS_BACKEND_ITEM_ATTEMPTS": str(ATTEMPTS),
    "OUROBOROS_BACKEND_RETRY_DELAY": "0.2",
}


class HangingThenAnswering(BaseHTTPRequestHandler):
    """The first `hang_first` requests are read and never answered; later ones get a chat completion."""

    hang_first = ATTEMPTS
    lock = threading.Lock()
    release = threading.Event()
    log: list[str] = []  # "hung" or "answered", in arrival order

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.lock:
            hang = len(self.log) < self.hang_first
            self.log.append("hung" if hang else "answered")
        if hang:
            self.release.wait(120)  # hold the connection open, answer nothing
            self.close_connection = True
            return
        completion = FakeBackend().generate(body["messages"], GenerationParams(seed=body.get("seed")))
        raw = json.dumps({
            "model": body["model"],
            "choices": [{"message": {"role": "assistant", "content": completion.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def hanging_server():
    HangingThenAnswering.log = []
    HangingThenAnswering.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), HangingThenAnswering)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    HangingThenAnswering.release.set()
    server.shutdown()
    server.server_close()


def test_an_item_whose_backend_hangs_is_retried_then_failed_with_the_reason_and_the_job_goes_on(
        tmp_path, hanging_server):
    app.control.purge()
    lineage = make_lineage(passages=4, backend="openai", backend_base_url=hanging_server, backend_model="echo",
                           student_answers=2)
    job = job_create(lineage=lineage, requested=4, seed=5, chunk_size=4)

    worker = CeleryProcess.worker("patient", tmp_path, WORKER_ENV, queues="generation")
    try:
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=120,
                 what="the job to finish", processes=[worker])
    finally:
        worker.stop()

    job.refresh_from_db()
    failure = GenerationFailure.objects.get(job=job)
    # 1. The first item's first request hung; it was sent again, ATTEMPTS times in all, then given up.
    assert HangingThenAnswering.log[:ATTEMPTS] == ["hung"] * ATTEMPTS
    assert "hung" not in HangingThenAnswering.log[ATTEMPTS:]
    assert failure.item_index == 0
    assert f"backend timed out {ATTEMPTS} times" in failure.reason
    assert "did not answer within 1s" in failure.reason
    # 2. The job went on: every other item is a sample, stored once, and the job ended well.
    assert sorted(Sample.objects.filter(job=job).values_list("item_index", flat=True)) == [1, 2, 3]
    assert job.status == GenerationJob.Status.DONE
    assert (job.done_count, job.failed_count) == (3, 1)
