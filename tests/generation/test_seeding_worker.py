"""A seeded generation on real parts: a real Celery worker generates generation 2 with
synthetic_context_fraction=0.5, and half its samples are seeded from generation 1's
published training set."""
from __future__ import annotations

import pytest

from curation.models import Sample, TrainingSet
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.models import GenerationJob, GeneratorSettings
from generation.services import job_create
from ouroboros.celery import app
from tests.factories import make_lineage, make_sample
from tests.generation.test_seeding import ACCEPTED
from tests.support.processes import CeleryProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    app.control.purge()  # nothing left over from other tests may reach this worker
    process = CeleryProcess.worker("seeding", tmp_path, {"OUROBOROS_MEDIA_ROOT": str(tmp_path / "media")})
    yield process
    process.stop()


def test_a_worker_seeds_half_of_generation_two_from_generation_ones_training_set(
        worker, curator, reviewer, tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "media" / "exports"  # where the worker writes the exports
    lineage = make_lineage(passages=6, backend="fake", student_answers=2)
    GeneratorSettings.objects.filter(lineage=lineage).update(backend="fake", student_answers=2)
    for question, answer in ACCEPTED:
        sample_accept(sample=make_sample(lineage, question=question, answer=answer), reviewer=reviewer)
    training_set = training_set_build(lineage=lineage, built_by=curator, seed=1)
    wait_for(lambda: TrainingSet.objects.get(pk=training_set.pk).status == TrainingSet.Status.PUBLISHED,
             timeout=240, what="generation 1's training set to be published", processes=[worker])
    members = set(training_set.samples.values_list("pk", flat=True))
    assert len(members) == len(ACCEPTED)

    GeneratorSettings.objects.filter(lineage=lineage).update(synthetic_context_fraction=0.5)
    job = job_create(lineage=lineage, requested=8, created_by=curator, seed=17, chunk_size=4)
    assert job.generation.number == 2
    wait_for(lambda: not GenerationJob.objects.get(pk=job.pk).is_active, timeout=300, what="generation 2's job",
             processes=[worker])
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.DONE and job.done_count == 8, job.last_error

    samples = list(Sample.objects.filter(job=job).select_related("parent"))
    seeded = [s for s in samples if s.parent_id is not None]
    assert len(seeded) == 4, [s.provenance.get("material") for s in samples]
    assert {s.parent_id for s in seeded} <= members
    for sample in seeded:
        # The chain ends at a real passage: the seeded sample's passage is its parent's.
        assert sample.parent.parent_id is None and sample.passage_id == sample.parent.passage_id
        assert sample.parent.generation.number == 1
    assert all(s.generation_id == job.generation_id for s in samples)
