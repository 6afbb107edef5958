"""Per-lineage schedules: each LineageSchedule row is mirrored into one
django-celery-beat PeriodicTask, and each firing either starts a job or
records why it skipped. A schedule that `runs_loop` instead advances the
lineage's loop one step per firing (`loop_runner.loop_step`)."""
from __future__ import annotations

import json

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from curation.models import Generation, Sample
from generation.errors import JobError
from generation.models import GenerationJob, LineageSchedule, ScheduleRun

from .jobs import job_create

TASK_NAME = "generation.run_schedule"


def _periodic_task_name(schedule: LineageSchedule) -> str:
    return f"lineage-schedule-{schedule.pk}"


def schedule_sync(*, schedule: LineageSchedule) -> PeriodicTask:
    """Create or update the beat row for a schedule (after any change to it)."""
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=schedule.minute, hour=schedule.hour, day_of_week=schedule.day_of_week,
        day_of_month=schedule.day_of_month, month_of_year=schedule.month_of_year, timezone="UTC",
    )
    with transaction.atomic():
        task, _ = PeriodicTask.objects.update_or_create(
            name=_periodic_task_name(schedule),
            defaults={
                "task": TASK_NAME,
                "crontab": crontab,
                "args": json.dumps([schedule.pk]),
                # A paused schedule still fires, so that its skip and the reason are on record.
                "enabled": schedule.enabled,
                "expire_seconds": 300,
                "description": f"{schedule.lineage.name}: {schedule.name} ({schedule.requested} samples"
                               + (", one loop step a firing)" if schedule.runs_loop else ")"),
            },
        )
        if schedule.periodic_task_id != task.pk:
            LineageSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
            schedule.periodic_task = task
    return task


def schedule_delete(*, schedule: LineageSchedule) -> None:
    with transaction.atomic():
        PeriodicTask.objects.filter(name=_periodic_task_name(schedule)).delete()
        schedule.delete()


def schedule_pause(*, schedule: LineageSchedule, reason: str) -> None:
    LineageSchedule.objects.filter(pk=schedule.pk).update(paused_at=timezone.now(), paused_reason=reason[:500])


def schedule_resume(*, schedule: LineageSchedule) -> None:
    """Resume; a loop schedule then replaces a job that failed before now instead of stopping on it again."""
    LineageSchedule.objects.filter(pk=schedule.pk).update(paused_at=None, paused_reason="", resumed_at=timezone.now())


def lineage_review_backlog(*, lineage) -> int:
    """Samples waiting for review in the open generation, plus those still to come from running jobs."""
    pending = Sample.objects.filter(
        lineage=lineage, status=Sample.Status.PENDING, generation__status=Generation.Status.OPEN
    ).count()
    coming = sum(
        max(job.requested - job.done_count - job.failed_count, 0)
        for job in GenerationJob.objects.filter(lineage=lineage, status__in=GenerationJob.ACTIVE)
    )
    return pending + coming


def schedule_run(*, schedule_id: int) -> ScheduleRun:
    """One firing: start a job, or skip and record why.

    It skips when the schedule is paused or disabled, when a job of the lineage is
    still running, or when the review backlog has reached the schedule's limit: a
    queue reviewers can never work through helps nobody.
    """
    schedule = LineageSchedule.objects.select_related("lineage").get(pk=schedule_id)
    lineage = schedule.lineage
    reason = ""
    if not schedule.enabled:
        reason = "the schedule is disabled"
    elif schedule.paused_at:
        reason = f"the schedule is paused: {schedule.paused_reason or 'no reason given'}"
    elif schedule.runs_loop:
        return _loop_firing(schedule)
    elif GenerationJob.objects.filter(lineage=lineage, status__in=GenerationJob.ACTIVE).exists():
        reason = "a job of this lineage is still running"
    else:
        backlog = lineage_review_backlog(lineage=lineage)
        if backlog >= schedule.max_backlog:
            reason = f"review backlog is {backlog} samples, at or above the limit of {schedule.max_backlog}"
    if reason:
        return ScheduleRun.objects.create(schedule=schedule, skipped_reason=reason)
    try:
        job = job_create(lineage=lineage, requested=schedule.requested)
    except JobError as exc:
        return ScheduleRun.objects.create(schedule=schedule, skipped_reason=str(exc))
    return ScheduleRun.objects.create(schedule=schedule, job=job)


LOOP_STOPPED = "the loop stopped: "


def _loop_firing(schedule: LineageSchedule) -> ScheduleRun:
    """A loop schedule's firing: one step of the loop, recorded (what it did, or what it waits for).

    The step never blocks: a job, the flags, reviewers, exports or the trainer
    are waited for by firing again. When the loop cannot go on (a refused job,
    a failed job or training run, a refused build) the schedule pauses itself
    with the cause, like a gate; resuming it after the cause is fixed goes on
    from there (a job that failed before the resume is replaced by a new one).
    Past `loop_last_generation` it skips, saying the loop is done.
    """
    from .loop_runner import LoopError, Phase, loop_step

    last = schedule.loop_last_generation
    try:
        step = loop_step(lineage=schedule.lineage, items=schedule.requested,
                         retry_failed_before=max(filter(None, [schedule.created_at, schedule.resumed_at])),
                         stop_before=last + 1 if last else None)
    except LoopError as exc:
        reason = f"{LOOP_STOPPED}{exc}"[:500]
        schedule_pause(schedule=schedule, reason=reason)
        return ScheduleRun.objects.create(schedule=schedule, skipped_reason=reason)
    if step.phase == Phase.READY:
        return ScheduleRun.objects.create(
            schedule=schedule, skipped_reason=f"the loop is done: generation {last} is built and generation "
                                              f"{step.generation} is ready (the schedule's last generation is {last})")
    return ScheduleRun.objects.create(schedule=schedule, job=step.job, loop_step=(
        ("waiting: " if step.waiting else "") + (step.note + "; " if step.note else "") + step.message)[:500])
