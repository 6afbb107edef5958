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


# Backends for development and tests only: the fake one writes canned text that
# would pass for generated data. A server with DJANGO_DEBUG=0 never builds them.
DEVELOPMENT_ONLY = frozenset({"fake"})


class UnknownBackend(BackendError):
    def __init__(self, name: str):
        known = ", ".join(sorted(REGISTRY))
        super().__init__(f"unknown generator backend {name!r} (known: {known})", permanent=True)


class BackendNotAllowed(BackendError):
    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def backend_refusal(name: str) -> str | None:
    """Why this server may not use the named backend (empty: the default), or None when it may.

    The one rule for every place a backend is chosen or built: the API, the
    admin, services and commands that save a lineage's backend, and
    `get_backend` in the worker (which also covers OUROBOROS_BACKEND).
    """
    name = name or settings.OUROBOROS["DEFAULT_BACKEND"]
    if name not in REGISTRY:
        return f"unknown backend {name!r}; known: {', '.join(sorted(REGISTRY))}"
    if name in DEVELOPMENT_ONLY and not settings.OUROBOROS["ALLOW_DEVELOPMENT_BACKENDS"]:
        return f"the {name!r} backend is for development and tests only; it cannot be used with DJANGO_DEBUG=0"
    return None


def backend_allowed(name: str) -> bool:
    """Whether this server may build the named backend (see `backend_refusal`)."""
    return backend_refusal(name) is None


def backend_choices() -> list[str]:
    """The backend names a lineage may be set to here (empty: the server's default)."""
    return ["", *sorted(name for name in REGISTRY if backend_allowed(name))]


def get_backend(name: str = "", config: BackendConfig | None = None) -> Backend:
    """The process's backend for this name and config, built on first use."""
    name = name or settings.OUROBOROS["DEFAULT_BACKEND"]
    refusal = backend_refusal(name)
    if refusal is not None:
        if name not in REGISTRY:
            raise UnknownBackend(name)
        raise BackendNotAllowed(refusal)
    return _build(name, config or BackendConfig())


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
    "BackendNotAllowed",
    "BackendTimeout",
    "Completion",
    "GenerationParams",
    "Message",
    "REGISTRY",
    "UnknownBackend",
    "backend_allowed",
    "backend_choices",
    "backend_refusal",
    "get_backend",
]
