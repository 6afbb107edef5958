"""Near-duplicate look-ups in pgvector HNSW at growing table sizes, against exact search in the same run.

    .venv/bin/python -m ouroboros.stack bench bench.vectors [--sizes 10000,100000,1000000] [--queries 200]
        [--m M] [--ef-construction EFC] [--ef-search 40,100,200,400] [--k K] [--workers 2]
    # or, with the services up (python -m ouroboros.stack services prints DATABASE_URL):
    .venv/bin/python -m bench.vectors [same arguments]

One table of synthetic 384-d unit vectors grows to each size in turn; at each
size the HNSW index (vector_cosine_ops, the app's opclass and m /
ef_construction) is built from scratch and timed, then `--queries` nearest-
neighbour look-ups (`ORDER BY embedding <=> q LIMIT 1`, as the flagging
service runs them) are timed one by one. Recall@1 is the share whose answer is
the exact nearest neighbour, computed by brute force in numpy on the same
vectors.

The vectors are a mixture of Gaussian clusters on the sphere (text embeddings
cluster by topic; uniform random vectors would be an unrealistically hard
case), and half the queries are near-copies of stored vectors (the
near-duplicate case), half fresh points from the same mixture.

Each size is timed at every `--ef-search` value (the index is built once per
size); the app's own value (`OUROBOROS_HNSW_EF_SEARCH`, default 100) is always
among them, and m / ef_construction default to those of the app's sample index.
Each look-up is also run with `LIMIT k` (`--k`, default the app's grounding
top-k, 8) for recall@k: the share of the exact k nearest found.

Prints one JSON line per size, then one JSON line last with: per size, the
smallest ef_search reaching recall@1 ≥ 0.98; the curve at the app's ef_search
(p50/p95 ms, recall@1, recall@k, build time, index size); and a projection to
10^7 and 10^8 from two least-squares fits, named in the output: latency
= a + b·ln(n) (HNSW visits O(log n) layers), index MB = c·n, and build seconds
= d·n·ln(n). The projection holds only while the index stays in memory.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")

DIM = 384
TABLE = "bench_vectors"
PROJECT_TO = (10_000_000, 100_000_000)


def app_index_params() -> tuple[int, int]:
    """m and ef_construction of the app's sample-embedding HNSW index, read from the model."""
    from pgvector.django import HnswIndex

    from curation.models import Sample

    index = next(i for i in Sample._meta.indexes if isinstance(i, HnswIndex))
    return index.m, index.ef_construction


