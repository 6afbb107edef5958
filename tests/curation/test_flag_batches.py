"""Flagging in batches: what a batch costs, what it bounds, and what it waits for (issues 14 and 16)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from curation import detectors, embedder, lexical
from curation.models import DuplicateCluster, Flag, FlagRun, PassageChunk, Sample, SourcePassage
from curation.services import flagging, reflag
from curation.services.flagging import PassagesPending, passages_embed_missing, sample_flag, samples_flag
from curation.tasks import embed_passages, flag_sample, requeue_stale_reflags
from tests.factories import make_sample

pytestmark = pytest.mark.django_db

COPY = dict(question="What makes the tides?",
            answer="Tides rise and fall twice a day because the Moon pulls on the oceans.")


def _answers(n: int) -> list[dict]:
    topics = ["mitosis", "tides", "volcanoes", "antibodies", "glaciers", "photosynthesis", "whales", "enzymes"]
    return [dict(question=f"What do we know about {topics[i % 8]} ({i})?",
                 answer=f"Fact {i} about {topics[i % 8]} is stated here. It is followed by a second claim, "
                        f"number {i}.", alt_answers=[f"An alternative about {topics[i % 8]}, {i}."])
            for i in range(n)]


def test_a_batch_of_16_costs_about_the_statements_of_a_batch_of_4(lineage):
    """Look-ups and writes are set-based: one statement per kind for the whole batch. What a bigger batch
    may add is one insert per duplicate cluster it founds."""
    passages_embed_missing(lineage_id=lineage.pk)
    counts, clusters = {}, {}
    for n in (4, 16):
        ids = [make_sample(lineage, flagged=False, **fields).pk for fields in _answers(n)]
        before = DuplicateCluster.objects.count()
        with CaptureQueriesContext(connection) as queries:
            assert samples_flag(sample_ids=ids) == n
        counts[n], clusters[n] = len(queries), DuplicateCluster.objects.count() - before
        assert not Sample.objects.filter(pk__in=ids, flagged_at__isnull=True).exists()
    assert counts[4] <= 25, counts
    assert counts[16] - clusters[16] <= counts[4] - clusters[4] + 2, (counts, clusters)


def _copies(lineage, n: int) -> None:
    """n flagged copies of COPY with their MinHash, as flagging left them (without their embedding,
    which only the HNSW look-up reads, and which makes 10^4 rows a minute to insert)."""
    signature = lexical.minhash(detectors.duplicate_text(COPY["question"], COPY["answer"]))
    generation, passage = lineage.generations.get(status="open"), lineage.passages.first()
    Sample.objects.bulk_create(
        [Sample(lineage=lineage, generation=generation, passage=passage, flagged_at=timezone.now(),
                minhash=signature, minhash_bands=lexical.minhash_bands(signature), **COPY) for _ in range(n)],
        batch_size=2000,
    )


def _minhash_cost(sample: Sample) -> int:
    """Shared buffers the MinHash look-up of one sample touches (EXPLAIN ANALYZE)."""
    item = flagging._Item(sample, *flagging._texts(sample))
    item.vector = embedder.embed([item.dup_text])[0]
    item.signature = lexical.minhash(item.dup_text)
    sql, params = flagging.minhash_sql([item])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    top = plan[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


def test_one_more_copy_in_a_collapsing_lineage_costs_about_what_it_does_among_10(lineage):
    """Issue 14.7: 10^4 identical samples share every MinHash band; one more reads a bounded few of them,
    in as many queries as among 10 copies (it used to fetch every one of them)."""
    passages_embed_missing(lineage_id=lineage.pk)
    cost = {}
    for n in (10, 10_000):
        Sample.objects.filter(lineage=lineage).delete()
        _copies(lineage, n)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE curation_sample")
        sample = make_sample(lineage, flagged=False, **COPY)
        rows = []

        def count_rows(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            rowcount = context["cursor"].rowcount
            rows.append(rowcount if rowcount and rowcount > 0 else 0)
            return result

        with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(count_rows):
            flags = {f.kind: f for f in sample_flag(sample_id=sample.pk)}
        evidence = flags[Flag.Kind.NEAR_DUPLICATE].evidence
        assert evidence["jaccard"] == pytest.approx(1.0) and evidence["scope"] == "lineage"
        cost[n] = {"queries": len(queries), "rows": sum(rows), "buffers": _minhash_cost(sample)}
    assert cost[10_000]["queries"] == cost[10]["queries"], cost
    assert cost[10_000]["rows"] <= cost[10]["rows"] + 10, cost  # not one row per copy
    # Reading each of the 10^4 copies would touch thousands of pages; the bounded look-up, a few hundred.
    assert cost[10_000]["buffers"] <= 3 * cost[10]["buffers"] + 300, cost


def test_a_flag_task_takes_the_other_pending_samples_of_its_lineage_as_one_batch(lineage, settings):
    settings.OUROBOROS = {**settings.OUROBOROS, "FLAG_BATCH_SIZE": 3}
    ids = [make_sample(lineage, flagged=False, **fields).pk for fields in _answers(5)]
    assert flag_sample(ids[3]) == 3  # its own sample and the two oldest others
    flagged = set(Sample.objects.filter(pk__in=ids, flagged_at__isnull=False).values_list("id", flat=True))
    assert flagged == {ids[0], ids[1], ids[3]}
    assert flag_sample(ids[0]) == 0, "flagged already by the batch: its own message does nothing"


def test_copies_stored_before_either_was_embedded_find_each_other_in_one_batch(lineage):
    first = make_sample(lineage, flagged=False, **COPY)
    second = make_sample(lineage, flagged=False, **COPY)
    samples_flag(sample_ids=[first.pk, second.pk])
    flag = Flag.objects.get(sample=second, kind=Flag.Kind.NEAR_DUPLICATE)
    assert flag.evidence["duplicate_id"] == first.pk
    assert not Flag.objects.filter(sample=first, kind=Flag.Kind.NEAR_DUPLICATE).exists()


def test_a_batch_embeds_the_earlier_samples_another_worker_is_still_flagging(lineage):
    """Issue 14.6 within one process: the earlier copy has no embedding yet (its flagging is in flight
    elsewhere); the later one stores it first, then looks, and finds it."""
    first = make_sample(lineage, flagged=False, **COPY)
    second = make_sample(lineage, flagged=False, **COPY)
    samples_flag(sample_ids=[second.pk])
    first.refresh_from_db()
    assert first.embedding is not None and first.flagged_at is None  # stored for the look-up, not flagged
    assert Flag.objects.get(sample=second, kind=Flag.Kind.NEAR_DUPLICATE).evidence["duplicate_id"] == first.pk


def test_flagging_never_embeds_a_big_passage_backlog_itself(lineage, settings):
    """Issue 14.8: more unembedded passages than FLAG_INLINE_PASSAGES are `embed_passages`'s work."""
    settings.OUROBOROS = {**settings.OUROBOROS, "FLAG_INLINE_PASSAGES": 2}
    sample = make_sample(lineage, flagged=False, **COPY)
    with pytest.raises(PassagesPending):
        samples_flag(sample_ids=[sample.pk])
    assert not SourcePassage.objects.filter(lineage=lineage, embedding__isnull=False).exists()
    assert not PassageChunk.objects.filter(lineage=lineage).exists()


