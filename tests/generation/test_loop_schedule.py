"""The loop on a schedule: each firing of a `runs_loop` schedule advances the lineage's loop one step,
without blocking, pauses on what stops it, and obeys the gates and its last generation.

The firings are calls of the beat task itself; the workers' parts (a job's chunk, the exports) are
called here as the workers would, so every wait in between is seen. The flagger is stood in for by
marking samples checked: what is tested is the driver, not the detectors.
"""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from curation.models import Sample, TrainingSet
from curation.services.exports import export_run
from generation.models import GenerationJob, GeneratorSettings, LineageSchedule, LoopMode, ScheduleRun, TrainingRun
from generation.services import job_fail, job_run_chunk, schedule_pause, schedule_resume
from generation.tasks import run_schedule
from tests.factories import make_flag, make_lineage

pytestmark = pytest.mark.django_db


@pytest.fixture
def loop_lineage(db):
    return make_lineage(passages=6, student_answers=1, auto_review=True)


def _schedule(lineage, **fields) -> LineageSchedule:
    return LineageSchedule.objects.create(lineage=lineage, name="the loop", minute="*", hour="*", requested=2,
                                          runs_loop=True, **fields)


def _fire(schedule, capture) -> tuple[str, ScheduleRun]:
    """One beat firing; what the workers would be sent stays unsent (the test plays the workers)."""
    with capture(execute=False):
        said = run_schedule(schedule.pk)
    return said, ScheduleRun.objects.filter(schedule=schedule).order_by("-created_at", "-id").first()


def _mark_checked(generation, flagged: int = 0) -> None:
    """What the flagger would have done: every sample checked, the first `flagged` of them flagged."""
    samples = list(Sample.objects.filter(generation=generation).order_by("id"))
    for sample in samples[:flagged]:
        make_flag(sample)
    Sample.objects.filter(generation=generation).update(flagged_at=timezone.now())


def test_a_loop_schedule_advances_generate_review_build_one_step_per_firing_then_stops_at_its_last_generation(
        loop_lineage, curator_client, django_capture_on_commit_callbacks):
    schedule = _schedule(loop_lineage, loop_last_generation=1)
    capture = django_capture_on_commit_callbacks
    generation = loop_lineage.generations.get(number=1)

    said, run = _fire(schedule, capture)
    job = GenerationJob.objects.get(generation=generation)
    assert run.job == job and job.requested == 2
    assert said == f"loop: generation 1 (fixed): generating 2 samples (job {job.pk})"

    said, run = _fire(schedule, capture)  # nothing is doubled while the job runs
    assert said == f"loop: waiting: waiting for job {job.pk} (0 of 2 items): are `generation` workers running?"
    assert GenerationJob.objects.filter(lineage=loop_lineage).count() == 1 and run.job is None

    with capture(execute=False):
        job_run_chunk(job_id=job.pk)  # the generation worker
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE and job.done_count == 2, job.last_error
    assert _fire(schedule, capture)[0] == "loop: waiting: waiting for the flags of 2 samples: are `curation` " \
                                          "workers running?"

    _mark_checked(generation, flagged=1)
    assert _fire(schedule, capture)[0] == "loop: generation 1: auto review accepted 1, rejected 1"
    assert not Sample.objects.filter(generation=generation, status=Sample.Status.PENDING).exists()

    said, run = _fire(schedule, capture)
    training_set = TrainingSet.objects.get(generation=generation)
    assert said.startswith(f"loop: generation 1: built training set {training_set.pk} (1 samples, ")
    assert loop_lineage.generations.get(status="open").number == 2

    assert _fire(schedule, capture)[0] == (f"loop: waiting: waiting for the exports of training set "
                                           f"{training_set.pk}: are `curation` workers running?")
    for export in training_set.exports.all():  # the curation worker
        export_run(export_id=export.pk)

    said, run = _fire(schedule, capture)
    assert said == ("skipped: the loop is done: generation 1 is built and generation 2 is ready "
                    "(the schedule's last generation is 1)")
    assert not GenerationJob.objects.filter(generation__number=2, lineage=loop_lineage).exists()

    # The lineage page shows the schedule and its last firing, escaped like everything else there.
    page = curator_client.get(reverse("lineage-detail", args=[loop_lineage.slug])).content.decode()
    assert f'id="loop-schedule-{schedule.pk}"' in page and "the loop is done: generation 1 is built" in page
    assert "the schedule&#x27;s last generation is 1" in page


def test_a_gate_pauses_a_loop_schedule_and_a_resume_goes_on(loop_lineage, django_capture_on_commit_callbacks):
    schedule = _schedule(loop_lineage)
    schedule_pause(schedule=schedule, reason="gate: distinct-2 fell below 0.5")
    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    assert said == "skipped: the schedule is paused: gate: distinct-2 fell below 0.5"
    assert not GenerationJob.objects.filter(lineage=loop_lineage).exists()
    schedule_resume(schedule=schedule)
    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    assert run.job is not None and said.startswith("loop: generation 1 (fixed): generating 2 samples")


def test_a_failed_job_pauses_the_loop_with_the_cause_and_after_a_resume_a_new_job_replaces_it(
        loop_lineage, django_capture_on_commit_callbacks):
    schedule = _schedule(loop_lineage)
    _fire(schedule, django_capture_on_commit_callbacks)
    job = GenerationJob.objects.get(lineage=loop_lineage)
    job_fail(job_id=job.pk, reason="backend kept failing: connection refused")

    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    schedule.refresh_from_db()
    assert said == (f"skipped: the loop stopped: generation 1: job {job.pk} ended failed: backend kept failing: "
                    f"connection refused")
    assert schedule.paused_at is not None and schedule.paused_reason == said.removeprefix("skipped: ")
    assert _fire(schedule, django_capture_on_commit_callbacks)[0].startswith("skipped: the schedule is paused: "
                                                                             "the loop stopped: ")

    schedule_resume(schedule=schedule)  # the curator fixed the backend
    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    assert run.job is not None and run.job != job and said.startswith("loop: generation 1 (fixed): generating")
    assert GenerationJob.objects.filter(lineage=loop_lineage).count() == 2


def test_in_loop_mode_train_a_firing_starts_the_trainer_once_waits_for_it_and_stops_on_its_failure(
        reviewer, curator, django_capture_on_commit_callbacks):
    from tests.generation.training_support import published_set

    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    lineage = training_set.lineage
    GeneratorSettings.objects.filter(lineage=lineage).update(loop_mode=LoopMode.TRAIN)
    schedule = _schedule(lineage)

    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    training = TrainingRun.objects.get(training_set=training_set)
    assert said == (f"loop: waiting: generation 1: training the student of generation 2 on training set "
                    f"{training_set.pk}; waiting for training run {training.pk} (step 0 of "
                    f"{training.total_steps}) of training set {training_set.pk}: is a `training` worker running?")
    _fire(schedule, django_capture_on_commit_callbacks)
    assert TrainingRun.objects.filter(training_set=training_set).count() == 1  # started once
    assert not GenerationJob.objects.filter(lineage=lineage).exists()

    TrainingRun.objects.filter(pk=training.pk).update(status=TrainingRun.Status.FAILED, error="the loss became NaN")
    said, run = _fire(schedule, django_capture_on_commit_callbacks)
    assert said == (f"skipped: the loop stopped: training run {training.pk} of training set {training_set.pk} "
                    f"ended failed: the loss became NaN")
    schedule.refresh_from_db()
    assert schedule.paused_reason.startswith("the loop stopped: training run")
    assert not GenerationJob.objects.filter(lineage=lineage).exists()
