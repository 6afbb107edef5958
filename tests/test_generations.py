"""Three generations of a small lineage, end to end, and a collapse the gates catch.

Every Celery task runs eagerly in this process as it is queued after commit
(flagging with the real embedder, the exports, the metrics and the gates), so
the test drives the same services and tasks the workers run, in bounded time.
The generator is the deterministic fake backend for generations 1 and 2; for
generation 3 the lineage switches to a "collapsed" backend that says the same
thing every time, which is what pushes its diversity down on purpose.
"""
from __future__ import annotations

import os

import pytest
from django.urls import reverse

from curation.models import GatePause, GenerationMetrics, LineagePolicy, Sample, TrainingSet
from curation.services.exports import training_set_verify
from curation.services.metrics import metrics_refresh_stale
from curation.services.review import sample_accept, sample_reject
from curation.services.training_sets import training_set_build
from generation.backends import REGISTRY, Completion
from generation.models import GenerationJob, GeneratorSettings, LineageSchedule
from generation.services import job_create, schedule_run, schedule_sync
from ouroboros.celery import app
from curation.services.lineages import passages_add
from tests.factories import demo_passages, make_lineage

SAMPLES_PER_GENERATION = 8


class CollapsedBackend:
    """A model that has collapsed: whatever it is asked, it gives the same question and answer.

    The question names cells, which every passage of the test's lineage mentions: the generator
    refuses a question that names nothing of its material."""

    name = "collapsed"
    model = "collapsed-1"

    def __init__(self, config=None) -> None:
        pass

    def generate(self, messages, params) -> Completion:
        if "Question:" not in messages[-1]["content"]:
            text = "Why do living cells need energy?"
        else:
            text = "The main idea is that living cells need energy to survive."
        return Completion(text=text, model=self.model, finish_reason="stop", prompt_tokens=10,
                          completion_tokens=len(text.split()), latency_ms=0)


@pytest.fixture
def eager_tasks(monkeypatch):
    """Run each queued task at once, in this process, as a worker would."""
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    monkeypatch.setitem(REGISTRY, "collapsed", f"{__name__}.CollapsedBackend")


@pytest.fixture(autouse=True)
def export_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"


def run_generation(lineage, curator, reviewer, number, run_tasks, *, reject=1):
    """Generate, flag and review one generation: returns its accepted samples."""
    with run_tasks():
        job = job_create(lineage=lineage, requested=SAMPLES_PER_GENERATION, created_by=curator,
                         seed=1000 * number, chunk_size=4)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE, job.last_error
    samples = list(Sample.objects.filter(job=job).order_by("item_index"))
    assert len(samples) == SAMPLES_PER_GENERATION
    assert all(s.flagged_at and s.embedding is not None for s in samples), "flagged on the curation queue"
    accepted = []
    with run_tasks():
        for i, sample in enumerate(samples):
            if i < reject:
                sample_reject(sample=sample, reviewer=reviewer, reason="off-topic")
            else:
                sample_accept(sample=sample, reviewer=reviewer)
                accepted.append(sample)
    return accepted


