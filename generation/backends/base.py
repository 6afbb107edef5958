"""The small interface every generator backend implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class BackendConfig:
    """Where a backend finds its model. Hashable: the registry keeps one backend per config."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = ""  # the NAME of the environment variable holding the key
    timeout: float = 60.0
    # llama_cpp only: a local GGUF to load instead of the embedded SmolLM2, and a
    # llama.cpp LoRA adapter (GGUF) applied on it (a trained student, see ModelRecord).
    model_path: str = ""
    lora_path: str = ""


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    finish_reason: str  # "stop" when the model ended by itself, "length" when cut off
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int


class BackendError(Exception):
    """A backend failure, saying whether trying again can help.

    Transient errors (a timeout, a 429, a 5xx, a model that is still loading)
    are retried with backoff; permanent ones (a bad request, a missing model)
    fail the item with this message as its reason.
    """

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class BackendTimeout(BackendError):
    """The backend did not answer within its timeout.

    Transient, but about one request rather than the backend as a whole: a
    prompt that sends a model into an endless generation hangs every time it is
    asked, while the next item's prompt may be fine. So a job retries the item a
    few times (`OUROBOROS_BACKEND_ITEM_ATTEMPTS`) and then fails that item with
    this message, instead of failing the whole job.
    """

    def __init__(self, message: str):
        super().__init__(message, permanent=False)


class Backend(Protocol):
    name: str
    model: str

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion: ...
