"""One interface for "sample n continuations for these requests".

A :class:`GenerationRequest` is either a fresh chat (system + user messages, the
model answers in a new assistant turn) or the continuation of a partial
assistant message (the last message is the assistant's prefix and the model
goes on writing it) — the latter is what Monte Carlo rollouts from step
prefixes need. Every generator returns, per request, ``n`` :class:`Completion`
objects in order.

Generators follow Beam's ``ModelHandler`` split: construction is cheap and
picklable (config only); :meth:`Generator.load` builds the heavy engine and is
called once per worker process (``DoFn.setup`` through ``shared.Shared``).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Engine-independent sampling parameters (a config dataclass)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 384
    # Stop strings end generation early (not included in the text).
    stop: tuple = ()

    def __post_init__(self):
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"sampling.max_tokens must be >= 1, got {self.max_tokens}")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """Sample ``n`` continuations of ``messages``.

    ``continue_final_message=True`` means ``messages[-1]`` is a partial assistant
    message to be continued (rollout from a prefix); otherwise the model answers
    in a new assistant turn. ``seed`` identifies the request's randomness: equal
    (messages, params, seed) ask for the same samples, which is what the request
    cache and deterministic generators key on.
    """

    messages: tuple  # of (role, content) pairs; a tuple so the request is hashable
    n: int = 1
    params: SamplingParams = SamplingParams()
    seed: int = 0
    continue_final_message: bool = False
    request_id: str = ""
    #: Token ids (of the model's tokenizer) the FIRST generated token may not be (issue 21's ban test:
    #: "decode something else at the critical token"); later tokens are unconstrained. Empty: no ban.
    ban_first_tokens: tuple = ()

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not self.messages:
            raise ValueError("a request needs at least one message")
        if self.continue_final_message and self.messages[-1][0] != "assistant":
            raise ValueError("continue_final_message needs a final assistant message")
        if not isinstance(self.ban_first_tokens, tuple):
            object.__setattr__(self, "ban_first_tokens", tuple(int(t) for t in self.ban_first_tokens or ()))

    @staticmethod
    def chat(system: Optional[str], user: str, **kw) -> "GenerationRequest":
        msgs = ((("system", system),) if system else ()) + (("user", user),)
        return GenerationRequest(messages=msgs, **kw)

    @staticmethod
    def continuation(system: Optional[str], user: str, assistant_prefix: str, **kw) -> "GenerationRequest":
        msgs = ((("system", system),) if system else ()) + (("user", user), ("assistant", assistant_prefix))
        return GenerationRequest(messages=msgs, continue_final_message=True, **kw)

    def message_dicts(self) -> List[Dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def cache_key(self, model_fingerprint: str) -> str:
        """Hash of everything that determines the samples (model, prompt, params, seed, n)."""
        key = {
            "model": model_fingerprint,
            "messages": self.messages,
            "continue": self.continue_final_message,
            "params": self.params.to_dict(),
            "seed": self.seed,
            "n": self.n,
        }
        if self.ban_first_tokens:  # only when set: requests without a ban keep their (cached) keys
            key["ban_first_tokens"] = sorted(self.ban_first_tokens)
        blob = json.dumps(
            key,
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sampled continuation."""

    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length" | "abort"
    cumulative_logprob: Optional[float] = None
    # Prompt accounting reported by the engine (same for all n samples of a request).
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "Completion":
        return Completion(**d)


