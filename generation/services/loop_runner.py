"""The loop, unattended: generate → flag → review → build → train → the next generation.

The work itself is done where it always is: jobs and flags by Celery workers
(`generation` and `curation` queues), exports by `curation` workers, training
by the `training` worker. What drives it is `loop_step`: it reads the
lineage's state from the database, does the next thing if it can (start a
job, auto-review, build a set, start the trainer) and otherwise says what it
waits for. It never blocks, so it serves both drivers:

- `loop_run` (`manage.py run_loop`) calls it in a loop, sleeping while it waits;
- a lineage schedule with `runs_loop` calls it once per beat firing
  (`generation.services.schedules`).

Either can be stopped and started again at any time: the state is the
database's, so a step repeats only what had not happened.

Review is automatic when the lineage has `auto_review` on (a system reviewer
decides by the flags); otherwise the loop waits for people and says so.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Callable

from django.db import connection, transaction

from curation.models import Generation, Lineage, Sample, TrainingSet
from curation.selectors import lineage_open_generation
from curation.services.auto_review import BY_FLAGS, samples_auto_review, system_reviewer
from curation.services.training_sets import TrainingSetError, training_set_build
from generation.errors import JobError
from generation.models import GenerationJob, GenerationModels, LoopMode, TrainingRun, generator_settings_for

from .jobs import job_create
from .loop import _training_set_of, heldout_perplexity_record, trained_student, training_start

# The first key of the advisory lock one step of a lineage's loop holds (the second is the lineage's id):
# a schedule's firing and a run_loop on the same lineage never both start a job or build a set.
LOOP_LOCK_CLASS = 0x100B


class LoopError(RuntimeError):
    """The loop cannot go on; the message says at which step and why."""


class Phase:
    """What a step did or waits for; also the keys of a generation's timings."""

    BUILD = "build"  # build the set, then wait for its exports
    TRAIN = "train"  # mode train: the next student is being trained
    EXTERNAL = "external_training"  # mode external: waiting for a registered student
    GENERATE = "generate"
    FLAG = "flag"  # the flags still running once the job is done (most are done while it runs)
    REVIEW = "review"
    READY = "ready"  # the open generation could start, and the caller said not to (`stop_before`)
    BUSY = "busy"  # another step of this lineage's loop holds the lock


@dataclass
class LoopStep:
    """One step: what it did (`waiting` False) or what it waits for (`waiting` True)."""

    generation: int  # the open generation's number
    phase: str
    message: str  # what was done, or what is awaited (said again while the wait lasts)
    waiting: bool = False
    note: str = ""  # said once when a wait starts (e.g. "auto review is off")
    job: GenerationJob | None = None  # the job it started
    training_set: TrainingSet | None = None  # the set it built


@dataclass
class GenerationReport:
    number: int
    seconds: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    accepted: int = 0
    rejected: int = 0
    training_set: int | None = None
    student: str = ""
    heldout_perplexity: float | None = None


# ---------------------------------------------------------------- the step


def _job_progress(job: GenerationJob) -> str:
    return f"{job.done_count + job.failed_count} of {job.requested} items"


def _previous_set_step(*, generation: Generation, previous: TrainingSet | None) -> LoopStep | None:
    """Generation N > 1 starts once set N-1 (`previous`) is published (its exports are what the trainer reads)."""
    if previous is None or previous.status == TrainingSet.Status.PUBLISHED:
        return None
    return LoopStep(generation.number, Phase.BUILD, waiting=True,
                    message=f"waiting for the exports of training set {previous.pk}: are `curation` workers running?")


