"""Tests of :class:`OpenAICompatibleGenerator` (kind ``"openai"``).

Most tests run against a small stand-in server (stdlib ``http.server`` on
127.0.0.1, a free port) that records every request and answers from a script
(status codes, delays, canned bodies), so request bodies, response mapping,
retries/backoff, timeouts, load balancing and batch alignment are checked
without a model.

``test_real_vllm_server_*`` start vLLM's own OpenAI-compatible server on the
embedded SmolLM2-135M-Instruct as a subprocess on loopback. They are marked
``vllm_server`` and are opt-in: they run only with
``COUNTERPOINT_VLLM_SERVER_TESTS=1``. CI already builds one in-process vLLM
engine per session for the other generator tests; a second, server-side engine
would add minutes of start-up to every CI run, so this check is run by hand
(or in a dedicated job) when the HTTP generator or the vLLM version changes::

    COUNTERPOINT_VLLM_SERVER_TESTS=1 python -m pytest tests/unit/generators/test_openai_generator.py -q -m vllm_server
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from counterpoint.generators.base import (
    Completion,
    GenerationError,
    GenerationRequest,
    SamplingParams,
)
from counterpoint.generators.openai_http import OpenAICompatibleGenerator

with warnings.catch_warnings():
    # The marker is not registered in a pytest config (this file must not need one).
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    vllm_server_mark = pytest.mark.vllm_server


# --------------------------------------------------------------------------------------
# Stand-in OpenAI-compatible server
# --------------------------------------------------------------------------------------


def fake_choice_text(body: Dict[str, Any], index: int) -> str:
    last = body["messages"][-1]["content"]
    return f"{last}#{index}"


def fake_num_tokens(body: Dict[str, Any], index: int) -> int:
    return 2 + index + len(body["messages"])


def fake_completion_response(body: Dict[str, Any], *, cached: Optional[int] = 4, with_logprobs: bool = True,
                             reverse_choices: bool = True) -> Dict[str, Any]:
    """A vLLM-shaped chat-completions response: choice i has 2+i+len(messages) tokens of logprob -0.25."""
    n = int(body.get("n", 1))
    choices = []
    total = 0
    for i in range(n):
        k = fake_num_tokens(body, i)
        total += k
        choice = {
            "index": i,
            "message": {"role": "assistant", "content": fake_choice_text(body, i), "reasoning": None},
            "logprobs": (
                {"content": [{"token": f"t{j}", "logprob": -0.25, "bytes": [116], "top_logprobs": []}
                             for j in range(k)]}
                if with_logprobs else None
            ),
            "finish_reason": "length" if i % 2 else "stop",
            "stop_reason": None,
        }
        choices.append(choice)
    if reverse_choices:
        choices.reverse()  # clients must order by index, not by position
    usage: Dict[str, Any] = {"prompt_tokens": 17, "completion_tokens": total, "total_tokens": 17 + total}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": choices, "usage": usage}


class Action:
    """One scripted answer: status, JSON body (or a builder from the request body), headers, delay."""

    def __init__(self, status: int = 200, body: Any = None, *, delay: float = 0.0,
                 headers: Optional[Dict[str, str]] = None, raw: Optional[bytes] = None):
        self.status, self.body, self.delay, self.headers, self.raw = status, body, delay, headers or {}, raw


class StandInServer:
    """Records requests; answers from ``script`` (consumed in order) then from ``default``."""

    def __init__(self, name: str = "s"):
        self.name = name
        self.requests: List[Dict[str, Any]] = []
        self.script: List[Action] = []
        self.default: Callable[[Dict[str, Any]], Action] = lambda body: Action(200, fake_completion_response(body))
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else {}
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                           "t": time.monotonic(), "server": outer.name})
                    action = outer.script.pop(0) if outer.script else None
                if action is None:
                    action = outer.default(body)
                if action.delay:
                    time.sleep(action.delay)
                if action.raw is not None:
                    payload = action.raw
                else:
                    data = action.body(body) if callable(action.body) else action.body
                    if data is None:
                        data = fake_completion_response(body) if action.status == 200 else {
                            "error": {"message": f"scripted {action.status}", "type": "x", "code": action.status}}
                    payload = json.dumps(data).encode()
                try:
                    self.send_response(action.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in action.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def bodies(self) -> List[Dict[str, Any]]:
        return [r["body"] for r in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = StandInServer("a")
    yield s
    s.close()


@pytest.fixture
def server_b():
    s = StandInServer("b")
    yield s
    s.close()


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_OPEN_GENERATORS: List[OpenAICompatibleGenerator] = []


def make_gen(urls, **kw) -> OpenAICompatibleGenerator:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    kw.setdefault("api_key", "test-key")
    gen = OpenAICompatibleGenerator(urls, "smollm2", **kw)
    _OPEN_GENERATORS.append(gen)
    return gen


@pytest.fixture(autouse=True)
def _close_generators():
    yield
    while _OPEN_GENERATORS:
        _OPEN_GENERATORS.pop().close()


PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, stop=("\n\n",))


def chat(user: str, n: int = 1, seed: int = 0) -> GenerationRequest:
    return GenerationRequest.chat("Be brief.", user, n=n, seed=seed, params=PARAMS)


def cont(user: str, prefix: str, n: int = 1, seed: int = 0) -> GenerationRequest:
    return GenerationRequest.continuation("Be brief.", user, prefix, n=n, seed=seed, params=PARAMS)


def expected_completions(req: GenerationRequest, cached: int = 4) -> List[Completion]:
    body = {"messages": req.message_dicts(), "n": req.n}
    return [
        Completion(
            text=fake_choice_text(body, i),
            num_tokens=fake_num_tokens(body, i),
            finish_reason="length" if i % 2 else "stop",
            cumulative_logprob=-0.25 * fake_num_tokens(body, i),
            num_prompt_tokens=17,
            num_cached_prompt_tokens=cached,
        )
        for i in range(req.n)
    ]


# --------------------------------------------------------------------------------------
# Stand-in server tests
# --------------------------------------------------------------------------------------


def test_request_bodies_chat_and_continuation(server):
    gen = make_gen([server.url + "/v1/"], max_concurrency=1)
    gen.generate([chat("What is 2+2?", n=3, seed=11), cont("What is 3+3?", "First, 3+3", n=2, seed=(1 << 40) + 5)])
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    assert all(r["headers"].get("Authorization") == "Bearer test-key" for r in server.requests)
    b_chat, b_cont = server.bodies()
    assert b_chat == {
        "model": "smollm2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        "n": 3, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"],
        "seed": 11, "logprobs": True, "top_logprobs": 0,
    }
    assert "add_generation_prompt" not in b_chat and "continue_final_message" not in b_chat
    assert b_cont["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 3+3?"},
        {"role": "assistant", "content": "First, 3+3"},
    ]
    assert b_cont["n"] == 2
    assert b_cont["seed"] == 5  # masked to 31 bits like the in-process engine
    assert b_cont["add_generation_prompt"] is False and b_cont["continue_final_message"] is True


def test_no_seed_no_stop_and_extra_body(server):
    req = GenerationRequest.chat(None, "hi", params=SamplingParams(stop=()))
    make_gen(server.url, use_request_seed=False, extra_body={"top_k": 5}).generate([req])
    (body,) = server.bodies()
    assert "seed" not in body and "stop" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["top_k"] == 5


def test_response_mapping_whole_completions(server):
    reqs = [chat("alpha", n=3), cont("beta", "so far", n=2)]
    out = make_gen(server.url).generate(reqs)
    assert out == [expected_completions(r) for r in reqs]
    assert out[0][1].truncated and not out[0][0].truncated


def test_response_without_logprobs_or_cache_details(server):
    server.default = lambda body: Action(200, fake_completion_response(body, cached=None, with_logprobs=False))
    req = chat("gamma", n=3)  # 4+5+6 = 15 completion tokens, split evenly -> 5 each
    out = make_gen(server.url).generate([req])[0]
    assert [c.num_tokens for c in out] == [5, 5, 5]
    assert all(c.cumulative_logprob is None and c.num_cached_prompt_tokens == 0 for c in out)
    assert [c.text for c in out] == ["gamma#0", "gamma#1", "gamma#2"]


def test_retries_500_503_then_success_with_backoff(server):
    server.script = [Action(500), Action(503)]
    gen = make_gen(server.url, backoff_s=0.1, max_retries=3)
    req = chat("delta", n=2)
    assert gen.generate([req]) == [expected_completions(req)]
    assert len(server.requests) == 3
    t = [r["t"] for r in server.requests]
    # backoff_s * 2**k with jitter in [0.5, 1.5]: at least 0.05 then 0.1 seconds.
    assert t[1] - t[0] >= 0.05 - 0.01 and t[2] - t[1] >= 0.1 - 0.01
    assert all(b == server.bodies()[0] for b in server.bodies())  # the same request each time
    assert gen.stats["retries"] == 2 and gen.stats["attempts"] == 3


def test_retries_429_honours_retry_after(server):
    server.script = [Action(429, headers={"Retry-After": "0.3"})]
    gen = make_gen(server.url, backoff_s=0.01)
    assert len(gen.generate([chat("eps")])[0]) == 1
    assert len(server.requests) == 2
    assert server.requests[1]["t"] - server.requests[0]["t"] >= 0.29


def test_5xx_exhausts_retries(server):
    server.default = lambda body: Action(502)
    gen = make_gen(server.url, max_retries=2)
    with pytest.raises(GenerationError) as ei:
        gen.generate([chat("zeta")])
    assert ei.value.retriable is True
    assert "502" in str(ei.value)
    assert len(server.requests) == 3
    assert gen._inflight == [0]  # every attempt released its server slot


def test_timeout_is_retried_then_fails(server):
    server.default = lambda body: Action(200, delay=1.0)
    gen = make_gen(server.url, timeout_s=0.2, max_retries=2, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(GenerationError) as ei:
        gen.generate([chat("eta")])
    elapsed = time.monotonic() - start
    assert ei.value.retriable is True
    assert "timeout" in str(ei.value).lower()
    assert len(server.requests) == 3
    assert elapsed < 3 * 1.0  # gave up on each attempt at ~timeout_s, not after the server answered


def test_timeout_then_success(server):
    server.script = [Action(200, delay=3.0)]
    gen = make_gen(server.url, timeout_s=1.0, max_retries=1)
    req = chat("theta")
    assert gen.generate([req]) == [expected_completions(req)]
    assert len(server.requests) == 2


def test_400_is_not_retried(server):
    server.default = lambda body: Action(400, {"error": {"message": "max_tokens too large", "code": 400}})
    gen = make_gen(server.url, max_retries=3)
    with pytest.raises(GenerationError) as ei:
        gen.generate([chat("iota")])
    assert ei.value.retriable is False
    assert "400" in str(ei.value) and "max_tokens too large" in str(ei.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [404, 422])
def test_other_4xx_not_retried(server, status):
    server.default = lambda body: Action(status)
    with pytest.raises(GenerationError) as ei:
        make_gen(server.url).generate([chat("kappa")])
    assert ei.value.retriable is False and len(server.requests) == 1


def test_408_is_retried(server):
    server.script = [Action(408)]
    assert len(make_gen(server.url).generate([chat("lambda")])) == 1
    assert len(server.requests) == 2


def test_malformed_200_is_an_error(server):
    server.script = [Action(200, raw=b"not json")]
    with pytest.raises(GenerationError) as ei:
        make_gen(server.url).generate([chat("mu")])
    assert ei.value.retriable is False
    server.script = [Action(200, lambda body: fake_completion_response(dict(body, n=1)))]
    with pytest.raises(GenerationError, match="1 choices, asked for 2"):
        make_gen(server.url).generate([chat("mu", n=2)])


def test_round_robin_over_two_servers(server, server_b):
    gen = make_gen([server.url, server_b.url], max_concurrency=1)
    reqs = [chat(f"q{i}") for i in range(6)]
    out = gen.generate(reqs)
    assert [c[0].text for c in out] == [f"q{i}#0" for i in range(6)]
    assert len(server.requests) == 3 and len(server_b.requests) == 3
    order = sorted(server.requests + server_b.requests, key=lambda r: r["t"])
    assert [r["server"] for r in order] == ["a", "b"] * 3


def test_least_loaded_spreads_concurrent_requests(server, server_b):
    slow = lambda body: Action(200, delay=0.5)  # noqa: E731
    server.default = server_b.default = slow
    gen = make_gen([server.url, server_b.url], max_concurrency=8)
    gen.generate([chat(f"c{i}") for i in range(8)])
    assert len(server.requests) == 4 and len(server_b.requests) == 4


def test_retry_goes_to_another_server(server, server_b):
    server.script = [Action(503)]
    gen = make_gen([server.url, server_b.url], max_concurrency=1)
    req = chat("nu")
    assert gen.generate([req]) == [expected_completions(req)]
    assert len(server.requests) == 1 and len(server_b.requests) == 1


def test_dead_server_in_pool_is_skipped(server):
    dead = f"http://127.0.0.1:{free_port()}"
    gen = make_gen([dead, server.url], max_concurrency=1, max_retries=1)
    out = gen.generate([chat(f"x{i}") for i in range(4)])
    assert [c[0].text for c in out] == [f"x{i}#0" for i in range(4)]
    assert len(server.requests) == 4


def test_connection_refused_exhausts_retries():
    gen = make_gen(f"http://127.0.0.1:{free_port()}", max_retries=2)
    with pytest.raises(GenerationError) as ei:
        gen.generate([chat("xi")])
    assert ei.value.retriable is True and "connection error" in str(ei.value)
    assert gen.stats["attempts"] == 3


def test_mixed_batch_results_aligned(server, server_b):
    import random as _random

    rng = _random.Random(0)

    def jittered(body):
        return Action(200, delay=rng.uniform(0.0, 0.1))  # answers come back out of order

    server.default = server_b.default = jittered
    reqs = []
    for i in range(20):
        reqs.append(chat(f"chat-{i}", n=1 + i % 3, seed=i) if i % 2 else cont(f"u-{i}", f"prefix-{i}", n=1 + i % 4))
    gen = make_gen([server.url, server_b.url], max_concurrency=6)
    out = gen.generate(reqs)
    assert out == [expected_completions(r) for r in reqs]
    assert len(server.requests) + len(server_b.requests) == 20
    assert server.requests and server_b.requests


def test_one_failure_fails_the_batch(server):
    def answer(body):
        if body["messages"][-1]["content"] == "bad":
            return Action(400)
        return Action(200, delay=0.05)

    server.default = answer
    gen = make_gen(server.url, max_concurrency=2)
    with pytest.raises(GenerationError) as ei:
        gen.generate([chat(f"ok{i}") for i in range(3)] + [chat("bad")] + [chat(f"ok{i}") for i in range(3, 30)])
    assert ei.value.retriable is False
    assert len(server.requests) < 31  # the rest of the batch was cancelled
    assert gen._inflight == [0]


def test_picklable_before_and_after_load(server, monkeypatch):
    gen = make_gen([server.url, server.url + "/v1"], api_key=None, max_concurrency=3)
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("COUNTERPOINT_API_KEY", "env-key")
    clone = pickle.loads(pickle.dumps(gen))
    assert clone.base_urls == [server.url, server.url]
    assert clone._client is None
    clone.generate([chat("omicron")])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer env-key"
    again = pickle.loads(pickle.dumps(clone))  # loaded: the client is left out
    assert again._client is None and not again._loaded
    assert len(again.generate([chat("pi", n=2)])[0]) == 2
    clone.close()
    again.close()


def test_no_api_key_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("COUNTERPOINT_API_KEY", raising=False)
    make_gen(server.url, api_key=None).generate([chat("rho")])
    assert "Authorization" not in server.requests[0]["headers"]


def test_describe_and_config_validation(server):
    gen = OpenAICompatibleGenerator(f"{server.url},{server.url}/", "smollm2", api_key="sk-secret")
    d = gen.describe()
    assert d["kind"] == "openai" and d["model"] == "smollm2" and d["num_base_urls"] == 2
    assert gen.model_id == "smollm2" and "smollm2" in gen.model_fingerprint
    assert "sk-secret" not in json.dumps(d)  # no secrets in provenance
    assert gen.generate([]) == []
    with pytest.raises(ValueError):
        OpenAICompatibleGenerator([], "m")
    with pytest.raises(ValueError):
        OpenAICompatibleGenerator(server.url, "")
    with pytest.raises(ValueError):
        OpenAICompatibleGenerator(server.url, "m", max_concurrency=0)


# --------------------------------------------------------------------------------------
# Real vLLM OpenAI-compatible server (opt-in)
# --------------------------------------------------------------------------------------

SERVER_ENV_FLAG = "COUNTERPOINT_VLLM_SERVER_TESTS"
SERVED_NAME = "smollm2"
HEALTH_TIMEOUT_S = 240

requires_server_flag = pytest.mark.skipif(
    os.environ.get(SERVER_ENV_FLAG) != "1", reason=f"opt-in: set {SERVER_ENV_FLAG}=1 to start a vLLM server"
)


@pytest.fixture(scope="module")
def vllm_server():
    import httpx

    from counterpoint.generators.embedded import embedded_model_dir
    from counterpoint.generators.vllm_local import resolve_dtype

    model_dir = embedded_model_dir()
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", resolve_dtype("auto"), "--max-model-len", "2048", "--enforce-eager", "--seed", "0",
        # Without it vLLM leaves usage.prompt_tokens_details out (cached tokens unknown).
        "--enable-prompt-tokens-details",
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail() -> str:
        try:
            return Path(log_file.name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    try:
        url = f"http://127.0.0.1:{port}"
        deadline = started + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode} during start-up:\n{log_tail()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after {HEALTH_TIMEOUT_S}s:\n{log_tail()}")
            time.sleep(1.0)
        startup_s = time.monotonic() - started
        print(f"\nvLLM server healthy after {startup_s:.1f}s (log {log_file.name})")
        yield {"url": url, "startup_s": startup_s, "log": log_file.name}
    finally:
        # SIGTERM to the API server lets it shut its engine-core child down cleanly; whatever
        # is left of its process group (it runs in its own session) is killed afterwards.
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 9)
        log_file.close()
        if proc.returncode == 0 and not os.environ.get("COUNTERPOINT_KEEP_SERVER_LOG"):
            with contextlib.suppress(OSError):
                os.unlink(log_file.name)
        else:
            print(f"vLLM server exited with {proc.returncode}; log kept at {log_file.name}")


# A system prompt long enough to span several KV-cache blocks, so a repeated
# prompt can be served from vLLM's prefix cache.
LONG_SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step, one step per paragraph, "
    "and finish with 'The answer is N.' where N is a number. " * 8
).strip()


@vllm_server_mark
@requires_server_flag
def test_real_vllm_server_chat_and_continuation(vllm_server):
    gen = OpenAICompatibleGenerator(vllm_server["url"], SERVED_NAME, api_key=None, timeout_s=120, max_retries=1)
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=48)
    chat_req = GenerationRequest.chat(LONG_SYSTEM, "What is 12 + 30?", n=2, seed=7, params=params)
    cont_req = GenerationRequest.continuation(
        LONG_SYSTEM, "What is 12 + 30?", "Step 1: add the tens. 10 + 30 = 40.\n\nStep 2:", n=1, seed=8, params=params
    )
    t0 = time.monotonic()
    out = gen.generate([chat_req, cont_req])
    first_s = time.monotonic() - t0
    t0 = time.monotonic()
    again = gen.generate([chat_req])  # same prompt again: prefix-cache hit
    second_s = time.monotonic() - t0
    print(f"\nfirst batch {first_s:.2f}s, repeat {second_s:.2f}s")
    for comps in out + again:
        for c in comps:
            print(f"  {c.finish_reason} tokens={c.num_tokens} prompt={c.num_prompt_tokens} "
                  f"cached={c.num_cached_prompt_tokens} logprob={c.cumulative_logprob:.2f} text={c.text[:60]!r}")

    chat_out, cont_out = out
    assert len(chat_out) == 2 and len(cont_out) == 1
    for c in chat_out + cont_out + again[0]:
        assert c.text.strip()
        assert c.finish_reason in {"stop", "length"}
        assert 1 <= c.num_tokens <= params.max_tokens
        assert c.finish_reason != "length" or c.num_tokens == params.max_tokens
        assert c.cumulative_logprob is not None and c.cumulative_logprob <= 0.0
        assert 0 <= c.num_cached_prompt_tokens <= c.num_prompt_tokens
    # The prompt is the long system message plus chat-template framing.
    assert 100 < chat_out[0].num_prompt_tokens < 2048
    # The continuation prompt holds the same system/user turns plus the prefix, without a new turn.
    assert cont_out[0].num_prompt_tokens > chat_out[0].num_prompt_tokens
    assert not cont_out[0].text.lstrip().lower().startswith("step 1")
    # The repeated prompt: same prompt length, and (with --enable-prompt-tokens-details and
    # prefix caching on) most of it served from the cache.
    assert again[0][0].num_prompt_tokens == chat_out[0].num_prompt_tokens
    assert again[0][0].num_cached_prompt_tokens > 0
    gen.close()


def test_first_token_ban_is_one_biased_token_then_an_unconstrained_continuation(server):
    """Issue 21's ban test over HTTP: ``logit_bias`` holds for every position, so the banned first token
    is asked for alone (max_tokens 1), and each sample that did not stop goes on as a partial assistant turn."""
    gen = make_gen([server.url], use_request_seed=True)
    req = GenerationRequest.continuation(None, "q", "So far", n=2, seed=5, ban_first_tokens=(7, 9),
                                         params=SamplingParams(max_tokens=10))
    (comps,) = gen.generate([req])
    first, rest = server.bodies()[0], server.bodies()[1:]
    assert first["logit_bias"] == {"7": -100, "9": -100} and first["max_tokens"] == 1 and first["n"] == 2
    # sample 0 stopped at its first token; sample 1 ("length") is continued once, without the ban
    assert len(rest) == 1 and "logit_bias" not in rest[0] and rest[0]["max_tokens"] == 9 and rest[0]["n"] == 1
    assert rest[0]["messages"][-1] == {"role": "assistant", "content": "So far" + "So far#1"}
    assert rest[0]["continue_final_message"] is True and rest[0]["seed"] == 5 + 1 + 1
    assert [c.text for c in comps] == ["So far#0", "So far#1" + "So far" + "So far#1#0"]
    assert comps[1].num_tokens == fake_num_tokens(first, 1) + fake_num_tokens(rest[0], 0)
