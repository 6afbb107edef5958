"""Building the next generation freezes exactly the accepted samples."""
import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings

from curation.models import Generation
from curation.services.review import sample_accept, sample_reject
from curation.services.training_sets import TrainingSetError, training_set_build
from generation.models import GenerationJob
from tests.factories import make_sample


@pytest.fixture(autouse=True)
def export_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


def test_the_export_holds_exactly_the_accepted_samples(lineage, reviewer, curator):
    accepted = [make_sample(lineage, question=f"Q{i}?", answer=f"Answer <b>{i}</b> \u00e9.") for i in range(3)]
    rejected = make_sample(lineage)
    pending = make_sample(lineage)
    for sample in accepted:
        sample_accept(sample=sample, reviewer=reviewer)
    sample_reject(sample=rejected, reviewer=reviewer, reason="off-topic")

    training_set = training_set_build(lineage=lineage, built_by=curator)

    path = Path(settings.EXPORT_ROOT) / training_set.export_path
    raw = path.read_bytes()
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert records == [
        {"messages": [{"role": "user", "content": s.question}, {"role": "assistant", "content": s.answer}]}
        for s in accepted
    ]
    assert training_set.sha256 == hashlib.sha256(raw).hexdigest()
    assert set(training_set.samples.all()) == set(accepted)
    assert training_set.manifest["counts"] == {"accepted": 3, "rejected": 1, "left_out_pending": 1}
    assert pending not in training_set.samples.all()


def test_building_closes_the_generation_and_opens_the_next(lineage, reviewer, curator):
    sample_accept(sample=make_sample(lineage), reviewer=reviewer)
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
    sample_accept(sample=make_sample(lineage), reviewer=reviewer)
    GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(number=1), requested=3)
    with pytest.raises(TrainingSetError, match="1 running job"):
        training_set_build(lineage=lineage, built_by=curator)
    assert not list(Path(settings.EXPORT_ROOT).rglob("*.jsonl")), "no export written for a refused build"
