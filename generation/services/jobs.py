"""Generation jobs: create, run in chunks, cancel, resume, recover. Views, the
admin, commands and tasks all call these."""
from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from curation.models import Generation, Lineage, Sample, SourcePassage, TrainingSet
from curation.services import claims

from generation.backends import BackendError, BackendTimeout, get_backend
from generation.dialogue import InvalidOutput, Prompts, run_dialogue
from generation.dialogue.examples import style_examples_pick
from generation.errors import JobError
from generation.models import GenerationFailure, GenerationJob, GenerationModels, generator_settings_for

from .loop import generation_models_record, models_provenance, student_backend
from .prompts import lineage_backend_config, lineage_prompts

log = logging.getLogger(__name__)

MAX_JOB_SIZE = 10_000
ATTEMPTS_PER_ITEM = 3


def _enqueue_chunk(job_id: int) -> None:
    """Queue the job's next chunk once the transaction commits.

    `robust`: when the broker is down the message is lost but the caller goes
    on (the job row is committed and the error is logged); the periodic sweep
    `jobs_requeue_stale` queues the chunk once the broker is back.
    """
    from generation.tasks import run_job_chunk  # tasks import services; import late to avoid a cycle

    transaction.on_commit(lambda: run_job_chunk.delay(job_id), robust=True)


def job_create(*, lineage: Lineage, requested: int, created_by=None, seed: int | None = None,
               chunk_size: int | None = None) -> GenerationJob:
    """Create a job for the lineage's open generation and queue its first chunk.

    The generation's tutor and student are resolved under the lineage's loop
    mode and recorded with its first job (generation.services.loop); when there
    is no student (loop mode external with none registered, train with no model
    trained yet), the job is refused with the cause and nothing is written.
    """
    if requested < 1 or requested > MAX_JOB_SIZE:
        raise JobError(f"a job asks for 1 to {MAX_JOB_SIZE} samples, not {requested}")
    if not lineage.passages.filter(heldout=False).exists():
        raise JobError(f"lineage {lineage.name!r} has no source passages to ask about")
    with transaction.atomic():
        # Lock the open generation: building its training set (which closes it)
        # takes the same lock and refuses while a job of it is active, so a job is
        # created either before the close (and the build refuses) or after it.
        open_generation = Generation.objects.select_for_update().filter(
            lineage=lineage, status=Generation.Status.OPEN).order_by("number")
        generation = open_generation.first()
        if generation is None:
            # A build closed it while we waited for the lock; the generation it
            # opened is newer than this statement's snapshot, so look again.
            generation = open_generation.all().first()
        if generation is None:
            raise JobError(f"lineage {lineage.name!r} has no open generation")
        generation_models_record(generation=generation)
        job = GenerationJob.objects.create(
            lineage=lineage,
            generation=generation,
            requested=requested,
            chunk_size=chunk_size or settings.OUROBOROS["JOB_CHUNK_SIZE"],
            seed=seed if seed is not None else random.SystemRandom().randrange(1, 2**31),
            created_by=created_by,
        )
        _enqueue_chunk(job.pk)
    return job


def job_cancel(*, job: GenerationJob) -> bool:
    """Stop a job after the item in progress. Returns False when it had already ended."""
    changed = GenerationJob.objects.filter(pk=job.pk, status__in=GenerationJob.ACTIVE).update(
        status=GenerationJob.Status.CANCELLED, finished_at=timezone.now(), claim_token=None, claimed_until=None
    )
    return bool(changed)


def passage_pick(*, job: GenerationJob, index: int) -> SourcePassage:
    """The real passage item `index` of the job asks about: round robin over the lineage's passages.

    Item i takes the passage at position (offset + i) mod n in id order, where
    offset counts the items of the lineage's earlier jobs. So every passage is
    asked about once before any is asked twice (coverage, as the least-used
    pick gave), a re-run of an item asks about the same passage, and the cost
    is two small queries per item whatever the number of passages and samples
    (the least-used pick counted samples over every passage on every attempt).
    """
    lineage_id = job.lineage_id
    cache = _job_cache(job)
    if "passage_offset" not in cache:
        earlier = GenerationJob.objects.filter(lineage_id=lineage_id)
        if job.pk is not None:
            earlier = earlier.filter(pk__lt=job.pk)
        cache["passage_offset"] = earlier.aggregate(n=Coalesce(Sum("requested"), 0))["n"]
    passages = SourcePassage.objects.filter(lineage_id=lineage_id, heldout=False)  # never the held-out split
    total = passages.count()
    if not total:
        raise JobError(f"lineage {job.lineage.name!r} has no source passages to ask about")
    return passages.order_by("id")[(cache["passage_offset"] + index) % total]


