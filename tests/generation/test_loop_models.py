"""The loop's records: generator settings per lineage, and the model records."""
from __future__ import annotations

import hashlib

import pytest

from generation.backends.llama_cpp import smollm2_path
from generation.models import GeneratorSettings, ModelRecord, base_model_record, generator_settings_for
from tests.factories import make_lineage

pytestmark = pytest.mark.django_db


def test_every_new_lineage_gets_generator_settings_with_the_defaults():
    lineage = make_lineage()
    settings_row = GeneratorSettings.objects.get(lineage=lineage)
    assert settings_row.synthetic_context_fraction == 0.0
    assert settings_row.style_examples == 0
    assert settings_row.loop_mode == "fixed"
    assert generator_settings_for(lineage).pk == settings_row.pk


def test_the_base_model_record_names_the_embedded_gguf_by_its_sha256():
    record = base_model_record()
    digest = hashlib.sha256(smollm2_path().read_bytes()).hexdigest()
    assert record.sha256 == digest
    assert record.status == ModelRecord.Status.READY
    assert base_model_record().pk == record.pk  # recorded once
    assert record.provenance() == {"id": record.pk, "name": record.name, "kind": "base_gguf", "sha256": digest}
