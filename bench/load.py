"""Many reviewers on the review queue at once, through a real web server, then a check of every decision.

    CELERY_BROKER_URL=redis://127.0.0.1:6379/N \\
    .venv/bin/python -m ouroboros.stack bench bench.load [--reviewers 20] [--seconds 60] [--samples 100000]
        [--server-workers 5] [--baseline-seconds 10] [--max-requests 200000] [--seed 1]

1. Fill: one lineage of `--samples` samples with bench/review.py's `fill` (a
   fifth of them pending in the open generation) and `--reviewers` users with
   the reviewer role.
2. Serve: gunicorn (sync workers, `--server-workers`) on 127.0.0.1 and a free
   port, running the app in production mode (`DJANGO_DEBUG=0`, persistent
   database connections, bench/load_site.py) against the same database.
   Loopback only: nothing here ever sends a request elsewhere.
3. Log in: every reviewer is its own HTTP session (its own cookie jar) and logs
   in, a few at a time, as a browser does: GET the login form, POST it with the CSRF token, follow
   the redirect to the queue page, read the X-CSRFToken header htmx will send.
4. Baseline: for `--baseline-seconds`, the same sessions at the same
   concurrency GET `/bench/ok`, a page behind the same login and middleware
   that renders nothing.
5. Load: for `--seconds`, each reviewer works the queue with no think time, as
   the htmx page does: POST accept or reject (with one of the lineage's
   reasons) and read the next card from the response; now and then reload the
   queue page (the held card must come back), undo its latest standing
   decision (the undone card must come back), or try to decide a card another
   reviewer holds right now (a stale tab: it must be refused). Every request
   has a 30 s timeout (a login 120 s: hashing the password is slow on
   purpose) and the run stops at `--max-requests` in all.
6. Check, in the database, against what the clients saw: every response was
   2xx and what the page said it would be (`errors`); no sample has two
   standing first-review decisions (`doubled`); the log holds exactly the
   decisions and undos the clients were told succeeded, no more (`lost`,
   `unexpected`); every sample's status agrees with its standing decision.

Prints one JSON line last; exits 1 when any of the checks fails. The ratios
compare the decide request with the baseline page in the same run.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

ROOT = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT_S = 30.0
LOGIN_TIMEOUT_S = 120.0  # a login hashes the password (PBKDF2), on purpose slow
SERVER_START_TIMEOUT_S = 60.0

CARD = re.compile(r'data-sample="(\d+)"')
CSRF_HEADER = re.compile(r'"X-CSRFToken": "([^"]+)"')
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
NOTICE = re.compile(r'<p class="notice (\w+)" role="status">(.*?)</p>', re.S)
REASON = re.compile(r'name="reason" value="([^"]+)"')
QUERY = re.compile(r'name="q" value="([^"]*)"')
DECIDED = re.compile(r"Sample (\d+) (accepted|rejected)\.")
UNDONE = re.compile(r"Undid your (accept|reject) of sample (\d+)\.")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values (a phase that made no request reports zeros, not a crash)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_summary(values: list[float]) -> dict:
    return {"p50_ms": round(percentile(values, 0.50), 1), "p95_ms": round(percentile(values, 0.95), 1),
            "p99_ms": round(percentile(values, 0.99), 1)}


# ---------------------------------------------------------------------------------------------- the server


class Server:
    """gunicorn serving the app on 127.0.0.1 and a free port, in its own process group."""

    def __init__(self, *, database_url: str, workers: int, log_path: Path, conn_max_age: int = 60):
        from ouroboros.stack import free_tcp_port

        self.port = free_tcp_port("127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.load_site",
            "DATABASE_URL": database_url,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),  # production mode refuses the default key
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            # A deployment keeps its database connections; opening one per request would be measured instead.
            "DJANGO_CONN_MAX_AGE": str(conn_max_age),
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "gunicorn", "ouroboros.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
                "--workers", str(workers), "--worker-class", "sync", "--timeout", "60", "--graceful-timeout", "10",
                "--log-level", "warning"]
        self._log = log_path.open("w")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        """Until the login page answers 200; fail with the server's log if it dies or never answers."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        opener = build_opener()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.base}/accounts/login/", timeout=5) as response:
                    if response.status == 200:
                        return
            except (URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer within {SERVER_START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the group (gunicorn stops its workers), SIGKILL it if that takes too long."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> "Server":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------- a reviewer


@dataclass
class Board:
    """What every reviewer can see of the others: the card each one holds right now (for stale-tab tries)."""

    holding: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def show(self, username: str, sample_id: int | None) -> None:
        with self.lock:
            if sample_id is None:
                self.holding.pop(username, None)
            else:
                self.holding[username] = sample_id

    def someone_elses(self, username: str, rng: random.Random) -> int | None:
        with self.lock:
            others = [pk for name, pk in self.holding.items() if name != username]
        return rng.choice(others) if others else None


@dataclass
class Mix:
    """Shares of the requests a reviewer makes; the rest are decisions on its own card."""

    undo: float = 0.05
    reload: float = 0.05
    stale: float = 0.03
    reject: float = 0.35  # of the decisions


class Reviewer:
    """One logged-in browser session working the queue, keeping a ledger of what the server said it did."""

    def __init__(self, *, base: str, username: str, password: str, lineage_slug: str, seed: int, board: Board,
                 mix: Mix):
        self.base = base
        self.username = username
        self.password = password
        self.query = urlencode({"lineage": lineage_slug})
        self.rng = random.Random(seed)
        self.board = board
        self.mix = mix
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()))
        self.csrf = ""
        self.card: int | None = None
        self.held: set[int] = set()  # cards shown to this reviewer and not decided by it: its leases
        self.reasons: list[str] = []
        self.requests = 0
        self.errors: list[str] = []
        self.latency: dict[str, list[float]] = {"decide": [], "undo": [], "reload": [], "stale": [], "baseline": [],
                                                "login": []}
        self.actions: list[tuple[str, int, str]] = []  # (username, sample, decision or "undo"): what the server did
        self.standing: list[tuple[int, str]] = []  # this reviewer's decisions not undone, oldest first
        self.refused = 0  # stale-tab decisions the server refused, as it must
        self.queue_empty = False

    # -- HTTP

    def _send(self, kind: str, method: str, path: str, data: dict | None = None, *, htmx: bool = False,
              timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, str]:
        headers = {"Accept": "text/html"}
        if method == "POST":
            headers.update({"X-CSRFToken": self.csrf, "Origin": self.base,
                            "Content-Type": "application/x-www-form-urlencoded"})
        if htmx:
            headers.update({"HX-Request": "true", "HX-Target": "review-card"})
        body = urlencode(data).encode() if data is not None else None
        request = Request(self.base + path, data=body, headers=headers, method=method)
        started = time.perf_counter()
        self.requests += 1
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode("utf-8", "replace")
        except HTTPError as exc:
            status, text = exc.code, exc.read().decode("utf-8", "replace")
        except (URLError, OSError) as exc:  # refused, reset, timed out: the server failed this request
            status, text = 0, f"{type(exc).__name__}: {exc}"
        self.latency[kind].append((time.perf_counter() - started) * 1000)
        if not 200 <= status < 300:
            self.error(f"{method} {path} answered {status or 'nothing'}: {text[:200]!r}")
        return status, text

    def error(self, message: str) -> None:
        self.errors.append(f"{self.username}: {message}")

    def _read_card(self, text: str) -> int | None:
        match = CARD.search(text)
        self.card = int(match.group(1)) if match else None
        if self.card is not None:
            self.held.add(self.card)
        if self.card is not None and not self.reasons:
            self.reasons = [r for r in REASON.findall(text) if r != "other"]
        query = QUERY.search(text)
        if query:
            self.query = html.unescape(query.group(1))
        if self.card is None:
            self.queue_empty = 'id="queue-empty"' in text
            if not self.queue_empty:
                self.error(f"a page with neither a card nor 'nothing left': {text[:200]!r}")
        self.board.show(self.username, self.card)
        return self.card

    @staticmethod
    def _notice(text: str) -> tuple[str, str]:
        match = NOTICE.search(text)
        return (match.group(1), html.unescape(match.group(2))) if match else ("", "")

    # -- what a browser does

    def login(self) -> None:
        """GET the form, POST it with its CSRF token, land on the queue page: as a browser, no shortcut."""
        next_url = f"/review/?{self.query}"
        status, text = self._send("login", "GET", "/accounts/login/?" + urlencode({"next": next_url}),
                                  timeout=LOGIN_TIMEOUT_S)
        token = CSRF_FIELD.search(text)
        if status != 200 or not token:
            self.error("the login form has no CSRF token")
            return
        self.csrf = token.group(1)  # the form's token; the cookie holds the secret it is checked against
        status, text = self._send("login", "POST", "/accounts/login/", {
            "username": self.username, "password": self.password, "csrfmiddlewaretoken": token.group(1),
            "next": next_url,
        }, timeout=LOGIN_TIMEOUT_S)
        header = CSRF_HEADER.search(text)
        if status != 200 or not header or "Log in</h1>" in text:
            self.error(f"login failed: {text[:200]!r}")
            return
        self.csrf = header.group(1)  # login rotates the token; htmx sends the one in <body hx-headers>
        self._read_card(text)

    def baseline(self, deadline: float, budget: int) -> None:
        limit = self.requests + budget
        while time.monotonic() < deadline and self.requests < limit:
            status, text = self._send("baseline", "GET", "/bench/ok")
            if status == 200 and text != "ok":
                self.error(f"/bench/ok answered {text[:80]!r}")

    def work(self, deadline: float, budget: int) -> None:
        limit = self.requests + budget
        while time.monotonic() < deadline and self.requests < limit and not self.errors:
            if self.card is None:
                self.reload()
                if self.card is None:
                    return  # the queue is empty for everyone: nothing left to do
                continue
            roll = self.rng.random()
            mix = self.mix
            if roll < mix.undo and self.standing:
                self.undo()
            elif roll < mix.undo + mix.reload:
                self.reload()
            elif roll < mix.undo + mix.reload + mix.stale:
                self.decide_stale()
            else:
                self.decide()

    def decide(self) -> None:
        sample = self.card
        data = {"decision": "accept", "q": self.query}
        if self.reasons and self.rng.random() < self.mix.reject:
            data = {"decision": "reject", "reason": self.rng.choice(self.reasons), "q": self.query}
        status, text = self._send("decide", "POST", f"/review/{sample}/decide/", data, htmx=True)
        if status != 200:
            return
        level, notice = self._notice(text)
        done = DECIDED.fullmatch(notice)
        if level != "success" or not done or int(done.group(1)) != sample:
            self.error(f"deciding its own card {sample} was not confirmed: {level} {notice!r}")
            return
        self.actions.append((self.username, sample, data["decision"]))
        self.standing.append((sample, data["decision"]))
        self.held.discard(sample)
        self._read_card(text)

    def decide_stale(self) -> None:
        """Decide a card that another reviewer holds, as from a stale tab: the server must refuse it."""
        sample = self.board.someone_elses(self.username, self.rng)
        if sample is None:
            return self.decide()
        status, text = self._send("stale", "POST", f"/review/{sample}/decide/",
                                  {"decision": "accept", "q": self.query}, htmx=True)
        if status != 200:
            return
        level, notice = self._notice(text)
        if level == "success":
            # Only possible once the holder's lease ran out; then it really is this reviewer's decision.
            self.actions.append((self.username, sample, "accept"))
            self.standing.append((sample, "accept"))
        elif level == "warning" and (f"Sample {sample} is being reviewed by" in notice
                                     or f"Sample {sample} was already decided" in notice):
            self.refused += 1
        else:
            self.error(f"a stale-tab decision on {sample} got {level} {notice!r}")
            return
        self._read_card(text)

    def undo(self) -> None:
        expected_sample, expected_decision = self.standing[-1]
        status, text = self._send("undo", "POST", "/review/undo/", {"q": self.query}, htmx=True)
        if status != 200:
            return
        level, notice = self._notice(text)
        done = UNDONE.fullmatch(notice)
        if level != "success" or not done or (int(done.group(2)), done.group(1)) != (expected_sample,
                                                                                      expected_decision):
            self.error(f"undo of {expected_decision} {expected_sample} answered {level} {notice!r}")
            return
        self.standing.pop()
        self.actions.append((self.username, expected_sample, "undo"))
        if self._read_card(text) != expected_sample:
            self.error(f"after undoing {expected_sample} the card shown was {self.card}")

    def reload(self) -> None:
        """GET the queue page, as a reload does: one of the cards this reviewer holds must come back."""
        held = set(self.held)
        status, text = self._send("reload", "GET", f"/review/?{self.query}")
        if status != 200:
            return
        if held and self._read_card(text) not in held:
            self.error(f"a reload showed card {self.card}, not one of the held cards {sorted(held)}")
        elif not held:
            self._read_card(text)