def _job_cache(job: GenerationJob) -> dict:
    """Per-chunk memo on the job object: what every item of the chunk would otherwise query again."""
    cache = getattr(job, "_item_cache", None)
    if cache is None:
        cache = job._item_cache = {}
    return cache


@dataclass(frozen=True)
class Material:
    """What the tutor reads for one item: a real passage, or an accepted record of the last training set."""

    text: str
    passage: SourcePassage  # the real passage at the root of the item's ancestry
    parent: Sample | None = None


def item_is_seeded(*, seed: int, index: int, fraction: float) -> bool:
    """Whether item `index` of a job with this seed takes an accepted record as its material.

    A stratified draw: with u drawn from the job's seed, item i is seeded when
    floor((i + 1) f + u) > floor(i f + u). Any n consecutive items then hold
    floor(n f) or ceil(n f) seeded ones (exactly n f when that is whole),
    where a coin per item would stray by sqrt(n); and which items they are
    still follows the seed.
    """
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    u = random.Random(f"{seed}:seeding").random()
    return math.floor((index + 1) * fraction + u) > math.floor(index * fraction + u)


def _latest_published_set(job: GenerationJob):
    cache = _job_cache(job)
    if "training_set" not in cache:
        cache["training_set"] = (
            TrainingSet.objects.filter(lineage_id=job.lineage_id, status=TrainingSet.Status.PUBLISHED)
            .order_by("-generation__number").first()
        )
        cache["training_set_size"] = cache["training_set"].samples.count() if cache["training_set"] else 0
    return cache["training_set"], cache["training_set_size"]


def material_pick(*, job: GenerationJob, index: int, fraction: float) -> Material:
    """The tutor's material for an item: an accepted record of the latest published set for the
    seeded share of items, else a real passage (`passage_pick`). A seeded item keeps the
    record as its parent and the record's root passage as its passage, so its ancestry ends
    at a real passage. Without a published set (or an empty one), every item is real."""
    if item_is_seeded(seed=job.seed, index=index, fraction=fraction):
        training_set, size = _latest_published_set(job)
        if size:
            k = random.Random(f"{job.seed}:{index}:record").randrange(size)
            parent = training_set.samples.select_related("passage").order_by("id")[k]
            return Material(text=f"{parent.question}\n{parent.answer}", passage=parent.passage, parent=parent)
    passage = passage_pick(job=job, index=index)
    return Material(text=passage.text, passage=passage)


STYLE_CANDIDATES = 200  # the newest accepted questions of earlier generations the examples are drawn from


def style_examples_for(*, job: GenerationJob, index: int, k: int) -> list[str]:
    """Up to k accepted questions of the lineage's earlier generations, no two near-duplicates."""
    if k <= 0:
        return []
    cache = _job_cache(job)
    if "style_candidates" not in cache:
        rows = (
            Sample.objects.filter(lineage_id=job.lineage_id, status=Sample.Status.ACCEPTED,
                                  generation__number__lt=job.generation.number)
            .order_by("-id").values_list("question", "embedding")[:STYLE_CANDIDATES]
        )
        cache["style_candidates"] = [(q, list(e) if e is not None else None) for q, e in rows]
    return style_examples_pick(cache["style_candidates"], k=k, rng=random.Random(f"{job.seed}:{index}:style"),
                               threshold=job.lineage.duplicate_threshold)


@dataclass
class ChunkOutcome:
    claimed: bool
    stored: int = 0
    failed: int = 0
    finished: bool = False


def _lease() -> timedelta:
    return timedelta(seconds=settings.OUROBOROS["JOB_LEASE_SECONDS"])


def _claim(job_id: int) -> uuid.UUID | None:
    """Take the job for one chunk with a conditional update; None when someone else holds it.

    A claim whose holder is a dead process on this host is taken over at once
    (curation.services.claims), instead of waiting for its lease to run out.
    """
    if _end_for_closed_generation(job_id):
        return None
    return claims.chunk_claim(GenerationJob, job_id, lease=_lease())


