"""Server time of the review queue's hot path, "decide + fetch the next card",
against a trivial view in the same run, over a database of 10^6 samples.

    make bench-review                  # = python -m ouroboros.stack bench bench.review
    make bench-review BENCH_ARGS="--samples 100000 --requests 200"

1. Fill: one lineage, five generations (four closed, one open), `--samples`
   rows written with INSERT ... SELECT generate_series (a fifth pending in the
   open generation, the rest decided), then VACUUM ANALYZE.
2. Measure in-process through Django's test client (middleware, session auth,
   templates, the database; no network): `--requests` htmx POSTs that accept the
   current card and render the next, and as many GETs of a view that only
   returns "ok" behind the same login.
Prints the plan of the next-card query, then one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ouroboros.settings")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fill(lineage, samples: int) -> None:
    from django.db import connection

    from curation.models import Generation

    open_gen = Generation.objects.get(lineage=lineage, status="open")
    closed = [Generation.objects.create(lineage=lineage, number=open_gen.number + i + 1, status="closed")
              for i in range(4)]
    passage_id = lineage.passages.values_list("id", flat=True).first()
    per_closed = samples * 4 // 5 // 4
    pending = samples - per_closed * 4
    with connection.cursor() as cursor:
        for generation, count, status_sql in [(g, per_closed, "CASE WHEN i %% 3 = 0 THEN 'rejected' ELSE 'accepted' END")
                                              for g in closed] + [(open_gen, pending, "'pending'")]:
            cursor.execute(f"""
                INSERT INTO curation_sample (lineage_id, generation_id, passage_id, question, answer, alt_answers,
                    dialogue, provenance, status, novelty, risk, original_answer, double_review, flagged_at,
                    created_at, neighbours, detector_version)
                SELECT %s, %s, %s, 'Benchmark question ' || i || '?', 'A benchmark answer, number ' || i || '.',
                    '[]', '[]', '{{"backend": "bench"}}', {status_sql}, random(), random(), '', false, now(), now(),
                    '{{}}', 'bench'

                FROM generate_series(1, %s) AS i""", [lineage.pk, generation.pk, passage_id, count])
        # A table in use has been vacuumed since its rows were written: the
        # visibility map lets the queue's count be an index-only scan.
        cursor.execute("VACUUM ANALYZE curation_sample")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", action="store_true",
                        help="print one request's statements (their count, then each, slowest first)")
    args = parser.parse_args()
    statements = None

    import django

    django.setup()
    from django.http import HttpResponse
    from django.test import Client
    from django.test.utils import override_settings, setup_test_environment
    from django.urls import path

    from curation.models import Sample
    from curation.services.lineages import lineage_create, passages_add
    from curation.services.review import QueueFilter, queue_samples
    from ouroboros import urls as project_urls
    from ouroboros.roles import reviewer_required
    from tests.factories import REVIEWER, demo_passages, make_user

    setup_test_environment()
    stamp = time.strftime("%Y%m%d%H%M%S")
    lineage = lineage_create(name=f"bench review {stamp}", slug=f"bench-review-{stamp}")
    passages_add(lineage=lineage, passages=demo_passages(4))
    started = time.perf_counter()
    fill(lineage, args.samples)
    fill_s = time.perf_counter() - started
    reviewer = make_user(f"bench-{stamp}", REVIEWER)

    plan = queue_samples(lineage=lineage, filters=QueueFilter()).order_by("-risk", "id")[:1].explain(analyze=True)
    print("Plan of the next-card query (risk order):\n" + plan, file=sys.stderr)

    @reviewer_required
    def trivial(request):
        return HttpResponse("ok")

    module = type(sys)("bench_review_urls")
    module.urlpatterns = [path("bench/trivial", trivial), *project_urls.urlpatterns]
    sys.modules["bench_review_urls"] = module
    client = Client()
    client.force_login(reviewer)
    query = f"lineage={lineage.slug}"
    with override_settings(ROOT_URLCONF="bench_review_urls", DEBUG=False, ALLOWED_HOSTS=["testserver"]):
        page = client.get(f"/review/?{query}")
        sample = page.context["sample"]
        if args.profile:
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.post(f"/review/{sample.pk}/decide/", {"decision": "accept", "q": query},
                                       HTTP_HX_REQUEST="true")
                total = (time.perf_counter() - started) * 1000
            sample = response.context["sample"]
            queries = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))
            print(f"{len(queries)} queries, {sum(float(q['time']) for q in queries) * 1000:.1f} ms of "
                  f"{total:.1f} ms:", file=sys.stderr)
            statements = len(queries)
            for q in queries:
                print(f"  {float(q['time']) * 1000:7.2f} ms  {q['sql'][:200]}", file=sys.stderr)
            for q in queries[:2]:
                if q["sql"].startswith("SELECT"):
                    with connection.cursor() as cursor:
                        cursor.execute("EXPLAIN ANALYZE " + q["sql"])
                        print("\n".join(row[0] for row in cursor.fetchall()), file=sys.stderr)
        decide, baseline = [], []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.post(f"/review/{sample.pk}/decide/", {"decision": "accept", "q": query},
                                   HTTP_HX_REQUEST="true")
            decide.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                print(response.content.decode()[:500], file=sys.stderr)
                return 1
            sample = response.context["sample"]
            started = time.perf_counter()
            client.get("/bench/trivial")
            baseline.append((time.perf_counter() - started) * 1000)
    decided = Sample.objects.filter(lineage=lineage, reviews__reviewer=reviewer).count()
    print(json.dumps({
        "bench": "review",
        "samples": Sample.objects.filter(lineage=lineage).count(),
        "fill_seconds": round(fill_s, 1),
        "requests": args.requests,
        "decided": decided,
        "decide_next_p50_ms": round(statistics.median(decide), 2),
        "decide_next_p95_ms": round(percentile(decide, 0.95), 2),
        "trivial_p50_ms": round(statistics.median(baseline), 2),
        "trivial_p95_ms": round(percentile(baseline, 0.95), 2),
        "ratio_p50": round(statistics.median(decide) / statistics.median(baseline), 2),
        "ratio_p95": round(percentile(decide, 0.95) / percentile(baseline, 0.95), 2),
        **({"statements_per_decide": statements} if statements is not None else {}),
    }))
    return 0 if decided == args.requests + (1 if args.profile else 0) else 1


if __name__ == "__main__":
    sys.exit(main())
