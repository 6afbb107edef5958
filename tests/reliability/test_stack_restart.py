"""`make run` survives a crashed worker: the stack restarts it with a backoff and
a logged message while the web server keeps serving, and gives up with a clear
message when it keeps crashing. A real `python -m ouroboros.stack run` (its own
data folder and bundled Redis, the test database), a real runserver, worker and beat."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ouroboros.stack import free_tcp_port
from tests.support.processes import test_database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
START_BOUND_S = 300  # migrate, seed, and three Django processes on a crowded 2-core machine


class RunningStack:
    def __init__(self, tmp_path: Path):
        self.port = free_tcp_port()
        self.log_path = tmp_path / "stack.log"
        env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
        env.update({
            "PORT": str(self.port), "HOST": "127.0.0.1",
            "OUROBOROS_STACK_DATA": str(tmp_path / "stack-data"),  # its own lock and bundled Redis
            "OUROBOROS_IGNORE_LOCAL_REDIS": "1",
            "DATABASE_URL": test_database_url(),
            # One restart allowed: the first crash is restarted, the second within the window gives up.
            "OUROBOROS_STACK_MAX_RESTARTS": "1", "OUROBOROS_STACK_RESTART_WINDOW": "900",
            "PYTHONUNBUFFERED": "1",
        })
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "ouroboros.stack", "run"], cwd=ROOT, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        return [int(pid) for pid in re.findall(rf"\[stack\] started {re.escape(name)} \(pid (\d+)\)", self.log())]

    def serves(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/accounts/login/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def wait(self, predicate, what: str, timeout: float = START_BOUND_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None and what != "the stack to exit":
                break
            time.sleep(0.5)
        raise AssertionError(f"waiting for {what}; the stack's log ends:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


def worker_ready_count(log: str) -> int:
    return len(re.findall(r"worker@\S+ ready\.", log))


def test_a_killed_worker_is_restarted_while_the_web_keeps_serving_and_a_crash_loop_gives_up(tmp_path):
    stack = RunningStack(tmp_path)
    try:
        # 1. Everything is up: the web answers and the worker is ready.
        stack.wait(lambda: stack.serves() and worker_ready_count(stack.log()) == 1, "the stack to start")
        web = stack.pids("web (runserver)")
        first = stack.pids("celery worker")
        assert len(web) == 1 and len(first) == 1

        # 2. kill -9 the worker: the stack says so and starts another; the web never stops serving.
        os.killpg(first[0], signal.SIGKILL)
        served_during_restart = []

        def restarted() -> bool:
            served_during_restart.append(stack.serves())
            return len(stack.pids("celery worker")) == 2 and worker_ready_count(stack.log()) == 2

        stack.wait(restarted, "the worker to be restarted")
        log = stack.log()
        assert re.search(rf"celery worker \(pid {first[0]}\) exited unexpectedly \(exit code 137\); "
                         r"restarting it in 1 s \(crash 1 of 1 allowed within 900 s\)", log), log[-3000:]
        assert all(served_during_restart) and stack.serves()
        assert stack.pids("web (runserver)") == web and stack.process.poll() is None
        assert "shutting down" not in log and "giving up" not in log

        # 3. A second crash within the window: the stack gives up, stops everything and exits non-zero.
        second = stack.pids("celery worker")[1]
        os.killpg(second, signal.SIGKILL)
        stack.wait(lambda: stack.process.poll() is not None, "the stack to exit", timeout=120)
        log = stack.log()
        assert stack.process.returncode != 0
        assert re.search(rf"error: celery worker \(pid {second}\) exited unexpectedly \(exit code 137\) and has now "
                         r"crashed 2 times within 900 s; giving up and stopping everything", log), log[-3000:]
        assert "[stack] stopped" in log and not stack.serves()
    finally:
        stack.stop()
