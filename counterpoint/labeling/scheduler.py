"""Rounds of Monte Carlo rollouts for many sequential searches at once.

A tree search (OmegaPRM's binary search, MCTS selection) is sequential inside
one tree: the next probe depends on the last value. One engine call per probe
would leave the engine idle. So every search is written as a Python generator
(a coroutine) that **yields** a list of :class:`RolloutAsk` — "I need at least
``n`` rollouts from this assistant prefix" — and receives, aligned with it, a
list of :class:`Estimate` objects. :class:`RoundScheduler` advances all active
coroutines in rounds: each round gathers the asks of every tree, serves what the
per-problem cache already holds, dedupes identical asks, sends the rest as
**one** ``generator.generate([...])`` call and verifies every sample in **one**
``verify([...])`` call, then resumes each coroutine with its estimates.

Rollouts are cached per problem by exact prefix, and an ask is a lower bound:
``RolloutAsk(prefix, 8)`` against 5 cached rollouts generates 3 more (with a
seed derived from the problem, the prefix and the number already held), so a
value measured by the tree is reused by later passes (per-step values) for free.

Verdicts: the verifier callback returns ``"correct"``/``"incorrect"``/
``"unknown"`` per sample. A truncated sample (``finish_reason == "length"``) is
counted as **incorrect** whatever the verifier said (and counted under
``truncated``). ``unknown`` stays unknown: it is excluded from both the numerator
and the denominator of MC (see :attr:`Estimate.value`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Callable, Dict, Generator as PyGenerator, List, Optional, Sequence, Tuple

from counterpoint.generators.base import Completion, GenerationRequest, Generator, SamplingParams
from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN, VERDICTS

#: ``verify(items) -> verdicts``; an item is ``(text, gold_answer, truncated, answer_type)`` where
#: ``text`` is the whole assistant message (prefix + continuation).
VerifyFn = Callable[[List[Tuple[str, str, bool, str]]], List[str]]


@dataclasses.dataclass(frozen=True)
class RolloutAsk:
    """At least ``n`` rollouts continuing the partial assistant message ``prefix``."""

    prefix: str
    n: int


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One sampled continuation of a prefix, with its verdict.

    ``text`` is the continuation only (for root rollouts, i.e. the sampled
    trajectories, the whole completion). ``sample_index`` is set for sampled
    trajectories and ``steps`` carries their stored segmentation.
    """

    text: str
    verdict: str
    truncated: bool
    num_tokens: int
    finish_reason: str = "stop"
    sample_index: Optional[int] = None
    steps: Optional[Tuple[str, ...]] = None

    @property
    def is_incorrect(self) -> bool:
        return self.verdict == VERDICT_INCORRECT

    @property
    def is_correct(self) -> bool:
        return self.verdict == VERDICT_CORRECT


@dataclasses.dataclass(frozen=True)
class Estimate:
    """All rollouts held for one prefix, and how many of them this ask caused to be generated."""

    prefix: str
    rollouts: Tuple[Rollout, ...]
    n_new: int = 0

    @property
    def n(self) -> int:
        return len(self.rollouts)

    @property
    def n_correct(self) -> int:
        return sum(r.verdict == VERDICT_CORRECT for r in self.rollouts)

    @property
    def n_incorrect(self) -> int:
        return sum(r.verdict == VERDICT_INCORRECT for r in self.rollouts)

    @property
    def n_unknown(self) -> int:
        return sum(r.verdict == VERDICT_UNKNOWN for r in self.rollouts)

    @property
    def n_known(self) -> int:
        return self.n - self.n_unknown

    @property
    def value(self) -> Optional[float]:
        """MC = correct / (n - unknown); ``None`` (unmeasured) when no verdict is known."""
        known = self.n_known
        return None if known == 0 else self.n_correct / known


@dataclasses.dataclass
class ProblemContext:
    """One problem's prompt, gold answer, rollout cache and counters."""

    problem_id: str
    question: str
    gold_answer: str
    answer_type: str = "numeric"
    system_prompt: Optional[str] = None
    segmentation_mode: str = "paragraph"
    cache: Dict[str, List[Rollout]] = dataclasses.field(default_factory=dict)
    stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def estimate(self, prefix: str, n_new: int = 0) -> Optional[Estimate]:
        held = self.cache.get(prefix)
        if not held:
            return None
        return Estimate(prefix, tuple(held), n_new)

    def held(self, prefix: str) -> int:
        return len(self.cache.get(prefix, ()))