def test_three_generations_and_a_collapse_that_trips_the_gate(
        eager_tasks, client, curator, reviewer, tmp_path, django_capture_on_commit_callbacks):
    run_tasks = lambda: django_capture_on_commit_callbacks(execute=True)  # noqa: E731
    lineage = make_lineage(passages=0, backend="fake", student_answers=2)
    passages_add(lineage=lineage, passages=[p for p in demo_passages() if "cell" in p["text"].lower()][:8])
    # Thresholds for a small lineage: judge from 5 samples on. The fake backend's templated text
    # is less diverse than real prose (about 75% of generation 0's pairwise distance), so the
    # diversity gate sits at 40%; the near-duplicate gate keeps its default of 50%.
    LineagePolicy.objects.filter(lineage=lineage).update(
        min_real_fraction=0.25, gate_min_samples=5, gate_min_diversity_ratio=0.4,
    )
    schedule = LineageSchedule.objects.create(lineage=lineage, name="nightly", requested=4, max_backlog=100)
    schedule_sync(schedule=schedule)

    accepted_by_generation = {}
    for number in (1, 2):
        accepted_by_generation[number] = run_generation(lineage, curator, reviewer, number, run_tasks)
        with run_tasks():
            training_set = training_set_build(lineage=lineage, built_by=curator, seed=number)
        training_set.refresh_from_db()
        assert training_set.status == TrainingSet.Status.PUBLISHED
        assert training_set_verify(training_set=training_set) == []
        # Accumulate: every earlier accepted sample, plus this generation's, plus real data.
        synthetic = {e["generation"]: e["records"] for e in training_set.manifest["composition"]
                     if e["origin"] == "synthetic"}
        assert synthetic == {g: len(accepted_by_generation[g]) for g in range(1, number + 1)}
        assert training_set.manifest["real_fraction"] >= 0.25
        metrics = GenerationMetrics.objects.get(generation__lineage=lineage, generation__number=number)
        assert not metrics.at_risk, metrics.risk_reasons
        assert metrics.accepted == SAMPLES_PER_GENERATION - 1 and metrics.reject_reasons == {"off-topic": 1}

    # Generation 3: the model has collapsed, and a tired reviewer accepts everything.
    GeneratorSettings.objects.filter(lineage=lineage).update(backend="collapsed")
    accepted_by_generation[3] = run_generation(lineage, curator, reviewer, 3, run_tasks, reject=0)
    assert LineageSchedule.objects.get(pk=schedule.pk).paused_at is None, "nothing judged it yet"

    # The periodic refresh sees the open generation changed and recomputes its metrics.
    with run_tasks():
        queued = metrics_refresh_stale()
    assert lineage.generations.get(number=3).pk in queued
    baseline = GenerationMetrics.objects.get(generation__lineage=lineage, generation__number=0)
    healthy = GenerationMetrics.objects.get(generation__lineage=lineage, generation__number=2)
    collapsed = GenerationMetrics.objects.get(generation__lineage=lineage, generation__number=3)
    assert collapsed.pairwise_distance < 0.05 < healthy.pairwise_distance, "diversity pushed down"
    assert collapsed.vendi < 1.5 < healthy.vendi
    assert collapsed.at_risk and collapsed.risk_reasons[0].startswith(
        "diversity (mean pairwise cosine distance of accepted samples) is 0.0")
    assert f"of generation 0's {baseline.pairwise_distance:.3f}; the gate is 40%" in collapsed.risk_reasons[0]
    assert collapsed.risk_reasons[1].endswith("of generated samples are near-duplicates; the gate is 50%")
    assert healthy.duplicate_rate < 0.5 < collapsed.duplicate_rate

    # The gate paused the lineage's schedule and recorded it; a firing now skips and says why.
    schedule.refresh_from_db()
    assert schedule.paused_at and schedule.paused_reason.startswith("gate: generation 3 is at risk: diversity")
    pause = GatePause.objects.get(generation__lineage=lineage)
    assert pause.generation.number == 3 and pause.schedule_ids == [schedule.pk]
    run = schedule_run(schedule_id=schedule.pk)
    assert run.job is None and run.skipped_reason.startswith("the schedule is paused: gate: generation 3")

    # Building generation 3 is still possible; its set holds all three generations and real data.
    with run_tasks():
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=3)
    training_set.refresh_from_db()
    synthetic = {e["generation"]: e["records"] for e in training_set.manifest["composition"]
                 if e["origin"] == "synthetic"}
    assert synthetic == {1: 7, 2: 7, 3: 8}
    assert training_set.real_count == 8, "25% of 30 records: 8 passages, the whole corpus"
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    chat = training_set.exports.get(format="chat")
    rows = load_dataset("json", data_files=str(tmp_path / "exports" / chat.path), split="train",
                        cache_dir=str(tmp_path / "hf-cache"))
    assert len(rows) == 30

    # The curator sees the warning on the dashboard and resumes; the schedule runs again.
    client.force_login(curator)
    html = client.get(reverse("dashboard"), {"lineage": lineage.slug}).content.decode()
    assert "generation 3 is at risk" in html and f'id="gate-pause-{pause.pk}"' in html
    client.post(reverse("gate-resume", args=[pause.pk]), {"note": "switching the backend back"})
    pause.refresh_from_db()
    assert pause.resumed_by == curator and pause.note == "switching the backend back"
    with django_capture_on_commit_callbacks(execute=False):
        assert schedule_run(schedule_id=schedule.pk).job is not None
