"""Building the next generation: policy, real data, seeded reproducible builds, immutable published sets."""
import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, transaction

from curation.models import Generation, LineagePolicy, TrainingSet, TrainingSetExport
from curation.services.exports import export_run, real_prompt, training_set_verify
from curation.services.review import sample_accept, sample_reject
from curation.services.training_sets import (
    Composition,
    PolicyViolation,
    TrainingSetError,
    policy_check,
    real_needed,
    training_set_build,
    training_set_plan,
)
from generation.models import GenerationJob
from tests.factories import make_lineage, make_sample


@pytest.fixture(autouse=True)
def export_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


def build(lineage, curator, django_capture_on_commit_callbacks, seed=7):
    """Build, then run the queued exports here as the `curation` worker would."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=seed)
    assert len(callbacks) == 4, "three exports and the generation's metrics are queued after commit"
    for export in training_set.exports.all():
        assert export_run(export_id=export.pk)
    training_set.refresh_from_db()
    return training_set


def accept(lineage, reviewer, count, **fields):
    samples = [make_sample(lineage, question=f"Q{i} {lineage.generations.get(status='open').number}?",
                           answer=f"Answer <b>{i}</b> \u00e9.", **fields) for i in range(count)]
    for sample in samples:
        sample_accept(sample=sample, reviewer=reviewer)
    return samples


def chat_lines(training_set, fmt=TrainingSetExport.Format.CHAT):
    export = training_set.exports.get(format=fmt)
    return [json.loads(line) for line in (Path(settings.EXPORT_ROOT) / export.path).read_text("utf-8").splitlines()]


def as_chat(question, answer):
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_the_export_holds_the_accepted_samples_and_the_drawn_real_passages(
        lineage, reviewer, curator, django_capture_on_commit_callbacks):
    accepted = accept(lineage, reviewer, 3)
    rejected, pending = make_sample(lineage), make_sample(lineage)
    sample_reject(sample=rejected, reviewer=reviewer, reason="off-topic")

    training_set = build(lineage, curator, django_capture_on_commit_callbacks)

    records = chat_lines(training_set)
    real = list(training_set.passages.order_by("id"))
    assert len(real) == 1, "20% real data for 3 synthetic samples is one passage"
    expected = [as_chat(s.question, s.answer) for s in accepted] + [as_chat(real_prompt(p), p.text) for p in real]
    assert sorted(map(json.dumps, records)) == sorted(map(json.dumps, expected))
    assert set(training_set.samples.all()) == set(accepted) and pending not in training_set.samples.all()
    assert training_set.manifest["counts"] == {
        "records": 4, "synthetic": 3, "real": 1, "accepted": 3, "rejected": 1, "left_out_pending": 1
    }
    assert training_set.status == TrainingSet.Status.PUBLISHED


def test_the_manifest_lists_composition_policy_and_the_sha256_of_every_file(
        lineage, reviewer, curator, django_capture_on_commit_callbacks):
    accept(lineage, reviewer, 4)
    training_set = build(lineage, curator, django_capture_on_commit_callbacks, seed=11)
    manifest = training_set.manifest
    assert manifest["policy"] == {"mode": "accumulate", "min_real_fraction": 0.2}
    assert manifest["seed"] == 11 and manifest["generation"] == 1
    assert manifest["composition"] == [
        {"generation": 0, "origin": "real", "records": 1},
        {"generation": 1, "origin": "synthetic", "records": 4},
    ]
    folder = Path(settings.EXPORT_ROOT) / training_set.export_path
    assert {entry["format"] for entry in manifest["files"]} == {"chat-messages-jsonl", "alpaca-jsonl", "parquet"}
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        assert entry["records"] == 5
    on_disk = (folder / "manifest.json").read_bytes()
    assert json.loads(on_disk) == manifest
    assert hashlib.sha256(on_disk).hexdigest() == training_set.sha256
    assert training_set_verify(training_set=training_set, rebuild=True) == []


def test_building_closes_the_generation_and_opens_the_next(lineage, reviewer, curator):
    accept(lineage, reviewer, 1)
    training_set = training_set_build(lineage=lineage, built_by=curator)
    assert training_set.generation.number == 1
    generations = dict(lineage.generations.values_list("number", "status"))
    assert generations == {0: Generation.Status.CLOSED, 1: Generation.Status.CLOSED, 2: Generation.Status.OPEN}


def test_it_refuses_a_generation_with_nothing_accepted(lineage, curator):
    make_sample(lineage)
    with pytest.raises(TrainingSetError, match="no accepted samples"):
        training_set_build(lineage=lineage, built_by=curator)
    assert lineage.generations.get(number=1).status == Generation.Status.OPEN


def test_it_refuses_while_a_job_is_still_running(lineage, reviewer, curator):
    accept(lineage, reviewer, 1)
    GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=3)
    with pytest.raises(TrainingSetError, match="1 running job"):
        training_set_build(lineage=lineage, built_by=curator)
    assert not TrainingSet.objects.exists()


def test_accumulate_takes_every_earlier_accepted_sample_and_replace_only_the_last(
        reviewer, curator, django_capture_on_commit_callbacks):
    for mode, expected_generations in [("accumulate", {1: 2, 2: 3}), ("replace", {2: 3})]:
        lineage = make_lineage(passages=6)
        LineagePolicy.objects.filter(lineage=lineage).update(mode=mode)
        first = accept(lineage, reviewer, 2)
        build(lineage, curator, django_capture_on_commit_callbacks)
        second = accept(lineage, reviewer, 3)
        training_set = build(lineage, curator, django_capture_on_commit_callbacks)
        synthetic = [entry for entry in training_set.manifest["composition"] if entry["origin"] == "synthetic"]
        assert {entry["generation"]: entry["records"] for entry in synthetic} == expected_generations, mode
        members = set(training_set.samples.all())
        assert members == (set(first) | set(second) if mode == "accumulate" else set(second))


def test_it_refuses_a_set_short_of_real_data_and_says_by_how_much(reviewer, curator):
    lineage = make_lineage(passages=2)
    LineagePolicy.objects.filter(lineage=lineage).update(min_real_fraction=0.5)
    accept(lineage, reviewer, 5)
    with pytest.raises(PolicyViolation) as refused:
        training_set_build(lineage=lineage, built_by=curator)
    message = str(refused.value)
    assert "real data would be 28.6% of the set, 21.4 points below the minimum of 50.0%" in message
    assert "5 real passages are needed for 5 synthetic samples, the corpus has 2 (3 short)" in message
    assert [breach.rule for breach in refused.value.breaches] == ["real_fraction"]
    assert lineage.generations.get(number=1).status == Generation.Status.OPEN
    assert not TrainingSet.objects.exists() and not list(Path(settings.EXPORT_ROOT).rglob("*.*"))


def composition(**overrides):
    values = dict(generation=2, mode="accumulate", min_real_fraction=0.2, synthetic_by_generation={1: 4, 2: 4},
                  accepted_by_generation={1: 4, 2: 4}, real=2, real_needed=2, corpus=10)
    return Composition(**{**values, **overrides})


def test_the_policy_check_names_each_broken_rule():
    assert policy_check(composition()) == []
    [breach] = policy_check(composition(mode="replace", synthetic_by_generation={1: 4, 2: 4}))
    assert breach.rule == "replace" and breach.shortfall == 4
    assert "holds 4 from earlier generations (4 too many)" in breach.message
    [breach] = policy_check(composition(synthetic_by_generation={1: 1, 2: 4}, real=2))
    assert breach.rule == "accumulate" and breach.shortfall == 3
    assert "3 of 8 are missing (generation 1: 3)" in breach.message
    rules = [b.rule for b in policy_check(composition(synthetic_by_generation={1: 4}, real=0, corpus=0))]
    assert rules == ["accepted", "accumulate", "real_fraction"]


@pytest.mark.parametrize("synthetic,fraction,needed", [(3, 0.2, 1), (8, 0.2, 2), (4, 0.5, 4), (9, 0.1, 1),
                                                       (10, 0.0, 0), (0, 0.5, 0), (7, 1 / 3, 4)])
def test_real_needed_is_the_fewest_passages_that_reach_the_fraction(synthetic, fraction, needed):
    assert real_needed(synthetic=synthetic, min_fraction=fraction) == needed
    if needed:
        assert needed / (needed + synthetic) >= fraction > (needed - 1) / (needed - 1 + synthetic)


def test_a_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(TrainingSetError, match="at least 0 and below 1, not 1.0"):
        real_needed(synthetic=3, min_fraction=1.0)


def test_each_round_draws_real_passages_not_used_before(reviewer, curator, django_capture_on_commit_callbacks):
    lineage = make_lineage(passages=6)
    LineagePolicy.objects.filter(lineage=lineage).update(mode="replace", min_real_fraction=0.5)
    accept(lineage, reviewer, 3)
    first = set(build(lineage, curator, django_capture_on_commit_callbacks).passages.all())
    accept(lineage, reviewer, 3)
    second = set(build(lineage, curator, django_capture_on_commit_callbacks).passages.all())
    assert len(first) == len(second) == 3 and not first & second


def test_the_same_seed_and_inputs_give_byte_identical_files(reviewer, curator, django_capture_on_commit_callbacks):
    """Two lineages with the same texts: the JSONL files match byte for byte. (The Parquet file
    also carries database ids, which differ between lineages; a rebuild of one set proves it.)"""
    import pyarrow.parquet as pq

    digests, tables = [], []
    for seed in (5, 5, 6):
        lineage = make_lineage(passages=6)
        for i in range(6):
            sample_accept(sample=make_sample(lineage, question=f"Why {i}?", answer=f"Because {i}."),
                          reviewer=reviewer)
        training_set = build(lineage, curator, django_capture_on_commit_callbacks, seed=seed)
        digests.append({e.format: e.sha256 for e in training_set.exports.all()})
        parquet = Path(settings.EXPORT_ROOT) / training_set.exports.get(format="parquet").path
        tables.append(pq.read_table(parquet, columns=["messages", "origin", "source_generation"]))
    for fmt in (TrainingSetExport.Format.CHAT, TrainingSetExport.Format.ALPACA):
        assert digests[0][fmt] == digests[1][fmt]
        assert digests[0][fmt] != digests[2][fmt], "another seed orders the records differently"
    assert tables[0].equals(tables[1]) and not tables[0].equals(tables[2])
    assert training_set_verify(training_set=training_set, rebuild=True) == []


def test_the_plan_shows_what_a_build_would_do_without_writing(lineage, reviewer):
    accept(lineage, reviewer, 4)
    plan = training_set_plan(lineage=lineage, seed=3)
    assert (plan.synthetic, plan.real, plan.real_needed, plan.corpus) == (4, 1, 1, 6)
    assert policy_check(plan) == [] and not TrainingSet.objects.exists()


def test_a_published_set_cannot_be_changed(lineage, reviewer, curator, django_capture_on_commit_callbacks):
    accept(lineage, reviewer, 2)
    training_set = build(lineage, curator, django_capture_on_commit_callbacks)
    other = make_sample(lineage)
    attempts = [
        lambda: TrainingSet.objects.filter(pk=training_set.pk).update(sample_count=99),
        lambda: training_set.samples.add(other),
        lambda: training_set.samples.clear(),
        lambda: training_set.passages.clear(),
        lambda: training_set.exports.update(sha256="0" * 64),
        lambda: TrainingSet.objects.filter(pk=training_set.pk).delete(),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError, match="is published"), transaction.atomic():
            attempt()
    training_set.refresh_from_db()
    assert training_set.sample_count == 2 and training_set.samples.count() == 2


def test_verify_finds_a_file_changed_after_publishing(lineage, reviewer, curator, django_capture_on_commit_callbacks):
    accept(lineage, reviewer, 2)
    training_set = build(lineage, curator, django_capture_on_commit_callbacks)
    path = Path(settings.EXPORT_ROOT) / training_set.exports.get(format="alpaca").path
    path.chmod(0o644)
    path.write_text(path.read_text() + '{"instruction": "injected", "input": "", "output": ""}\n')
    [problem] = training_set_verify(training_set=training_set)
    assert problem.startswith(f"{path.name}: sha256") and "differs from the manifest" in problem
