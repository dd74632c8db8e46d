"""Per-step values and advantages of wrong solutions (Setlur et al. 2024, "RL on
Incorrect Synthetic Data Scales the Efficiency of LLM Math Reasoning by Eight-Fold").

For a wrong sampled trajectory with steps ``0..m-1`` (searchable: not truncated,
not a format failure):

* ``Q_i`` = MC of the prefix through step ``i`` (``correct / known`` over the
  rollouts the evidence store holds for it; unknown verdicts are excluded from
  both counts). The value pass asks ``k`` rollouts for every prefix; what the
  labeller already measured is reused (all trajectories of a problem in one
  round). A prefix that states a final answer is exact: 1.0 / 0.0 from the
  verifier, no rollouts. The last step is the whole wrong solution:
  ``Q_{m-1} = 0`` exactly. A prefix whose estimate is unresolved (fewer than
  ``min_known_verdicts`` known verdicts and none correct) is **unmeasured**: its
  row has ``measured = False`` and null ``q_value`` / ``advantage``;
* ``Q_{-1}`` = MC(question), measured by the sampled trajectories themselves;
* ``A_i = Q_i - Q_{j}`` against the nearest earlier *measured* step ``j`` (or the
  question);
* the **first pit** is the first measured step at the minimum ``Q``;
* optional best-of-K value: ``1 - C(M - c, K) / C(M, K)`` from ``M`` known
  rollouts with ``c`` correct (the chance that at least one of ``K`` draws
  without replacement is correct); ``None`` when ``M < K``. With ``best_of_k``
  set, the advantages and the first pit are taken on these values, as Setlur et
  al. do (the value of the best-of-K policy ``BoK(pi)``): ``A_i = V_i - V_j``
  with ``V`` the best-of-K value (an exact terminal value is its own best-of-K
  value; the question's from the sampled trajectories), and a measured step whose
  best-of-K value is undefined (``M < K``) gets no advantage and is no pit.
  Without ``best_of_k`` (default) they use the raw MC ``Q`` (Math-Shepherd's
  value, i.e. best-of-1);
* ``within_noise``: True when ``|A_i| <= z * sqrt(Q_i(1-Q_i)/n_i + Q_j(1-Q_j)/n_j)``
  (z = 1.96), when either estimate rests on fewer than ``min_n`` known rollouts,
  or when the step is unmeasured — such an advantage must not be read as a signal.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

from counterpoint.labeling.scheduler import Rollout, RolloutAsk


@dataclasses.dataclass
class StepValue:
    step_index: int
    q_value: Optional[float]  # None: unmeasured
    n_rollouts: Optional[int]  # known-verdict rollouts behind q; None = exact (terminal)
    n_correct: int
    advantage: Optional[float]  # None: unmeasured
    within_noise: bool
    is_first_pit: bool = False
    best_of_k_value: Optional[float] = None
    measured: bool = True

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
    c_root: Optional[int] = None,
) -> List[StepValue]:
    """Values/advantages/first pit from per-step ``(q, n_known, n_correct)`` (``None`` = unmeasured).

    ``n_known = None`` marks an exact value (terminal). Every step gets an entry; an
    unmeasured one has ``q_value = advantage = None``, ``measured = False`` and
    ``within_noise = True``; advantages are taken against the nearest earlier
    measured value.
    """
    out: List[StepValue] = []
    q_prev, n_prev = q_root, n_root
    v_prev: Optional[float] = q_root  # the value advantages are taken on (module docstring)
    if best_of_k is not None:
        c0 = round(q_root * n_root) if c_root is None and n_root else c_root
        v_prev = q_root if n_root is None else best_of_k_value(n_root, c0 or 0, best_of_k)
    for i, st in enumerate(stats):
        if st is None:
            out.append(StepValue(i, None, None, 0, None, True, measured=False))
            continue
        q, n, c = st
        bok = None
        if best_of_k is not None:
            bok = q if n is None else best_of_k_value(n, c, best_of_k)
        v = q if best_of_k is None else bok
        a = None if v is None or v_prev is None else v - v_prev
        out.append(
            StepValue(
                step_index=i,
                q_value=q,
                n_rollouts=n,
                n_correct=c,
                advantage=None if a is None else max(-1.0, min(1.0, a)),
                # noise is judged on the underlying MC estimates
                within_noise=True if a is None else within_noise(q - q_prev, q, n, q_prev, n_prev, z=z, min_n=min_n),
                best_of_k_value=bok,
            )
        )
        q_prev, n_prev = q, n
        if v is not None:
            v_prev = v
    scored = [s for s in out if s.measured and (best_of_k is None or s.best_of_k_value is not None)]
    if scored:
        key = (lambda s: s.q_value) if best_of_k is None else (lambda s: s.best_of_k_value)
        low = min(key(s) for s in scored)
        next(s for s in scored if key(s) == low).is_first_pit = True
    return out


def value_pass(targets: Sequence[Rollout], k: int):
    """Coroutine: asks ``k`` rollouts for every step prefix but the last of each target, in one round.

    It returns nothing: values are read from the evidence store when the rows are
    built, after every estimate of the problem is in (so they do not depend on which
    pass paid for a rollout).
    """
    asks: List[RolloutAsk] = []
    for r in targets:
        steps = list(r.steps or ())
        prefix = ""
        for i, s in enumerate(steps[:-1]):
            prefix += s
            asks.append(RolloutAsk(prefix, k, tuple(steps[: i + 1])))
    if asks:
        yield asks
    return None
