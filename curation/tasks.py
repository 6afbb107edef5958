"""Celery tasks on the `curation` queue. Thin: they take ids and call services."""
from __future__ import annotations

from celery import shared_task
from celery.exceptions import MaxRetriesExceededError, SoftTimeLimitExceeded

from curation.models import FlagRun, Generation, Sample, TrainingSetExport
from curation.services import flagging, reflag
from ouroboros.retry import retry_on_lost_database


def _run_or_retry(task, run, missing: type[Exception], *, fail) -> bool:
    """Run a unit of work that records its own progress (an export, an import).

    Its object deleted since it was queued: nothing to do. Anything raised (a full
    disk, a lost database connection) is worth another try, 10 s, 20 s, 40 s later;
    after the last one `fail(reason)` records the failure where users see it.
    """
    try:
        return run()
    except missing:
        return False
    except Exception as exc:
        try:
            raise task.retry(exc=exc, countdown=min(300, 10 * 2**task.request.retries))
        except MaxRetriesExceededError:
            fail(f"{type(exc).__name__}: {exc}")
            raise


@shared_task(name="curation.flag_sample", acks_late=True, soft_time_limit=300, time_limit=360,
             **retry_on_lost_database())
def flag_sample(sample_id: int) -> int:
    """Flag the sample with the lineage's other pending ones (one batch); returns how many were flagged.

    While the lineage's passages are still being embedded (`embed_passages`),
    it waits: queued again FLAG_PASSAGE_RETRY_SECONDS later (a new message, so
    the lost-database retries keep their count), until the sample has waited
    FLAG_PASSAGE_WAIT_SECONDS; then it grounds in what is there.
    """
    from django.conf import settings

    try:
        try:
            return flagging.samples_flag_pending(sample_id=sample_id)
        except flagging.PassagesPending as pending:
            if flagging.sample_waited_for_passages(sample_id=sample_id):
                return flagging.samples_flag_pending(sample_id=sample_id, partial_corpus=True)
            if not flagging.passages_embedding_running(lineage_id=pending.lineage_id):
                embed_passages.delay(pending.lineage_id)
            flag_sample.apply_async((sample_id,), countdown=settings.OUROBOROS["FLAG_PASSAGE_RETRY_SECONDS"])
            return 0
    except Sample.DoesNotExist:
        return 0  # deleted since it was queued: nothing to flag


@shared_task(name="curation.flag_missing_samples", acks_late=True, expires=600)
def flag_missing_samples() -> list[int]:
    return flagging.samples_flag_missing()


@shared_task(name="curation.reflag_chunk", bind=True, acks_late=True, max_retries=3, soft_time_limit=900,
             time_limit=960)
def reflag_chunk(self, run_id: int) -> bool:
    """One chunk of a lineage re-flag. A crash retries the chunk (it is idempotent); the last failure is recorded."""
    try:
        return reflag.flag_run_chunk(run_id=run_id)
    except FlagRun.DoesNotExist:
        return False
    except SoftTimeLimitExceeded:
        reflag.flag_run_fail(run_id=run_id, reason="a chunk ran past its time limit; lower REFLAG_CHUNK_SIZE")
        raise
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            reflag.flag_run_fail(run_id=run_id, reason=f"{type(exc).__name__}: {exc}")
            raise
        raise self.retry(exc=exc, countdown=10 * (self.request.retries + 1))


@shared_task(name="curation.export_training_set", bind=True, acks_late=True, max_retries=3,
             soft_time_limit=3600, time_limit=3700)
def export_training_set(self, export_id: int) -> bool:
    """Write one export file of a training set; retried on error, then recorded as failed."""
    from curation.services import exports

    return _run_or_retry(self, lambda: exports.export_run(export_id=export_id), TrainingSetExport.DoesNotExist,
                         fail=lambda reason: exports.export_fail(export_id=export_id, reason=reason))


@shared_task(name="curation.requeue_stale_exports", acks_late=True, expires=290)
def requeue_stale_exports() -> list[int]:
    from curation.services import exports

    return exports.exports_requeue_stale()


@shared_task(name="curation.compute_generation_metrics", acks_late=True, soft_time_limit=1800, time_limit=1900,
             **retry_on_lost_database(max_retries=2))
def compute_generation_metrics(generation_id: int) -> bool:
    from curation.services import metrics

    generation = Generation.objects.select_related("lineage").filter(pk=generation_id).first()
    if generation is None:
        return False  # deleted since it was queued
    metrics.generation_metrics_compute(generation=generation)
    return True


@shared_task(name="curation.refresh_stale_metrics", acks_late=True, expires=590)
def refresh_stale_metrics() -> list[int]:
    from curation.services import metrics

    return metrics.metrics_refresh_stale()


@shared_task(name="curation.import_passages", bind=True, acks_late=True, max_retries=3,
             soft_time_limit=1800, time_limit=1900)
def import_passages(self, import_id: int) -> bool:
    """Import one uploaded passage file. A bad file is recorded by the service, not raised; what is
    raised (a lost database connection) is retried, then recorded as the import's failure."""
    from curation.models import PassageImport
    from curation.services import imports

    return _run_or_retry(self, lambda: imports.import_run(import_id=import_id), PassageImport.DoesNotExist,
                         fail=lambda reason: imports.import_fail(import_id=import_id, reason=reason))


@shared_task(name="curation.requeue_stale_imports", acks_late=True, expires=290)
def requeue_stale_imports() -> list[int]:
    from curation.services import imports

    return imports.imports_requeue_stale()


@shared_task(name="curation.embed_passages", acks_late=True, max_retries=3, soft_time_limit=1800,
             time_limit=1900, autoretry_for=(Exception,), retry_backoff=10, retry_backoff_max=300, retry_jitter=True)
def embed_passages(lineage_id: int) -> int:
    """Embed and chunk a lineage's passages that have none yet (after an import), for grounding.

    One chunk of PASSAGE_EMBED_CHUNK_SIZE passages per task; the task queues the
    next while any remain, so a big import never makes one long task. Anything
    raised (a lost database, a worker short of memory) is tried again, three
    times, about 10, 20 and 40 s later; the chunk is idempotent.
    """
    done, more = flagging.passages_embed_chunk(lineage_id=lineage_id)
    if more:
        embed_passages.delay(lineage_id)
    return done


@shared_task(name="curation.requeue_stale_reflags", acks_late=True, expires=290)
def requeue_stale_reflags() -> list[int]:
    return reflag.flag_runs_requeue_stale()


@shared_task(name="curation.fit_lineage_flags", acks_late=True, soft_time_limit=1800, time_limit=1900)
def fit_lineage_flags(fit_id: int) -> bool:
    """Fit a lineage's own flag model of one kind on its review decisions; a crash is recorded on the fit.

    Not retried on the same record: a redelivered message finds it claimed and does nothing, and "fit
    now" starts a fresh one once this one is marked failed (or has been running past the time limit).
    """
    from curation.models import LineageFit
    from curation.services import lineage_fit

    try:
        return lineage_fit.lineage_fit_run(fit_id=fit_id) is not None
    except LineageFit.DoesNotExist:
        return False
    except Exception as exc:
        lineage_fit.lineage_fit_fail(fit_id=fit_id, reason=f"{type(exc).__name__}: {exc}")
        raise
