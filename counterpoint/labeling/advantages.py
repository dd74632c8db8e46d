"""Per-step values and advantages of wrong solutions (Setlur et al. 2024, "RL on
Incorrect Synthetic Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold").

For a wrong sampled trajectory with steps ``0..m-1``:

* ``Q_i`` = MC of the prefix through step ``i`` (``correct / known`` over its
  rollouts; unknown verdicts are excluded from both counts). Values the tree (or
  the MC baseline) already measured are reused from the problem's cache; the
  missing prefixes are rolled out (``k`` each) through the same scheduler, all
  trajectories of a problem in one round. The last step is the whole wrong
  solution: ``Q_{m-1} = 0`` exactly (its verdict, no rollouts, no sampling noise);
* ``Q_{-1}`` = MC(question), measured by the sampled trajectories themselves;
* ``A_i = Q_i - Q_{i-1}`` (against the nearest earlier *measured* value if a
  prefix's rollouts all came back unknown — that step gets no row);
* the **first pit** is the first step at the minimum ``Q``;
* optional best-of-K value: ``1 - C(M - c, K) / C(M, K)`` from ``M`` known
  rollouts with ``c`` correct (the chance that at least one of ``K`` draws
  without replacement is correct); ``None`` when ``M < K``;
* ``within_noise``: True when ``|A_i| <= z * sqrt(Q_i(1-Q_i)/n_i + Q_{i-1}(1-Q_{i-1})/n_{i-1})``
  (z = 1.96) or when either estimate rests on fewer than ``min_n`` known
  rollouts — such an advantage must not be read as a signal.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

from counterpoint.labeling.scheduler import Estimate, ProblemContext, Rollout, RolloutAsk


@dataclasses.dataclass
class StepValue:
    step_index: int
    q_value: float
    n_rollouts: Optional[int]  # known-verdict rollouts behind q; None = exact (terminal)
    n_correct: int
    advantage: float
    within_noise: bool
    is_first_pit: bool = False
    best_of_k_value: Optional[float] = None


def best_of_k_value(m: int, c: int, k: int) -> Optional[float]:
    """P(at least one of ``k`` rollouts drawn without replacement from ``m`` (``c`` correct) is correct)."""
    if k < 1 or m < k:
        return None
    return 1.0 - math.comb(m - c, k) / math.comb(m, k)


def within_noise(
    advantage: float,
    q: float,
    n: Optional[int],
    q_prev: float,
    n_prev: Optional[int],
    *,
    z: float = 1.96,
    min_n: int = 4,
) -> bool:
    """True when ``|advantage|`` is inside the z-band of the two estimates' sampling error.

    ``n = None`` marks an exact value (no sampling error). Estimates resting on
    fewer than ``min_n`` rollouts are always treated as noise.
    """
    var = 0.0
    for value, count in ((q, n), (q_prev, n_prev)):
        if count is None:
            continue
        if count < min_n:
            return True
        var += value * (1.0 - value) / count
    return abs(advantage) <= z * math.sqrt(var) + 1e-12


def step_values(
    q_root: float,
    n_root: Optional[int],
    stats: Sequence[Optional[Tuple[float, Optional[int], int]]],
    *,
    best_of_k: Optional[int] = None,
    z: float = 1.96,
    min_n: int = 4,
) -> List[StepValue]:
    """Values/advantages/first pit from per-step ``(q, n_known, n_correct)`` (``None`` = unmeasured).

    ``n_known = None`` marks an exact value (the terminal step). Unmeasured steps
    are skipped; an advantage is taken against the nearest earlier measured value.
    """
    out: List[StepValue] = []
    q_prev, n_prev = q_root, n_root
    for i, st in enumerate(stats):
        if st is None:
            continue
        q, n, c = st
        a = q - q_prev
        bok = None
        if best_of_k is not None:
            bok = q if n is None else best_of_k_value(n, c, best_of_k)
        out.append(
            StepValue(
                step_index=i,
                q_value=q,
                n_rollouts=n,
                n_correct=c,
                advantage=max(-1.0, min(1.0, a)),
                within_noise=within_noise(a, q, n, q_prev, n_prev, z=z, min_n=min_n),
                best_of_k_value=bok,
            )
        )
        q_prev, n_prev = q, n
    if out:
        low = min(v.q_value for v in out)
        next(v for v in out if v.q_value == low).is_first_pit = True
    return out


def estimate_values(ctx: ProblemContext, targets: Sequence[Rollout], k: int):
    """Coroutine: per-step stats of each wrong sampled trajectory; returns
    ``{sample_index: (stats, n_new)}`` where ``stats`` suits :func:`step_values`
    and ``n_new`` counts the rollouts generated here (reused values are free).
    """
    asks: List[RolloutAsk] = []
    spans = []
    for r in targets:
        steps = list(r.steps or ())
        start = len(asks)
        prefix = ""
        for s in steps[:-1]:
            prefix += s
            asks.append(RolloutAsk(prefix, k))
        spans.append((r, steps, range(start, len(asks))))
    ests: List[Estimate] = (yield asks) if asks else []
    out: Dict[int, Tuple[list, int]] = {}
    for r, steps, span in spans:
        if not steps:
            continue
        stats: List[Optional[Tuple[float, Optional[int], int]]] = []
        n_new = 0
        for j in span:
            e = ests[j]
            n_new += e.n_new
            stats.append(None if e.value is None else (e.value, e.n_known, e.n_correct))
        stats.append((0.0, None, 0))  # the whole wrong solution: exact value 0
        out[r.sample_index] = (stats, n_new)
    return out
