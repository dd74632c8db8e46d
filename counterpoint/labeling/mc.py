"""Per-step Monte Carlo labelling (Math-Shepherd, Wang et al. 2024) — the baseline.

For every wrong, searchable sampled trajectory (not truncated, not a format
failure), ``k`` rollouts continue each step prefix ``steps[:i + 1]`` for
``i < m - 1``; the last step is the whole solution, whose value is its verdict
(exactly 0). A prefix that states a final answer is terminal: the scheduler
verifies it instead of rolling it out (exact 1.0 / 0.0). All prefixes of all
trajectories of a problem are asked in **one** round; identical prefixes shared by
several trajectories are rolled out once.

Math-Shepherd's per-step estimate is ``v_i = MC(steps[:i+1])``, hard label
``v_i > 0``. A step with ``v_i > 0`` provably lies on a path to the gold answer,
and so does every step before it. The search result is therefore
``e_search = 1 + the last i with v_i > 0`` (0 if none) — the same first-error
semantics as OmegaPRM, so both labellers agree on the same rollouts (with
MC = [.5, 0, .5, 0] + the final 0, the first error is 3, not 1). The raw
Math-Shepherd hard estimate ([T, F, T, F, F] there) stays recoverable from the
row's ``mc_values`` + ``mc_measured`` (every prefix is measured by this labeller).

An estimate is proven positive by one correct rollout; a zero needs
``min_known_verdicts`` known verdicts. Unresolved estimates after the last proven
positive only bracket the first error (``search=(lo, hi)``); the final decision
(``first_error.decide``) may still settle it from evidence, a stated wrong answer or
a false arithmetic claim, otherwise the row is an unresolved reject.
"""

from __future__ import annotations

from typing import List, Sequence

from counterpoint.labeling.common import LabeledSolution
from counterpoint.labeling.scheduler import ProblemContext, Rollout, RolloutAsk


def mc_label(ctx: ProblemContext, targets: Sequence[Rollout], k: int):
    """Coroutine: labels each target (a sampled wrong trajectory); returns ``List[LabeledSolution]``."""
    plan = []
    asks: List[RolloutAsk] = []
    for r in targets:
        steps = list(r.steps)
        span = range(len(asks), len(asks) + max(0, len(steps) - 1))
        prefix = ""
        for i, s in enumerate(steps[:-1]):
            prefix += s
            asks.append(RolloutAsk(prefix, k, tuple(steps[: i + 1])))
        plan.append((r, steps, span))
    ests = (yield asks) if asks else []
    out: List[LabeledSolution] = []
    for r, steps, span in plan:
        sol = LabeledSolution(r.sample_index, True, steps, None)
        if not steps:
            sol.resolved, sol.note = False, "empty_solution"
            out.append(sol)
            continue
        positive, open_ = -1, -1  # last proven positive; last positive-or-unresolved
        for i, j in enumerate(span):
            est = ests[j]
            sol.n_rollouts += est.n_new
            sol.probes.append((i, est.value if est.resolved else None, est.n))
            if est.positive:
                positive = i
            if est.positive or not est.resolved:
                open_ = i
                if not est.resolved:
                    ctx.stats["unresolved_probes"] += 1
        sol.probes.append((len(steps) - 1, 0.0, 0))  # the whole wrong solution: its verdict
        sol.search = (positive + 1, open_ + 1)
        sol.resolved = positive == open_
        if not sol.resolved:
            sol.note = "unresolved_probe"
        out.append(sol)
    return out
