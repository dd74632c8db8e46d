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
"""

from __future__ import annotations

import dataclasses
import random
from typing import List

from counterpoint.generators.scripted import ChainPolicy, ScriptedGenerator

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
