"""Fixtures for the API: a lineage with something in every table, and API clients per role."""
from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from curation.models import Flag, GenerationMetrics, PassageImport, TrainingSet
from curation.services.exports import export_run
from curation.services.review import sample_accept
from curation.services.training_sets import training_set_build
from generation.models import GenerationJob
from tests.factories import make_flag, make_lineage, make_sample


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def api(curator):
    """A curator's token client."""
    return token_client(curator)


@pytest.fixture
def world(tmp_path, settings, curator, reviewer, django_capture_on_commit_callbacks):
    """A lineage with passages, a published training set (generation 1), flagged samples in generation 2,
    a job, and stored metrics: every endpoint has a real object to answer about."""
    settings.EXPORT_ROOT = tmp_path / "exports"
    lineage = make_lineage(passages=8)
    for i in range(3):
        sample_accept(sample=make_sample(lineage, question=f"Old question {i}?"), reviewer=reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        training_set = training_set_build(lineage=lineage, built_by=curator, seed=5)
    for export in training_set.exports.all():
        export_run(export_id=export.pk)
    training_set.refresh_from_db()
    assert training_set.status == TrainingSet.Status.PUBLISHED
    samples = [make_sample(lineage, risk=risk) for risk in (0.1, 0.5, 0.9, 0.7)]
    make_flag(samples[2], Flag.Kind.HALLUCINATION, 0.9, sentences=[{"sentence": "x", "support": 0.1}])
    make_flag(samples[3], Flag.Kind.NEAR_DUPLICATE, 0.95)
    job = GenerationJob.objects.create(lineage=lineage, generation=lineage.generations.get(status="open"),
                                       requested=5, created_by=curator)
    generation = lineage.generations.get(number=1)
    GenerationMetrics.objects.create(generation=generation, fingerprint="f", computed_at=timezone.now(),
                                     generated=3, accepted=3, accept_rate=1.0, distinct_1=0.5)
    passage_import = PassageImport.objects.create(lineage=lineage, created_by=curator, filename="p.jsonl",
                                                  format="jsonl", data=b'{"text": "A passage."}\n', size_bytes=23)
    return {"lineage": lineage, "samples": samples, "job": job, "training_set": training_set,
            "generation": generation, "passage_import": passage_import}