def _student_step(*, generation: Generation, previous: TrainingSet | None, mode: str, user) -> LoopStep | None:
    """The open generation's student: recorded, trained (mode train) or registered (mode external).

    Mode train: start the trainer on set N-1 once (publishing it in mode train
    usually has), wait while it runs; a refusal or a failed run stops the loop
    with the cause.
    """
    if mode == LoopMode.FIXED or GenerationModels.objects.filter(generation=generation, student__isnull=False).exists():
        return None
    if mode == LoopMode.EXTERNAL:
        return LoopStep(generation.number, Phase.EXTERNAL, waiting=True,
                        message=f"waiting for an external trainer to register generation {generation.number}'s "
                                f"student (POST /api/generations/{generation.pk}/student/)")
    if generation.number <= 1:
        return None  # generation 1's student is the configured model
    try:
        trained_student(generation=generation)
        return None
    except JobError as exc:
        refusal = str(exc)
    run = training_start(training_set=previous, created_by=user) if previous is not None else None
    if run is not None and run.is_active:
        return LoopStep(generation.number, Phase.TRAIN, waiting=True,
                        note=f"generation {generation.number - 1}: training the student of generation "
                             f"{generation.number} on training set {previous.pk}",
                        message=f"waiting for training run {run.pk} (step {run.step} of {run.total_steps}) of "
                                f"training set {previous.pk}: is a `training` worker running?")
    if run is not None and run.status != TrainingRun.Status.DONE:
        raise LoopError(f"training run {run.pk} of training set {previous.pk} ended {run.status}: {run.error}")
    raise LoopError(refusal)


def _job_step(*, lineage: Lineage, generation: Generation, mode: str, items: int, seed: int | None, user,
              retry_failed_before: datetime.datetime | None) -> LoopStep | None:
    """Start the generation's job, or wait for it; None once it is done."""
    job = (GenerationJob.objects.filter(generation=generation).exclude(status=GenerationJob.Status.CANCELLED)
           .order_by("-created_at", "-id").first())
    failed_before = (job is not None and job.status == GenerationJob.Status.FAILED and retry_failed_before is not None
                     and job.created_at < retry_failed_before)
    if job is None or failed_before:
        try:
            job = job_create(lineage=lineage, requested=items, created_by=user, seed=seed)
        except JobError as exc:
            raise LoopError(f"generation {generation.number}: the job was refused: {exc}") from None
        return LoopStep(generation.number, Phase.GENERATE, job=job,
                        message=f"generation {generation.number} ({mode}): generating {items} samples (job {job.pk})")
    if job.is_active:
        return LoopStep(generation.number, Phase.GENERATE, waiting=True,
                        message=f"waiting for job {job.pk} ({_job_progress(job)}): are `generation` workers running?")
    if job.status != GenerationJob.Status.DONE:
        raise LoopError(f"generation {generation.number}: job {job.pk} ended {job.status}: {job.last_error}")
    return None


def _review_step(*, lineage: Lineage, generation: Generation, review_mode: str) -> LoopStep | None:
    """Wait for the flags; then auto review decides, or the loop waits for reviewers. None once none is pending."""
    samples = Sample.objects.filter(generation=generation)
    unflagged = samples.filter(flagged_at__isnull=True).count()
    if unflagged:
        return LoopStep(generation.number, Phase.FLAG, waiting=True,
                        message=f"waiting for the flags of {unflagged} samples: are `curation` workers running?")
    pending = samples.filter(status=Sample.Status.PENDING)
    waiting = pending.count()
    if not waiting:
        return None
    note = ""
    if lineage.auto_review:
        outcome = samples_auto_review(lineage=lineage, mode=review_mode)
        named = "" if review_mode == BY_FLAGS else f" ({review_mode})"
        if outcome.accepted or outcome.rejected:
            return LoopStep(generation.number, Phase.REVIEW, message=(
                f"generation {generation.number}: auto review{named} accepted {outcome.accepted}, rejected "
                f"{outcome.rejected}" + (f", skipped {outcome.skipped} (decided or held by a person)"
                                         if outcome.skipped else "")))
    else:
        note = (f"generation {generation.number}: auto review is off; waiting for reviewers to decide "
                f"{waiting} samples in the review queue")
    return LoopStep(generation.number, Phase.REVIEW, waiting=True, note=note,
                    message=f"waiting for reviewers: {waiting} samples of generation {generation.number} "
                            f"are pending review")


