"""The model side of the loop: loop modes, the models each generation records, the held-out split,
the perplexity gate, auto review, and run_loop."""
from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from curation.models import (
    Generation,
    GenerationMetrics,
    LineagePolicy,
    Review,
    Sample,
    SourcePassage,
    TrainingSet,
)
from curation.reports import dashboard_lineages, lineage_charts
from curation.selectors import reviewer_agreement
from curation.services.auto_review import ACCEPT_ALL, SYSTEM_REVIEWER, AutoReviewError, samples_auto_review
from curation.services.gates import gates_evaluate
from curation.services.heldout import heldout_split_ensure, heldout_target
from curation.services.training_sets import training_set_plan
from generation.backends.llama_cpp import smollm2_path
from generation.errors import JobError
from generation.models import (
    GenerationJob,
    GenerationModels,
    GeneratorSettings,
    LoopMode,
    ModelRecord,
    TrainingRun,
)
from generation.services import job_create, job_run_chunk
from generation.services.loop import StudentError, generation_student_register
from tests.factories import make_flag, make_lineage, make_sample


def _set_mode(lineage, mode):
    GeneratorSettings.objects.filter(lineage=lineage).update(loop_mode=mode)


def _close_with_set(lineage, generation, *, user, samples=0, real=0) -> TrainingSet:
    """Close `generation` with a published set of the given size and open the next (as a build does)."""
    training_set = TrainingSet.objects.create(
        lineage=lineage, generation=generation, status=TrainingSet.Status.PUBLISHED, sample_count=samples,
        real_count=real, export_path=f"{lineage.slug}/gen-{generation.number}", built_by=user,
        published_at=timezone.now())
    Generation.objects.filter(pk=generation.pk).update(status=Generation.Status.CLOSED, closed_at=timezone.now())
    Generation.objects.create(lineage=lineage, number=generation.number + 1)
    return training_set


def _counts():
    return (GenerationJob.objects.count(), GenerationModels.objects.count(), ModelRecord.objects.count(),
            TrainingRun.objects.count())


# ---------------------------------------------------------------- loop modes and recorded models


def test_the_first_job_records_tutor_and_student_and_samples_name_them(lineage):
    job = job_create(lineage=lineage, requested=2, seed=5)
    models = GenerationModels.objects.get(generation=job.generation)
    assert models.tutor == models.student, "fixed mode: one configured model plays both"
    assert (models.student.kind, models.student.name) == (ModelRecord.Kind.REMOTE, "fake:fake-echo-1")
    job_run_chunk(job_id=job.pk)
    sample = Sample.objects.filter(job=job).first()
    named = sample.provenance["models"]["student"]
    assert named == {"id": models.student.pk, "name": "fake:fake-echo-1", "kind": "remote", "sha256": ""}
    assert sample.provenance["models"]["tutor"]["id"] == models.tutor.pk
    job_create(lineage=lineage, requested=1)
    assert GenerationModels.objects.filter(generation=job.generation).count() == 1, "recorded once"


def test_external_mode_refuses_jobs_until_a_student_is_registered(lineage, curator):
    _set_mode(lineage, LoopMode.EXTERNAL)
    before = _counts()
    with pytest.raises(JobError, match=r"loop mode external: generation 1 has no student registered; .*"
                                       r"POST /api/generations/\d+/student/"):
        job_create(lineage=lineage, requested=2)
    assert _counts() == before, "a refusal writes nothing"
    generation = lineage.generations.get(number=1)
    remote = ModelRecord.objects.create(lineage=lineage, kind=ModelRecord.Kind.REMOTE, name="vllm:student-2",
                                        base_url="http://127.0.0.1:8000/v1", remote_model="student-2",
                                        status=ModelRecord.Status.PENDING)
    with pytest.raises(StudentError, match="is pending, not ready") as refused:
        generation_student_register(generation=generation, model=remote)
    assert refused.value.field == "model"
    ModelRecord.objects.filter(pk=remote.pk).update(status=ModelRecord.Status.READY)
    remote.refresh_from_db()
    generation_student_register(generation=generation, model=remote)
    job = job_create(lineage=lineage, requested=2)
    models = GenerationModels.objects.get(generation=job.generation)
    assert models.student == remote and models.tutor.name == "fake:fake-echo-1"
    with pytest.raises(StudentError, match="already has samples or a running job"):
        generation_student_register(generation=generation, model=remote)