def _still_holds(job_id: int, token: uuid.UUID) -> bool:
    """Renew the lease (once per item); False when the job was cancelled or the claim was taken over."""
    now = timezone.now()
    return bool(
        GenerationJob.objects.filter(pk=job_id, claim_token=token, status=GenerationJob.Status.RUNNING).update(
            claimed_until=now + _lease(), updated_at=now
        )
    )


def _open_items(job: GenerationJob) -> list[int]:
    done = set(job.samples.values_list("item_index", flat=True))
    failed = set(job.failures.values_list("item_index", flat=True))
    return [i for i in range(job.requested) if i not in done and i not in failed]


def _end_for_closed_generation(job_id: int) -> bool:
    """Cancel an active job whose generation was closed, saying so; True when it did.

    What we chose for the items it still lacks: none is generated (they would
    belong to a training set already built); the job ends as cancelled with the
    reason and the count, and cannot be resumed (its generation is closed). A
    new job generates into the lineage's next generation.
    """
    job = GenerationJob.objects.select_related("generation").filter(pk=job_id).first()
    if job is None or job.generation.status == Generation.Status.OPEN:
        return False
    left = job.requested - job.samples.count() - job.failures.count()
    return bool(GenerationJob.objects.filter(pk=job_id, status__in=GenerationJob.ACTIVE).update(
        status=GenerationJob.Status.CANCELLED, finished_at=timezone.now(), claim_token=None, claimed_until=None,
        last_error=f"generation {job.generation.number} was closed before the job finished; "
                   f"{left} item(s) were not generated",
    ))


def _store_sample(job: GenerationJob, index: int, material: Material, result, models: dict | None = None) -> bool:
    """Write one sample; False when a previous run of this item already stored it, or when
    the job's generation was closed (then the job ends, see `_end_for_closed_generation`)."""
    from curation.services.flagging import sample_flag_later

    passage = material.passage
    try:
        with transaction.atomic():
            # FOR SHARE: many jobs may store at once, but closing the generation
            # (an UPDATE) waits for them, and a sample stored after it sees "closed".
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT status FROM {Generation._meta.db_table} WHERE id = %s FOR SHARE",
                               [job.generation_id])
                (status,) = cursor.fetchone()
            if status != Generation.Status.OPEN:
                _end_for_closed_generation(job.pk)
                return False
            sample = Sample.objects.create(
                lineage=job.lineage,
                generation=job.generation,
                job=job,
                item_index=index,
                passage=passage,
                parent=material.parent,
                question=result.question,
                answer=result.answer,
                alt_answers=result.alt_answers,
                dialogue=result.dialogue,
                provenance={**result.provenance, **(models or {}), "job": job.pk, "passage": passage.pk, "item": index,
                            "material": "sample" if material.parent else "passage",
                            "parent": material.parent.pk if material.parent else None},
                # Drawn from the item's own seed, so a re-run of the item draws the same.
                double_review=random.Random(f"{job.seed}:{index}").random() < job.lineage.overlap_fraction,
            )
            sample_flag_later(sample_id=sample.pk)
    except IntegrityError:
        return False
    return True


class ItemFailure(str):
    """The reason an item failed (a str, as callers expect), with the raw outputs of its attempts."""

    raw: str = ""


def _record_failure(job: GenerationJob, index: int, reason: str, raw: str = "") -> None:
    raw = raw or getattr(reason, "raw", "")
    GenerationFailure.objects.get_or_create(
        job=job, item_index=index, defaults={"reason": reason[:500], "raw_output": raw[:5000]}
    )


def _refresh_progress(job_id: int) -> GenerationJob:
    job = GenerationJob.objects.get(pk=job_id)
    job.done_count = job.samples.count()
    job.failed_count = job.failures.count()
    GenerationJob.objects.filter(pk=job_id).update(done_count=job.done_count, failed_count=job.failed_count)
    return job


def _retrying_timeouts(call):
    """Run `call()`; when the backend times out, send the same request again.

    `BACKEND_ITEM_ATTEMPTS` tries in all, `BACKEND_RETRY_DELAY` seconds apart,
    doubling. The last timeout propagates, for the caller to fail the item.
    """
    conf = settings.OUROBOROS
    attempts = conf["BACKEND_ITEM_ATTEMPTS"]
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except BackendTimeout as exc:
            if attempt == attempts:
                raise
            delay = conf["BACKEND_RETRY_DELAY"] * 2 ** (attempt - 1)
            log.warning("backend timed out (try %s of %s), trying again in %.1fs: %s", attempt, attempts, delay, exc)
            time.sleep(delay)


