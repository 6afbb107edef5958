"""A backend for any OpenAI-compatible chat-completions server: vLLM, TGI,
Ollama, llama.cpp's server, OpenAI itself.

Failures are classified for the retry policy (STYLE.md §5): timeouts, refused
connections, 408/409/425/429 and 5xx are transient; other 4xx are permanent;
a body that is not the JSON shape we expect is transient (a proxy that cut the
response short is the usual cause), and the task's bounded retries stop it.
The API key is read from the environment variable the config names, never
from the database.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request

from .base import BackendConfig, BackendError, BackendTimeout, Completion, GenerationParams, Message

TRANSIENT_STATUS = {408, 409, 425, 429}
SCHEMA_REFUSED_STATUS = {400, 422}

log = logging.getLogger(__name__)
MAX_ERROR_BODY = 300


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text[:MAX_ERROR_BODY] + ("…" if len(text) > MAX_ERROR_BODY else "")


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, config: BackendConfig) -> None:
        if not config.base_url:
            raise BackendError(
                "the openai backend needs a base URL (the lineage's backend base URL or OUROBOROS_OPENAI_BASE_URL)",
                permanent=True,
            )
        if not config.model:
            raise BackendError(
                "the openai backend needs a model name (the lineage's backend model or OUROBOROS_OPENAI_MODEL)",
                permanent=True,
            )
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.model = config.model
        self.timeout = config.timeout
        self.api_key_env = config.api_key_env
        # How this server takes a JSON schema: OpenAI's and vLLM's "json_schema"
        # first, then the "json_object" + "schema" that llama.cpp's server (and a
        # few hosted ones) read, then none. A server that refuses one (400/422, or
        # a 500 that names response_format, as llama.cpp's does) is asked the next
        # way from then on; one that ignores both returns text.
        self.schema_formats = ["json_schema", "json_object"]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        while params.json_schema and self.schema_formats:
            kind = self.schema_formats[0]
            if kind == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "turn", "schema": params.json_schema, "strict": True},
                }
            else:
                body["response_format"] = {"type": "json_object", "schema": params.json_schema}
            try:
                return self._post(body)
            except BackendError as exc:
                status = getattr(exc, "status", None)
                # llama.cpp's server answers its own validation error with a 500 naming the field.
                refused = status in SCHEMA_REFUSED_STATUS or (status == 500 and "response_format" in str(exc))
                if not refused:
                    raise
                log.warning("%s refused response_format %r (%s); not sending it again", self.url, kind, exc)
                if self.schema_formats and self.schema_formats[0] == kind:
                    self.schema_formats.pop(0)
                del body["response_format"]
        return self._post(body)

    def _post(self, body: dict) -> Completion:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=self._headers(),
                                         method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _excerpt(exc.read() or b"")
            transient = exc.code in TRANSIENT_STATUS or exc.code >= 500
            error = BackendError(f"{self.url} answered HTTP {exc.code}: {detail}", permanent=not transient)
            error.status = exc.code
            raise error from exc
        except (TimeoutError, socket.timeout) as exc:
            raise BackendTimeout(f"{self.url} did not answer within {self.timeout:g}s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise BackendTimeout(f"{self.url} did not answer within {self.timeout:g}s") from exc
            raise BackendError(f"cannot reach {self.url}: {exc.reason}", permanent=False) from exc
        except (ConnectionError, OSError) as exc:
            raise BackendError(f"connection to {self.url} failed: {exc}", permanent=False) from exc
        latency_ms = round((time.monotonic() - started) * 1000)
        return self._parse(raw, latency_ms)

    def _parse(self, raw: bytes, latency_ms: int) -> Completion:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("message content is not a string")
            usage = data.get("usage") or {}
            return Completion(
                text=text,
                model=str(data.get("model") or self.model),
                finish_reason=str(choice.get("finish_reason") or "stop"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                latency_ms=latency_ms,
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"{self.url} returned a malformed chat completion ({type(exc).__name__}: {exc}): {_excerpt(raw)}",
                permanent=False,
            ) from exc