def test_a_closed_generation_takes_no_student(lineage, curator):
    first = lineage.generations.get(number=1)
    _close_with_set(lineage, first, user=curator, samples=1)
    remote = ModelRecord.objects.create(lineage=lineage, kind=ModelRecord.Kind.REMOTE, name="m",
                                        status=ModelRecord.Status.READY)
    with pytest.raises(StudentError, match="generation 1 of .* is closed") as refused:
        generation_student_register(generation=first, model=remote)
    assert refused.value.field == "generation"


def test_train_mode_with_an_empty_training_set_refuses_the_job_and_writes_nothing(lineage, curator):
    _set_mode(lineage, LoopMode.TRAIN)
    job_create(lineage=lineage, requested=1)  # generation 1: the configured student
    GenerationJob.objects.update(status=GenerationJob.Status.DONE)
    empty = _close_with_set(lineage, lineage.generations.get(number=1), user=curator)
    before = _counts()
    with pytest.raises(JobError) as refused:
        job_create(lineage=lineage, requested=3)
    assert str(refused.value) == (
        f"loop mode train: generation 2 has no student yet: no model has been trained on training set {empty.pk} "
        f"(generation 1), and that set is empty: there is nothing to train on. Build a set with accepted samples "
        f"or real passages, or switch the lineage to loop mode fixed")
    assert _counts() == before, "no job, no models record, no model, no training run"
    assert not GenerationModels.objects.filter(generation__number=2).exists()


def test_train_mode_names_a_refused_training_and_a_run_not_started(lineage, curator):
    _set_mode(lineage, LoopMode.TRAIN)
    training_set = _close_with_set(lineage, lineage.generations.get(number=1), user=curator, samples=3, real=1)
    with pytest.raises(JobError, match="no training run of it has started"):
        job_create(lineage=lineage, requested=1)
    ModelRecord.objects.create(lineage=lineage, kind=ModelRecord.Kind.MERGED_GGUF, name="x", training_set=training_set,
                               status=ModelRecord.Status.FAILED, failure_reason="the set has 4 records; at least 8")
    with pytest.raises(JobError, match="the trainer refused the set: the set has 4 records; at least 8"):
        job_create(lineage=lineage, requested=1)


def test_train_mode_generates_with_the_trained_student_on_llama_cpp(db, curator):
    """The student's backend is built from its ModelRecord: llama.cpp loads the record's own GGUF."""
    lineage = make_lineage(passages=6, student_answers=1)
    _set_mode(lineage, LoopMode.TRAIN)
    training_set = _close_with_set(lineage, lineage.generations.get(number=1), user=curator, samples=3, real=1)
    trained = ModelRecord.objects.create(
        lineage=lineage, kind=ModelRecord.Kind.MERGED_GGUF, name="student-gen2", training_set=training_set,
        path=str(smollm2_path()), sha256="ab" * 32, status=ModelRecord.Status.READY)
    job = job_create(lineage=lineage, requested=2, seed=3, chunk_size=2)
    models = GenerationModels.objects.get(generation=job.generation)
    assert models.student == trained and models.tutor.name == "fake:fake-echo-1"
    job_run_chunk(job_id=job.pk)  # a 135M model fails an item now and then: one sample of two is enough
    job.refresh_from_db()
    sample = Sample.objects.filter(job=job).first()
    assert sample is not None, list(job.failures.values_list("reason", flat=True))
    assert sample.provenance["backend"] == "fake", "the tutor asks"
    assert sample.provenance["student_model"] == smollm2_path().stem, "the trained file answers"
    assert sample.provenance["models"]["student"] == {"id": trained.pk, "name": "student-gen2",
                                                      "kind": "merged_gguf", "sha256": "ab" * 32}


