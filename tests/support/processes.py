"""Real Celery processes for tests: workers and beat against the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """The URL of the test database, for child processes to use."""
    db = connection.settings_dict
    auth = quote(db["USER"]) + (":" + quote(db["PASSWORD"]) if db["PASSWORD"] else "")
    if db["HOST"].startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={quote(db['HOST'])}&port={db['PORT'] or 5432}"
    return f"postgresql://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


class CeleryProcess:
    """A `celery worker` or `celery beat` child in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ouroboros", *argv],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": test_database_url(), "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a kill reaches the pool children too
        )

    @classmethod
    def worker(cls, name: str, tmp_path: Path, env: dict[str, str] | None = None) -> "CeleryProcess":
        argv = ["worker", "-Q", "generation,curation", "-c", "1", "-n", f"{name}-{os.getpid()}@%h",
                "--loglevel=INFO", "--without-gossip", "--without-mingle"]
        return cls(name, argv, tmp_path / f"{name}.log", env)

    @classmethod
    def beat(cls, tmp_path: Path, env: dict[str, str] | None = None) -> "CeleryProcess":
        argv = ["beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--loglevel=INFO",
                "--max-interval", "2", "--schedule", str(tmp_path / "beat-schedule")]
        return cls("beat", argv, tmp_path / "beat.log", env)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown, no acknowledgement, no cleanup."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def wait_for(predicate, *, timeout: float, what: str, processes=(), interval: float = 0.5):
    """Poll until predicate() is true; fail early, with logs, if a watched process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in processes:
            if not proc.alive():
                raise AssertionError(f"{proc.name} died while waiting for {what}:\n{proc.log_tail()}")
        time.sleep(interval)
    logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in processes)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
