"""Scripted worlds for the engine-stream tests (issue 18).

* :class:`SamplingSlipsChainPolicy` (plug-in path :data:`SAMPLING_SLIPS`): the chain solver that
  slips only while sampling a whole solution; a rollout (a continuation of a prefix) never slips.
  A prefix before the first error then has MC exactly 1 and one after it exactly 0, so adaptive
  and fixed rollout budgets cannot decide a probe differently: their tables may differ only in
  how many rollouts they record.
* :class:`OneAtATimeGenerator`: a scripted engine that streams — each poll returns only the
  oldest submitted request — so requests stay in flight across polls and a scheduler's
  ``abort`` and idle-only speculation can be observed.
* :class:`ShuffledStreamGenerator`: a streaming scripted engine that finishes one pending request
  per poll, picked by a seeded random draw — requests come back in an order unrelated to the order
  they were sent (an OmegaPRM tree's searches then run at different paces).
* :func:`lockstep`: drives a tree coroutine so that its searches move in lockstep (the reference
  an own-pace tree must reproduce).
* :class:`SteppedStreamGenerator`: a streaming scripted engine on a simulated clock — up to
  ``capacity`` sequences decode one token per step, a step costs ``step_ms(running)`` (fitted to
  vLLM's CPU backend), a request comes back when its longest sequence ends — so a scheduler's
  pacing (sequences running, simulated seconds) can be measured without a model
  (``benchmarks/tree_pacing.py``).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from typing import Dict, List, Optional, Sequence

from counterpoint.generators.scripted import ChainPolicy, ScriptedGenerator
from counterpoint.labeling.scheduler import AskGroups

#: ``generator.scripted.policy`` of :class:`SamplingSlipsChainPolicy`.
SAMPLING_SLIPS = "counterpoint.testing.stream:SamplingSlipsChainPolicy"


@dataclasses.dataclass
class SamplingSlipsChainPolicy(ChainPolicy):
    """``ChainPolicy`` whose continuations of a prefix never slip (see the module docstring)."""

    def sample(self, request, sample_index, rng):
        if request.continue_final_message:
            return ChainPolicy.sample(dataclasses.replace(self, step_error_rate=0.0), request, sample_index, rng)
        return super().sample(request, sample_index, rng)


class OneAtATimeGenerator(ScriptedGenerator):
    """Streaming scripted engine: a poll finishes the oldest pending request only.

    ``aborted`` lists every handle passed to :meth:`abort` that was still pending.
    """

    streaming = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.aborted: List = []

    def abort(self, handles) -> None:
        pending = {h for h, _ in self.__dict__.get("_queued", [])}
        self.aborted.extend(h for h in handles if h in pending)
        super().abort(handles)

    def poll(self):
        queued = self.__dict__.get("_queued", [])
        if not queued:
            return []
        (handle, req), self._queued = queued[0], queued[1:]
        return [(handle, self.generate([req])[0])]


class ShuffledStreamGenerator(OneAtATimeGenerator):
    """Streaming scripted engine: a poll finishes one pending request drawn at random (``order_seed``)."""

    def __init__(self, *args, order_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._order = random.Random(order_seed)

    def poll(self):
        queued = self.__dict__.get("_queued", [])
        if not queued:
            return []
        pick = self._order.randrange(len(queued))
        (handle, req) = queued[pick]
        self._queued = queued[:pick] + queued[pick + 1:]
        return [(handle, self.generate([req])[0])]


def lockstep(run):
    """Resumes a tree coroutine only when every pending search is answered: its searches move in lockstep."""
    asks = next(run)
    while True:
        got: dict = {}
        while len(got) < len(asks.groups):
            got.update((yield AskGroups.of((key, a) for key, a in asks.groups if key not in got)))
        try:
            asks = run.send(got)
        except StopIteration as stop:
            return stop.value


#: Cost of one decode step on vLLM's CPU backend, milliseconds = STEP_MS_FIXED + STEP_MS_PER_SEQUENCE *
#: sequences decoding: the fit of the step times measured with the embedded model on the 2-core machine
#: (189 ms at 32 sequences, 342 at 64, 637 at 128; ``generators.vllm_local``).
STEP_MS_FIXED = 39.6
STEP_MS_PER_SEQUENCE = 4.67


class SteppedStreamGenerator(ScriptedGenerator):
    """Streaming scripted engine on a simulated clock (see the module docstring).

    A request's completions are decided when it is submitted (the scripted policy); each of its
    sequences then needs ``num_tokens * factor`` decode steps, ``factor`` drawn from
    ``length_factors`` (seeded: a model's rollouts vary in length around the script's). Waiting
    sequences join the running batch by priority (``submit(..., priority=)``, lower first, as vLLM's
    priority scheduling), then first come, first served, up to ``capacity``. :meth:`poll`
    runs steps until a request has all its sequences done. ``seconds``, ``tokens`` (sequence-steps)
    and ``running_area`` (sequences x seconds) measure the run; ``plain_tokens_per_s`` is the rate
    of a batch kept full.
    """

    streaming = True
    priorities = True

    def __init__(self, *args, length_factors: Sequence[float] = (1.0,), length_seed: int = 0,
                 step_ms_fixed: float = STEP_MS_FIXED, step_ms_per_sequence: float = STEP_MS_PER_SEQUENCE,
                 speculation_capacity: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._speculation_capacity = speculation_capacity
        if not self.capacity:
            raise ValueError("SteppedStreamGenerator needs a capacity")
        self.length_factors = tuple(length_factors)
        self._lengths = random.Random(length_seed)
        self.step_ms_fixed, self.step_ms_per_sequence = step_ms_fixed, step_ms_per_sequence
        self.seconds = 0.0
        self.tokens = 0
        self.running_area = 0.0
        self._waiting: List[tuple] = []  # heap of (priority, order, [handle, steps left])
        self._order = 0
        self._running: List[list] = []
        self._requests: Dict[int, list] = {}  # handle -> [completions, sequences left]
        self._handles = 0

    @property
    def speculation_capacity(self) -> Optional[int]:
        """As given (a CPU engine's is ``vllm_local.CPU_SPECULATION_SEQS``); None: the capacity."""
        return self._speculation_capacity

    @property
    def plain_tokens_per_s(self) -> float:
        return self.capacity / (self.step_ms(self.capacity) / 1000.0)

    def step_ms(self, running: int) -> float:
        return self.step_ms_fixed + self.step_ms_per_sequence * running

    def submit(self, requests, priority: int = 0):
        handles = []
        for req in requests:
            comps = self.generate([req])[0]
            self._handles += 1
            self._requests[self._handles] = [comps, len(comps)]
            for c in comps:
                steps = int(round(max(1, c.num_tokens) * self._lengths.choice(self.length_factors)))
                self._order += 1
                heapq.heappush(self._waiting, (priority, self._order, [self._handles, max(1, steps)]))
            handles.append(self._handles)
        return handles

    def abort(self, handles) -> None:
        for h in handles:
            self._requests.pop(h, None)
        self._waiting = [w for w in self._waiting if w[2][0] in self._requests]
        heapq.heapify(self._waiting)
        self._running = [s for s in self._running if s[0] in self._requests]

    def poll(self):
        while self._requests:
            while self._waiting and len(self._running) < self.capacity:
                self._running.append(heapq.heappop(self._waiting)[2])
            n = len(self._running)
            dt = self.step_ms(n) / 1000.0
            self.seconds += dt
            self.tokens += n
            self.running_area += n * dt
            done: List[int] = []
            for seq in self._running:
                seq[1] -= 1
                if seq[1] == 0:
                    entry = self._requests[seq[0]]
                    entry[1] -= 1
                    if entry[1] == 0:
                        done.append(seq[0])
            self._running = [seq for seq in self._running if seq[1] > 0]
            if done:
                return [(h, self._requests.pop(h)[0]) for h in done]
        return []

    @property
    def unfinished_sequences(self) -> int:
        return len(self._waiting) + len(self._running)

    @property
    def mean_running(self) -> Optional[float]:
        return self.running_area / self.seconds if self.seconds else None


class RequestCountedStreamGenerator(SteppedStreamGenerator):
    """The stepped engine without its own sequence count: a scheduler's window counts requests' samples
    (how it counted before ``Generator.unfinished_sequences``)."""

    unfinished_sequences = None