def test_a_student_that_continues_an_adapter_is_served_on_the_base_gguf(db, monkeypatch):
    # Generation 3's student is an adapter whose parent is generation 2's adapter: llama.cpp must load
    # the base GGUF with the newest adapter (which holds the whole continued LoRA), never an adapter as the model.
    from generation.models import base_model_record
    from generation.services import loop

    lineage = make_lineage(passages=6)
    base = base_model_record()
    second = ModelRecord.objects.create(lineage=lineage, kind=ModelRecord.Kind.LORA_ADAPTER, name="g2", parent=base,
                                        path="/models/run-1/adapter.gguf", status=ModelRecord.Status.READY)
    third = ModelRecord.objects.create(lineage=lineage, kind=ModelRecord.Kind.LORA_ADAPTER, name="g3", parent=second,
                                       path="/models/run-2/adapter.gguf", status=ModelRecord.Status.READY)
    built = []
    monkeypatch.setattr(loop, "get_backend", lambda name, config: built.append((name, config)) or config)
    tutor = object()
    for student in (second, third):
        loop.student_backend(models=GenerationModels(tutor=base, student=student), tutor_backend=tutor)
    assert [(name, config.model_path, config.lora_path) for name, config in built] == [
        ("llama_cpp", base.path, "/models/run-1/adapter.gguf"), ("llama_cpp", base.path, "/models/run-2/adapter.gguf")]


# ---------------------------------------------------------------- held-out split


@pytest.mark.parametrize("corpus, fraction, minimum, expected", [
    (100, 0.1, 5, 10), (20, 0.1, 5, 5), (6, 0.1, 5, 3), (1, 0.1, 5, 0), (100, 0.0, 5, 0), (1000, 0.1, 5, 100),
])
def test_the_heldout_target_is_a_share_with_a_floor_and_half_the_corpus_at_most(corpus, fraction, minimum, expected):
    assert heldout_target(corpus=corpus, fraction=fraction, minimum=minimum) == expected


def test_the_split_is_fixed_seeded_and_never_takes_used_passages(db):
    lineage = make_lineage(passages=20)
    assert heldout_split_ensure(lineage=lineage) == 5
    first = set(SourcePassage.objects.filter(lineage=lineage, heldout=True).values_list("pk", flat=True))
    assert heldout_split_ensure(lineage=lineage) == 5
    assert set(SourcePassage.objects.filter(lineage=lineage, heldout=True).values_list("pk", flat=True)) == first
    twin = make_lineage(passages=20)
    assert heldout_split_ensure(lineage=twin) == 5
    texts = lambda ln: set(SourcePassage.objects.filter(lineage=ln, heldout=True).values_list("text", flat=True))  # noqa: E731
    assert texts(twin) == texts(lineage), "the same corpus and seed give the same split"
    # A passage already asked about is never moved into the split later.
    fresh = make_lineage(passages=20)
    used = list(SourcePassage.objects.filter(lineage=fresh).order_by("id"))
    for passage in used:
        make_sample(fresh, passage=passage)
    assert heldout_split_ensure(lineage=fresh) == 0


def test_heldout_passages_are_never_tutor_material_nor_in_a_training_set(db):
    lineage = make_lineage(passages=12)
    _set_mode(lineage, LoopMode.TRAIN)
    job = job_create(lineage=lineage, requested=8, seed=9, chunk_size=8)
    held = set(SourcePassage.objects.filter(lineage=lineage, heldout=True).values_list("pk", flat=True))
    assert len(held) == 5
    job_run_chunk(job_id=job.pk)
    asked = set(Sample.objects.filter(job=job).values_list("passage_id", flat=True))
    assert asked and not asked & held
    LineagePolicy.objects.filter(lineage=lineage).update(min_real_fraction=0.9)
    for sample in Sample.objects.filter(job=job):
        Sample.objects.filter(pk=sample.pk).update(status=Sample.Status.ACCEPTED)
    plan = training_set_plan(lineage=lineage)
    assert plan.corpus == 7 and not set(plan.passage_ids) & held


# ---------------------------------------------------------------- the perplexity gate and chart


