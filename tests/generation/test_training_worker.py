"""The trainer in real Celery worker processes (`training` queue), with the real model, PostgreSQL and Redis."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from curation.models import GenerationMetrics, LineagePolicy, Sample
from generation.backends.fake import FakeBackend
from generation.backends.llama_cpp import LlamaCppBackend
from generation.models import GenerationJob, GeneratorSettings, LoopMode, ModelRecord, TrainingRun, base_model_record
from generation.services import job_create
from generation.services.jobs import _produce_item
from generation.services.prompts import lineage_prompts
from generation.services.training import model_backend_config, sha256_of, training_run_create, training_runs_requeue_stale
from generation.training.lora import checkpoint_step
from tests.generation.training_support import TINY, published_set
from tests.support.processes import CeleryProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# A worker loads the student (~25-45 s on a loaded machine) and then runs steps of a few seconds each.
TIMEOUT = 900
# A second worker on the host of a killed one takes its run this soon (its start, not the lease).
TAKEN_BOUND_S = float(os.environ.get("OUROBOROS_MEASURE_MOVE_BOUND_S", "60"))  # raise it to measure old code


@pytest.fixture
def worker_env(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"
    settings.OUROBOROS = {**settings.OUROBOROS, "MODEL_ROOT": str(tmp_path / "models"),
                          "TRAINING_LEASE_SECONDS": 20}
    return {"OUROBOROS_MODEL_ROOT": str(tmp_path / "models"), "OUROBOROS_TRAINING_LEASE_SECONDS": "20",
            "OUROBOROS_TRAINING_THREADS": "2"}


def _run(pk: int) -> TrainingRun:
    return TrainingRun.objects.select_related("output_model").get(pk=pk)


# Two steps of one short sequence move a LoRA at TINY's learning rate far enough to change the answers;
# one chunk, so the worker never reloads. One thread each: on a loaded 2-core machine a second
# thread mostly waits for the first (torch's and llama.cpp's workers synchronise every layer).
TRAIN_ONCE = {**TINY, "max_steps": 2, "batch_size": 1, "max_tokens": 72, "checkpoint_every": 2}
ONE_THREAD = {"OUROBOROS_TRAINING_THREADS": "1", "OUROBOROS_LLAMA_THREADS": "1"}


def test_a_worker_trains_the_student_and_the_next_generation_is_generated_by_it(
        tmp_path, worker_env, settings, reviewer, curator, django_capture_on_commit_callbacks):
    """Issue 13's first test: train a few steps, then generation 2 (loop mode train) is answered by the
    trained student: its samples name it and its sha256, and the base model answers the same items,
    on the same seeds, otherwise."""
    settings.OUROBOROS = {**settings.OUROBOROS, "LLAMA_THREADS": 1}  # as in the worker, for the replay below
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    lineage = training_set.lineage
    # One process serves both queues: the model it trained is then loaded once more, by llama.cpp, for the job.
    worker = CeleryProcess.worker("trainer", tmp_path, env={**worker_env, **ONE_THREAD},
                                  queues="training,generation")
    try:
        run = training_run_create(training_set=training_set, created_by=curator, params=TRAIN_ONCE)
        wait_for(lambda: not _run(run.pk).is_active, timeout=TIMEOUT, what="the training run to end",
                 processes=[worker])
        run = _run(run.pk)
        assert run.status == TrainingRun.Status.DONE, f"{run.status}: {run.error}\n{worker.log_tail()}"
        # The fake tutor asks (deterministic per seed), the student answers once per item.
        GeneratorSettings.objects.filter(lineage=lineage).update(loop_mode=LoopMode.TRAIN, student_answers=1)
        LineagePolicy.objects.filter(lineage=lineage).update(heldout_min=1)  # one held-out passage to measure
        job = job_create(lineage=lineage, requested=1, created_by=curator, seed=5)
        # The job's first commit also queued the new student's held-out perplexity on `training`.
        wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active and GenerationMetrics.objects.filter(
                     generation=job.generation, heldout_perplexity__isnull=False).exists(),
                 timeout=TIMEOUT, what="generation 2's job and its student's held-out perplexity",
                 processes=[worker])
    finally:
        worker.stop()
    model = run.output_model
    assert model.status == ModelRecord.Status.READY and model.sha256 == sha256_of(Path(model.path))
    assert model.metrics["resumed_from_step"] == 0 and run.claimed_pid

    job = GenerationJob.objects.select_related("lineage", "generation").get(pk=job.pk)
    assert job.status == GenerationJob.Status.DONE and job.generation.number == 2, job.last_error
    samples = list(Sample.objects.filter(job=job).order_by("item_index"))
    # Seeded throughout (training, the fake tutor, llama.cpp), so this one item passes or fails every time.
    assert samples, list(job.failures.values_list("reason", flat=True))
    for sample in samples:
        assert sample.provenance["models"]["student"] == {
            "id": model.pk, "name": model.name, "kind": "lora_adapter", "sha256": model.sha256}
    measured = GenerationMetrics.objects.get(generation=job.generation).heldout_perplexity
    model.refresh_from_db()
    assert measured > 1 and list(model.metrics["heldout_perplexity"].values()) == [measured]

    # The job's items again, here, in the worker's order and on its seeds, with the base model as the
    # student on a fresh llama.cpp context, as the worker's was: a worker that ran the base model
    # would have written exactly these answers (the order of calls on a context moves the logits).
    base = LlamaCppBackend(model_backend_config(model=base_model_record()))
    try:
        replayed = [_produce_item(job, FakeBackend(), lineage_prompts(lineage=lineage), index, student=base)
                    for index in range(job.requested)]
    finally:
        base.close()
    for sample in samples:
        base_item = replayed[sample.item_index]  # (material, result), or why every attempt was refused
        base_answer = None if isinstance(base_item, str) else base_item[1].answer
        assert base_answer != sample.answer, sample.answer  # the trained student's answer, not the base model's


def test_a_worker_killed_mid_training_leaves_a_run_that_a_second_worker_finishes_from_its_checkpoint(
        tmp_path, worker_env, reviewer, curator, django_capture_on_commit_callbacks):
    """SIGKILL mid-chunk, then a new worker on this host: it frees the dead pid's claim as it starts and
    takes the run within seconds (the default 90 s lease is far from out), resuming from the checkpoint.

    The sweep runs on its production schedule (every 2 minutes, on the even minute), as beat would; it
    cannot take a live lease. The times are printed as one JSON line (`-s`).
    """
    env = {k: v for k, v in worker_env.items() if k != "OUROBOROS_TRAINING_LEASE_SECONDS"}  # the default lease
    training_set = published_set(reviewer=reviewer, curator=curator, capture=django_capture_on_commit_callbacks)
    first = CeleryProcess.worker("trainer-1", tmp_path, env=env, queues="training")
    try:
        run = training_run_create(training_set=training_set, params={**TINY, "max_steps": 6})
        # Past the first checkpoint (step 2), in the middle of the next chunk.
        wait_for(lambda: _run(run.pk).step >= 3, timeout=TIMEOUT, what="step 3", processes=[first])
        first.kill()
        killed_at = time.monotonic()
    finally:
        first.stop()
    killed = _run(run.pk)
    saved = checkpoint_step(Path(killed.checkpoint_path))
    assert killed.status == TrainingRun.Status.RUNNING and 2 <= saved < 6
    assert killed.claim_token and killed.claimed_pid and killed.claimed_host, "the dead worker's claim, with its pid"

    second = CeleryProcess.worker("trainer-2", tmp_path, env=env, queues="training")
    swept_minute = None

    def taken() -> bool:
        nonlocal swept_minute
        minute = int(time.time() // 60)
        if minute % 2 == 0 and minute != swept_minute:  # beat's crontab */2 for this sweep
            swept_minute = minute
            training_runs_requeue_stale()  # what beat's task calls (on the generation queue)
        now = _run(run.pk)
        return now.claim_token not in (None, killed.claim_token) and now.claimed_pid != killed.claimed_pid

    try:
        wait_for(taken, timeout=TAKEN_BOUND_S, what="the second worker to take the run", processes=[second])
        taken_after = time.monotonic() - killed_at
        wait_for(lambda: _run(run.pk).step > killed.step, timeout=TIMEOUT, what="a step past the kill",
                 processes=[second])
        moving_after = time.monotonic() - killed_at
        wait_for(lambda: not _run(run.pk).is_active, timeout=TIMEOUT, what="the run to end", processes=[second])
    finally:
        second.stop()
    print(json.dumps({"sigkill_to_run_taken_s": round(taken_after, 1),
                      "sigkill_to_step_past_kill_s": round(moving_after, 1)}))
    # The starting worker freed its dead predecessor's claim: not the lease running out, not the sweep.
    assert f"training_runs_release_dead: queued again [{run.pk}]" in second.log_path.read_text(errors="replace")
    run = _run(run.pk)
    assert run.status == TrainingRun.Status.DONE, f"{run.status}: {run.error}\n{second.log_tail()}"
    assert run.step == 6 and run.output_model.status == ModelRecord.Status.READY
    # The second worker started at the checkpoint, not at step 0.
    assert run.output_model.metrics["resumed_from_step"] == saved
