"""Monte Carlo rollouts for many sequential searches at once, with a prefetch buffer.

A tree search (OmegaPRM's binary search, MCTS selection) is sequential inside
one tree: the next probe depends on the last value. So every search is a Python
generator (a coroutine) that **yields** a list of :class:`RolloutAsk` — "I need at
least ``n`` rollouts from this assistant prefix" — and receives, aligned with it,
a list of :class:`Estimate` objects. :class:`RoundScheduler` drives all of them
through the engine's ``submit``/``poll`` interface: a search resumes as soon as its
own asks are answered; with a streaming engine there is no round barrier, with
others each poll is one batched engine call.

Answers come from the problem's :class:`EvidenceStore`:

* an ask for ``n`` rollouts of a prefix already holding ``n`` is served at once;
  otherwise the missing ones are generated with a seed derived from (run seed,
  problem, prefix, rollouts already held) — so the rollouts of a prefix do not
  depend on who asked, when, or what else was in the batch;
* a **terminal** prefix (one that states a final answer) is never rolled out: it is
  verified as it stands, and its estimate is exact (see ``evidence``);
* identical asks of several searches share one request.

**Speculation.** An ask marked ``speculative`` is a prefetch hint (OmegaPRM's
``parallel_searches``): while in-flight samples stay under the budget it is
generated (and verified) into a per-problem **prefetch buffer** keyed by
(prefix, rollouts held, n), and answered with ``None``. Its rollouts enter the
evidence store only if a real ask for exactly that request comes later (then it is
served from the buffer, or joins the request still in flight); unused ones are
discarded and counted (``prefetched`` / ``prefetch_used`` / ``prefetch_wasted``).
So speculation changes how full the engine is, never what is stored.

Speculation runs **only into idle capacity** (issue 18): it fills what the real asks leave of
the speculation budget, right before a poll — counted by the engine's own sequences where it
has a count (a probe's finished rollouts free their slots while its longest one still runs);
when real asks arrive later (a streaming engine) and the engine holds more than the budget,
the youngest speculative requests are cancelled with the
engine's ``abort`` to make room, and a speculative request the search has moved past (no longer
among its owner's current speculative asks, or its owner is done) is cancelled at once. Aborted
samples are counted (``speculative_aborted``), and so are the tokens of discarded prefetched
rollouts (``prefetch_wasted_tokens``).

**Ask groups.** A coroutine that runs several independent searches (an OmegaPRM tree's binary
searches side by side) may yield an :class:`AskGroups` instead of a list: the scheduler answers it
as soon as *any* group's asks are answered, with ``{group key: estimates}`` of every group answered
by then; the coroutine then yields the groups still pending plus any new ones. A search so moves on
when its own probe is back, never waiting for the slowest probe of the others (issue 18: a round
waits for its longest rollout). Groups add no ordering of their own: the coroutine decides what its
searches may see (``omegaprm.OmegaPRMTree.run`` keeps the tree independent of the arrival order).

**Sampling asks.** A search may also yield ``[SampleAsk(request)]``: the problem's own sampling
request (its seed set by the caller), answered with a :class:`Sampled` — the completions and
the verifier's verdicts as it gave them (truncation is the caller's business here). So one
scheduler runs a whole labelled job per worker — sampling, verifying, searching — and a
problem's tree starts as soon as its own samples are verified (``counterpoint.labeling.stream``).

**Adaptive asks** (``RolloutAsk.zero_after`` set): generated in doubling batches until decided
(``evidence.adaptive_next_total``: the rule and its false-zero bound).

**Admission.** About ``max_inflight_samples`` samples are kept in flight (default:
``generator.capacity``, else 256): new problems are admitted from the batch (a
sliding window) while the real samples in the engine are under the budget — by the
engine's own count where it has one (``generator.unfinished_sequences``: a request's
finished samples free their slots before the request returns), else by the samples of
real requests in flight — then speculative asks fill what is left, round-robin over
the active problems by priority. Real asks of admitted problems are always sent (progress first).

On an engine that takes **priorities** (``generator.priorities``: vLLM's priority scheduling, opt-in) the
whole batch's sampling is queued at once at
:data:`PRIORITY_SAMPLING`, ahead of the searches' rollouts (:data:`PRIORITY_SEARCH`) and
speculation (:data:`PRIORITY_SPECULATIVE`), which run in the slots sampling leaves. Every problem is
so sampled as early as the engine allows and every tree starts early: a job's tail is the trees
still running when the last problem is sampled, and the more of them there are, the longer they
keep the engine full on their own (``benchmarks/stream_admission.py``, simulated CPU engine, 128
chain problems: the last sample back at 0.32 of the job instead of 0.95, 0.996 of plain with 125.1
of 128 sequences running against 0.979 and 106.9). Opt-in until the real CPU engine shows the gain
(docs/benchmarks.md, "Priority scheduling").
A request's seed, never its priority, decides its samples: rows are the same either way. A
speculative request promoted to a real one keeps its engine priority (vLLM cannot change it).

Verdicts: ``verify(items)`` returns one :class:`~counterpoint.verifiers.base.Verdict`
per ``(text, gold, truncated, answer_type)`` item (text = prefix + continuation,
or the terminal prefix itself). A truncated sample counts as **incorrect** whatever
the verifier said; ``unknown`` stays unknown and is excluded from MC.

Long: the sliding-window scheduler and its per-tree bookkeeping are one state machine.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Callable, Dict, Generator as PyGenerator, List, Optional, Sequence, Tuple

from counterpoint.generators.base import Completion, GenerationError, GenerationRequest, Generator, SamplingParams
from counterpoint.labeling.evidence import Estimate, EvidenceStore, Rollout, RolloutAsk
from counterpoint.schemas.records import VERDICT_INCORRECT, VERDICT_UNKNOWN, VERDICTS
from counterpoint.verifiers.base import REASON_TRUNCATED

#: ``verify(items) -> List[Verdict]``; an item is ``(text, gold_answer, truncated, answer_type)`` where
#: ``text`` is the whole assistant message (prefix + continuation). Build it from a suite with
#: ``lambda items: [v for v, _ in suite.verify(items)]``.
VerifyFn = Callable[[List[Tuple[str, str, bool, str]]], List[Any]]

#: In-flight sample budget when neither the config nor the generator gives one.
DEFAULT_INFLIGHT_SAMPLES = 256

#: Real samples in flight, in budgets, up to which problems are admitted on an engine that counts its own
#: unfinished sequences (``_Run.has_room``): a request's finished samples free their slots before it returns.
REQUEST_SLACK = 4

#: Engine priorities (lower runs first) on a generator that takes them (``generator.priorities``):
#: problems' own sampling first (it unlocks every tree: the sooner all problems are sampled, the more
#: trees are left to fill the engine together at the end), then searches' rollouts and judge
#: requests, then speculation (see "Admission" in the module docstring).
PRIORITY_SAMPLING = 0
PRIORITY_SEARCH = 1
PRIORITY_SPECULATIVE = 2

__all__ = [
    "DEFAULT_INFLIGHT_SAMPLES",
    "PRIORITY_SAMPLING",
    "PRIORITY_SEARCH",
    "PRIORITY_SPECULATIVE",
    "Estimate",
    "AskGroups",
    "ProblemContext",
    "Rollout",
    "RolloutAsk",
    "RoundScheduler",
    "SampleAsk",
    "Sampled",
    "Search",
    "SearchGroup",
    "VerifyFn",
    "rollout_seed",
    "side_by_side",
]


@dataclasses.dataclass
class ProblemContext:
    """One problem's prompt, gold answer, evidence store and counters."""

    problem_id: str
    question: str
    gold_answer: str
    answer_type: str = "numeric"
    system_prompt: Optional[str] = None
    segmentation_mode: str = "paragraph"
    min_known: int = 1
    store: EvidenceStore = None  # type: ignore[assignment]
    stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    format_failures: str = "zero"  # labeling.rollout_format_failures

    def __post_init__(self):
        if self.store is None:
            self.store = EvidenceStore(self.segmentation_mode, self.min_known, self.format_failures)

    def estimate(self, prefix: str, n_new: int = 0) -> Optional[Estimate]:
        return self.store.estimate(prefix, n_new)

    def held(self, prefix: str) -> int:
        return self.store.held(prefix)