def run_phase(reviewers: list[Reviewer], target) -> float:
    """Run `target(reviewer)` in one thread per reviewer, all at once; the wall time in seconds."""
    threads = [threading.Thread(target=target, args=(r,), name=r.username, daemon=True) for r in reviewers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- data and check


def prepare(*, samples: int, reviewers: int, tag: str):
    """A lineage filled with `samples` samples (bench/review.py's fill) and `reviewers` reviewer accounts."""
    from bench.review import fill
    from curation.models import Sample
    from curation.services.lineages import lineage_create, passages_add
    from tests.factories import REVIEWER, demo_passages, make_user

    lineage = lineage_create(name=f"bench load {tag}", slug=f"bench-load-{tag}")
    passages_add(lineage=lineage, passages=demo_passages(4))
    fill(lineage, samples)
    users = [make_user(f"load-{tag}-{i:02d}", REVIEWER) for i in range(reviewers)]
    accounts = [(user.username, "pw-" + user.username) for user in users]  # make_user's password
    pending = Sample.objects.filter(lineage=lineage, status=Sample.Status.PENDING).count()
    return lineage, accounts, pending


def check_database(*, lineage, reviewers: list[Reviewer]) -> dict:
    """Compare the review log and the samples' statuses with what the clients were told."""
    from curation.models import Generation, Review, Sample

    rows = list(Review.objects.filter(sample__lineage=lineage, overlap=False)
                .values_list("id", "reviewer__username", "sample_id", "decision", "undoes_id"))
    in_db = Counter((user, sample, decision) for _, user, sample, decision, _ in rows)
    seen = Counter(action for r in reviewers for action in r.actions)
    undone = {undoes for *_, undoes in rows if undoes is not None}
    standing = [(sample, decision) for pk, _, sample, decision, _ in rows
                if decision != Review.Decision.UNDO and pk not in undone]
    per_sample = Counter(sample for sample, _ in standing)
    expected: dict[int, set[str]] = {}  # a sample's statuses by its standing decisions: one, or a conflict
    for sample, decision in standing:
        expected.setdefault(sample, set()).add(
            Sample.Status.REJECTED if decision == Review.Decision.REJECT else Sample.Status.ACCEPTED)
    open_generation = Generation.objects.get(lineage=lineage, status=Generation.Status.OPEN)
    statuses = dict(Sample.objects.filter(generation=open_generation).values_list("id", "status"))
    mismatched = [pk for pk, status in statuses.items() if expected.get(pk, {Sample.Status.PENDING}) != {status}]
    return {
        "doubled": sum(1 for count in per_sample.values() if count > 1),
        "lost": sum((seen - in_db).values()),
        "unexpected": sum((in_db - seen).values()),
        "status_mismatch": len(mismatched),
        "examples": {"lost": list((seen - in_db))[:5], "unexpected": list((in_db - seen))[:5],
                     "status_mismatch": mismatched[:5]},
    }


@dataclass
class LoadResult:
    summary: dict
    problems: list[str]


def run_load(*, lineage, accounts: list[tuple[str, str]], database_url: str, seconds: float,
             baseline_seconds: float, server_workers: int, max_requests: int, seed: int, log_dir: Path,
             mix: Mix = Mix()) -> LoadResult:
    """Steps 2–6 of the module docstring, on a lineage and accounts already in the database."""
    import gunicorn

    board = Board()
    budget = max(1, max_requests // len(accounts))
    with Server(database_url=database_url, workers=server_workers, log_path=log_dir / "gunicorn.log") as server:
        reviewers = [Reviewer(base=server.base, username=name, password=password, lineage_slug=lineage.slug,
                              seed=seed * 1000 + i, board=board, mix=mix)
                     for i, (name, password) in enumerate(accounts)]
        # Reviewers arrive a few at a time (as many as the server has workers), not all in one second.
        login_s = sum(run_phase(reviewers[i:i + server_workers], Reviewer.login)
                      for i in range(0, len(reviewers), server_workers))
        logged_in = not any(r.errors for r in reviewers)
        baseline_s = seconds_run = 0.0
        if logged_in and baseline_seconds > 0:
            until = time.monotonic() + baseline_seconds
            baseline_s = run_phase(reviewers, lambda r, until=until: r.baseline(until, budget))
        if logged_in:
            until = time.monotonic() + seconds
            seconds_run = run_phase(reviewers, lambda r, until=until: r.work(until, budget))
        server_log = server.log_tail()
    check = check_database(lineage=lineage, reviewers=reviewers)

    errors = [e for r in reviewers for e in r.errors]
    lat = {kind: [ms for r in reviewers for ms in r.latency[kind]] for kind in reviewers[0].latency}
    decisions = sum(1 for r in reviewers for _, _, d in r.actions if d != "undo")
    undos = sum(1 for r in reviewers for _, _, d in r.actions if d == "undo")
    work_requests = sum(len(lat[k]) for k in ("decide", "undo", "reload", "stale"))
    decide, base = latency_summary(lat["decide"]), latency_summary(lat["baseline"])
    baseline_rps = len(lat["baseline"]) / baseline_s if baseline_s else 0.0
    summary = {
        "bench": "load",
        "server": f"gunicorn {gunicorn.__version__}, {server_workers} sync workers, 127.0.0.1",
        "reviewers": len(reviewers),
        "seconds": round(seconds_run, 1),
        "login_seconds": round(login_s, 1),
        "requests": work_requests,
        "decisions": decisions,
        "undos": undos,
        "reloads": len(lat["reload"]),
        "stale_tab_tries": len(lat["stale"]),
        "stale_tab_refused": sum(r.refused for r in reviewers),
        "queue_emptied": any(r.queue_empty for r in reviewers),
        "decisions_per_s": round(decisions / seconds_run, 2) if seconds_run else 0.0,
        **decide,
        "all_requests": latency_summary([ms for k in ("decide", "undo", "reload", "stale") for ms in lat[k]]),
        "errors": len(errors),
        "doubled": check["doubled"],
        "lost": check["lost"],
        "unexpected": check["unexpected"],
        "status_mismatch": check["status_mismatch"],
        "baseline": {"endpoint": "GET /bench/ok (same login, middleware and concurrency, renders nothing)",
                     "seconds": round(baseline_s, 1), "requests": len(lat["baseline"]),
                     "requests_per_s": round(baseline_rps, 1), **base},
        "ratio_p50": round(decide["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] else None,
        "ratio_p95": round(decide["p95_ms"] / base["p95_ms"], 2) if base["p95_ms"] else None,
        "ratio_throughput": round(decisions / seconds_run / baseline_rps, 3) if baseline_rps and seconds_run else None,
    }
    problems = errors[:10]
    if not decisions:
        problems.append("no decision was made")
    for name in ("doubled", "lost", "unexpected", "status_mismatch"):
        if check[name]:
            problems.append(f"{name}: {check[name]} (e.g. {check['examples'].get(name)})")
    if problems and server_log.strip():
        problems.append("end of the server's log:\n" + server_log)
    return LoadResult(summary, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--server-workers", type=int, default=2 * (os.cpu_count() or 1) + 1,
                        help="gunicorn sync workers (default 2 × cores + 1, gunicorn's own advice)")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="a ceiling on requests per phase, in all")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.reviewers < 1 or args.seconds <= 0 or args.samples < 5:
        parser.error("--reviewers must be ≥ 1, --seconds > 0 and --samples ≥ 5")

    import django

    # `timeout` or Ctrl-C must still reach the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django.setup()
    from django.db import connection

    started = time.perf_counter()
    lineage, accounts, pending = prepare(samples=args.samples, reviewers=args.reviewers,
                                         tag=time.strftime("%Y%m%d%H%M%S"))
    fill_s = time.perf_counter() - started
    connection.close()  # the server's workers get the connections; this process reconnects for the check
    result = run_load(lineage=lineage, accounts=accounts, database_url=os.environ["DATABASE_URL"],
                      seconds=args.seconds, baseline_seconds=args.baseline_seconds,
                      server_workers=args.server_workers, max_requests=args.max_requests, seed=args.seed,
                      log_dir=Path(tempfile.mkdtemp(prefix="bench-load-")))
    for problem in result.problems:
        print(problem, file=sys.stderr)
    print(json.dumps({**result.summary, "samples": args.samples, "pending_at_start": pending,
                      "fill_seconds": round(fill_s, 1)}))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