def _build_step(*, lineage: Lineage, generation: Generation, user) -> LoopStep:
    try:
        with transaction.atomic():
            training_set = training_set_build(lineage=lineage, built_by=user)
    except TrainingSetError as exc:
        raise LoopError(f"generation {generation.number}: the training set was refused: {exc}") from None
    return LoopStep(generation.number, Phase.BUILD, training_set=training_set, message=(
        f"generation {generation.number}: built training set {training_set.pk} ({training_set.sample_count} "
        f"samples, {training_set.real_count} real passages); generation {generation.number + 1} is open"))


def loop_step(*, lineage: Lineage, items: int, seed: int | None = None, user=None,
              retry_failed_before: datetime.datetime | None = None, stop_before: int | None = None,
              review_mode: str = BY_FLAGS) -> LoopStep:
    """One non-blocking step of the loop on the lineage's open generation N: do the next thing, or say what waits.

    The first of these that applies, read from the database:
    1. N > 1 and training set N-1 still exporting: wait.
    2. N's student is not there yet: mode train starts the trainer on set N-1
       (once) and waits for it; mode external waits for a registered student.
       A refused or failed training stops the loop (LoopError) with the cause.
    3. N >= `stop_before`: the generation is ready and the step does nothing (Phase.READY).
    4. N has no job (or only a failed one created before `retry_failed_before`):
       start one of `items` samples. A running job: wait. A failed one: LoopError.
    5. Samples not flagged yet: wait for the `curation` workers.
    6. Pending samples: auto review decides them, or the step waits for reviewers.
    7. Build training set N (closes N, opens N+1).

    One step per lineage at a time (an advisory lock; a second one gets Phase.BUSY).
    `review_mode` is auto review's (`auto_review.MODES`; the recursion bench's uncurated arm accepts all).
    """
    if items < 1:
        raise LoopError("the loop generates at least 1 item per generation")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOOP_LOCK_CLASS, lineage.pk])
        if not cursor.fetchone()[0]:
            return LoopStep(0, Phase.BUSY, waiting=True,
                            message=f"another step of {lineage.slug}'s loop is running")
    try:
        lineage.refresh_from_db()
        generation = lineage_open_generation(lineage=lineage)
        if generation is None:
            raise LoopError(f"lineage {lineage.slug} has no open generation")
        generation.lineage = lineage  # the steps read it; the lineage is at hand
        mode = generator_settings_for(lineage).loop_mode
        user = user or system_reviewer()
        # Set N-1, read once per step: both the exports' wait and the trainer's start need it.
        previous = _training_set_of(lineage=lineage, number=generation.number - 1) if generation.number > 1 else None
        step = (_previous_set_step(generation=generation, previous=previous)
                or _student_step(generation=generation, previous=previous, mode=mode, user=user))
        if step is not None:
            return step
        if stop_before is not None and generation.number >= stop_before:
            return LoopStep(generation.number, Phase.READY,
                            message=f"generation {generation.number} is ready to generate")
        return (_job_step(lineage=lineage, generation=generation, mode=mode, items=items, seed=seed, user=user,
                          retry_failed_before=retry_failed_before)
                or _review_step(lineage=lineage, generation=generation, review_mode=review_mode)
                or _build_step(lineage=lineage, generation=generation, user=user))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOOP_LOCK_CLASS, lineage.pk])


# ---------------------------------------------------------------- the command's driver