def test_a_flag_task_waits_for_the_passages_then_flags_with_what_is_there(lineage, settings, monkeypatch):
    settings.OUROBOROS = {**settings.OUROBOROS, "FLAG_INLINE_PASSAGES": 2, "FLAG_PASSAGE_WAIT_SECONDS": 600}
    sample = make_sample(lineage, flagged=False, **COPY)
    later, embeds = [], []
    monkeypatch.setattr(flag_sample, "apply_async", lambda args, countdown: later.append((args, countdown)))
    monkeypatch.setattr(embed_passages, "delay", lambda lineage_id: embeds.append(lineage_id))
    assert flag_sample(sample.pk) == 0
    assert later == [((sample.pk,), settings.OUROBOROS["FLAG_PASSAGE_RETRY_SECONDS"])] and embeds == [lineage.pk]
    sample.refresh_from_db()
    assert sample.flagged_at is None and not SourcePassage.objects.filter(embedding__isnull=False).exists()

    # Waited long enough: flagged with the corpus as it is (none of it), and the flag says so.
    Sample.objects.filter(pk=sample.pk).update(created_at=timezone.now() - timedelta(seconds=601))
    assert flag_sample(sample.pk) == 1
    flag = Flag.objects.get(sample=sample, kind=Flag.Kind.HALLUCINATION)
    assert flag.evidence["passages_not_yet_embedded"] >= 3


