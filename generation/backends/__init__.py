"""A lazy registry of generator backends: a name maps to a dotted path, and a
backend is imported and built the first time a process asks for it, then kept
for the life of the process (a model loads once per worker, not per task)."""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from .base import Backend, BackendConfig, BackendError, BackendTimeout, Completion, GenerationParams, Message

REGISTRY: dict[str, str] = {
    "llama_cpp": "generation.backends.llama_cpp.LlamaCppBackend",
    "fake": "generation.backends.fake.FakeBackend",
    "openai": "generation.backends.openai_compat.OpenAICompatBackend",
}


class UnknownBackend(BackendError):
    def __init__(self, name: str):
        known = ", ".join(sorted(REGISTRY))
        super().__init__(f"unknown generator backend {name!r} (known: {known})", permanent=True)


def get_backend(name: str = "", config: BackendConfig | None = None) -> Backend:
    """The process's backend for this name and config, built on first use."""
    return _build(name or settings.OUROBOROS["DEFAULT_BACKEND"], config or BackendConfig())


@lru_cache(maxsize=32)
def _build(name: str, config: BackendConfig) -> Backend:
    try:
        dotted = REGISTRY[name]
    except KeyError:
        raise UnknownBackend(name) from None
    return import_string(dotted)(config)


__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendTimeout",
    "Completion",
    "GenerationParams",
    "Message",
    "REGISTRY",
    "UnknownBackend",
    "get_backend",
]
