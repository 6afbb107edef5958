"""Re-flagging a lineage as a job: after a detector change or a new threshold, every sample again.

A run walks the lineage's samples in id order, `chunk_size` at a time; each
Celery task does one chunk, moves the cursor with a conditional update and
queues the next (STYLE.md §6). A chunk that runs twice re-flags the same
samples to the same result, and the conditional update counts it once.
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from curation.models import DuplicateCluster, FlagRun, Lineage, Sample
from curation.services import flagging


class ReflagError(Exception):
    pass


def _enqueue(run_id: int) -> None:
    from curation.tasks import reflag_chunk

    transaction.on_commit(lambda: reflag_chunk.delay(run_id))


def flag_run_create(*, lineage: Lineage, created_by=None, chunk_size: int | None = None) -> FlagRun:
    """Start re-flagging every sample of the lineage; refused while another run of it is active."""
    with transaction.atomic():
        Lineage.objects.select_for_update().get(pk=lineage.pk)  # one active run per lineage
        if FlagRun.objects.filter(lineage=lineage, status__in=[FlagRun.Status.QUEUED, FlagRun.Status.RUNNING]).exists():
            raise ReflagError(f"lineage {lineage.slug!r} is already being re-flagged")
        run = FlagRun.objects.create(
            lineage=lineage,
            total=Sample.objects.filter(lineage=lineage).count(),
            chunk_size=chunk_size or settings.OUROBOROS["REFLAG_CHUNK_SIZE"],
            detector_versions={"detectors": flagging.DETECTOR_VERSION},
            created_by=created_by,
        )
        _enqueue(run.pk)
    return run


def flag_run_chunk(*, run_id: int) -> bool:
    """Re-flag the next chunk of the run; returns True when more chunks remain (the next one is queued)."""
    run = FlagRun.objects.select_related("lineage").get(pk=run_id)
    if run.status in (FlagRun.Status.DONE, FlagRun.Status.FAILED):
        return False
    ids = list(
        Sample.objects.filter(lineage=run.lineage, id__gt=run.cursor).order_by("id").values_list("id", flat=True)[
            : run.chunk_size
        ]
    )
    if not ids:
        with transaction.atomic():
            finished = FlagRun.objects.filter(pk=run.pk, cursor=run.cursor).exclude(status=FlagRun.Status.DONE).update(
                status=FlagRun.Status.DONE, finished_at=timezone.now(), total=F("done")
            )
            if finished:
                clusters_prune(lineage=run.lineage)
        return False
    FlagRun.objects.filter(pk=run.pk, status=FlagRun.Status.QUEUED).update(status=FlagRun.Status.RUNNING,
                                                                         updated_at=timezone.now())
    try:
        flagging.samples_flag(sample_ids=ids)
    except flagging.PassagesPending as pending:
        # The corpus is still being embedded: this chunk comes back later, the cursor stays.
        if not flagging.passages_embedding_running(lineage_id=pending.lineage_id):
            from curation.tasks import embed_passages

            embed_passages.delay(pending.lineage_id)
        FlagRun.objects.filter(pk=run.pk).update(updated_at=timezone.now())
        from curation.tasks import reflag_chunk

        reflag_chunk.apply_async((run.pk,), countdown=settings.OUROBOROS["FLAG_PASSAGE_RETRY_SECONDS"])
        return True
    with transaction.atomic():
        moved = FlagRun.objects.filter(pk=run.pk, cursor=run.cursor).update(
            cursor=ids[-1], done=F("done") + len(ids), updated_at=timezone.now()
        )
        if moved:
            _enqueue(run.pk)
    return bool(moved)


def flag_runs_requeue_stale(*, idle_seconds: int | None = None) -> list[int]:
    """Queue the next chunk of every active run untouched for REFLAG_IDLE_SECONDS; returns their ids.

    Its message was lost (a Redis restart) or its worker died mid-chunk: without
    this the lineage could never be re-flagged again (one active run per
    lineage). A live chunk moves the run well within the idle time (its hard
    limit is 960 s), and a chunk that runs twice counts once, so a
    needless re-queue costs a repeated chunk at most.
    """
    if idle_seconds is None:
        idle_seconds = settings.OUROBOROS["REFLAG_IDLE_SECONDS"]
    now = timezone.now()
    stale = list(
        FlagRun.objects.filter(status__in=[FlagRun.Status.QUEUED, FlagRun.Status.RUNNING],
                               updated_at__lt=now - timedelta(seconds=idle_seconds))
        .values_list("id", flat=True)
    )
    for run_id in stale:
        with transaction.atomic():
            FlagRun.objects.filter(pk=run_id).update(updated_at=now)
            _enqueue(run_id)
    return stale


def flag_run_fail(*, run_id: int, reason: str) -> None:
    FlagRun.objects.filter(pk=run_id).exclude(status=FlagRun.Status.DONE).update(
        status=FlagRun.Status.FAILED, last_error=reason[:2000], finished_at=timezone.now()
    )


def clusters_prune(*, lineage: Lineage) -> int:
    """Delete clusters left with fewer than two members after re-flagging; returns how many."""
    lonely = [c.pk for c in DuplicateCluster.objects.filter(lineage=lineage).prefetch_related("members")
              if c.members.count() < 2]
    Sample.objects.filter(cluster_id__in=lonely).update(cluster=None)
    DuplicateCluster.objects.filter(pk__in=lonely).delete()
    return len(lonely)