def rollout_seed(base_seed: int, problem_id: str, prefix: str, already_held: int) -> int:
    """Deterministic request seed from the problem, the exact prefix and how many samples exist."""
    blob = repr((base_seed, problem_id, prefix, already_held)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def as_verdict(v: Any) -> Tuple[str, Optional[str]]:
    """``(verdict, reason)`` of a verifier answer (a ``Verdict``-like object)."""
    verdict = getattr(v, "verdict", None)
    if verdict is None:
        raise TypeError(
            f"verify must return counterpoint.verifiers.base.Verdict objects (verdict + reason), got {v!r}; "
            "from a VerifierSuite: lambda items: [v for v, _ in suite.verify(items)]"
        )
    if verdict not in VERDICTS:
        raise ValueError(f"verify returned verdict {verdict!r}; expected one of {VERDICTS}")
    return verdict, getattr(v, "reason", None)


@dataclasses.dataclass(frozen=True, eq=False)
class SampleAsk:
    """Run ``request`` (a problem's sampling request, seeded by the caller) as it is; answered with a
    :class:`Sampled`. Never shared with other asks, never speculative. ``verify=False`` (a judge's
    critique, not an answer to the problem): no verdicts."""

    request: GenerationRequest
    verify: bool = True
    speculative = False


@dataclasses.dataclass(frozen=True)
class Sampled:
    """The answer to a :class:`SampleAsk`: completions and the verifier's verdicts, aligned."""

    completions: List[Completion]
    verdicts: List[Any]


@dataclasses.dataclass(frozen=True)
class AskGroups:
    """Independent lists of asks, keyed: answered with ``{key: estimates}`` for every group whose own
    asks are all answered (at least one), as soon as one is (see the module docstring)."""

    groups: Tuple[Tuple[Any, Tuple[Any, ...]], ...]

    @classmethod
    def of(cls, groups) -> "AskGroups":
        """From ``(key, asks)`` pairs (keys unique, order kept)."""
        out = tuple((key, tuple(asks)) for key, asks in groups)
        if len({key for key, _ in out}) != len(out):
            raise ValueError("AskGroups keys must be unique")
        return cls(out)

    def flat(self) -> List[Any]:
        return [a for _, asks in self.groups for a in asks]


#: A search: yields lists of asks (or :class:`AskGroups`), receives aligned lists of estimates (None
#: for speculative asks; for groups, a dict of them by key).
Search = PyGenerator[List[RolloutAsk], List[Optional[Estimate]], Any]


@dataclasses.dataclass
class _Request:
    key: tuple
    prefix: str
    n: int
    owner: int  # task index that caused it
    waiting: List[int]  # tasks whose real asks it answers (empty while purely speculative)
    speculative: bool
    promoted: bool = False
    sample: Optional[SampleAsk] = None
    seq: int = 0  # submission order (the youngest speculative requests are aborted first)


class RoundScheduler:
    """Drives search coroutines against one generator (see the module docstring).

    ``max_active`` caps the problems in flight (None: budget-driven only);
    ``max_inflight_samples`` is the sample budget (None: ``generator.capacity`` or
    256). ``on_round`` receives one stats record per engine poll; ``on_done(i,
    result)`` is called as soon as task ``i`` returns.
    """

    def __init__(
        self,
        generator: Generator,
        verify: VerifyFn,
        params: SamplingParams,
        *,
        seed: int = 0,
        max_active: Optional[int] = None,
        max_inflight_samples: Optional[int] = None,
        on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
        on_done: Optional[Callable[[int, Any], None]] = None,
    ):
        self.generator = generator
        self.verify = verify
        self.params = params
        self.seed = seed
        self.max_active = max_active
        capacity = getattr(generator, "capacity", None)
        self.budget = int(max_inflight_samples or capacity or DEFAULT_INFLIGHT_SAMPLES)
        spec = getattr(generator, "speculation_capacity", None)
        self.speculation_budget = min(self.budget, int(spec)) if spec else self.budget
        self.priorities = bool(getattr(generator, "priorities", False))
        self.sampling_priority = PRIORITY_SAMPLING
        self.on_round = on_round
        self.on_done = on_done
        self.rounds: List[Dict[str, Any]] = []

    def submit(self, requests: List[GenerationRequest], priority: int) -> List[Any]:
        if self.priorities:
            return self.generator.submit(requests, priority=priority)
        return self.generator.submit(requests)

    # -- requests ---------------------------------------------------------
    def request_for(self, ctx: ProblemContext, prefix: str, n: int) -> GenerationRequest:
        seed = rollout_seed(self.seed, ctx.problem_id, prefix, ctx.held(prefix))
        if prefix == "":
            return GenerationRequest.chat(ctx.system_prompt, ctx.question, n=n, params=self.params, seed=seed)
        return GenerationRequest.continuation(
            ctx.system_prompt, ctx.question, prefix, n=n, params=self.params, seed=seed
        )

    @staticmethod
    def _ask_key(ctx: ProblemContext, prefix: str) -> tuple:
        # Everything that determines the request and its verdicts: identical asks share one request,
        # also across contexts of the same problem.
        return (ctx.problem_id, ctx.system_prompt, ctx.question, ctx.gold_answer, ctx.answer_type,
                prefix, ctx.held(prefix))

    # -- main loop --------------------------------------------------------
    def run(self, tasks: Sequence[Tuple[ProblemContext, Search]]) -> List[Any]:
        """Runs every search to completion; returns their results in ``tasks`` order."""
        return _Run(self, tasks).run()


class _Run:
    """State of one :meth:`RoundScheduler.run` call."""

    def __init__(self, sched: RoundScheduler, tasks: Sequence[Tuple[ProblemContext, Search]]):
        self.s = sched
        self.tasks = list(tasks)
        self.results: List[Any] = [None] * len(self.tasks)
        self.waiting = collections.deque(range(len(self.tasks)))
        self.active: Dict[int, List[RolloutAsk]] = {}  # task -> its last yielded asks (groups flattened)
        self.groups: Dict[int, AskGroups] = {}  # task -> its last yielded AskGroups (tasks that yield groups)
        self.started: set = set()
        self.requests: Dict[Any, _Request] = {}  # engine handle -> request
        self.by_key: Dict[tuple, Any] = {}  # (ask key, n) -> handle of the request in flight
        self.real_keys: Dict[tuple, int] = collections.Counter()  # ask key -> real requests in flight
        self.buffer: Dict[tuple, Tuple[int, List[Rollout]]] = {}  # (ask key, n) -> (owner task, rollouts)
        self.to_verify: Dict[Tuple[int, str], None] = {}  # (task, terminal prefix), insertion-ordered
        self.generated: Dict[Tuple[int, str], int] = {}  # (task, prefix) -> samples made for its asks
        self.sampled: Dict[int, Sampled] = {}  # id(SampleAsk) -> its answer, until handed over
        self.inflight = 0
        self.inflight_real = 0
        self.inflight_sampling = 0  # samples of problems' own sampling requests in flight
        self.seq = 0

    # -- coroutine driving -------------------------------------------------
    def ctx(self, i: int) -> ProblemContext:
        return self.tasks[i][0]

    def advance(self, i: int, value: Optional[List[Optional[Estimate]]]) -> None:
        ctx, coro = self.tasks[i]
        while True:
            try:
                if i not in self.started:
                    self.started.add(i)
                    asks = next(coro)
                else:
                    asks = coro.send(value)
            except StopIteration as stop:
                self.finish(i, stop.value)
                return
            if isinstance(asks, AskGroups):
                if not asks.groups:
                    raise ValueError(f"task {i} yielded empty AskGroups")
                self.groups[i] = asks
                asks = asks.flat()
            else:
                self.groups.pop(i, None)
                asks = list(asks)
            for a in asks:
                if isinstance(a, SampleAsk):
                    continue
                if a.n < 1:
                    raise ValueError(f"rollout ask needs n >= 1, got {a}")
                if not a.speculative:
                    ctx.store.note_prefix_steps(a.prefix, a.steps)
            self.active[i] = asks
            self.serve_from_buffer(i)
            if self.satisfied(i):
                value = self.answer(i)
                continue
            self.submit_real(i)
            return

    def finish(self, i: int, result: Any) -> None:
        self.results[i] = result
        self.active.pop(i, None)
        self.groups.pop(i, None)
        ctx = self.ctx(i)
        for bkey in [k for k, (owner, _) in self.buffer.items() if owner == i]:
            _, rollouts = self.buffer.pop(bkey)
            ctx.stats["prefetch_wasted"] += len(rollouts)
            ctx.stats["prefetch_wasted_tokens"] += sum(r.num_tokens for r in rollouts)
        if self.s.on_done is not None:
            self.s.on_done(i, result)

    def real_asks(self, i: int) -> List[RolloutAsk]:
        return [a for a in self.active.get(i, ()) if not a.speculative]

    def _answered(self, i: int, asks) -> bool:
        store = self.ctx(i).store
        return all(id(a) in self.sampled if isinstance(a, SampleAsk) else store.satisfied(a)
                   for a in asks if not a.speculative)

    def satisfied(self, i: int) -> bool:
        """Task ``i`` can be resumed: all its asks answered (for groups: one group's)."""
        groups = self.groups.get(i)
        if groups is not None:
            return any(self._answered(i, asks) for _, asks in groups.groups)
        return self._answered(i, self.real_asks(i))

    def answer(self, i: int):
        groups = self.groups.get(i)
        if groups is not None:
            return {key: self._estimates(i, asks) for key, asks in groups.groups if self._answered(i, asks)}
        return self._estimates(i, self.active[i])

    def _estimates(self, i: int, asks) -> List[Optional[Estimate]]:
        ctx = self.ctx(i)
        out: List[Optional[Estimate]] = []
        for a in asks:
            if a.speculative:
                out.append(None)
                continue
            if isinstance(a, SampleAsk):
                out.append(self.sampled.pop(id(a)))
                continue
            # New samples are attributed once, to the first ask that caused them (statistics only).
            out.append(ctx.estimate(a.prefix, self.generated.pop((i, a.prefix), 0)))
        return out

    # -- buffer and requests -------------------------------------------------
    def serve_from_buffer(self, i: int) -> None:
        ctx = self.ctx(i)
        for a in self.real_asks(i):
            if isinstance(a, SampleAsk) or not ctx.store.rollable(a.prefix) or ctx.store.satisfied(a):
                continue
            missing = ctx.store.missing(a)
            if missing <= 0:
                continue
            bkey = (RoundScheduler._ask_key(ctx, a.prefix), missing)
            hit = self.buffer.pop(bkey, None)
            if hit is None:
                continue
            owner, rollouts = hit
            self.store_rollouts([i], a.prefix, rollouts)
            self.ctx(owner).stats["prefetch_used"] += len(rollouts)

    def store_rollouts(self, tasks: Sequence[int], prefix: str, rollouts: List[Rollout]) -> None:
        seen = set()
        for t in tasks:
            ctx = self.ctx(t)
            if id(ctx) in seen:
                continue
            seen.add(id(ctx))
            ctx.store.add_rollouts(prefix, rollouts)
            self.generated[(t, prefix)] = self.generated.get((t, prefix), 0) + len(rollouts)

    def submit_real(self, i: int) -> None:
        ctx = self.ctx(i)
        new: List[Tuple[tuple, str, int]] = []
        for a in self.real_asks(i):
            if isinstance(a, SampleAsk):
                self.send_sample(i, a)
                continue
            if ctx.store.satisfied(a):
                continue
            if ctx.store.needs_verdict(a.prefix):
                self.to_verify.setdefault((i, a.prefix), None)
                continue  # verified first; rolled out afterwards only if its verdict is no evidence
            missing = ctx.store.missing(a)
            key = RoundScheduler._ask_key(ctx, a.prefix)
            handle = self.by_key.get((key, missing))
            if handle is not None:
                req = self.requests[handle]
                if i not in req.waiting:
                    req.waiting.append(i)
                if req.speculative:
                    req.speculative, req.promoted = False, True
                    self.inflight_real += req.n
                    self.real_keys[key] += 1
                continue
            if self.real_keys[key]:
                continue  # a real request for this prefix is in flight: re-checked (topped up) when it lands
            if any(k == key for k, _, _ in new):
                continue
            new.append((key, a.prefix, missing))
        if new:
            self.send(i, new, speculative=False)

    def send_sample(self, i: int, ask: SampleAsk) -> None:
        key = ("sample", id(ask))
        if id(ask) in self.sampled or key in self.by_key:
            return
        (handle,) = self.s.submit([ask.request], self.s.sampling_priority if ask.verify else PRIORITY_SEARCH)
        self.seq += 1
        self.requests[handle] = _Request(key, "", ask.request.n, i, [i], False, sample=ask, seq=self.seq)
        self.by_key[key] = handle
        self.inflight += ask.request.n
        self.inflight_real += ask.request.n
        self.inflight_sampling += ask.request.n if ask.verify else 0
        self.real_keys[key] += 1

    def send(self, i: int, asks: Sequence[Tuple[tuple, str, int]], *, speculative: bool) -> None:
        ctx = self.ctx(i)
        reqs = [self.s.request_for(ctx, prefix, n) for _, prefix, n in asks]
        priority = PRIORITY_SPECULATIVE if speculative else PRIORITY_SEARCH
        for (key, prefix, n), handle in zip(asks, self.s.submit(reqs, priority)):
            self.seq += 1
            self.requests[handle] = _Request(key, prefix, n, i, [] if speculative else [i], speculative, seq=self.seq)
            self.by_key[(key, n)] = handle
            self.inflight += n
            if not speculative:
                self.inflight_real += n
                self.real_keys[key] += 1

    def admit(self) -> None:
        """Starts waiting problems while there is room (:meth:`has_room`)."""
        while self.waiting and (self.s.max_active is None or len(self.active) < self.s.max_active) and (
            not self.active or self.has_room()
        ):
            self.advance(self.waiting.popleft(), None)

    def has_room(self) -> bool:
        """Real samples in the engine under the budget; on an engine with priorities, always: the whole
        batch's sampling is queued at once (it runs before the searches' rollouts queued beside it,
        which fill the slots it leaves). A window would not do: a sampling request holds its place
        until its slowest sample ends, and the slots its finished samples free would go to rollouts.

        The engine's own count (``generator.unfinished_sequences``, where it has one) decides, not the
        samples of requests in flight: a request of 8 samples is in flight until its longest sample
        ends, while the engine's slots of its 7 finished ones are free (on the real CPU engine plain
        sampling counted by requests kept 91-105 of 128 sequences decoding). Speculative samples are
        not room taken (they are cancelled for real work); :data:`REQUEST_SLACK` budgets of real
        samples in flight bound what is admitted when the engine's count says little (cache hits)."""
        if self.s.priorities:
            return True
        _, real = self.engine_held()
        return real < self.s.budget and self.inflight_real < REQUEST_SLACK * self.s.budget

    def engine_held(self) -> Tuple[int, int]:
        """(sequences the engine holds, of them real work): by the engine's own count where it has one
        (``generator.unfinished_sequences``), else by the samples of requests in flight. Counted by
        requests, a probe of 8 rollouts holds 8 places until its longest rollout ends: in the tail of a
        64-problem job the requests held 56 places while the engine decoded 21 sequences, so a speculation
        budget of 32 was never under and speculation never ran (0 prefetched in the whole job)."""
        engine = getattr(self.s.generator, "unfinished_sequences", None)
        if engine is None:
            return self.inflight, self.inflight_real
        speculative = self.inflight - self.inflight_real  # at most this many of the engine's are speculative
        return engine, max(0, engine - speculative)

    def speculate(self) -> None:
        """Fills the speculation budget left (``generator.speculation_capacity``, at most the budget) with
        speculative asks, by priority rank, round-robin over problems. What the engine holds is its own
        count (:meth:`engine_held`), read again after every request sent."""
        if self.engine_held()[0] >= self.s.speculation_budget:
            return
        lists = {i: [a for a in asks if a.speculative] for i, asks in self.active.items()}
        depth = max((len(v) for v in lists.values()), default=0)
        for rank in range(depth):
            for i in sorted(lists):
                if rank >= len(lists[i]):
                    continue
                a = lists[i][rank]
                ctx = self.ctx(i)
                if not ctx.store.rollable(a.prefix) or ctx.store.satisfied(a):
                    continue
                missing = ctx.store.missing(a)
                if missing <= 0:
                    continue
                key = RoundScheduler._ask_key(ctx, a.prefix)
                if (key, missing) in self.by_key or (key, missing) in self.buffer:
                    continue
                if self.engine_held()[0] + missing > self.s.speculation_budget:
                    return
                self.send(i, [(key, a.prefix, missing)], speculative=True)

    # -- the loop ----------------------------------------------------------
    def run(self) -> List[Any]:
        self.admit()
        while self.active or self.requests:
            if self.to_verify and not self.inflight_real:
                self.absorb([], poll=False)
            elif self.requests:
                # Speculation is submitted right before a poll: a round-based engine runs it in the same call.
                self.speculate()
                finished = self.s.generator.poll()
                if not finished:
                    raise RuntimeError("engine has no finished or pending requests while searches wait")
                self.absorb(finished, poll=True)
            else:
                stuck = {i: self.real_asks(i) for i in self.active}
                raise RuntimeError(f"searches wait for asks nothing will answer: {stuck}")
            for i in sorted(self.active):
                if i not in self.active:
                    continue
                self.serve_from_buffer(i)
                if self.satisfied(i):
                    self.advance(i, self.answer(i))
                else:
                    self.submit_real(i)
            self.admit()
            self.cancel_speculation()
        return self.results

    # -- speculation only into idle capacity ------------------------------------------
    def cancel_speculation(self) -> None:
        """Aborts speculative requests the search has moved past, then the youngest ones while the
        in-flight samples exceed the speculation budget (real work first: speculative samples never
        take room real ones need)."""
        wanted: Dict[int, set] = {}
        for i, asks in self.active.items():
            ctx = self.ctx(i)
            wanted[i] = {(RoundScheduler._ask_key(ctx, a.prefix), ctx.store.missing(a))
                         for a in asks if a.speculative}
        spec = sorted((r.seq, h) for h, r in self.requests.items() if r.speculative)
        stale = [h for _, h in spec if (self.requests[h].key, self.requests[h].n)
                 not in wanted.get(self.requests[h].owner, ())]
        held, real = self.engine_held()
        limit = max(self.s.speculation_budget, real)
        over = held - sum(self.requests[h].n for h in stale) - limit
        for _, h in reversed(spec):
            if over <= 0:
                break
            if h not in stale:
                stale.append(h)
                over -= self.requests[h].n
        if stale:
            self.abort(stale)

    def abort(self, handles: List[Any]) -> None:
        abort = getattr(self.s.generator, "abort", None)
        if abort is None:
            return  # an engine that cannot cancel: the requests run out, their rollouts are discarded
        abort(list(handles))
        for h in handles:
            req = self.requests.pop(h)
            self.by_key.pop((req.key, req.n), None)
            self.inflight -= req.n
            self.ctx(req.owner).stats["speculative_aborted"] += req.n

    def absorb(self, finished, *, poll: bool) -> None:
        """Verifies finished requests and pending terminal prefixes (one verifier call), stores them.

        Long: one finished request updates every structure that waits on it (trees, windows, counters)
        atomically.
        """
        done: List[Tuple[_Request, list]] = []
        for handle, comps in finished:
            req = self.requests.pop(handle, None)
            if req is None:
                continue  # left over from an earlier, failed attempt on the same engine
            if req.sample is not None and len(comps) != req.n:
                raise GenerationError(f"engine returned {len(comps)} samples, asked for {req.n}")
            self.by_key.pop(req.key if req.sample is not None else (req.key, req.n), None)
            self.inflight -= req.n
            if not req.speculative:
                self.inflight_real -= req.n
                self.real_keys[req.key] -= 1
            if req.sample is not None and req.sample.verify:
                self.inflight_sampling -= req.n
            done.append((req, comps))
        terminal = list(self.to_verify)
        self.to_verify.clear()
        items = []
        for req, comps in done:
            ctx = self.ctx(req.owner)
            if req.sample is not None and not req.sample.verify:
                continue
            for c in comps:
                items.append((req.prefix + c.text, ctx.gold_answer, c.truncated, ctx.answer_type))
        for i, prefix in terminal:
            ctx = self.ctx(i)
            items.append((prefix, ctx.gold_answer, False, ctx.answer_type))
        raw = list(self.s.verify(items)) if items else []  # ONE verifier call
        verdicts = [as_verdict(v) for v in raw]
        if len(verdicts) != len(items):
            raise ValueError(f"verify returned {len(verdicts)} verdicts for {len(items)} items")

        stats = collections.Counter()
        pos = 0
        for req, comps in done:
            owner = self.ctx(req.owner)
            if req.sample is not None:  # a problem's own samples: verdicts as the verifier gave them
                n_verified = len(comps) if req.sample.verify else 0
                self.sampled[id(req.sample)] = Sampled(list(comps), raw[pos:pos + n_verified])
                pos += n_verified
                stats["sample_samples"] += len(comps)
                stats["sample_tokens"] += sum(c.num_tokens for c in comps)
                stats["sample_prompt_tokens"] += comps[0].num_prompt_tokens if comps else 0
                continue
            new: List[Rollout] = []
            for c in comps:
                v, reason = verdicts[pos]
                pos += 1
                if c.truncated:
                    v, reason = VERDICT_INCORRECT, REASON_TRUNCATED  # truncated counts as wrong
                new.append(Rollout(c.text, v, c.truncated, c.num_tokens, c.finish_reason, reason=reason))
                for counter in (stats, owner.stats):
                    counter["rollouts"] += 1
                    counter["rollout_tokens"] += c.num_tokens
                    counter["truncated"] += int(c.truncated)
                    counter["unknown"] += int(v == VERDICT_UNKNOWN)
            for counter in (stats, owner.stats):
                counter["requests"] += 1
                counter["prompt_tokens"] += comps[0].num_prompt_tokens if comps else 0
                counter["cached_prompt_tokens"] += comps[0].num_cached_prompt_tokens if comps else 0
            if req.speculative:
                stats["speculative_samples"] += len(new)
                owner.stats["prefetched"] += len(new)
                if req.owner in self.active:
                    self.buffer[(req.key, req.n)] = (req.owner, new)
                else:
                    owner.stats["prefetch_wasted"] += len(new)
                    owner.stats["prefetch_wasted_tokens"] += sum(r.num_tokens for r in new)
                continue
            if req.promoted:
                owner.stats["prefetched"] += len(new)
                owner.stats["prefetch_used"] += len(new)
            self.store_rollouts(req.waiting, req.prefix, new)
        for i, prefix in terminal:
            v, reason = verdicts[pos]
            pos += 1
            self.ctx(i).store.record_verdict(prefix, v, reason)
            self.ctx(i).stats["terminal_verifications"] += 1
        if not poll:
            return
        record = {
            "round": len(self.s.rounds),
            "active": len(self.active),
            "requests": len(done),
            "samples": stats["rollouts"],
            "speculative_samples": stats["speculative_samples"],
            "inflight_samples": self.inflight,
            "prompt_tokens": stats["prompt_tokens"],
            "cached_prompt_tokens": stats["cached_prompt_tokens"],
            "generated_tokens": stats["rollout_tokens"],
            "sample_samples": stats["sample_samples"],
            "sample_tokens": stats["sample_tokens"],
            "sample_prompt_tokens": stats["sample_prompt_tokens"],
            "inflight_real_samples": self.inflight_real,
            "capacity": self.s.budget,
            "verify_items": len(items),
            "terminal_verifications": len(terminal),
            "truncated": stats["truncated"],
            "unknown": stats["unknown"],
        }
        self.s.rounds.append(record)
        if self.s.on_round is not None:
            self.s.on_round(record)


class SearchGroup:
    """Searches of the scheduler protocol run side by side, each at its own pace.

    :meth:`asks` offers every running search's pending asks as one :class:`AskGroups` (a search that
    yields a list is one group; one that yields groups keeps them, under ``(its key, group key)``);
    :meth:`answer` resumes each search whose asks are answered and leaves the others waiting. A
    search that returns leaves ``running`` and its result lands in ``finished`` under its key.
    """

    def __init__(self):
        self.running: Dict[Any, Any] = {}  # key -> (search, its pending asks: a list or AskGroups), start order
        self.finished: Dict[Any, Any] = {}

    def start(self, key, search) -> None:
        if key in self.running or key in self.finished:
            raise ValueError(f"search key {key!r} is taken")
        self._step(key, search, None)

    def asks(self) -> AskGroups:
        groups = []
        for key, (_, pending) in self.running.items():
            if isinstance(pending, AskGroups):
                groups.extend(((key, sub), asks) for sub, asks in pending.groups)
            else:
                groups.append(((key, None), pending))
        return AskGroups.of(groups)

    def answer(self, answers: Dict[Any, Any]) -> None:
        for key, (search, pending) in list(self.running.items()):
            if isinstance(pending, AskGroups):
                mine = {sub: answers[(key, sub)] for sub, _ in pending.groups if (key, sub) in answers}
                if mine:
                    self._step(key, search, mine)
            elif (key, None) in answers:
                self._step(key, search, answers[(key, None)])

    def _step(self, key, search, value) -> None:
        try:
            pending = search.send(value)
        except StopIteration as stop:
            self.running.pop(key, None)
            self.finished[key] = stop.value
            return
        self.running[key] = (search, pending if isinstance(pending, AskGroups) else list(pending))


def side_by_side(*searches):
    """Runs searches of the scheduler protocol together, each resumed as soon as its own asks are
    answered; returns their results as a tuple."""
    group = SearchGroup()
    for i, search in enumerate(searches):
        group.start(i, search)
    while group.running:
        group.answer((yield group.asks()))
    return tuple(group.finished[i] for i in range(len(searches)))