def test_the_perplexity_gate_compares_with_generation_one(lineage):
    policy = LineagePolicy.objects.get(lineage=lineage)
    first = lineage.generations.get(number=1)
    GenerationMetrics.objects.create(generation=first, fingerprint="x", computed_at=timezone.now(),
                                     heldout_perplexity=10.0)
    second = Generation.objects.create(lineage=lineage, number=2, status=Generation.Status.CLOSED)
    values = GenerationMetrics(generation=second, fingerprint="y", computed_at=timezone.now(), heldout_perplexity=16.0)
    breaches = gates_evaluate(values=values, baseline=None, policy=policy)
    assert [b.gate for b in breaches] == ["heldout_perplexity"]
    assert breaches[0].message == ("the student's perplexity on the held-out real passages is 16.00, 1.60 times "
                                   "generation 1's 10.00; the gate is 1.5 times")
    values.heldout_perplexity = 14.0
    assert gates_evaluate(values=values, baseline=None, policy=policy) == []
    values.save()
    chart = next(c for c in lineage_charts(row=next(r for r in dashboard_lineages() if r.lineage == lineage))
                 if c.key == "heldout_perplexity")
    assert [d.generation for d in chart.dots] == [1, 2] and chart.threshold_y is not None


# ---------------------------------------------------------------- auto review


def test_auto_review_decides_by_the_flags_as_a_marked_system_reviewer(lineage, reviewer):
    with pytest.raises(AutoReviewError):
        samples_auto_review(lineage=lineage)
    lineage.auto_review = True
    lineage.save(update_fields=["auto_review"])
    clean = make_sample(lineage)
    duplicate = make_sample(lineage)
    make_flag(duplicate)
    unchecked = make_sample(lineage, flagged=False)
    outcome = samples_auto_review(lineage=lineage)
    assert (outcome.accepted, outcome.rejected, outcome.waiting) == (1, 1, 1)
    statuses = dict(Sample.objects.filter(lineage=lineage).values_list("pk", "status"))
    assert statuses == {clean.pk: "accepted", duplicate.pk: "rejected", unchecked.pk: "pending"}
    reviews = Review.objects.filter(sample__lineage=lineage)
    assert {(r.reviewer.username, r.system) for r in reviews} == {(SYSTEM_REVIEWER, True)}
    assert reviews.get(sample=duplicate).reason == "duplicate"
    assert samples_auto_review(lineage=lineage).accepted == 0, "nothing is decided twice"
    # A person's blind second review of a system decision is no agreement pair: the system is no rater.
    Review.objects.create(sample=clean, reviewer=reviewer, decision=Review.Decision.REJECT, reason="other: x",
                          overlap=True)
    assert reviewer_agreement(lineage=lineage) == []


def test_auto_review_accept_all_accepts_flagged_samples_too_as_the_system_reviewer(lineage):
    lineage.auto_review = True
    lineage.save(update_fields=["auto_review"])
    clean, flagged = make_sample(lineage), make_sample(lineage)
    make_flag(flagged)
    unchecked = make_sample(lineage, flagged=False)
    with pytest.raises(AutoReviewError, match="unknown auto review mode 'lenient'; use flags or accept-all"):
        samples_auto_review(lineage=lineage, mode="lenient")
    assert not Review.objects.filter(sample__lineage=lineage).exists(), "a refused mode decides nothing"
    outcome = samples_auto_review(lineage=lineage, mode=ACCEPT_ALL)
    assert (outcome.accepted, outcome.rejected, outcome.waiting) == (2, 0, 1), "it still waits for the detectors"
    statuses = dict(Sample.objects.filter(lineage=lineage).values_list("pk", "status"))
    assert statuses == {clean.pk: "accepted", flagged.pk: "accepted", unchecked.pk: "pending"}
    assert {(r.reviewer.username, r.system, r.decision) for r in Review.objects.filter(sample__lineage=lineage)} == {
        (SYSTEM_REVIEWER, True, "accept")}


# ---------------------------------------------------------------- the lineage API


def test_the_lineage_api_reads_and_changes_generator_settings_and_auto_review(curator_client, lineage):
    url = reverse("api-lineage", args=[lineage.slug])
    changed = curator_client.patch(url, {"loop_mode": "train", "temperature": 0.3, "auto_review": True},
                                   content_type="application/json")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["loop_mode"], body["temperature"], body["auto_review"], body["backend"]) == ("train", 0.3, True,
                                                                                             "fake")
    refused = curator_client.patch(url, {"loop_mode": "sometimes", "name": "Renamed"},
                                   content_type="application/json")
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "loop_mode"
    lineage.refresh_from_db()
    assert lineage.name != "Renamed" and lineage.generator.loop_mode == "train"


