"""Both real backends pass the same contract: the embedded llama.cpp model, and
the OpenAI-compatible HTTP backend talking to a real server on loopback
(`python -m llama_cpp.server` serving the same GGUF). Error handling is checked
against small real HTTP servers that misbehave on purpose."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generation.backends import BackendConfig, BackendError, GenerationParams, get_backend
from generation.backends.llama_cpp import smollm2_path
from generation.backends.openai_compat import OpenAICompatBackend

MESSAGES = [
    {"role": "system", "content": "You are a helpful biology tutor."},
    {"role": "user", "content": "In one sentence, what do chloroplasts do?"},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """A real OpenAI-compatible server: llama.cpp's, serving SmolLM2 on loopback."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")  # a file, not a pipe: llama.cpp logs enough to fill a pipe and block
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("llama_cpp.server did not start: " + log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.5)
    yield base_url
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture(params=["llama_cpp", "openai"])
def backend(request):
    if request.param == "llama_cpp":
        return get_backend("llama_cpp")
    base_url = request.getfixturevalue("llama_server")
    # Generous: on a loaded 2-core machine the first completions of the server can take a minute.
    return get_backend("openai", BackendConfig(base_url=base_url, model="smollm2", timeout=180))


def test_a_completion_carries_text_usage_and_timing(backend):
    completion = backend.generate(MESSAGES, GenerationParams(temperature=0.2, max_tokens=48, seed=1))
    assert completion.text.strip()
    assert completion.finish_reason in {"stop", "length"}
    assert completion.prompt_tokens > 10 and 0 < completion.completion_tokens <= 48
    assert completion.model and completion.latency_ms >= 0


def test_max_tokens_cuts_the_output_and_says_so(backend):
    completion = backend.generate(MESSAGES, GenerationParams(temperature=0.2, max_tokens=3, seed=1))
    assert completion.completion_tokens <= 3
    assert completion.finish_reason == "length"


def test_the_same_seed_gives_the_same_text(backend):
    params = GenerationParams(temperature=0.9, max_tokens=24, seed=1234)
    assert backend.generate(MESSAGES, params).text == backend.generate(MESSAGES, params).text


def test_the_process_keeps_one_backend_per_config(llama_server):
    config = BackendConfig(base_url=llama_server, model="smollm2")
    assert get_backend("openai", config) is get_backend("openai", config)
    assert get_backend("llama_cpp") is get_backend("llama_cpp")


# ---------------------------------------------------------------- misbehaving servers


