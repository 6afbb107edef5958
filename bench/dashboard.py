"""The dashboard with 10⁶ samples, and computing one generation's metrics.

    .venv/bin/python -m ouroboros.stack bench bench.dashboard [--samples 1000000] [--generations 10]
                                                              [--embedded 20000]

1. Inserts `--samples` samples (in SQL, spread over `--generations` generations, a
   third of them reviewed) into a fresh lineage, with stored metrics per generation.
2. Times GET /dashboard/ (median of 5, after one warm-up) and counts its queries.
3. Gives `--embedded` samples of the open generation random unit embeddings and
   times `generation_metrics_compute` on it (what the task does).
Prints one JSON line last. Uses the bench services (`.data/bench`), never the app's data.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--embedded", type=int, default=20_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment
    from django.utils import timezone

    from curation.models import Generation, GenerationMetrics, SourcePassage
    from curation.services.lineages import lineage_create, passages_add
    from curation.services.metrics import generation_metrics_compute
    from tests.factories import demo_passages, make_user

    setup_test_environment()
    stamp = int(time.time())
    lineage = lineage_create(name=f"Bench {stamp}", slug=f"bench-{stamp}")
    passages_add(lineage=lineage, passages=demo_passages())
    curator = make_user(f"bench-curator-{stamp}", "curator")
    for number in range(2, args.generations + 1):
        Generation.objects.filter(lineage=lineage, status="open").update(status="closed")
        Generation.objects.create(lineage=lineage, number=number)
    generations = list(lineage.generations.order_by("number").values_list("id", flat=True))[1:]
    passage = SourcePassage.objects.filter(lineage=lineage).values_list("id", flat=True).first()

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO curation_sample (lineage_id, generation_id, passage_id, question, answer, alt_answers,
                                         dialogue, provenance, status, created_at, flagged_at)
            SELECT %s, (%s::bigint[])[1 + (i %% %s)], %s, 'Question ' || i || '?', 'Answer ' || i || '.',
                   '[]', '[]', '{}', CASE WHEN i %% 3 = 0 THEN 'accepted' WHEN i %% 3 = 1 THEN 'pending'
                   ELSE 'rejected' END, now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [lineage.pk, generations, len(generations), passage, args.samples],
        )
        cursor.execute(
            """
            INSERT INTO curation_review (sample_id, reviewer_id, decision, reason, created_at)
            SELECT id, %s, CASE WHEN status = 'accepted' THEN 'accept' ELSE 'reject' END, '',
                   now() - (random() * interval '48 hours')
            FROM curation_sample WHERE lineage_id = %s AND status <> 'pending'
            """,
            [curator.pk, lineage.pk],
        )
        cursor.execute("ANALYZE curation_sample; ANALYZE curation_review;")
    insert_s = time.perf_counter() - started
    for generation_id in [g for g in lineage.generations.values_list("id", flat=True)]:
        GenerationMetrics.objects.create(generation_id=generation_id, fingerprint="bench", computed_at=timezone.now(),
                                         generated=args.samples // args.generations, pairwise_distance=0.5,
                                         vendi=10.0, accept_rate=0.5)

    client = Client()
    client.force_login(curator)
    client.get("/dashboard/")
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        response = client.get("/dashboard/", {"lineage": lineage.slug})
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get("/dashboard/", {"lineage": lineage.slug})

    # Metrics of the open generation: give some of its samples random unit embeddings.
    open_generation = lineage.generations.get(status="open")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE curation_sample SET embedding = sub.v FROM (
                SELECT s.id, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 384) WHERE s.id > 0)::vector AS v
                FROM curation_sample s WHERE s.generation_id = %s ORDER BY s.id LIMIT %s
            ) AS sub WHERE curation_sample.id = sub.id
            """,
            [open_generation.pk, args.embedded],
        )
    started = time.perf_counter()
    metrics = generation_metrics_compute(generation=open_generation)
    metrics_s = time.perf_counter() - started

    print(json.dumps({
        "bench": "dashboard",
        "samples": args.samples,
        "generations": args.generations,
        "insert_s": round(insert_s, 1),
        "dashboard_median_ms": round(statistics.median(timings) * 1000, 1),
        "dashboard_max_ms": round(max(timings) * 1000, 1),
        "dashboard_queries": len(queries.captured_queries),
        "metrics_samples": metrics.generated,
        "metrics_embedded": metrics.params["generated_embedded"],
        "metrics_s": round(metrics_s, 1),
    }))


if __name__ == "__main__":
    main()
