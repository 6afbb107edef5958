"""Gates: crossing a threshold marks the generation at risk, pauses the schedules, and is recorded."""
import pytest

from curation.models import GatePause, Generation, GenerationMetrics, LineagePolicy
from curation.services.gates import GateError, gate_resume, gates_check, gates_evaluate
from generation.models import LineageSchedule
from generation.services import schedule_pause, schedule_run
from tests.factories import make_lineage


def values(number=2, **fields):
    """Unsaved metrics of generation `number`: enough samples, healthy unless told otherwise."""
    defaults = dict(generated=40, accepted=30, pairwise_distance=0.6, duplicate_rate=0.1, hallucination_rate=0.1,
                    coverage=0.9)
    return GenerationMetrics(generation=Generation(number=number), **{**defaults, **fields})


BASELINE = GenerationMetrics(generation=Generation(number=0), pairwise_distance=0.6)


def test_healthy_metrics_cross_no_gate():
    assert gates_evaluate(values=values(), baseline=BASELINE, policy=LineagePolicy()) == []


def test_diversity_below_its_share_of_generation_0_is_a_breach():
    [breach] = gates_evaluate(values=values(pairwise_distance=0.3), baseline=BASELINE, policy=LineagePolicy())
    assert breach.gate == "diversity"
    assert breach.message == ("diversity (mean pairwise cosine distance of accepted samples) is 0.300, "
                              "50% of generation 0's 0.600; the gate is 80%")


def test_each_gate_names_its_metric_and_threshold():
    policy = LineagePolicy(gate_max_duplicate_rate=0.3, gate_min_coverage=0.5, gate_max_hallucination_rate=0.2)
    breaches = gates_evaluate(values=values(duplicate_rate=0.45, coverage=0.25, hallucination_rate=0.5),
                              baseline=BASELINE, policy=policy)
    assert [(b.gate, b.message) for b in breaches] == [
        ("duplicates", "45% of generated samples are near-duplicates; the gate is 30%"),
        ("coverage", "accepted samples cover 25% of the real passages (radius 0.5); the gate is 50%"),
        ("hallucinations", "50% of generated samples are flagged as likely hallucinations; the gate is 20%"),
    ]


def test_gates_wait_for_enough_samples_and_a_blank_threshold_is_off():
    few = values(accepted=3, generated=4, pairwise_distance=0.01, duplicate_rate=0.9)
    assert gates_evaluate(values=few, baseline=BASELINE, policy=LineagePolicy()) == []
    off = LineagePolicy(gate_min_diversity_ratio=None, gate_max_duplicate_rate=None)
    assert gates_evaluate(values=values(pairwise_distance=0.01, duplicate_rate=0.9), baseline=BASELINE,
                          policy=off) == []
    assert gates_evaluate(values=values(pairwise_distance=0.01), baseline=None, policy=LineagePolicy()) == [], \
        "no baseline yet: nothing to compare with"
    assert gates_evaluate(values=values(number=0, pairwise_distance=0.01), baseline=BASELINE,
                          policy=LineagePolicy()) == []


@pytest.fixture
def at_risk(db):
    """A lineage with two schedules (one already paused by hand, one disabled) and risky generation-1 metrics."""
    lineage = make_lineage(passages=3)
    schedules = {name: LineageSchedule.objects.create(lineage=lineage, name=name, requested=2, max_backlog=100)
                 for name in ("nightly", "hourly", "off")}
    LineageSchedule.objects.filter(pk=schedules["off"].pk).update(enabled=False)
    schedule_pause(schedule=schedules["hourly"], reason="maintenance")
    GenerationMetrics.objects.create(generation=lineage.generations.get(number=0), fingerprint="x",
                                     computed_at="2026-01-01T00:00Z", pairwise_distance=0.6)
    metrics = GenerationMetrics.objects.create(
        generation=lineage.generations.get(number=1), fingerprint="y", computed_at="2026-01-01T00:00Z",
        generated=20, accepted=20, pairwise_distance=0.12, duplicate_rate=0.0,
    )
    return lineage, schedules, metrics


def test_a_breach_marks_the_generation_and_pauses_the_running_schedules(at_risk):
    lineage, schedules, metrics = at_risk
    pause = gates_check(metrics=metrics)

    metrics.refresh_from_db()
    assert metrics.at_risk and metrics.risk_reasons == [pause.reasons[0]]
    assert "20% of generation 0's 0.600" in pause.reasons[0]
    assert pause.schedule_ids == [schedules["nightly"].pk], "only the one that was running"
    nightly = LineageSchedule.objects.get(pk=schedules["nightly"].pk)
    assert nightly.paused_at is not None and nightly.paused_reason.startswith("gate: generation 1 is at risk: ")
    assert LineageSchedule.objects.get(pk=schedules["hourly"].pk).paused_reason == "maintenance"
    run = schedule_run(schedule_id=nightly.pk)
    assert run.job is None and run.skipped_reason.startswith("the schedule is paused: gate: generation 1 is at risk")


def test_checking_again_records_one_pause_per_generation(at_risk):
    _, _, metrics = at_risk
    first = gates_check(metrics=metrics)
    assert gates_check(metrics=metrics) == first
    assert GatePause.objects.count() == 1


def test_a_curator_resumes_what_the_gate_paused_and_it_is_recorded(at_risk, curator,
                                                                     django_capture_on_commit_callbacks):
    lineage, schedules, metrics = at_risk
    pause = gates_check(metrics=metrics)
    assert gate_resume(pause=pause, resumed_by=curator, note="reviewed: a narrow topic on purpose") == 1
    pause.refresh_from_db()
    assert pause.resumed_by == curator and pause.resumed_at and pause.note.startswith("reviewed")
    assert LineageSchedule.objects.get(pk=schedules["nightly"].pk).paused_at is None
    assert LineageSchedule.objects.get(pk=schedules["hourly"].pk).paused_reason == "maintenance", \
        "a schedule paused for another reason stays paused"
    with pytest.raises(GateError, match="already resumed"):
        gate_resume(pause=pause, resumed_by=curator)
    # Still at risk when recomputed, but the curator's decision stands for this generation.
    gates_check(metrics=metrics)
    assert LineageSchedule.objects.get(pk=schedules["nightly"].pk).paused_at is None
    with django_capture_on_commit_callbacks(execute=False):
        assert schedule_run(schedule_id=schedules["nightly"].pk).job is not None
