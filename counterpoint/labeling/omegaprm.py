"""OmegaPRM (Luo et al. 2024, "Improve Mathematical Reasoning in Language Models by
Automated Process Supervision"), as a coroutine driven by :class:`RoundScheduler`.

One tree per problem. A **state** ``s`` is the question plus an assistant prefix
made of whole steps; it holds ``N(s)`` (visit count) and ``MC(s)`` (fraction of
correct rollouts among those with a known verdict). The root's rollouts are the
problem's ``K_f`` sampled trajectories (no new sampling), which also screen it.

Loop (until ``search_limit`` selections or an empty pool; ``selections_per_round`` > 1 keeps that
many searches running side by side, see :class:`OmegaPRMConfig`):

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
   is the search's first error ``e_search`` (the row's labels then follow
   ``first_error.decide``, which also weighs the problem's other evidence).
3. **Maintain**: every probed prefix becomes a state (reused if the same prefix
   exists). A new state with ``0 < MC < 1`` adds its searchable rollouts (wrong,
   untruncated, stating an answer) to the pool (each full solution text enters
   the pool at most once per tree).

Deliberate differences from common public implementations (their known bugs):
``N(s)`` grows on selection, not inside estimation; a selected rollout is
consumed; positive means MC > 0 (not > 0.5); correctness comes from the
verifier callback (never a substring test); correct rollouts get no unmeasured
MC = 1; and a zero-valued probe later superseded by a shallower zero is not an
edge of the tree (only the final first-error state is).

Probe values are resolved estimates (``Estimate.resolved``): one correct rollout
proves MC > 0, a zero needs ``min_known_verdicts`` known verdicts. An unresolved
probe stops the search; the solution keeps the bracket ``(good, bad]`` it had
reached, and the final decision (``first_error.decide``) settles it from other
evidence or rejects it. A probe of a terminal prefix (one that states a final
answer) is answered by the verifier, exactly. Candidates in the pool are wrong,
untruncated rollouts that state an answer (format failures are never searched).

**parallel_searches** (speculation; the labels never depend on it). The tree runs
the paper's sequential select → search loop exactly. With ``parallel_searches =
B > 1`` every probe ask travels with up to ``B - 1`` *speculative* asks: the
probes the binary search may need next (both halves of the next levels) and the
first probe of the candidates the selection would most likely pick next. The
scheduler generates them into a prefetch buffer if the engine has room; a
prefetched rollout enters the evidence store only when the sequential loop asks
for its prefix. ``"auto"`` allows up to :data:`AUTO_SPECULATION` speculative asks
per probe, limited by the scheduler's in-flight sample budget.

Each selection yields one :class:`LabeledSolution`. Sampled trajectories keep
their ``sample_index``; searched rollouts discovered inside the tree get
``sample_index >= first_discovered_index(trajectories)`` (past every sampled
one), numbered in selection order.

Long: OmegaPRM's tree search, binary search and rollout pool are one algorithm, kept in one place next to the
paper's description.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from counterpoint.generators.base import SamplingParams
from counterpoint.labeling.common import LabeledSolution, full_steps
from counterpoint.labeling.evidence import step_key
from counterpoint.labeling.scheduler import AskGroups, Estimate, ProblemContext, Rollout, RolloutAsk
from counterpoint.schemas import records


AUTO = "auto"
#: Speculative asks per probe under ``parallel_searches="auto"`` (the in-flight budget may allow fewer).
AUTO_SPECULATION = 24
#: Next candidates' first probes offered per binary-search level of speculation.
CANDIDATES_PER_LEVEL = 2
# Not copied as-is into labeler_params: throughput knobs (they change how full the engine is, never the
# rows) and the fields recorded by their effective value.
_NOT_COPIED = ("token_len", "max_trees", "parallel_searches", "max_inflight_samples", "rollout_params",
          "min_known_verdicts", "adaptive", "zero_after", "selections_per_round")
#: Binary searches a tree runs side by side (a finished one's slot goes to the next selection); 1 is the
#: paper's sequential loop. See ``OmegaPRMConfig``.
DEFAULT_SELECTIONS_PER_ROUND = 16
#: How a tree with B > 1 picks its searches (recorded in ``labeler_params``): each slot's next search
#: is selected ahead, at the first boundary its current search runs past (``OmegaPRMTree.run``).
SELECTION_RULE = "slot_ahead/v1"
#: Tokens per round of the logical clock: a probe lasts 1 + (tokens left in the searched rollout after its
#: prefix) // ROUND_TOKENS rounds, so the clock follows the engine, where a probe takes as long as its longest
#: rollout (``OmegaPRMTree.run``).
ROUND_TOKENS = 16


def _auto_or_int(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        if value.strip().lower() == AUTO:
            return AUTO
        if value.strip().isdigit():
            value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"omegaprm.{name} must be 'auto' or an integer >= 1, got {value!r}")
    return value


@dataclasses.dataclass
class OmegaPRMConfig:
    """OmegaPRM hyper-parameters (paper defaults). ``L`` is in tokens.

    ``k``, ``rollout_params`` and ``min_known_verdicts`` are also what the per-step
    MC baseline and the value estimator use. ``rollout_params=None`` (default)
    inherits the run's sampling (temperature, top_p, max_tokens, stop) passed to
    ``label_problems``. ``min_known_verdicts=None`` means ``ceil(k / 2)``.
    ``token_len`` (optional) counts the tokens of a step for the binary-search
    split; without it each step gets the character share of the rollout's
    reported ``num_tokens``.

    ``selections_per_round`` (issue 18): binary searches running side by side in a tree, one per
    slot. Selections are made between rounds (each pick raises its state's N first: the virtual
    visit of parallel MCTS), so every round carries a probe of up to B searches; each slot's next
    search is selected ahead, while its current one runs, and starts the moment that one ends. The
    rounds are a logical clock counted in tokens; on the engine each search runs at its own pace
    (:meth:`OmegaPRMTree.run`). 1 is the paper's sequential loop (nothing selected ahead). A tree
    is a chain of selections; on an engine whose every round waits for the longest of its
    rollouts, the last tree of a 64-problem job ran ~30 serial selections alone for minutes.
    B = 16 with k = 8 gives a single tree 128 rollouts at a time, a CPU engine's whole capacity.
    It is a labelling parameter (recorded in ``labeler_params`` with the selection rule when not
    1): the searched solutions and their labels are the same, the
    order in which the pool is drained (and so, when ``search_limit`` stops a tree early, which
    candidates are searched) can differ; the rows never depend on the engine's speed or capacity.

    Throughput knobs (rows never depend on them): ``max_trees`` caps the problems
    in flight ("auto"/None: as many as the in-flight budget admits);
    ``parallel_searches`` is 1 + the speculative probes per probe (1: none; "auto":
    up to ``AUTO_SPECULATION``, budget-limited); ``max_inflight_samples`` is the
    budget (None: ``generator.capacity``, else 256).

    ``adaptive`` (issue 18): each binary-search probe is rolled out in doubling batches and stops as
    soon as its value is decided — one verified-correct rollout proves MC > 0; ``zero_after`` known
    verdicts with none correct declare MC = 0 (None: ``min_known_verdicts``, the known verdicts an
    estimate already needs before MC = 0 is believed, ceil(k/2) by default). A prefix of true value
    p is then a false zero with probability ``(1 - p) ** zero_after`` (k = 8: 6% at p = 0.5, 32% at
    p = 0.25; fixed k = 8: 0.4% and 10%); ``zero_after = k`` gives exactly fixed k's bound. The rule
    and its bound: ``evidence.adaptive_next_total``. ``k`` stays the cap. Off: every probe gets
    exactly ``k``. Value estimates (``step_values``) always keep a fixed ``k``.
    """

    k: int = 8
    alpha: float = 0.5
    beta: float = 0.9
    L: int = 500
    c_puct: float = 0.125
    search_limit: int = 100
    rollout_params: Optional[SamplingParams] = None
    max_trees: Union[int, str, None] = AUTO
    token_len: Optional[Callable[[str], int]] = None
    parallel_searches: Union[int, str] = AUTO
    min_known_verdicts: Optional[int] = None
    max_inflight_samples: Optional[int] = None
    adaptive: bool = False
    zero_after: Optional[int] = None
    selections_per_round: int = DEFAULT_SELECTIONS_PER_ROUND

    def __post_init__(self):
        if self.k < 1:
            raise ValueError("omegaprm.k must be >= 1")
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1):
            raise ValueError("omegaprm.alpha and omegaprm.beta must be in (0, 1]")
        self.parallel_searches = _auto_or_int("parallel_searches", self.parallel_searches)
        self.max_trees = _auto_or_int("max_trees", self.max_trees, allow_none=True)
        if self.L <= 0 or self.search_limit < 0 or self.c_puct < 0:
            raise ValueError("omegaprm.L must be > 0, omegaprm.search_limit >= 0, omegaprm.c_puct >= 0")
        if self.min_known_verdicts is not None and not (1 <= self.min_known_verdicts <= self.k):
            raise ValueError(f"omegaprm.min_known_verdicts must be in [1, k={self.k}] or null (= ceil(k/2)), "
                             f"got {self.min_known_verdicts}")
        if self.zero_after is not None and not (self.min_known <= self.zero_after <= self.k):
            raise ValueError(f"omegaprm.zero_after must be in [min_known_verdicts={self.min_known}, k={self.k}] "
                             f"or null (= k), got {self.zero_after}")
        if isinstance(self.selections_per_round, bool) or not isinstance(self.selections_per_round, int) \
                or self.selections_per_round < 1:
            raise ValueError(f"omegaprm.selections_per_round must be an integer >= 1 (1: the paper's sequential "
                             f"loop), got {self.selections_per_round!r}")
        if self.max_inflight_samples is not None and self.max_inflight_samples < 1:
            raise ValueError("omegaprm.max_inflight_samples must be >= 1 or null (= the engine's capacity)")

    @property
    def min_known(self) -> int:
        """Known verdicts an estimate needs before MC = 0 is believed (issue 9, defect 5)."""
        return self.min_known_verdicts if self.min_known_verdicts is not None else math.ceil(self.k / 2)

    @property
    def probe_zero_after(self) -> Optional[int]:
        """``RolloutAsk.zero_after`` of a binary-search probe (None: fixed k)."""
        if not self.adaptive:
            return None
        return self.zero_after if self.zero_after is not None else self.min_known

    @property
    def split_fraction(self) -> float:
        """Where a probe splits the bracket: the paper's token midpoint (0.5) with fixed k; with adaptive
        budgets a zero costs ``zero_after`` rollouts and a positive about one, so the split that
        minimises rollouts per bit of information, ``((1 - f) * 1 + f * zero_after) / H(f)`` (H: the
        binary entropy; the cost-per-bit argument of search with unequal test costs, Karp 1961), probes
        earlier: f = 0.28 for zero_after = 4."""
        if not self.adaptive:
            return 0.5
        c0 = float(self.probe_zero_after)
        grid = [i / 100 for i in range(5, 51)]
        return min(grid, key=lambda f: ((1 - f) + f * c0) / -(f * math.log(f) + (1 - f) * math.log(1 - f)))

    @property
    def speculation(self) -> int:
        """Speculative asks allowed per probe."""
        return AUTO_SPECULATION if self.parallel_searches == AUTO else int(self.parallel_searches) - 1

    @property
    def tree_cap(self) -> Optional[int]:
        return None if self.max_trees in (None, AUTO) else int(self.max_trees)

    def effective_rollout_params(self, sampling: Optional[SamplingParams]) -> SamplingParams:
        if self.rollout_params is not None:
            return self.rollout_params
        if sampling is None:
            raise ValueError("omegaprm.rollout_params is null (inherit the run's sampling) but label_problems got "
                             "no sampling=; pass the run's SamplingParams")
        return sampling

    def params_dict(self, sampling: Optional[SamplingParams] = None) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_COPIED}
        d["rollout_params"] = self.effective_rollout_params(sampling).to_dict()
        d["min_known_verdicts"] = self.min_known
        d["token_len"] = None if self.token_len is None else getattr(self.token_len, "__name__", "callable")
        if self.selections_per_round != 1:  # the paper's sequential loop stays out of the params
            d["selections_per_round"] = self.selections_per_round
            d["selection"] = SELECTION_RULE
        if self.adaptive:  # off stays out: rows of fixed-k runs are unchanged
            d["adaptive"] = {"zero_after": self.probe_zero_after, "rule": "doubling_until_decided/v1"}
        return d

    def params_json(self, sampling: Optional[SamplingParams] = None) -> str:
        return records.dumps(self.params_dict(sampling))


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
        self._emitted: Optional[list] = None  # changes made by the search being stepped (see run)
        self._probe_rounds = 1  # rounds the probe it asks for lasts (see run)
        root = root if root is not None else ctx.estimate("")
        if root is None:
            raise ValueError(f"{ctx.problem_id}: the root needs the sampled trajectories as rollouts")
        self.root = self._add_state("", (), None, root)

    # -- tree bookkeeping -------------------------------------------------
    def _add_state(self, prefix: str, steps: Tuple[str, ...], parent: Optional[str], est: Estimate) -> TreeState:
        """The state of ``prefix`` (created under the state of prefix ``parent`` unless it exists)."""
        if prefix in self.by_prefix:
            return self.states[self.by_prefix[prefix]]
        parent_id = None if parent is None else self.by_prefix[parent]
        st = TreeState(len(self.states), prefix, tuple(steps), parent_id, est.value, est.n, est.n_correct,
                       terminal=est.is_terminal)
        self.states.append(st)
        self.by_prefix[prefix] = st.id
        if st.mc is not None and 0.0 < st.mc < 1.0 and est.resolved:
            for r in est.rollouts:
                self.add_candidate(st, r)
        return st

    def _add_terminal(self, prefix: str, steps: Tuple[str, ...], parent: str) -> TreeState:
        if prefix in self.by_prefix:
            return self.states[self.by_prefix[prefix]]
        st = TreeState(len(self.states), prefix, tuple(steps), self.by_prefix[parent], 0.0, 0, 0, terminal=True)
        self.states.append(st)
        self.by_prefix[prefix] = st.id
        return st

    def add_candidate(self, state: TreeState, rollout: Rollout) -> bool:
        """Adds a wrong, untruncated, answer-stating rollout once per distinct full solution (by content)."""
        if not rollout.searchable:
            if rollout.is_format_failure:
                self.ctx.stats["pool_format_failures_skipped"] += 1
            return False
        key = step_key(state.prefix + rollout.text)  # content, not whitespace: "\n" vs "\n\n" leads are one solution
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
    def split_point(ends: Sequence[float], start: int, good: int, bad: int, frac: float = 0.5) -> int:
        """Step index in ``(good, bad)`` whose end is nearest the token midpoint of the span (``frac``
        of the way from ``good``: 0.5 is the paper's midpoint; see ``OmegaPRMConfig.split_fraction``).

        ``ends[j - start]`` is the cumulative token count through step ``j`` (0 before ``start``).
        """

        def end(j: int) -> float:
            return 0.0 if j < start else ends[j - start]

        target = end(good) + (end(bad) - end(good)) * frac
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
        ends = self._ends(steps, d, cand.rollout)
        good, bad = d - 1, m - 1
        parent = state.prefix  # states are named by prefix: the tree commits them later (see run)
        zero: Optional[Tuple[int, Estimate]] = None  # the shallowest zero-valued probe so far
        while bad - good > 1:
            mid = self.split_point(ends, d, good, bad, self.config.split_fraction)
            prefix = "".join(steps[: mid + 1])
            spec = self._speculation(steps, ends, d, good, bad, mid)
            self._probe_rounds = 1 + int((ends[-1] - ends[mid - d]) // ROUND_TOKENS)
            answers = yield [RolloutAsk(prefix, self.config.k, tuple(steps[: mid + 1]),
                                        zero_after=self.config.probe_zero_after)] + spec
            est = answers[0]
            sol.n_rollouts += est.n_new
            sol.probes.append((mid, est.value if est.resolved else None, est.n))
            if not est.resolved:
                sol.resolved, sol.note = False, "unresolved_probe"
                sol.search = (good + 1, bad)
                self.ctx.stats["unresolved_probes"] += 1
                return sol
            if est.positive:
                self._mutate(self._add_state, prefix, tuple(steps[: mid + 1]), parent, est)
                parent, good = prefix, mid
            else:
                zero = (mid, est)  # supersedes any deeper zero: only this one can become an edge
                bad = mid
        if zero is not None and zero[0] == bad:
            self._mutate(self._add_state, "".join(steps[: bad + 1]), tuple(steps[: bad + 1]), parent, zero[1])
        else:
            self._mutate(self._add_terminal, "".join(steps), tuple(steps), parent)
        sol.first_error_index = bad
        sol.search = (bad, bad)
        return sol

    def _ends(self, steps: Sequence[str], d: int, rollout: Rollout) -> List[float]:
        ends, acc = [], 0.0
        for t in self._step_tokens(steps, d, rollout):
            acc += t
            ends.append(acc)
        return ends

    # -- speculation (parallel_searches) ---------------------------------------
    def _speculation(self, steps, ends, d: int, good: int, bad: int, mid: int) -> List[RolloutAsk]:
        """Speculative asks to travel with the probe at ``mid``, most useful first (at most B - 1).

        Priority, level by level: the probes the binary search may need next (both halves; one of the
        two is always needed), then the first probes of the next :data:`CANDIDATES_PER_LEVEL`
        candidates the selection would most likely pick (in the order it would pick them). A tree is a
        long sequence of selections; prefetching the next candidates' first probes is what lets the last
        trees of a bundle use an engine the other trees have left (issue 18: the tail). With adaptive
        budgets only the candidates' first probes are offered (issue 18: wasted speculation <= 10% of
        rollouts; of two children one is always wasted, while an adaptive probe's first batch is one
        rollout). Pure prediction: nothing here changes the tree, and prefixes that are terminal or
        already held are not asked. The scheduler sends them only into idle capacity.
        """
        width = self.config.speculation
        if width <= 0:
            return []
        k = self.config.k
        out: List[RolloutAsk] = []
        seen = {"".join(steps[: mid + 1])}

        def offer(s: Sequence[str], j: int) -> None:
            prefix = "".join(s[: j + 1])
            if prefix in seen or len(out) >= width:
                return
            seen.add(prefix)
            ask = RolloutAsk(prefix, k, tuple(s[: j + 1]), speculative=True, zero_after=self.config.probe_zero_after)
            if self.ctx.store.rollable(prefix) and not self.ctx.store.satisfied(ask):
                out.append(ask)

        frontier = [(mid, good, bad)]
        nexts = iter(self._next_candidates(width))
        while len(out) < width:
            children = []
            for probe, g, b in frontier:
                for g2, b2 in ((probe, b), (g, probe)):  # if MC(probe) > 0 / if MC(probe) = 0
                    if b2 - g2 > 1:
                        children.append((self.split_point(ends, d, g2, b2, self.config.split_fraction), g2, b2))
            if not self.config.adaptive:  # adaptive: one of the two children is always wasted, skip them
                for j, _, _ in children:
                    offer(steps, j)
            more = False
            for nxt in itertools.islice(nexts, CANDIDATES_PER_LEVEL):
                more = True
                n_steps, n_ends, n_d = nxt
                if len(n_steps) - n_d > 1:
                    offer(n_steps, self.split_point(n_ends, n_d, n_d - 1, len(n_steps) - 1, self.config.split_fraction))
            if not children and not more:
                break
            frontier = children
        return out

    def _next_candidates(self, limit: int) -> List[Tuple[List[str], List[float], int]]:
        """Steps, token ends and start depth of the pool's current best candidates (a prediction: the
        ranking by today's Q + U; at most ``limit // 2``)."""
        if not self.pool or self.selections >= self.config.search_limit:
            return []
        left = self.config.search_limit - self.selections
        ranked = sorted(self.pool, key=lambda c: (-self.score(c), c.order))[: min(left, max(1, limit // 2))]
        out = []
        for cand in ranked:
            st = self.states[cand.state]
            steps = full_steps(self.ctx, st.steps, cand.rollout)
            out.append((steps, self._ends(steps, st.depth, cand.rollout), st.depth))
        return out

    def _mutate(self, fn, *args) -> None:
        """A search's change to the tree: applied at once outside :meth:`run`; inside it, logged and
        committed when the tree's logical clock passes the round it happened in."""
        if self._emitted is None:
            fn(*args)
        else:
            self._emitted.append((fn, args))

    def _select(self, number: int, slot: int) -> "_SearchRun":
        """Selects the next candidate and primes its binary search (its first asks). A search with nothing to
        probe ends here, and its changes apply at once (the selection point is on the logical clock)."""
        cand = self.select()
        r = cand.rollout
        if cand.state == self.root.id and r.sample_index is not None:
            idx, sampled = r.sample_index, True
        else:
            idx, sampled = self.next_index, False
            self.next_index += 1
        run = _SearchRun(number, slot, self.search(cand, idx, sampled))
        for fn, args in self._step(run, None):
            fn(*args)
        return run

    def _step(self, run: "_SearchRun", answers) -> list:
        """Resumes ``run`` with the answers of its round; returns the mutations it made meanwhile."""
        self._emitted, self._probe_rounds = [], 1
        try:
            run.asks = run.coro.send(answers)
            if answers is None:
                run.first_rounds = self._probe_rounds
            else:
                run.round += self._probe_rounds
        except StopIteration as stop:
            run.result, run.ended = stop.value, True
            run.finished_round = run.round if answers is not None else None
        finally:
            emitted, self._emitted = self._emitted, None
        return emitted

    def _slot_needs(self, chain: List["_SearchRun"], boundary: int) -> Optional[int]:
        """What a slot needs at the selection boundary before round ``boundary``, from its logical state
        then (never from how far its searches have got on the engine): 0 a search to start now (it is
        idle in that round), 1 a next search to queue (its search runs in that round and none is queued;
        only with B > 1), None nothing (its search's successor is already chosen)."""
        if not chain:
            return 0
        last = chain[-1]
        if last.start is None or last.start > boundary:
            return None  # queued behind a search that runs in this round
        if last.ended and last.finished_round < boundary:
            return 0
        return 1 if self.config.selections_per_round > 1 else None

    def run(self):
        """Coroutine: the paper's loop — select, binary search, repeat — until ``search_limit``
        selections or an empty pool; returns the labelled solutions in selection order.

        With ``selections_per_round = B > 1`` the tree has B slots, each running one binary search
        at a time, on a logical clock of rounds: a probe lasts 1 + (tokens left in the searched
        rollout after its prefix) // :data:`ROUND_TOKENS` rounds (on the engine a probe takes as long
        as its longest rollout), a search's next probe starts in the round after its last one ends,
        and so does the next search of its slot. Selections happen at the
        boundaries between rounds and see every change the searches made in earlier rounds, none
        after; each raises its state's N first, so the next pick sees it (the virtual visit of
        parallel MCTS). At the boundary before round t, first every slot idle in round t gets a search
        to start, then every slot whose search runs in round t without a chosen successor gets one
        queued (selected ahead): when that search ends, its successor starts at once instead of
        waiting for the slowest search to reach the boundary. Slots without a candidate try again
        at the next boundary. B = 1 is the paper's sequential loop (nothing is selected ahead).

        On the engine each search runs at its own pace (the tree yields :class:`AskGroups`, one
        group per running search): its changes to the tree wait in a log until the clock passes
        the round its probe ended in, and the boundary before round t is crossed once no running
        search has an unanswered probe ending before round t. Every selection is therefore made on the same view, in the
        same order, and the tree, its rows and their order are those of searches stepped in lockstep,
        whatever order the engine answers in.

        Long: the slot bookkeeping, the clock and the commit log are one invariant; split apart they
        would have to share all three.
        """
        runs: List[_SearchRun] = []  # every search, in selection order
        slots: List[List[_SearchRun]] = [[] for _ in range(self.config.selections_per_round)]
        log: List[Tuple[int, int, int, Callable, tuple]] = []  # (round, selection, order, fn, args)
        boundary = 0  # the next boundary to cross: selections before round ``boundary``

        def live() -> List[_SearchRun]:
            return [r for r in runs if r.start is not None and not r.ended]

        while True:
            while all(r.round >= boundary for r in live()):
                log = self._commit(log, boundary - 1)
                needs = [(self._slot_needs(chain, boundary), slot) for slot, chain in enumerate(slots)]
                for kind, slot in sorted((k, s) for k, s in needs if k is not None):
                    while self.pool and self.selections < self.config.search_limit:
                        run = self._select(len(runs), slot)
                        runs.append(run)
                        if run.ended:
                            continue  # nothing to probe: the slot is still free
                        slots[slot].append(run)
                        self.ctx.stats["searches_selected_ahead"] += kind
                        if kind == 0:
                            run.begin(boundary)
                        elif slots[slot][-2].ended:  # the search it follows already ended on the engine
                            run.begin(slots[slot][-2].finished_round + 1)
                        break
                if not live() and not log:  # (ended searches may still be ahead of the clock)
                    return self._finish(runs)
                boundary += 1
            answers = yield AskGroups.of((r.number, r.asks) for r in live())
            for number in sorted(answers):
                run = runs[number]
                done_round = run.round
                for j, (fn, args) in enumerate(self._step(run, answers[number])):
                    log.append((done_round, number, j, fn, args))
                if run.ended:
                    chain = slots[run.slot]
                    nxt = chain.index(run) + 1
                    if nxt < len(chain):  # its successor was selected ahead: it starts in the next round
                        chain[nxt].begin(run.finished_round + 1)

    def _commit(self, log: list, through: int) -> list:
        """Applies the logged changes of rounds <= ``through`` in (round, selection, order) order;
        returns the rest."""
        due = sorted((e for e in log if e[0] <= through), key=lambda e: e[:3])
        for _, _, _, fn, args in due:
            fn(*args)
        return [e for e in log if e[0] > through]

    def _finish(self, runs: List["_SearchRun"]) -> List[LabeledSolution]:
        self.ctx.stats["selections"] += self.selections
        self.ctx.stats["tree_states"] += len(self.states)
        self.ctx.stats["pool_left"] += len(self.pool)
        return [r.result for r in runs]


@dataclasses.dataclass(eq=False)
class _SearchRun:
    """One selection's binary search on the tree's logical clock."""

    number: int  # position among the tree's searches (selection order)
    slot: int
    coro: object
    start: Optional[int] = None  # the round of its first probe (None: queued behind its slot's search)
    round: Optional[int] = None  # the round its pending probe ends in (its changes are logged with it)
    asks: Sequence = ()
    ended: bool = False
    finished_round: Optional[int] = None  # the round of its last probe (None: it had nothing to probe)
    result: Optional[LabeledSolution] = None
    first_rounds: int = 1  # rounds its first probe lasts

    def begin(self, start: int) -> None:
        self.start, self.round = start, start + self.first_rounds - 1
