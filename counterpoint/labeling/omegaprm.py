"""OmegaPRM (Luo et al. 2024, "Improve Mathematical Reasoning in Language Models by
Automated Process Supervision"), as a coroutine driven by :class:`RoundScheduler`.

One tree per problem. A **state** ``s`` is the question plus an assistant prefix
made of whole steps; it holds ``N(s)`` (visit count) and ``MC(s)`` (fraction of
correct rollouts among those with a known verdict). The root's rollouts are the
problem's ``K_f`` sampled trajectories (no new sampling), which also screen it.

Loop (until ``search_limit`` selections or an empty pool):

1. **Select** the candidate ``(s, r)`` — a wrong rollout ``r`` from a state with
   ``0 < MC(s) < 1`` — maximising ``Q(s, r) + U(s)`` with
   ``Q = alpha ** (1 - MC(s)) * beta ** (len(r) / L)`` (``len(r)`` in tokens) and
   ``U = c_puct * sqrt(sum_s' N(s')) / (1 + N(s))``. Selection increments
   ``N(s)`` and **consumes** the candidate: it never returns to the pool.
2. **Binary search** the first error of ``s + r``. Invariant: the first error
   lies in steps ``(good, bad]`` where ``good`` is a prefix with MC > 0 (at first
   ``s`` itself) and ``bad`` one with MC = 0 (at first the whole wrong solution,
   whose value is its verdict). Split at the step boundary nearest the token
   midpoint of the span; ``k`` rollouts estimate MC there; MC > 0 moves ``good``
   right, MC = 0 moves ``bad`` left; stop when the span is one step: that step
   is the first error. Steps before it are positive (MC > 0), it and all later
   steps negative.
3. **Maintain**: every probed prefix becomes a state (reused if the same prefix
   exists). A new state with ``0 < MC < 1`` adds its wrong, untruncated rollouts
   to the pool (each full solution text enters the pool at most once per tree).

Deliberate differences from common public implementations (their known bugs):
``N(s)`` grows on selection, not inside estimation; a selected rollout is
consumed; positive means MC > 0 (not > 0.5); correctness comes from the
verifier callback (never a substring test); correct rollouts get no unmeasured
MC = 1; and a zero-valued probe later superseded by a shallower zero is not an
edge of the tree (only the final first-error state is).

Each selection yields one :class:`LabeledSolution`. Sampled trajectories keep
their ``sample_index``; searched rollouts discovered inside the tree get
``sample_index >= first_discovered_index(trajectories)`` (past every sampled
one), numbered in selection order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from counterpoint.generators.base import SamplingParams
from counterpoint.labeling.common import LabeledSolution, full_steps
from counterpoint.labeling.scheduler import Estimate, ProblemContext, Rollout, RolloutAsk
from counterpoint.schemas import records


@dataclasses.dataclass
class OmegaPRMConfig:
    """OmegaPRM hyper-parameters (paper defaults). ``L`` is in tokens.

    ``max_trees`` caps how many trees advance together in one round (``None``:
    all trees of a ``label_problems`` call). ``token_len`` (optional) counts the
    tokens of a step for the binary-search split; without it each step gets the
    character share of the rollout's reported ``num_tokens``. ``k`` and
    ``rollout_params`` are also what the per-step MC baseline and the value
    estimator use.
    """

    k: int = 8
    alpha: float = 0.5
    beta: float = 0.9
    L: int = 500
    c_puct: float = 0.125
    search_limit: int = 100
    rollout_params: SamplingParams = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=384)
    max_trees: Optional[int] = None
    token_len: Optional[Callable[[str], int]] = None
    # Binary searches a tree runs at once. 1 is the paper's sequential loop. B > 1 selects up to B
    # candidates per tree (each selection raises N(s) at once, which spreads them like a virtual
    # loss) and advances their searches in the same rounds: B times more rollouts per engine call,
    # which is what keeps a batched engine busy when few trees survive screening.
    parallel_searches: int = 1

    def __post_init__(self):
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1):
            raise ValueError("alpha and beta must be in (0, 1]")
        if self.parallel_searches < 1:
            raise ValueError("parallel_searches must be >= 1")
        if self.L <= 0 or self.search_limit < 0 or self.c_puct < 0:
            raise ValueError("L must be > 0, search_limit >= 0, c_puct >= 0")

    def params_dict(self) -> dict:
        # max_trees only batches work (labels do not depend on it), so it is not a labelling parameter.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("token_len", "max_trees")}
        d["rollout_params"] = self.rollout_params.to_dict()
        d["token_len"] = None if self.token_len is None else getattr(self.token_len, "__name__", "callable")
        return d

    def params_json(self) -> str:
        return records.dumps(self.params_dict())


@dataclasses.dataclass
class TreeState:
    """A node: the prefix made of the first ``depth`` steps."""

    id: int
    prefix: str
    steps: Tuple[str, ...]
    parent: Optional[int]
    mc: Optional[float]
    n_rollouts: int
    n_correct: int
    N: int = 0
    terminal: bool = False  # a complete wrong solution (value from its verdict, no rollouts)

    @property
    def depth(self) -> int:
        return len(self.steps)


@dataclasses.dataclass
class Candidate:
    """A wrong rollout ``rollout`` drawn from state ``state`` (an entry of the pool)."""

    state: int
    rollout: Rollout
    order: int


class OmegaPRMTree:
    """The search tree of one problem; :meth:`run` is the coroutine the scheduler drives."""

    def __init__(
        self,
        ctx: ProblemContext,
        config: OmegaPRMConfig,
        *,
        first_discovered_index: int,
        root: Optional[Estimate] = None,
    ):
        self.ctx = ctx
        self.config = config
        self.states: List[TreeState] = []
        self.by_prefix: Dict[str, int] = {}
        self.pool: List[Candidate] = []
        self.selections = 0
        self.next_index = first_discovered_index
        self._order = 0
        self._seen_solutions: set = set()
        root = root if root is not None else ctx.estimate("")
        if root is None:
            raise ValueError(f"{ctx.problem_id}: the root needs the sampled trajectories as rollouts")
        self.root = self._add_state("", (), None, root)

    # -- tree bookkeeping -------------------------------------------------
    def _add_state(self, prefix: str, steps: Tuple[str, ...], parent: Optional[int], est: Estimate) -> TreeState:
        if prefix in self.by_prefix:
            return self.states[self.by_prefix[prefix]]
        st = TreeState(len(self.states), prefix, tuple(steps), parent, est.value, est.n, est.n_correct)
        self.states.append(st)
        self.by_prefix[prefix] = st.id
        if st.mc is not None and 0.0 < st.mc < 1.0:
            for r in est.rollouts:
                self.add_candidate(st, r)
        return st

    def _add_terminal(self, prefix: str, steps: Tuple[str, ...], parent: int) -> TreeState:
        if prefix in self.by_prefix:
            return self.states[self.by_prefix[prefix]]
        st = TreeState(len(self.states), prefix, tuple(steps), parent, 0.0, 0, 0, terminal=True)
        self.states.append(st)
        self.by_prefix[prefix] = st.id
        return st

    def add_candidate(self, state: TreeState, rollout: Rollout) -> bool:
        """Adds a wrong, untruncated rollout once per distinct full solution text."""
        if not rollout.is_incorrect or rollout.truncated:
            return False
        key = state.prefix + rollout.text
        if key in self._seen_solutions:
            return False
        self._seen_solutions.add(key)
        self.pool.append(Candidate(state.id, rollout, self._order))
        self._order += 1
        return True

    def children(self, state_id: int) -> List[TreeState]:
        return [s for s in self.states if s.parent == state_id]

    # -- selection --------------------------------------------------------
    def rollout_tokens(self, r: Rollout) -> float:
        if r.num_tokens:
            return float(r.num_tokens)
        if self.config.token_len is not None:
            return float(self.config.token_len(r.text))
        return len(r.text) / 4.0

    def q_value(self, cand: Candidate) -> float:
        c = self.config
        mc = self.states[cand.state].mc
        return c.alpha ** (1.0 - mc) * c.beta ** (self.rollout_tokens(cand.rollout) / c.L)

    def u_value(self, state: TreeState) -> float:
        total = self.selections  # == sum of N(s) over the tree: N only grows on selection
        return self.config.c_puct * math.sqrt(total) / (1 + state.N)

    def score(self, cand: Candidate) -> float:
        return self.q_value(cand) + self.u_value(self.states[cand.state])

    def select(self) -> Candidate:
        """argmax Q + U (ties: earliest added); increments N(s); removes the candidate for good."""
        best = max(self.pool, key=lambda c: (self.score(c), -c.order))
        self.pool.remove(best)
        self.states[best.state].N += 1
        self.selections += 1
        return best

    # -- binary search ----------------------------------------------------
    def _step_tokens(self, steps: Sequence[str], start: int, rollout: Rollout) -> List[float]:
        """Token estimate of each step from ``start`` on (the rollout's own steps)."""
        own = steps[start:]
        if self.config.token_len is not None:
            return [float(self.config.token_len(s)) for s in own]
        chars = sum(len(s) for s in own) or 1
        total = rollout.num_tokens if rollout.num_tokens > 0 else chars
        return [total * len(s) / chars for s in own]

    @staticmethod
    def split_point(ends: Sequence[float], start: int, good: int, bad: int) -> int:
        """Step index in ``(good, bad)`` whose end is nearest the token midpoint of the span.

        ``ends[j - start]`` is the cumulative token count through step ``j`` (0 before ``start``).
        """

        def end(j: int) -> float:
            return 0.0 if j < start else ends[j - start]

        target = (end(good) + end(bad)) / 2.0
        return min(range(good + 1, bad), key=lambda j: (abs(end(j) - target), j))

    def search(self, cand: Candidate, sample_index: int, sampled: bool):
        """Coroutine: binary search of ``cand``; returns a :class:`LabeledSolution`."""
        state = self.states[cand.state]
        steps = full_steps(self.ctx, state.steps, cand.rollout)
        d, m = state.depth, len(steps)
        sol = LabeledSolution(sample_index, sampled, steps, None, 0, start_step=d)
        if m <= d:
            sol.resolved, sol.note = False, "empty_rollout"
            return sol
        ends, acc = [], 0.0
        for t in self._step_tokens(steps, d, cand.rollout):
            acc += t
            ends.append(acc)
        good, bad = d - 1, m - 1
        parent = state.id
        zero: Optional[Tuple[int, Estimate]] = None  # the shallowest zero-valued probe so far
        while bad - good > 1:
            mid = self.split_point(ends, d, good, bad)
            prefix = "".join(steps[: mid + 1])
            (est,) = yield [RolloutAsk(prefix, self.config.k)]
            sol.n_rollouts += est.n_new
            v = est.value
            sol.probes.append((mid, v, est.n))
            if v is None:
                sol.resolved, sol.note = False, "unmeasured_probe"
                self.ctx.stats["unmeasured_probes"] += 1
                return sol
            if v > 0:
                parent = self._add_state(prefix, tuple(steps[: mid + 1]), parent, est).id
                good = mid
            else:
                zero = (mid, est)  # supersedes any deeper zero: only this one can become an edge
                bad = mid
        if zero is not None and zero[0] == bad:
            self._add_state("".join(steps[: bad + 1]), tuple(steps[: bad + 1]), parent, zero[1])
        else:
            self._add_terminal("".join(steps), tuple(steps), parent)
        sol.first_error_index = bad
        return sol

    def _start_search(self):
        cand = self.select()
        r = cand.rollout
        if cand.state == self.root.id and r.sample_index is not None:
            idx, sampled = r.sample_index, True
        else:
            idx, sampled = self.next_index, False
            self.next_index += 1
        return self.search(cand, idx, sampled)

    def run(self):
        """Coroutine: the whole tree construction; returns the labelled solutions in completion order.

        With ``parallel_searches == 1`` this is the paper's loop: select, search, repeat. With B > 1
        up to B searches are in flight; each round yields the union of their asks.
        """
        out: List[LabeledSolution] = []
        width = self.config.parallel_searches
        running = []  # [search coroutine, its pending asks]

        def fill():
            while len(running) < width and self.pool and self.selections < self.config.search_limit:
                coro = self._start_search()
                try:
                    running.append([coro, coro.send(None)])
                except StopIteration as stop:
                    out.append(stop.value)

        fill()
        while running:
            asks = [a for _, pending in running for a in pending]
            estimates = yield asks
            pos, still = 0, []
            for coro, pending in running:
                mine = estimates[pos:pos + len(pending)]
                pos += len(pending)
                try:
                    still.append([coro, coro.send(mine)])
                except StopIteration as stop:
                    out.append(stop.value)
            running[:] = still
            fill()
        self.ctx.stats["selections"] += self.selections
        self.ctx.stats["tree_states"] += len(self.states)
        self.ctx.stats["pool_left"] += len(self.pool)
        return out