def rollout_seed(base_seed: int, problem_id: str, prefix: str, already_held: int) -> int:
    """Deterministic request seed from the problem, the exact prefix and how many samples exist."""
    blob = repr((base_seed, problem_id, prefix, already_held)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


#: A search: yields lists of asks, receives aligned lists of estimates, returns its result.
Search = PyGenerator[List[RolloutAsk], List[Estimate], Any]


class RoundScheduler:
    """Advances many searches together; one engine call and one verifier call per round.

    ``max_active`` caps how many searches take part in a round (a sliding
    window: when one finishes the next waiting one starts). ``rounds`` holds one
    stats dict per round; ``on_round`` (optional) is called with each.
    """

    def __init__(
        self,
        generator: Generator,
        verify: VerifyFn,
        params: SamplingParams,
        *,
        seed: int = 0,
        max_active: Optional[int] = None,
        on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
    ):
        if max_active is not None and max_active < 1:
            raise ValueError("max_active must be >= 1")
        self.generator = generator
        self.verify = verify
        self.params = params
        self.seed = seed
        self.max_active = max_active
        self.on_round = on_round
        self.rounds: List[Dict[str, Any]] = []

    # -- requests ---------------------------------------------------------
    def request_for(self, ctx: ProblemContext, prefix: str, n: int) -> GenerationRequest:
        seed = rollout_seed(self.seed, ctx.problem_id, prefix, ctx.held(prefix))
        if prefix == "":
            return GenerationRequest.chat(ctx.system_prompt, ctx.question, n=n, params=self.params, seed=seed)
        return GenerationRequest.continuation(
            ctx.system_prompt, ctx.question, prefix, n=n, params=self.params, seed=seed
        )

    # -- main loop --------------------------------------------------------
    def run(self, tasks: Sequence[Tuple[ProblemContext, Search]]) -> List[Any]:
        """Runs every search to completion; returns their results in ``tasks`` order.

        The engine is driven through ``submit``/``poll`` (see ``Generator``): a search
        resumes as soon as all of its own asks are answered, and its next asks join the
        engine while other searches' rollouts are still decoding. With a streaming engine
        (in-process vLLM) there is no round barrier; with others each poll is one batched
        call, i.e. classic rounds. ``rounds`` holds one stats record per poll.
        """
        results: List[Any] = [None] * len(tasks)
        waiting = collections.deque(range(len(tasks)))
        active: Dict[int, List[RolloutAsk]] = {}
        started = set()
        inflight: Dict[tuple, List[ProblemContext]] = {}  # ask key -> contexts waiting for it
        handles: Dict[Any, tuple] = {}  # engine handle -> ask key
        generated: Dict[Tuple[int, str], int] = {}  # (context, prefix) -> samples made for it
        members: Dict[tuple, List[ProblemContext]] = {}  # ask key -> contexts, while being planned

        def advance(i: int, value: Optional[List[Estimate]]) -> None:
            ctx, coro = tasks[i]
            while True:
                try:
                    if i not in started:
                        started.add(i)
                        asks = next(coro)
                    else:
                        asks = coro.send(value)
                except StopIteration as stop:
                    results[i] = stop.value
                    active.pop(i, None)
                    return
                asks = list(asks)
                for a in asks:
                    if a.n < 1:
                        raise ValueError(f"rollout ask needs n >= 1, got {a}")
                if all(ctx.held(a.prefix) >= a.n for a in asks):
                    value = [ctx.estimate(a.prefix) for a in asks]  # served from cache at once
                    continue
                active[i] = asks
                return

        def fill() -> None:
            while waiting and (self.max_active is None or len(active) < self.max_active):
                advance(waiting.popleft(), None)

        def submit() -> Tuple[int, int]:
            need: Dict[tuple, int] = {}
            n_asks = deduped = 0
            for i in sorted(active):
                ctx = tasks[i][0]
                for a in active[i]:
                    n_asks += 1
                    missing = a.n - ctx.held(a.prefix)
                    if missing <= 0:
                        continue
                    key = self._ask_key(ctx, a.prefix)
                    if key in inflight:
                        if key not in need:
                            deduped += 1
                        if not any(c is ctx for c in inflight[key]):
                            inflight[key].append(ctx)
                        continue
                    if key in need:
                        deduped += 1
                        need[key] = max(need[key], missing)
                        if not any(c is ctx for c in members[key]):
                            members[key].append(ctx)
                    else:
                        need[key] = missing
                        members[key] = [ctx]
            keys = list(need)
            if keys:
                requests = [self.request_for(members[k][0], k[5], need[k]) for k in keys]
                for key, handle in zip(keys, self.generator.submit(requests)):
                    handles[handle] = key
                    inflight[key] = members.pop(key)
            return n_asks, deduped

        fill()
        while active:
            n_asks, deduped = submit()
            finished = self.generator.poll()
            if not finished:
                raise RuntimeError("engine has no finished or pending requests while searches wait")
            self._absorb(finished, handles, inflight, generated, n_active=len(active), n_asks=n_asks,
                         deduped=deduped)
            for i in sorted(active):
                ctx = tasks[i][0]
                asks = active[i]
                if all(ctx.held(a.prefix) >= a.n for a in asks):
                    # New samples are attributed once, to the first ask that caused them.
                    advance(i, [ctx.estimate(a.prefix, generated.pop((id(ctx), a.prefix), 0)) for a in asks])
            fill()
        return results

    @staticmethod
    def _ask_key(ctx: ProblemContext, prefix: str) -> tuple:
        # Everything that determines the request and its verdicts: identical asks share one request,
        # also across contexts of the same problem.
        return (ctx.problem_id, ctx.system_prompt, ctx.question, ctx.gold_answer, ctx.answer_type,
                prefix, ctx.held(prefix))

    def _absorb(self, finished, handles, inflight, generated, *, n_active: int, n_asks: int, deduped: int) -> None:
        """Verifies finished requests (one verifier call), stores their rollouts, records stats."""
        done = []
        for handle, comps in finished:
            key = handles.pop(handle, None)
            if key is None:
                continue  # left over from an earlier, failed attempt on the same engine
            done.append((key, inflight.pop(key), comps))
        items = []
        for key, ctxs, comps in done:
            ctx = ctxs[0]
            for c in comps:
                items.append((key[5] + c.text, ctx.gold_answer, c.truncated, ctx.answer_type))
        verdicts = list(self.verify(items)) if items else []  # ONE verifier call
        if len(verdicts) != len(items):
            raise ValueError(f"verify returned {len(verdicts)} verdicts for {len(items)} items")

        stats = collections.Counter()
        pos = 0
        for key, ctxs, comps in done:
            owner = ctxs[0]  # generation is charged to the first asker's problem
            new: List[Rollout] = []
            for c in comps:
                v = verdicts[pos]
                pos += 1
                if v not in VERDICTS:
                    raise ValueError(f"verify returned {v!r}; expected one of {VERDICTS}")
                if c.truncated:
                    v = VERDICT_INCORRECT  # truncated counts as wrong
                new.append(Rollout(c.text, v, c.truncated, c.num_tokens, c.finish_reason))
                for counter in (stats, owner.stats):
                    counter["rollouts"] += 1
                    counter["rollout_tokens"] += c.num_tokens
                    counter["truncated"] += int(c.truncated)
                    counter["unknown"] += int(v == VERDICT_UNKNOWN)
            for counter in (stats, owner.stats):
                counter["requests"] += 1
                counter["prompt_tokens"] += comps[0].num_prompt_tokens if comps else 0
                counter["cached_prompt_tokens"] += comps[0].num_cached_prompt_tokens if comps else 0
            for ctx in ctxs:
                ctx.cache.setdefault(key[5], []).extend(new)
            generated[(id(owner), key[5])] = generated.get((id(owner), key[5]), 0) + len(comps)
        record = {
            "round": len(self.rounds),
            "active": n_active,
            "asks": n_asks,
            "deduped_asks": deduped,
            "requests": len(done),
            "samples": stats["rollouts"],
            "prompt_tokens": stats["prompt_tokens"],
            "cached_prompt_tokens": stats["cached_prompt_tokens"],
            "generated_tokens": stats["rollout_tokens"],
            "verify_items": len(items),
            "truncated": stats["truncated"],
            "unknown": stats["unknown"],
        }
        self.rounds.append(record)
        if self.on_round is not None:
            self.on_round(record)



def side_by_side(*searches):
    """Runs searches of the scheduler protocol together; returns their results as a tuple.

    Each round yields the concatenation of every running search's asks and hands each
    search back its own slice of the estimates.
    """
    results: List[Any] = [None] * len(searches)
    running = []
    for i, search in enumerate(searches):
        try:
            running.append((i, search, list(search.send(None))))
        except StopIteration as stop:
            results[i] = stop.value
    while running:
        estimates = yield [a for _, _, asks in running for a in asks]
        pos, still = 0, []
        for i, search, asks in running:
            mine = estimates[pos:pos + len(asks)]
            pos += len(asks)
            try:
                still.append((i, search, list(search.send(mine))))
            except StopIteration as stop:
                results[i] = stop.value
        running = still
    return tuple(results)