# ---------------------------------------------------------------- run_loop


@pytest.fixture
def eager(monkeypatch, settings, tmp_path):
    from ouroboros.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    settings.EXPORT_ROOT = tmp_path / "exports"


@pytest.mark.django_db(transaction=True)
def test_run_loop_runs_generations_unattended_with_auto_review(eager, capsys):
    # The fake backend's templated text reads as unsupported to the detectors; flag only the blatant here.
    lineage = make_lineage(passages=8, student_answers=2, duplicate_threshold=0.999, hallucination_threshold=0.999)
    LineagePolicy.objects.filter(lineage=lineage).update(min_real_fraction=0.2)
    call_command("run_loop", lineage.slug, "--generations", "2", "--items", "3", "--seed", "7", "--auto-review",
                 "--poll", "0.1", "--json")
    out = capsys.readouterr().out
    assert "generation 1 (fixed): generating 3 samples" in out and "generation 2: 3 samples" in out
    sets = TrainingSet.objects.filter(lineage=lineage).order_by("generation__number")
    assert [s.generation.number for s in sets] == [1, 2]
    assert all(s.status == TrainingSet.Status.PUBLISHED for s in sets)
    assert lineage.generations.get(status="open").number == 3
    assert not Sample.objects.filter(lineage=lineage, status=Sample.Status.PENDING).exists()
    assert Review.objects.filter(sample__lineage=lineage).exclude(system=True).count() == 0
    assert '"lineage_loop"' in out.splitlines()[-1]
    reports = json.loads(out.splitlines()[-1])["lineage_loop"]
    assert [sorted(r["seconds"]) for r in reports] == [["build", "flag", "generate", "review"]] * 2, \
        "one figure per step (mode fixed: no training, no perplexity)"


@pytest.mark.django_db(transaction=True)
def test_run_loop_accept_all_lets_flagged_samples_through(eager, capsys):
    # The fake backend's templated text reads as unsupported at the default thresholds: by the flags, rejected.
    lineage = make_lineage(passages=6, student_answers=1)
    call_command("run_loop", lineage.slug, "--generations", "1", "--items", "2", "--seed", "3", "--auto-review",
                 "--review-mode", "accept-all", "--poll", "0.1")
    assert "auto review (accept-all) accepted 2, rejected 0" in capsys.readouterr().out
    samples = Sample.objects.filter(lineage=lineage)
    assert samples.filter(flags__isnull=False).exists(), "some samples were flagged"
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.ACCEPTED}


@pytest.mark.django_db(transaction=True)
def test_run_loop_without_auto_review_waits_for_reviewers_and_says_so(eager, capsys):
    lineage = make_lineage(passages=6, student_answers=1)
    with pytest.raises(CommandError, match=r"gave up after 1 s waiting for reviewers: 2 samples of generation 1 "
                                           r"are pending review"):
        call_command("run_loop", lineage.slug, "--generations", "1", "--items", "2", "--poll", "0.2",
                     "--timeout", "1")
    assert "auto review is off; waiting for reviewers to decide 2 samples" in capsys.readouterr().out
    assert not TrainingSet.objects.filter(lineage=lineage).exists()


def test_run_loop_names_a_missing_lineage(db):
    with pytest.raises(CommandError, match="no lineage with slug 'nope'"):
        call_command("run_loop", "nope", "--generations", "1", "--items", "1")


def test_the_system_reviewer_cannot_log_in(lineage):
    from curation.services.auto_review import system_reviewer

    user = system_reviewer()
    assert not user.has_usable_password() and not user.is_staff and not user.groups.exists()


def test_the_held_out_perplexity_task_reaches_the_training_queue():
    # Redis delivers by routing key: the queue name alone (as _measure_later passes it) is not enough.
    from ouroboros.celery import app

    route = app.amqp.router.route({"queue": "training"}, "generation.record_heldout_perplexity")
    assert (route["queue"].name, route["routing_key"], route["exchange"]) == ("training", "training", "training")