def _failure(reason: str, completions: list, refusals: list[str]) -> ItemFailure:
    """An item's failure, keeping every output its attempts got (for people) and their tokens (for the bench)."""
    failure = ItemFailure(reason)
    failure.raw = json.dumps({
        "refusals": refusals,
        "completion_tokens": sum(c.completion_tokens for c in completions),
        "outputs": [c.text[:400] for c in completions][-12:],
    })
    return failure


def _produce_item(job: GenerationJob, backend, prompts: Prompts, index: int,
                  student=None) -> tuple[Material, object] | str:
    """Run the dialogue for one item: (material, result), or the reason it failed.

    The material (a real passage, or an accepted record for the seeded share)
    and the style examples are fixed per item; invalid outputs are retried
    with a new seed; a backend that times out is asked again
    (`_retrying_timeouts`) and then the item fails with the timeout as its
    reason, so one hanging prompt does not stop the job; a permanent backend
    error fails the item at once; any other transient one propagates to the
    task's retry policy (the backend as a whole looks unwell). The tokens of
    refused attempts are kept (`refused_completion_tokens`, or the failure's
    raw output), so throughput counts every completion.
    """
    lineage = job.lineage
    cache = _job_cache(job)
    if "generator" not in cache:
        cache["generator"] = generator_settings_for(lineage)
    generator = cache["generator"]
    material = material_pick(job=job, index=index, fraction=generator.synthetic_context_fraction)
    examples = style_examples_for(job=job, index=index, k=generator.style_examples)
    reason = ""
    spent: list = []
    refusals: list[str] = []
    for attempt in range(ATTEMPTS_PER_ITEM):
        try:
            result = _retrying_timeouts(lambda: run_dialogue(
                backend=backend,
                passage_text=material.text,
                answers=generator.student_answers,
                temperature=generator.temperature,
                seed=(job.seed + index * 7919 + attempt) % (2**31),
                prompts=prompts,
                critique=generator.critique,
                examples=examples,
                student_backend=student,
            ))
        except InvalidOutput as exc:
            reason = str(exc)
            spent.extend(exc.completions)
            refusals.extend(exc.refusals)
            continue
        except BackendTimeout as exc:
            return _failure(f"backend timed out {settings.OUROBOROS['BACKEND_ITEM_ATTEMPTS']} times: {exc}",
                            spent, refusals)
        except BackendError as exc:
            if exc.permanent:
                return _failure(f"backend error: {exc}", spent, refusals)
            raise
        result.provenance["attempts"] = attempt + 1
        result.provenance["refused_completion_tokens"] = sum(c.completion_tokens for c in spent)
        result.provenance["refusals"] = refusals + result.provenance.get("refusals", [])
        return material, result
    return _failure(f"no valid output after {ATTEMPTS_PER_ITEM} attempts: {reason}", spent, refusals)


def _release_after_lost_connection(job_id: int, token: uuid.UUID) -> None:
    """The database connection broke mid-chunk: give the claim back on a fresh one.

    The task then retries (ouroboros.retry) and takes the job again at once,
    instead of waiting out the lease. Samples stored before the break are
    committed (one transaction each) and the retry skips them. When the database
    is still unreachable, the lease runs out and the periodic sweep re-queues the job.
    """
    if connection.in_atomic_block:  # an outer transaction owns the connection; leave it to its owner
        return
    connection.close()
    try:
        GenerationJob.objects.filter(pk=job_id, claim_token=token).update(claim_token=None, claimed_until=None)
    except (OperationalError, InterfaceError) as exc:
        log.warning("job %s: could not release the claim after losing the database: %s", job_id, exc)


