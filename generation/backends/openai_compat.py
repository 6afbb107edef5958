"""A backend for any OpenAI-compatible chat-completions server: vLLM, TGI,
Ollama, llama.cpp's server, OpenAI itself.

Failures are classified for the retry policy (STYLE.md §5): timeouts, refused
connections, 408/409/425/429 and 5xx are transient; other 4xx are permanent;
a body that is not the JSON shape we expect is transient (a proxy that cut the
response short is the usual cause), and the task's bounded retries stop it.
The API key is read from the environment variable the config names, never
from the database, and only when the name follows the operator's rule. Before
each request the URL, and every address its host resolves to, are checked
against the operator's allowlist, and the connection goes to a checked
address (ouroboros/egress.py); redirects are not followed.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import time

from ouroboros import egress

from .base import BackendConfig, BackendError, BackendTimeout, Completion, GenerationParams, Message

TRANSIENT_STATUS = {408, 409, 425, 429}
# A server that does not take a response_format answers one of these; it is then asked without it.
SCHEMA_REFUSED_STATUS = {400, 422}
MAX_ERROR_BODY = 300

log = logging.getLogger(__name__)


def _excerpt(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    return text[:MAX_ERROR_BODY] + ("…" if len(text) > MAX_ERROR_BODY else "")


class OpenAICompatBackend:
    name = "openai"

    def __init__(self, config: BackendConfig, resolver: egress.Resolver | None = None) -> None:
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
        self.resolver = resolver  # None: egress.default_resolver, looked up at each request
        # How this server takes a JSON schema: OpenAI's and vLLM's "json_schema"
        # first, then the "json_object" + "schema" that llama.cpp's server (and a
        # few hosted ones) read, then none. A server that refuses one (400/422, or
        # a 500 that names response_format, as llama.cpp's does) is asked the next
        # way from then on; one that ignores both returns text.
        self.schema_formats = ["json_schema", "json_object"]

    def _headers(self, policy: egress.Policy) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            name = egress.key_env_check(self.api_key_env, policy=policy)
        except egress.EgressRefused as exc:
            raise BackendError(f"the backend's key variable {exc}", permanent=True) from None
        key = os.environ.get(name, "") if name else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def generate(self, messages: list[Message], params: GenerationParams) -> Completion:
        """One chat completion. The policy is checked here, before every request (see ouroboros/egress.py):
        the key variable's name, the URL's host, and every address it resolves to now."""
        policy = egress.current_policy()
        headers = self._headers(policy)
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
                return self._post(body, headers=headers, policy=policy)
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
        return self._post(body, headers=headers, policy=policy)

    def _post(self, body: dict, *, headers: dict[str, str], policy: egress.Policy) -> Completion:
        started = time.monotonic()
        try:
            response = egress.request("POST", self.url, body=json.dumps(body).encode(), headers=headers,
                                      timeout=self.timeout, policy=policy, resolver=self.resolver)
        except egress.EgressRefused as exc:
            raise BackendError(f"{self.url} is refused: {exc}", permanent=True) from None
        except (TimeoutError, socket.timeout) as exc:
            raise BackendTimeout(f"{self.url} did not answer within {self.timeout:g}s") from exc
        except socket.gaierror as exc:
            raise BackendError(f"cannot reach {self.url}: the host does not resolve ({exc})", permanent=False) from exc
        except (ConnectionError, OSError) as exc:
            raise BackendError(f"cannot reach {self.url}: {exc}", permanent=False) from exc
        except http.client.HTTPException as exc:
            raise BackendError(f"connection to {self.url} failed: {type(exc).__name__}: {exc}",
                               permanent=False) from exc
        if 300 <= response.status < 400:
            raise BackendError(f"{self.url} answered HTTP {response.status} (a redirect to "
                               f"{response.headers.get('location', '?')}); redirects are not followed: "
                               f"set the final URL", permanent=True)
        if response.status >= 400:
            transient = response.status in TRANSIENT_STATUS or response.status >= 500
            error = BackendError(f"{self.url} answered HTTP {response.status}: {_excerpt(response.body)}",
                                 permanent=not transient)
            error.status = response.status
            raise error
        latency_ms = round((time.monotonic() - started) * 1000)
        return self._parse(response.body, latency_ms)

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