class Misbehaving(BaseHTTPRequestHandler):
    """Answers each request the way the path of the base URL says."""

    seen_headers: list[dict] = []
    seen_bodies: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        Misbehaving.seen_headers.append(dict(self.headers))
        Misbehaving.seen_bodies.append(body)
        mode = self.path.split("/")[1]
        if mode == "noschema" and "response_format" in body:  # a server that knows no structured outputs
            self._send(422, json.dumps({"detail": "response_format.type: unexpected value 'json_schema'"}).encode())
            return
        if mode == "oldschema" and body.get("response_format", {}).get("type") == "json_schema":
            self._send(422, json.dumps({"detail": "response_format.type: unexpected value 'json_schema'"}).encode())
            return
        if mode == "slow":
            time.sleep(3)
        if mode.startswith("status"):
            code = int(mode[len("status"):])
            self._send(code, json.dumps({"error": {"message": f"status {code} on purpose"}}).encode())
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "garbage":
            self._send(200, b"{not json")
        elif mode == "wrongshape":
            self._send(200, json.dumps({"choices": []}).encode())
        else:
            self._send(200, json.dumps({
                "model": "echo", "choices": [{"message": {"role": "assistant", "content": "Fine."},
                                              "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }).encode())

    def _send(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def misbehaving_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def http_backend(base_url: str, timeout: float = 10, api_key_env: str = "") -> OpenAICompatBackend:
    return OpenAICompatBackend(BackendConfig(base_url=base_url, model="m", timeout=timeout,
                                             api_key_env=api_key_env))


@pytest.mark.parametrize(
    "mode,permanent,message",
    [
        ("status429", False, "HTTP 429: {\"error\": {\"message\": \"status 429 on purpose\"}}"),
        ("status503", False, "HTTP 503"),
        ("status500", False, "HTTP 500"),
        ("status400", True, "HTTP 400"),
        ("status401", True, "HTTP 401"),
        ("status404", True, "HTTP 404"),
        ("garbage", False, "malformed chat completion (JSONDecodeError"),
        ("wrongshape", False, "malformed chat completion (IndexError"),
    ],
)
def test_failures_are_classified_transient_or_permanent(misbehaving_server, mode, permanent, message):
    with pytest.raises(BackendError) as caught:
        http_backend(f"{misbehaving_server}/{mode}").generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is permanent
    assert message in str(caught.value)


def test_a_server_that_hangs_past_the_timeout_is_a_transient_failure(misbehaving_server):
    with pytest.raises(BackendError, match="did not answer within 0.5s") as caught:
        http_backend(f"{misbehaving_server}/slow", timeout=0.5).generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is False


def test_a_refused_connection_is_a_transient_failure():
    with pytest.raises(BackendError, match="cannot reach") as caught:
        http_backend(f"http://127.0.0.1:{free_port()}/v1").generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is False


def test_the_api_key_comes_from_the_named_environment_variable(misbehaving_server, monkeypatch):
    monkeypatch.setenv("OUROBOROS_BACKEND_KEY_TEST", "sk-test-123")
    Misbehaving.seen_headers.clear()
    completion = http_backend(f"{misbehaving_server}/ok", api_key_env="OUROBOROS_BACKEND_KEY_TEST").generate(
        MESSAGES, GenerationParams())
    assert completion.text == "Fine." and completion.completion_tokens == 1
    assert Misbehaving.seen_headers[-1]["Authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("OUROBOROS_BACKEND_KEY_TEST")
    http_backend(f"{misbehaving_server}/ok", api_key_env="OUROBOROS_BACKEND_KEY_TEST").generate(MESSAGES, GenerationParams())
    assert "Authorization" not in Misbehaving.seen_headers[-1]


@pytest.mark.parametrize("config,message", [
    (BackendConfig(model="m"), "needs a base URL"),
    (BackendConfig(base_url="http://127.0.0.1:1/v1"), "needs a model name"),
])
def test_a_missing_url_or_model_is_a_permanent_error_naming_the_setting(config, message):
    with pytest.raises(BackendError, match=message) as caught:
        OpenAICompatBackend(config)
    assert caught.value.permanent is True


def test_an_unknown_backend_name_is_refused_with_the_known_ones():
    with pytest.raises(BackendError, match="unknown generator backend 'gpt9' \\(known: fake, llama_cpp, openai\\)"):
        get_backend("gpt9")


# ---------------------------------------------------------------- the egress policy, checked before each request


@pytest.fixture
def no_connections(monkeypatch):
    """Records every socket the code under test opens, and opens none: a refusal must send nothing."""
    opened = []

    def refuse(address, *args, **kwargs):
        opened.append(address)
        raise AssertionError(f"a connection to {address} was opened")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return opened


def allow(settings, hosts: str):
    from ouroboros.egress import parse_allowed_hosts

    settings.OUROBOROS = {**settings.OUROBOROS, "BACKEND_ALLOWED_HOSTS": parse_allowed_hosts(hosts)}


@pytest.mark.parametrize("table,reason", [
    ("10.9.8.7 models.example", "resolves to 10.9.8.7, a non-public address"),
    ("169.254.169.254 models.example", "resolves to 169.254.169.254, a link-local address"),
    ("127.0.0.1 models.example", "resolves to 127.0.0.1, a non-public address"),
])
def test_an_allowed_name_that_resolves_to_a_refused_address_is_refused_in_the_worker(
        settings, monkeypatch, no_connections, table, reason):
    from ouroboros import egress

    allow(settings, "models.example")  # the name only: no address entry covers what it resolves to
    monkeypatch.setattr(egress, "default_resolver", egress.HostsResolver(table))
    with pytest.raises(BackendError, match=reason) as caught:
        http_backend("http://models.example:8000/v1").generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is True
    assert no_connections == []


def test_the_worker_connects_to_the_address_it_checked(settings, monkeypatch, misbehaving_server):
    """A name mapped to loopback, with loopback on the list: the request lands on the checked address
    and still names the host it was sent to."""
    from ouroboros import egress

    port = misbehaving_server.rsplit(":", 1)[1]
    allow(settings, f"models.example:{port},127.0.0.1")
    resolver = egress.HostsResolver("127.0.0.1 models.example")
    monkeypatch.setattr(egress, "default_resolver", resolver)
    Misbehaving.seen_headers.clear()
    completion = http_backend(f"http://models.example:{port}/ok").generate(MESSAGES, GenerationParams())
    assert completion.text == "Fine."
    assert resolver.asked == ["models.example"]
    assert Misbehaving.seen_headers[-1]["Host"] == f"models.example:{port}"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/v1", "http://10.1.2.3:8000/v1"])
def test_a_url_off_the_allowlist_is_refused_before_any_request(no_connections, url):
    with pytest.raises(BackendError, match="refused") as caught:
        http_backend(url).generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is True and no_connections == []


def test_a_key_variable_outside_the_prefix_is_never_read_or_sent(monkeypatch, no_connections):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "server-secret")
    with pytest.raises(BackendError, match="must start with OUROBOROS_BACKEND_KEY_") as caught:
        http_backend("http://127.0.0.1:1/v1", api_key_env="DJANGO_SECRET_KEY").generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is True and no_connections == []


def test_a_redirect_is_not_followed(misbehaving_server):
    with pytest.raises(BackendError, match="redirects are not followed") as caught:
        http_backend(f"{misbehaving_server}/redirect").generate(MESSAGES, GenerationParams())
    assert caught.value.permanent is True
# ---------------------------------------------------------------- constrained decoding

QUESTION_ONLY = [
    {"role": "system", "content": "You are a biology tutor. Ask one short question about the passage."},
    {"role": "user", "content": "Passage:\nChloroplasts capture light energy and store it in sugar."},
]


def test_the_embedded_model_answers_in_the_shape_the_schema_asks_for():
    from generation.dialogue import schemas

    completion = get_backend("llama_cpp").generate(
        QUESTION_ONLY, GenerationParams(temperature=0.7, max_tokens=64, seed=3, json_schema=schemas.QUESTION))
    question = schemas.field_of(completion.text, "question")
    assert question is not None, completion.text
    assert question[0].isupper() and question.endswith("?") and question.count("?") == 1 and "\n" not in question


def test_the_http_backend_asks_for_structured_output(misbehaving_server):
    from generation.dialogue import schemas

    Misbehaving.seen_bodies.clear()
    http_backend(f"{misbehaving_server}/ok").generate(MESSAGES, GenerationParams(json_schema=schemas.ANSWER))
    sent = Misbehaving.seen_bodies[-1]["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "turn", "schema": schemas.ANSWER, "strict": True}}


def test_a_server_that_refuses_the_schema_is_asked_in_plain_text_from_then_on(misbehaving_server):
    from generation.dialogue import schemas

    Misbehaving.seen_bodies.clear()
    backend = http_backend(f"{misbehaving_server}/noschema")
    first = backend.generate(MESSAGES, GenerationParams(json_schema=schemas.QUESTION))
    second = backend.generate(MESSAGES, GenerationParams(json_schema=schemas.QUESTION))
    assert first.text == second.text == "Fine."
    assert [body.get("response_format", {}).get("type") for body in Misbehaving.seen_bodies] == [
        "json_schema", "json_object", None, None]


def test_a_server_that_knows_only_json_object_gets_the_schema_that_way(misbehaving_server):
    from generation.dialogue import schemas

    Misbehaving.seen_bodies.clear()
    backend = http_backend(f"{misbehaving_server}/oldschema")
    backend.generate(MESSAGES, GenerationParams(json_schema=schemas.QUESTION))
    backend.generate(MESSAGES, GenerationParams(json_schema=schemas.QUESTION))
    assert [body["response_format"]["type"] for body in Misbehaving.seen_bodies] == [
        "json_schema", "json_object", "json_object"]
    assert Misbehaving.seen_bodies[-1]["response_format"]["schema"] == schemas.QUESTION


def test_the_real_llama_cpp_server_works_with_the_dialogue(llama_server):
    """llama.cpp's own server refuses a json_schema response_format and takes json_object + schema."""
    from generation.dialogue import InvalidOutput, run_dialogue

    backend = OpenAICompatBackend(BackendConfig(base_url=llama_server, model="smollm2", timeout=120))
    try:
        result = run_dialogue(backend=backend, passage_text=(
            "Chloroplasts are organelles in plant cells. They capture light energy with the green pigment "
            "chlorophyll and store it in the chemical bonds of sugar."), answers=1, temperature=0.3, seed=2)
    except InvalidOutput as exc:  # a refusal is an answer too: it must be a validator's, not a crash
        assert exc.code.startswith(("question.", "answer.")), exc.code
    else:
        assert result.question.endswith("?") and result.answer
    assert backend.schema_formats == ["json_object"]
