"""Per-lineage schedules: mirrored into beat, skipping with a reason, and run by a real beat."""
from __future__ import annotations

import json

import pytest
from django_celery_beat.models import PeriodicTask

from generation.models import GenerationJob, LineageSchedule, ScheduleRun
from generation.services import schedule_delete, schedule_pause, schedule_resume, schedule_run, schedule_sync
from ouroboros.celery import app
from tests.factories import make_lineage, make_sample
from tests.support.processes import CeleryProcess, wait_for


@pytest.fixture
def schedule(lineage):
    schedule = LineageSchedule.objects.create(lineage=lineage, name="nightly", minute="30", hour="3",
                                              requested=4, max_backlog=3)
    schedule_sync(schedule=schedule)
    return schedule


def test_a_schedule_is_mirrored_into_one_beat_row(schedule):
    task = PeriodicTask.objects.get(name=f"lineage-schedule-{schedule.pk}")
    assert task.task == "generation.run_schedule" and json.loads(task.args) == [schedule.pk]
    assert (task.crontab.minute, task.crontab.hour) == ("30", "3")
    schedule.hour = "4"
    schedule.save()
    schedule_sync(schedule=schedule)
    assert PeriodicTask.objects.filter(name=f"lineage-schedule-{schedule.pk}").count() == 1
    assert PeriodicTask.objects.get(pk=task.pk).crontab.hour == "4"
    schedule_delete(schedule=schedule)
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()


def test_a_firing_starts_a_job(schedule, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = schedule_run(schedule_id=schedule.pk)
    assert run.job.requested == 4 and run.skipped_reason == ""


def test_it_skips_and_says_why_when_the_review_backlog_is_full(schedule, lineage):
    for _ in range(3):
        make_sample(lineage)
    run = schedule_run(schedule_id=schedule.pk)
    assert run.job is None
    assert run.skipped_reason == "review backlog is 3 samples, at or above the limit of 3"


def test_it_skips_while_paused_and_runs_again_once_resumed(schedule, django_capture_on_commit_callbacks):
    schedule_pause(schedule=schedule, reason="diversity gate crossed")
    run = schedule_run(schedule_id=schedule.pk)
    assert run.skipped_reason == "the schedule is paused: diversity gate crossed"
    schedule_resume(schedule=schedule)
    with django_capture_on_commit_callbacks(execute=False):
        assert schedule_run(schedule_id=schedule.pk).job is not None


def test_it_skips_while_a_job_of_the_lineage_is_running(schedule, lineage):
    GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=2)
    assert schedule_run(schedule_id=schedule.pk).skipped_reason == "a job of this lineage is still running"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_beat_fires_a_schedule_and_a_worker_runs_its_job(tmp_path):
    """Real beat (DatabaseScheduler) and worker: a schedule due every minute yields a finished job."""
    app.control.purge()
    lineage = make_lineage(passages=3, backend="fake")
    schedule = LineageSchedule.objects.create(lineage=lineage, name="every minute", minute="*", hour="*",
                                              requested=2, max_backlog=100)
    schedule_sync(schedule=schedule)
    worker = CeleryProcess.worker("scheduled", tmp_path)
    beat = CeleryProcess.beat(tmp_path)
    try:
        wait_for(lambda: ScheduleRun.objects.filter(schedule=schedule, job__isnull=False).exists(),
                 timeout=100, what="beat to fire the schedule", processes=[worker, beat], interval=1)
        job = ScheduleRun.objects.filter(schedule=schedule, job__isnull=False).first().job
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=60,
                 what="the scheduled job", processes=[worker])
    finally:
        beat.stop()
        worker.stop()
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE and job.done_count == 2
