"""Per-step Monte Carlo labelling (Math-Shepherd, Wang et al. 2024) — the baseline.

For every wrong (untruncated) sampled trajectory, ``k`` rollouts continue each
step prefix ``steps[:i + 1]`` for ``i < last``; the last step is the whole
solution, whose value is its verdict (0). All prefixes of all trajectories of a
problem are asked in **one** round (nothing here is sequential); identical
prefixes shared by several trajectories are rolled out once (cache by exact
prefix) and charged to the first trajectory that asked.

Hard label: a step is positive when MC > 0. Rows use first-error semantics like
the OmegaPRM rows: ``first_error_index`` is the first step with MC = 0, labels
are True before it and False from it on (``mc_values`` keep every measured
value, so a later step may show MC > 0 next to a False label under sampling
noise). A step before the first zero whose rollouts all came back ``unknown``
makes the row unresolved (no label is guessed).
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
        for s in steps[:-1]:
            prefix += s
            asks.append(RolloutAsk(prefix, k))
        plan.append((r, steps, span))
    ests = (yield asks) if asks else []
    out: List[LabeledSolution] = []
    for r, steps, span in plan:
        sol = LabeledSolution(r.sample_index, True, steps, None)
        if not steps:
            sol.resolved, sol.note = False, "empty_solution"
            out.append(sol)
            continue
        values = []
        for j in span:
            sol.n_rollouts += ests[j].n_new
            values.append(ests[j].value)
        values.append(0.0)  # the whole wrong solution
        sol.probes = [(i, v, ests[j].n) for i, (v, j) in enumerate(zip(values, span))]
        first_zero = next(i for i, v in enumerate(values) if v is not None and v == 0)
        if any(v is None for v in values[:first_zero]):
            sol.resolved, sol.note = False, "unmeasured_probe"
            ctx.stats["unmeasured_probes"] += sum(v is None for v in values)
        else:
            sol.first_error_index = first_zero
        out.append(sol)
    return out