def test_embed_passages_retries_what_it_declares(lineage, monkeypatch):
    real = flagging.passages_embed_missing
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(flagging, "passages_embed_missing", flaky)
    result = embed_passages.apply(args=[lineage.pk])
    assert result.successful(), result.traceback
    assert len(calls) == 2 and not SourcePassage.objects.filter(lineage=lineage, embedding__isnull=True).exists()


def test_a_reflag_run_whose_message_was_lost_is_queued_again(lineage, monkeypatch):
    """Issue 14.9: without the sweep a lost chunk message left the run active, and the lineage
    could never be re-flagged again."""
    make_sample(lineage, flagged=False)
    run = reflag.flag_run_create(lineage=lineage)  # its message is lost: nobody runs the chunk
    queued = []
    monkeypatch.setattr(reflag, "_enqueue", lambda run_id: queued.append(run_id))
    assert requeue_stale_reflags() == [] and queued == [], "a fresh run is left alone"
    FlagRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert requeue_stale_reflags() == [run.pk] and queued == [run.pk]
    assert requeue_stale_reflags() == [], "queued again once, not on every sweep"
    monkeypatch.undo()
    while reflag.flag_run_chunk(run_id=run.pk):
        pass
    run.refresh_from_db()
    assert run.status == FlagRun.Status.DONE
    FlagRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert requeue_stale_reflags() == [], "a finished run is never queued"


def test_a_seeded_sample_is_grounded_in_its_root_passage_and_in_its_parent(lineage):
    """Issue 12: a sample seeded from an accepted one may repeat what the parent said; each sentence's
    evidence names what supported it."""
    from curation.models import Lineage

    Lineage.objects.filter(pk=lineage.pk).update(hallucination_threshold=0.0)  # keep the evidence of every sample
    passage = next(p for p in lineage.passages.all() if "photosynthesis" in p.text.lower())
    root_sentence = passage.text.split(". ")[0].strip() + "."
    parent = make_sample(lineage, passage=passage, status=Sample.Status.ACCEPTED, flagged=False,
                         question="Which pigment did the greenhouse trial in Lund use?",
                         answer="The greenhouse trial in Lund grew basil under violet lamps for 41 days.")
    child = make_sample(lineage, passage=passage, parent=parent, flagged=False,
                        question="How long did the Lund trial grow basil?",
                        answer=f"{root_sentence} The greenhouse trial in Lund grew basil under violet lamps for 41 days.")
    orphan = make_sample(lineage, passage=passage, flagged=False, question=child.question, answer=child.answer)
    samples_flag(sample_ids=[parent.pk, child.pk, orphan.pk])
    by_sentence = lambda s: {row["sentence"]: row for row in  # noqa: E731
                             Flag.objects.get(sample=s, kind=Flag.Kind.HALLUCINATION).evidence["sentences"]}
    child_rows, orphan_rows = by_sentence(child), by_sentence(orphan)
    claim = "The greenhouse trial in Lund grew basil under violet lamps for 41 days."
    assert child_rows[root_sentence]["supported_by"] == "root passage"
    assert child_rows[claim]["supported_by"] == f"parent sample {parent.pk}"
    assert child_rows[claim]["parent_sample_id"] == parent.pk
    assert child_rows[claim]["grounding"] > orphan_rows[claim]["grounding"] + 0.3
    assert orphan_rows[claim]["supported_by"] in ("root passage", "corpus passage")
