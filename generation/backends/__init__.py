"""A lazy registry of generator backends: a name maps to a dotted path, and a
backend is imported and built the first time a process asks for it, then kept
for the life of the process (a model loads once per worker, not per task)."""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from .base import Backend, BackendError, Completion, GenerationParams, Message

REGISTRY: dict[str, str] = {
    "llama_cpp": "generation.backends.llama_cpp.LlamaCppBackend",
    "fake": "generation.backends.fake.FakeBackend",
}


class UnknownBackend(BackendError):
    def __init__(self, name: str):
        known = ", ".join(sorted(REGISTRY))
        super().__init__(f"unknown generator backend {name!r} (known: {known})", permanent=True)


@lru_cache(maxsize=None)
def get_backend(name: str = "") -> Backend:
    name = name or settings.OUROBOROS["DEFAULT_BACKEND"]
    try:
        dotted = REGISTRY[name]
    except KeyError:
        raise UnknownBackend(name) from None
    return import_string(dotted)()


__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "GenerationParams",
    "Message",
    "REGISTRY",
    "UnknownBackend",
    "get_backend",
]