def fit_log(ns: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b·ln(n); with one point, a flat line."""
    x = np.log(np.asarray(ns, dtype=float))
    y = np.asarray(ys, dtype=float)
    if len(set(ns)) < 2:
        return float(y.mean()), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def fit_through_origin(xs: list[float], ys: list[float]) -> float:
    """Least squares y = c·x (no intercept): what a per-item cost looks like."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    return float((x @ y) / (x @ x))


def project(curve: list[dict], targets=PROJECT_TO) -> dict:
    """Fit the measured curve and extrapolate it to `targets` stored vectors (see the module docstring)."""
    ns = [row["n"] for row in curve]
    p50 = fit_log(ns, [row["p50_ms"] for row in curve])
    p95 = fit_log(ns, [row["p95_ms"] for row in curve])
    mb_per_vector = fit_through_origin(ns, [row["index_mb"] for row in curve])
    build_per_nlogn = fit_through_origin([n * np.log(n) for n in ns], [row["build_s"] for row in curve])
    return {
        "fit": {
            "p50_ms": f"{p50[0]:.3f} + {p50[1]:.3f}*ln(n)",
            "p95_ms": f"{p95[0]:.3f} + {p95[1]:.3f}*ln(n)",
            "index_mb": f"{mb_per_vector * 1e6:.1f} MB per 10^6 vectors (linear in n)",
            "build_s": f"{build_per_nlogn:.3e} * n*ln(n)",
            "fitted_on": ns,
        },
        "points": [
            {
                "n": n,
                "p50_ms": round(p50[0] + p50[1] * np.log(n), 2),
                "p95_ms": round(p95[0] + p95[1] * np.log(n), 2),
                "index_mb": round(mb_per_vector * n),
                "build_s": round(build_per_nlogn * n * np.log(n)),
            }
            for n in targets
        ],
    }


def mixture(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float) -> np.ndarray:
    which = rng.integers(0, len(centers), size=n)
    points = centers[which] + rng.normal(0.0, spread, size=(n, DIM)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--m", type=int, help="default: the app's sample index")
    parser.add_argument("--ef-construction", type=int, help="default: the app's sample index")
    parser.add_argument("--ef-search", default="40,100,200,400",
                        help="hnsw.ef_search values to time, comma-separated (the app's is always added)")
    parser.add_argument("--k", type=int, help="LIMIT of the recall@k look-ups (default: the app's grounding top-k)")
    parser.add_argument("--workers", type=int, default=1, help="max_parallel_maintenance_workers for the build")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from pgvector.psycopg import register_vector

    app_ef_search = settings.OUROBOROS["HNSW_EF_SEARCH"]
    ef_searches = sorted({int(e) for e in args.ef_search.split(",")} | {app_ef_search})
    app_m, app_ef_construction = app_index_params()
    args.m = args.m or app_m
    args.ef_construction = args.ef_construction or app_ef_construction
    k = args.k or settings.OUROBOROS["GROUNDING_TOP_K"]

    rng = np.random.default_rng(args.seed)
    centers = rng.normal(size=(2000, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    spread = 0.045  # members of a cluster sit at cosine ≈ 0.55 from each other, like answers on one topic
    started = time.perf_counter()
    data = np.concatenate([mixture(rng, centers, min(100_000, sizes[-1] - i), spread)
                           for i in range(0, sizes[-1], 100_000)])
    generate_s = time.perf_counter() - started

    connection.ensure_connection()
    conn = connection.connection
    register_vector(conn)
    conn.autocommit = True
    results = []
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(f"CREATE UNLOGGED TABLE {TABLE} (id bigint PRIMARY KEY, embedding vector({DIM}) NOT NULL)")
        loaded = 0
        try:
            for size in sizes:
                # Load without the index: HNSW inserts one by one are far slower than a fresh build.
                cur.execute("DROP INDEX IF EXISTS bench_vectors_hnsw")
                started = time.perf_counter()
                with cur.copy(f"COPY {TABLE} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "vector"])
                    for i in range(loaded, size):
                        copy.write_row((i, data[i]))
                load_s = time.perf_counter() - started
                loaded = size
                stored = data[:size]

                cur.execute("SET maintenance_work_mem = '3GB'")
                cur.execute(f"SET max_parallel_maintenance_workers = {args.workers}")
                started = time.perf_counter()
                cur.execute(
                    f"CREATE INDEX bench_vectors_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {args.m}, ef_construction = {args.ef_construction})"
                )
                build_s = time.perf_counter() - started
                cur.execute("SELECT pg_relation_size('bench_vectors_hnsw'), pg_relation_size(%s)", [TABLE])
                index_bytes, table_bytes = cur.fetchone()
                cur.execute("VACUUM ANALYZE " + TABLE)

                half = args.queries // 2
                copies = stored[rng.integers(0, size, size=half)] + rng.normal(0, 0.01, size=(half, DIM))
                fresh = mixture(rng, centers, args.queries - half, spread)
                queries = np.concatenate([copies, fresh]).astype(np.float32)
                queries /= np.linalg.norm(queries, axis=1, keepdims=True)
                started = time.perf_counter()
                exact = np.concatenate([(q @ stored.T).argmax(axis=1) for q in np.array_split(queries, 8)])
                exact_s = time.perf_counter() - started
                exact_k = np.concatenate([np.argpartition(-(q @ stored.T), k - 1, axis=1)[:, :k]
                                          for q in np.array_split(queries, 8)])

                row = {
                    "n": size,
                    "build_s": round(build_s, 1),
                    "load_s": round(load_s, 1),
                    "index_mb": round(index_bytes / 2**20, 1),
                    "table_mb": round(table_bytes / 2**20, 1),
                    "exact_numpy_ms_per_query": round(exact_s * 1000 / len(queries), 2),
                    "by_ef_search": [],
                }
                # At small sizes and large ef_search the planner rightly prefers an exact scan; this
                # bench measures the index, so it is told not to.
                cur.execute("SET enable_seqscan = off")
                for ef_search in ef_searches:
                    cur.execute(f"SET hnsw.ef_search = {ef_search}")
                    cur.execute(f"EXPLAIN SELECT id FROM {TABLE} ORDER BY embedding <=> %s LIMIT 1", [queries[0]])
                    plan = " ".join(r[0] for r in cur.fetchall())
                    assert "bench_vectors_hnsw" in plan, f"the planner did not use the HNSW index: {plan[:300]}"
                    for q in queries[:10]:  # warm the index pages
                        cur.execute(f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s LIMIT 1", [q])
                        cur.fetchone()
                    latencies, found = [], []
                    for q in queries:
                        t = time.perf_counter()
                        cur.execute(f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s LIMIT 1", [q])
                        found.append(cur.fetchone()[0])
                        latencies.append((time.perf_counter() - t) * 1000)
                    hit = np.asarray(found) == exact
                    found_k = 0
                    for q, truth in zip(queries, exact_k):
                        cur.execute(f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s LIMIT {k}", [q])
                        found_k += len({row[0] for row in cur.fetchall()} & set(truth.tolist()))
                    row["by_ef_search"].append({
                        "ef_search": ef_search,
                        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                        "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                        "recall_at_1": round(float(hit.mean()), 4),
                        "recall_at_1_near_copies": round(float(hit[:half].mean()), 4),
                        "recall_at_1_fresh": round(float(hit[half:].mean()), 4),
                        f"recall_at_{k}": round(found_k / (k * len(queries)), 4),
                    })
                results.append(row)
                print(json.dumps(row), flush=True)
        finally:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")

    def chosen(row: dict) -> dict:
        """The smallest ef_search that reaches recall@1 ≥ 0.98 at this size (else the best recall)."""
        ok = [r for r in row["by_ef_search"] if r["recall_at_1"] >= 0.98]
        return ok[0] if ok else max(row["by_ef_search"], key=lambda r: r["recall_at_1"])

    summary = [{"n": r["n"], **chosen(r), "build_s": r["build_s"], "index_mb": r["index_mb"]} for r in results]
    same_ef = [next(e for e in r["by_ef_search"] if e["ef_search"] == max(ef_searches)) for r in results]
    curve = []
    for r in results:
        at_app = next(e for e in r["by_ef_search"] if e["ef_search"] == app_ef_search)
        curve.append({"n": r["n"], "p50_ms": at_app["p50_ms"], "p95_ms": at_app["p95_ms"],
                      "recall_at_1": at_app["recall_at_1"], f"recall_at_{k}": at_app[f"recall_at_{k}"],
                      "build_s": r["build_s"], "index_mb": r["index_mb"]})
    print(json.dumps({
        "bench": "vectors",
        "dim": DIM,
        "queries": args.queries,
        "m": args.m,
        "ef_construction": args.ef_construction,
        "ef_search_tried": ef_searches,
        "parallel_build_workers": args.workers,
        "generate_s": round(generate_s, 1),
        "chosen": summary,
        "min_recall_at_1": min(s["recall_at_1"] for s in summary),
        "p95_ratio_largest_vs_smallest_at_chosen": round(summary[-1]["p95_ms"] / summary[0]["p95_ms"], 2),
        "p95_ratio_largest_vs_smallest_at_max_ef": round(same_ef[-1]["p95_ms"] / same_ef[0]["p95_ms"], 2),
        "app_ef_search": app_ef_search,
        "k": k,
        "curve_at_app_ef_search": curve,
        "projection": project(curve),
    }))


if __name__ == "__main__":
    main()
