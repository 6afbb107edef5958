"""The embedding service: one model per process, a content-hash cache, batches."""
import os
import subprocess
import sys

import numpy as np
import pytest

from curation import embedder


def test_the_model_is_loaded_once_and_repeated_texts_come_from_the_cache():
    embedder.cache_clear()
    first = embedder.embed(["Enzymes lower activation energy.", "Ribosomes build proteins."])
    model = embedder.model()
    again = embedder.embed(["Ribosomes build proteins.", "Enzymes lower activation energy.",
                            "Ribosomes build proteins."])
    assert embedder.model() is model
    stats = embedder.cache_stats()
    assert stats["hits"] == 3 and stats["misses"] == 2 and stats["entries"] == 2
    assert np.allclose(again[1], first[0]) and np.allclose(again[0], first[1]) and np.allclose(again[2], first[1])


def test_cached_vectors_equal_raw_model_encode_and_are_unit_length():
    embedder.cache_clear()
    texts = [f"Sentence number {i} about cells." for i in range(70)]  # more than one batch
    vectors = embedder.embed(texts, batch_size=16)
    raw = embedder.encode(texts, batch_size=64)
    assert vectors.shape == (70, 384)
    assert np.abs(vectors - raw).max() < 1e-5
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(70), abs=1e-5)


def test_nothing_to_embed_gives_an_empty_matrix():
    assert embedder.embed([]).shape == (0, 384)


def test_the_model_runs_on_the_configured_device(settings):
    assert embedder.model().device.type == settings.OUROBOROS["EMBEDDING_DEVICE"] == "cpu"


def test_a_device_torch_does_not_know_fails_loudly_naming_its_variable(settings):
    env = {**os.environ, "OUROBOROS_EMBEDDING_DEVICE": "gpu0"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "OUROBOROS_EMBEDDING_DEVICE='gpu0' is not a torch device" in result.stderr