def loop_run(*, lineage: Lineage, generations: int, items: int, seed: int | None = None, user=None,
             say: Callable[[str], None] = print, poll: float = 2.0, timeout: float = 6 * 3600,
             note_every: float = 60.0, review_mode: str = BY_FLAGS) -> list[GenerationReport]:
    """Run `generations` rounds of the loop on the lineage; a report per generation.

    Each round, on the open generation N, `loop_step` is called until generation
    N+1 is ready to start (never starting it):
    1. generate `items` samples (one job; an unfinished one is waited for, not doubled);
    2. wait for the flags;
    3. review: auto review decides, or the loop waits for reviewers;
    4. build training set N (closes N, opens N+1) and wait for its exports;
    5. loop mode train: train the student of N+1 on set N and wait for it, then
       record its held-out perplexity; external: wait for a registered student.
    Between steps that wait it sleeps `poll` s, says what it waits for every
    `note_every` s, and gives up (LoopError) after `timeout` s on one wait.
    A failed job older than this run is replaced; one of this run stops it.
    `review_mode` is auto review's (`auto_review.MODES`).
    A report's `seconds` has an entry per phase the round went through (the
    Phase values: generate, flag, review, build, train, external_training)
    and, in mode train, perplexity (measured here, after the round).
    """
    if generations < 1 or items < 1:
        raise LoopError("--generations and --items must be at least 1")
    user = user or system_reviewer()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    reports = []
    for round_number in range(generations):
        generation = lineage_open_generation(lineage=lineage)
        if generation is None:
            raise LoopError(f"lineage {lineage.slug} has no open generation")
        mode = generator_settings_for(lineage).loop_mode
        report = GenerationReport(number=generation.number)
        round_seed = None if seed is None else seed + round_number * 100_003
        # Every step of the round has a figure, 0 when it had nothing to wait for (the flags often finish
        # during the job); the trainer's or the external trainer's only in their modes.
        seconds = dict.fromkeys((Phase.GENERATE, Phase.FLAG, Phase.REVIEW, Phase.BUILD), 0.0)
        if mode == LoopMode.TRAIN:
            seconds[Phase.TRAIN] = 0.0
        elif mode == LoopMode.EXTERNAL:
            seconds[Phase.EXTERNAL] = 0.0
        wait_key, wait_started, last_note = None, 0.0, 0.0
        while True:
            before = time.monotonic()
            step = loop_step(lineage=lineage, items=items, seed=round_seed, user=user,
                             retry_failed_before=started_at, stop_before=generation.number + 1,
                             review_mode=review_mode)
            if step.phase == Phase.READY:
                break
            phase = step.phase
            if not step.waiting:
                say(step.message)
                wait_key = None
                seconds[phase] = seconds.get(phase, 0.0) + time.monotonic() - before
                continue
            now = time.monotonic()
            if wait_key != (step.phase, step.generation):
                wait_key, wait_started, last_note = (step.phase, step.generation), now, now
                if step.note:
                    say(step.note)
            elif now - wait_started > timeout:
                raise LoopError(f"gave up after {timeout:.0f} s {step.message}")
            elif now - last_note >= note_every:
                say(step.message)
                last_note = now
            time.sleep(poll)
            seconds[phase] = seconds.get(phase, 0.0) + time.monotonic() - before
        report.seconds = {phase: round(value, 1) for phase, value in seconds.items()}
        _report_fill(report=report, generation=generation, mode=mode)
        say(f"generation {generation.number}: {report.samples} samples, {report.accepted} accepted, "
            f"training set {report.training_set}; seconds {report.seconds}")
        reports.append(report)
    return reports


def _report_fill(*, report: GenerationReport, generation: Generation, mode: str) -> None:
    """What the round made: samples, decisions, the set, the student and (mode train) the next one's perplexity."""
    job = (GenerationJob.objects.filter(generation=generation, status=GenerationJob.Status.DONE)
           .order_by("-created_at", "-id").first())
    report.samples = job.done_count if job else 0
    models = GenerationModels.objects.filter(generation=generation).select_related("student").first()
    report.student = models.student.name if models and models.student else ""
    training_set = TrainingSet.objects.filter(generation=generation).first()
    report.training_set = training_set.pk if training_set else None
    report.accepted = Sample.objects.filter(generation=generation, status=Sample.Status.ACCEPTED).count()
    report.rejected = Sample.objects.filter(generation=generation, status=Sample.Status.REJECTED).count()
    if mode == LoopMode.TRAIN:
        started = time.monotonic()
        if generation.number == 1:
            heldout_perplexity_record(generation=generation)  # the untrained student: the gate's baseline
        following = Generation.objects.filter(lineage=generation.lineage, number=generation.number + 1).first()
        if following is not None:
            report.heldout_perplexity = heldout_perplexity_record(generation=following)
        report.seconds["perplexity"] = round(time.monotonic() - started, 1)
