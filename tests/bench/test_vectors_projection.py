"""The projection bench/vectors.py prints: fits checked on curves with a known answer (no database)."""
from __future__ import annotations

import math

import pytest

from bench.vectors import fit_log, fit_through_origin, project


def test_a_logarithmic_latency_curve_is_recovered_and_extended():
    ns = [10_000, 100_000, 1_000_000]
    a, b = fit_log(ns, [2.0 + 0.5 * math.log(n) for n in ns])
    assert (a, b) == (pytest.approx(2.0), pytest.approx(0.5))


def test_one_size_gives_a_flat_line_not_a_crash():
    assert fit_log([10_000], [3.0]) == (3.0, 0.0)


def test_a_per_item_cost_has_no_intercept():
    assert fit_through_origin([1, 2, 4], [3, 6, 12]) == pytest.approx(3.0)


def test_the_projection_extends_every_fitted_quantity_to_ten_and_a_hundred_million():
    curve = [{"n": n, "p50_ms": 1 + 0.25 * math.log(n), "p95_ms": 2 + 0.5 * math.log(n),
              "index_mb": 2e-3 * n, "build_s": 1e-6 * n * math.log(n)} for n in (10_000, 100_000, 1_000_000)]

    projection = project(curve)

    ten_million, hundred_million = projection["points"]
    assert ten_million["n"] == 10_000_000 and hundred_million["n"] == 100_000_000
    assert ten_million["p50_ms"] == pytest.approx(1 + 0.25 * math.log(1e7), abs=0.01)
    assert hundred_million["p95_ms"] == pytest.approx(2 + 0.5 * math.log(1e8), abs=0.01)
    assert hundred_million["index_mb"] == pytest.approx(200_000, rel=1e-6)
    assert ten_million["build_s"] == pytest.approx(1e-6 * 1e7 * math.log(1e7), abs=1)
    assert projection["fit"]["fitted_on"] == [10_000, 100_000, 1_000_000]
    assert "ln(n)" in projection["fit"]["p95_ms"]
