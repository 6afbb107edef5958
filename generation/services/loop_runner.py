"""The loop, unattended: generate → flag → review → build → train → the next generation.

`manage.py run_loop` calls `loop_run`. The work itself is done where it always
is: jobs and flags by Celery workers (`generation` and `curation` queues),
exports by `curation` workers, training by the `training` worker. This drives
the steps in order and waits for each by reading the database, so it can be
stopped and started again: every step it repeats is one that had not finished.

Review is automatic when the lineage has `auto_review` on (a system reviewer
decides by the flags); otherwise the loop waits for people and says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from django.db import transaction

from curation.models import Generation, Lineage, Sample, TrainingSet
from curation.selectors import lineage_open_generation
from curation.services.auto_review import BY_FLAGS, samples_auto_review, system_reviewer
from curation.services.training_sets import TrainingSetError, training_set_build
from generation.errors import JobError
from generation.models import GenerationJob, GenerationModels, LoopMode, TrainingRun, generator_settings_for

from .jobs import job_create
from .loop import heldout_perplexity_record, trained_student, training_start


class LoopError(RuntimeError):
    """The loop cannot go on; the message says at which step and why."""


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


@dataclass
class Waiter:
    """Polls a condition until it holds, saying what it waits for now and then."""

    say: Callable[[str], None]
    poll: float = 2.0
    timeout: float = 6 * 3600
    note_every: float = 60.0

    def until(self, done: Callable[[], bool], what: Callable[[], str]) -> None:
        started = last_note = time.monotonic()
        while not done():
            now = time.monotonic()
            if now - started > self.timeout:
                raise LoopError(f"gave up after {self.timeout:.0f} s {what()}")
            if now - last_note >= self.note_every:
                self.say(what())
                last_note = now
            time.sleep(self.poll)


def _generate(*, lineage: Lineage, generation: Generation, items: int, seed: int | None, user,
              waiter: Waiter) -> GenerationJob:
    job = GenerationJob.objects.filter(generation=generation).exclude(
        status=GenerationJob.Status.CANCELLED).order_by("-created_at").first()
    if job is None or job.status == GenerationJob.Status.FAILED:
        try:
            job = job_create(lineage=lineage, requested=items, created_by=user, seed=seed)
        except JobError as exc:
            raise LoopError(f"generation {generation.number}: the job was refused: {exc}") from None
    waiter.until(lambda: not GenerationJob.objects.get(pk=job.pk).is_active,
                 lambda: f"waiting for job {job.pk} ({_progress(job.pk)}): are `generation` workers running?")
    job.refresh_from_db()
    if job.status != GenerationJob.Status.DONE:
        raise LoopError(f"generation {generation.number}: job {job.pk} ended {job.status}: {job.last_error}")
    return job


def _progress(job_id: int) -> str:
    job = GenerationJob.objects.get(pk=job_id)
    return f"{job.done_count + job.failed_count} of {job.requested} items"


def _flags(*, generation: Generation, waiter: Waiter) -> None:
    samples = Sample.objects.filter(generation=generation)
    waiter.until(lambda: not samples.filter(flagged_at__isnull=True).exists(),
                 lambda: f"waiting for the flags of {samples.filter(flagged_at__isnull=True).count()} samples: "
                         f"are `curation` workers running?")


def _review(*, lineage: Lineage, generation: Generation, waiter: Waiter, say, review_mode: str) -> None:
    samples = Sample.objects.filter(generation=generation)
    lineage.refresh_from_db()
    if lineage.auto_review:
        outcome = samples_auto_review(lineage=lineage, mode=review_mode)
        say(f"generation {generation.number}: auto review ({review_mode}) accepted {outcome.accepted}, "
            f"rejected {outcome.rejected}"
            + (f", skipped {outcome.skipped} (decided or held by a person)" if outcome.skipped else ""))
    else:
        say(f"generation {generation.number}: auto review is off; waiting for reviewers to decide "
            f"{samples.filter(status=Sample.Status.PENDING).count()} samples in the review queue")
    waiter.until(lambda: not samples.filter(status=Sample.Status.PENDING).exists(),
                 lambda: f"waiting for reviewers: {samples.filter(status=Sample.Status.PENDING).count()} samples "
                         f"of generation {generation.number} are pending review")


def _build(*, lineage: Lineage, generation: Generation, user, waiter: Waiter) -> TrainingSet:
    training_set = TrainingSet.objects.filter(generation=generation).first()
    if training_set is None:
        try:
            with transaction.atomic():
                training_set = training_set_build(lineage=lineage, built_by=user)
        except TrainingSetError as exc:
            raise LoopError(f"generation {generation.number}: the training set was refused: {exc}") from None
    waiter.until(lambda: TrainingSet.objects.get(pk=training_set.pk).status == TrainingSet.Status.PUBLISHED,
                 lambda: f"waiting for the exports of training set {training_set.pk}: are `curation` workers running?")
    return training_set


def _train(*, training_set: TrainingSet, next_generation: Generation, user, waiter: Waiter) -> None:
    """Start (once) and wait for the built-in trainer; a refusal stops the loop with the cause."""
    run = training_start(training_set=training_set, created_by=user)
    if run is None:
        try:
            trained_student(generation=next_generation)
        except JobError as exc:
            raise LoopError(str(exc)) from None
        return
    waiter.until(lambda: not TrainingRun.objects.get(pk=run.pk).is_active,
                 lambda: f"waiting for training run {run.pk} ({_training_progress(run.pk)}): is a `training` worker "
                         f"running?")
    run.refresh_from_db()
    if run.status != TrainingRun.Status.DONE:
        raise LoopError(f"training run {run.pk} of training set {training_set.pk} ended {run.status}: {run.error}")


def _training_progress(run_id: int) -> str:
    run = TrainingRun.objects.get(pk=run_id)
    return f"step {run.step} of {run.total_steps}"


def _wait_external(*, next_generation: Generation, waiter: Waiter) -> None:
    waiter.until(
        lambda: GenerationModels.objects.filter(generation=next_generation, student__isnull=False).exists(),
        lambda: f"waiting for an external trainer to register generation {next_generation.number}'s student "
                f"(POST /api/generations/{next_generation.pk}/student/)",
    )


def loop_run(*, lineage: Lineage, generations: int, items: int, seed: int | None = None, user=None,
             say: Callable[[str], None] = print, poll: float = 2.0, timeout: float = 6 * 3600,
             review_mode: str = BY_FLAGS) -> list[GenerationReport]:
    """Run `generations` rounds of the loop on the lineage; a report per generation.

    Each round, on the open generation N:
    1. generate `items` samples (one job; an unfinished one is waited for, not doubled);
    2. wait for the flags;
    3. review: auto review decides, or the loop waits for reviewers;
    4. build training set N (closes N, opens N+1) and wait for its exports;
    5. loop mode train: train the student of N+1 on set N and wait for it, then
       record its held-out perplexity; external: wait for a registered student.
    `review_mode` is auto review's (auto_review.MODES). A report's `seconds` has one entry per step:
    generate, flag (the flags still running after the job; most are done
    while it runs), review, build, train (training, the GGUF adapter and its
    load-and-generate check) and perplexity.
    """
    if generations < 1 or items < 1:
        raise LoopError("--generations and --items must be at least 1")
    user = user or system_reviewer()
    waiter = Waiter(say=say, poll=poll, timeout=timeout)
    reports = []
    for round_number in range(generations):
        generation = lineage_open_generation(lineage=lineage)
        if generation is None:
            raise LoopError(f"lineage {lineage.slug} has no open generation")
        report = GenerationReport(number=generation.number)
        mode = generator_settings_for(lineage).loop_mode
        say(f"generation {generation.number} ({mode}): generating {items} samples")
        started = time.monotonic()
        job = _generate(lineage=lineage, generation=generation, items=items,
                        seed=None if seed is None else seed + round_number * 100_003, user=user, waiter=waiter)
        report.seconds["generate"] = round(time.monotonic() - started, 1)
        models = GenerationModels.objects.filter(generation=generation).select_related("student").first()
        report.student = models.student.name if models and models.student else ""
        started = time.monotonic()
        _flags(generation=generation, waiter=waiter)
        report.seconds["flag"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        _review(lineage=lineage, generation=generation, waiter=waiter, say=say, review_mode=review_mode)
        report.seconds["review"] = round(time.monotonic() - started, 1)
        report.samples = job.done_count
        started = time.monotonic()
        training_set = _build(lineage=lineage, generation=generation, user=user, waiter=waiter)
        report.seconds["build"] = round(time.monotonic() - started, 1)
        report.training_set = training_set.pk
        report.accepted = Sample.objects.filter(generation=generation, status=Sample.Status.ACCEPTED).count()
        report.rejected = Sample.objects.filter(generation=generation, status=Sample.Status.REJECTED).count()
        next_generation = lineage_open_generation(lineage=lineage)
        if mode == LoopMode.TRAIN:
            started = time.monotonic()
            say(f"generation {generation.number}: training the student of generation {next_generation.number} "
                f"on training set {training_set.pk}")
            _train(training_set=training_set, next_generation=next_generation, user=user, waiter=waiter)
            report.seconds["train"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            if generation.number == 1:
                heldout_perplexity_record(generation=generation)  # the untrained student: the gate's baseline
            report.heldout_perplexity = heldout_perplexity_record(generation=next_generation)
            report.seconds["perplexity"] = round(time.monotonic() - started, 1)
        elif mode == LoopMode.EXTERNAL:
            started = time.monotonic()
            _wait_external(next_generation=next_generation, waiter=waiter)
            report.seconds["external_training"] = round(time.monotonic() - started, 1)
        say(f"generation {generation.number}: {report.samples} samples, {report.accepted} accepted, "
            f"training set {training_set.pk}; seconds {report.seconds}")
        reports.append(report)
    return reports