def job_run_chunk(*, job_id: int) -> ChunkOutcome:
    """Produce the next chunk of a job's items, then queue the chunk after it.

    1. Claim the job (conditional update); if another worker holds it, do nothing.
    2. For each of the next `chunk_size` items with neither a sample nor a failure,
       run the dialogue and store the sample under its (job, item index) key, so
       a chunk that runs twice stores nothing twice.
    3. Record progress; finish the job, or release the claim and queue the next chunk.

    A transient backend error, or a lost database connection, releases the claim
    and propagates, for the task to retry.
    """
    token = _claim(job_id)
    if token is None:
        return ChunkOutcome(claimed=False)
    job = GenerationJob.objects.select_related("lineage__generator", "generation").get(pk=job_id)
    outcome = ChunkOutcome(claimed=True)
    try:
        backend = get_backend(job.lineage.generator.backend, lineage_backend_config(lineage=job.lineage))
        models = (GenerationModels.objects.select_related("tutor", "student__parent")
                  .filter(generation=job.generation).first())
        student = student_backend(models=models, tutor_backend=backend)
        provenance = models_provenance(models)
        prompts = lineage_prompts(lineage=job.lineage)
        for index in _open_items(job)[: job.chunk_size]:
            if not _still_holds(job_id, token):
                log.info("job %s: claim lost or job cancelled; stopping this chunk", job_id)
                _refresh_progress(job_id)
                return outcome
            produced = _produce_item(job, backend, prompts, index, student=student)
            if isinstance(produced, str):
                _record_failure(job, index, produced)
                outcome.failed += 1
            elif _store_sample(job, index, *produced, models=provenance):
                outcome.stored += 1
    except BackendError as exc:
        GenerationJob.objects.filter(pk=job_id, claim_token=token).update(
            claim_token=None, claimed_until=None, last_error=str(exc)[:2000]
        )
        raise
    except (OperationalError, InterfaceError):
        _release_after_lost_connection(job_id, token)
        raise

    job = _refresh_progress(job_id)
    with transaction.atomic():
        if job.done_count + job.failed_count >= job.requested:
            GenerationJob.objects.filter(pk=job_id, claim_token=token, status=GenerationJob.Status.RUNNING).update(
                status=GenerationJob.Status.DONE, finished_at=timezone.now(), claim_token=None, claimed_until=None
            )
            outcome.finished = True
        else:
            released = GenerationJob.objects.filter(
                pk=job_id, claim_token=token, status=GenerationJob.Status.RUNNING
            ).update(claim_token=None, claimed_until=None)
            if released:
                _enqueue_chunk(job_id)
    return outcome


def job_resume(*, job: GenerationJob) -> bool:
    """Queue a failed or cancelled job again; it carries on from the items it lacks."""
    changed = GenerationJob.objects.filter(
        pk=job.pk, status__in=[GenerationJob.Status.FAILED, GenerationJob.Status.CANCELLED],
        generation__status=Generation.Status.OPEN,
    ).update(status=GenerationJob.Status.QUEUED, finished_at=None, last_error="", claim_token=None,
             claimed_until=None)
    if changed:
        with transaction.atomic():
            _enqueue_chunk(job.pk)
    return bool(changed)


def job_fail(*, job_id: int, reason: str) -> None:
    """Record a job's final failure (retries exhausted) so that the UI shows it."""
    GenerationJob.objects.filter(pk=job_id, status__in=GenerationJob.ACTIVE).update(
        status=GenerationJob.Status.FAILED,
        finished_at=timezone.now(),
        last_error=reason[:2000],
        claim_token=None,
        claimed_until=None,
    )


def jobs_release_dead() -> list[int]:
    """Queue again, at once, every active job whose claim a dead process on this host holds.

    Called by a worker as it starts (ouroboros/celery.py): the predecessor it
    replaces died holding these, and their leases need not run out first.
    """
    ids = claims.claims_release_dead(GenerationJob)
    for job_id in ids:
        with transaction.atomic():
            _enqueue_chunk(job_id)
    return ids


def jobs_requeue_stale(*, idle_seconds: int | None = None) -> list[int]:
    """Queue a chunk for every active job that nobody is working on.

    That is a job whose claim expired (its worker died mid-chunk) or an
    unclaimed job untouched for `idle_seconds` (default JOB_IDLE_SECONDS: its
    next-chunk message was lost, e.g. with a Redis that restarted empty).
    Queuing twice is harmless: the chunk claims the job first.
    """
    if idle_seconds is None:
        idle_seconds = settings.OUROBOROS["JOB_IDLE_SECONDS"]
    now = timezone.now()
    stale = GenerationJob.objects.filter(status__in=GenerationJob.ACTIVE).filter(
        Q(claimed_until__lt=now) | Q(claimed_until__isnull=True, updated_at__lt=now - timedelta(seconds=idle_seconds))
    )
    ids = list(stale.values_list("pk", flat=True))
    for job_id in ids:
        with transaction.atomic():
            _enqueue_chunk(job_id)
    return ids
