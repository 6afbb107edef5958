"""The load test of bench/load.py, short: reviewers at once on a real gunicorn, then every decision checked.

The bench runs 20 reviewers for 60 s over 10^5 samples (README, Benchmarks);
here 5 reviewers work for about 10 s over a few hundred samples, through the
same machinery: real logins with CSRF, htmx decisions, undos, reloads and
stale-tab decisions that must be refused, against the test database.
"""
from __future__ import annotations

import json

import pytest

from bench.load import Mix, prepare, run_load
from curation.models import Review, Sample
from tests.support.processes import test_database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_five_reviewers_at_once_lose_and_double_no_decision(tmp_path):
    lineage, accounts, pending = prepare(samples=1500, reviewers=5, tag="test")
    assert pending == 300

    result = run_load(lineage=lineage, accounts=accounts, database_url=test_database_url(), seconds=10,
                      baseline_seconds=2, server_workers=3, max_requests=5000, seed=7, log_dir=tmp_path,
                      mix=Mix(undo=0.1, reload=0.1, stale=0.1))
    summary = result.summary
    print(json.dumps(summary))  # the figures, for `pytest -s`

    assert result.problems == [], "\n".join(result.problems)
    assert summary["errors"] == summary["doubled"] == summary["lost"] == summary["unexpected"] == 0
    assert summary["status_mismatch"] == 0
    # Every kind of request was exercised, so the zeros above mean something.
    assert summary["decisions"] >= 10 and summary["undos"] >= 1
    assert summary["reloads"] >= 1 and summary["stale_tab_tries"] >= 1
    assert summary["stale_tab_refused"] == summary["stale_tab_tries"]
    assert summary["baseline"]["requests"] > 0
    # The database agrees on its own terms: the standing decisions are the decided samples.
    standing = Review.objects.filter(sample__lineage=lineage, undone_by__isnull=True).exclude(
        decision=Review.Decision.UNDO)
    decided = Sample.objects.filter(lineage=lineage, generation__status="open").exclude(status=Sample.Status.PENDING)
    assert standing.count() == decided.count() == summary["decisions"] - summary["undos"]