class PicklableLock:
    """Mixin for objects that guard counters with ``self._lock``: the lock is not pickled
    (Beam ships objects to workers) and is recreated on the other side."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class GenerationError(RuntimeError):
    """A request failed inside the generator (after the generator's own retries)."""

    def __init__(self, message: str, *, retriable: bool = True, reason: str = "generation_failed"):
        super().__init__(message)
        self.retriable = retriable
        #: snake_case reject reason used when the problem is finally dropped.
        self.reason = reason


class EngineDeadError(GenerationError):
    """The engine itself died (process gone, CUDA error): it must be rebuilt before the next call."""

    def __init__(self, message: str):
        super().__init__(message, retriable=True, reason="engine_dead")


class Generator(abc.ABC):
    """Samples continuations. Subclasses implement :meth:`load` and :meth:`_generate`.

    ``generate`` takes a batch of requests (many problems at once: one engine
    call) and returns a list, aligned with the requests, of lists of ``n``
    completions.
    """

    #: short name recorded in provenance ("vllm", "openai", "scripted").
    kind: str = "base"

    def __init__(self) -> None:
        self._loaded = False

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Model identifier recorded in every row."""

    @property
    def model_fingerprint(self) -> str:
        """Identity of the weights for cache keys (model id + revision/hash where known)."""
        return self.model_id

    def load(self) -> "Generator":
        """Builds heavy state (engine, HTTP session). Idempotent."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def _load(self) -> None:  # pragma: no cover - trivial default
        pass

    def generate(self, requests: Sequence[GenerationRequest]) -> List[List[Completion]]:
        if not requests:
            return []
        self.load()
        out = self._generate(list(requests))
        if len(out) != len(requests):
            raise GenerationError(f"{self.kind} returned {len(out)} results for {len(requests)} requests")
        for req, comps in zip(requests, out):
            if len(comps) != req.n:
                raise GenerationError(f"{self.kind} returned {len(comps)} samples, asked for {req.n}")
        return out

    @abc.abstractmethod
    def _generate(self, requests: List[GenerationRequest]) -> List[List[Completion]]:
        """Engine call for a batch of requests."""

    # -- incremental interface (rollout schedulers) ---------------------------------
    #: True when ``submit``/``poll`` overlap requests inside the engine (no batch barrier).
    streaming: bool = False
    #: True when :meth:`submit` takes ``priority=`` (an int, lower runs first; equal ones first come,
    #: first served): a waiting request of a better priority gets the next free decode slot before
    #: earlier ones (vLLM's priority scheduling). Only the order of work changes, never its result.
    priorities: bool = False

    def submit(self, requests: Sequence[GenerationRequest]) -> List[Any]:
        """Queues ``requests``; returns one handle each. Default: held until the next :meth:`poll`."""
        queued = self.__dict__.setdefault("_queued", [])
        handles = []
        for req in requests:
            self._next_handle = getattr(self, "_next_handle", 0) + 1
            handles.append(self._next_handle)
            queued.append((self._next_handle, req))
        return handles

    def poll(self) -> List[Tuple[Any, List[Completion]]]:
        """Some finished requests as ``(handle, completions)``, at least one while any is pending.

        Default: everything queued goes to the engine as one :meth:`generate` call (a round).
        """
        queued, self._queued = self.__dict__.get("_queued", []), []
        if not queued:
            return []
        outputs = self.generate([req for _, req in queued])
        return [(handle, comps) for (handle, _), comps in zip(queued, outputs)]

    def abort(self, handles: Sequence[Any]) -> None:
        """Cancels submitted requests that are not finished; their results never come back from
        :meth:`poll`. Default: the queued ones are dropped (a round engine has not started them)."""
        drop = set(handles)
        self._queued = [(h, req) for h, req in self.__dict__.get("_queued", []) if h not in drop]

    @property
    def capacity(self) -> Optional[int]:
        """How many sequences the engine decodes at once (vLLM's ``max_num_seqs``); None if unknown.

        Schedulers that keep an engine busy (the labelling scheduler) size their work from it.
        """
        return None

    @property
    def unfinished_sequences(self) -> Optional[int]:
        """Sequences the engine holds right now, running or waiting (None: unknown). A streaming engine
        that knows it lets a scheduler keep the engine full: a request of ``n`` samples frees the slots
        of its finished samples long before it returns as a whole (its longest sample ends last)."""
        return None

    @property
    def speculation_capacity(self) -> Optional[int]:
        """Sequences in flight up to which speculative work may fill an engine that real work leaves
        idle (None: :attr:`capacity`). Speculation is free only while a decode step costs about the
        same whatever the batch (a GPU up to its capacity); where every sequence slows every step (a
        CPU), it would slow the real work it runs beside.
        """
        return None

    def close(self) -> None:
        """Releases the engine (optional)."""

    def describe(self) -> Dict[str, Any]:
        """Provenance for the dataset card."""
        return {"kind": self.kind, "model_id": self.model_id}
