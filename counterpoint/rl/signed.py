"""Signed columns of a problem's trajectories: reward, group mean, GRPO and RLOO advantages.

Input: the verified ``trajectories`` rows of ONE problem (a group, in GRPO's sense).
Output: the same rows with ``reward``, ``group_mean_reward``, ``grpo_advantage`` and
``rloo_advantage`` added (new dicts; the inputs are left as they were).

* reward: 1.0 correct, 0.0 incorrect, None (null) for an unknown verdict and, unless
  ``truncated_reward`` says otherwise, for a truncated sample (finish_reason "length").
  A sample with a null reward is no evidence either way and is left out of every
  group figure. ``truncated_reward=0.0`` counts a truncated sample as a failure
  instead; a value of 1.0 is refused (a truncated sample is never a positive).
* GRPO (Shao et al. 2024, DeepSeekMath, eq. 3 "outcome supervision"): the advantage
  of reward r_i is (r_i - mean(r)) / std(r) over the group's known rewards, with the
  population std; 0 where std = 0 (all rewards equal: no signal).
* RLOO (Ahmadian et al. 2024, "Back to Basics", after Kool et al. 2019): the advantage
  of r_i is r_i - mean of the *other* known rewards; None where r_i is None or no
  other reward is known.

Both advantages sum to 0 over a problem's known rewards (GRPO's whenever std > 0).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from counterpoint.schemas import records

SIGNED_COLUMNS = ("reward", "group_mean_reward", "grpo_advantage", "rloo_advantage")


def reward(row: Mapping[str, Any], truncated_reward: Optional[float] = None) -> Optional[float]:
    """The outcome reward of one trajectory row (see the module docstring)."""
    if truncated_reward is not None and not 0.0 <= truncated_reward < 1.0:
        raise ValueError(f"truncated_reward must be in [0, 1) or None, got {truncated_reward!r}: "
                         "a truncated sample is never a positive")
    if row["finish_reason"] == "length":
        return truncated_reward
    if row["verdict"] == records.VERDICT_CORRECT:
        return 1.0
    if row["verdict"] == records.VERDICT_INCORRECT:
        return 0.0
    return None


def group_advantages(rewards: Sequence[Optional[float]]) -> Dict[str, List[Optional[float]]]:
    """``{"group_mean_reward", "grpo_advantage", "rloo_advantage"}``, one value per reward, in order.

    ``rewards``: one problem's rewards, None for unknown ones (left out of the mean and std).
    """
    known = [r for r in rewards if r is not None]
    n = len(known)
    mean = sum(known) / n if n else None
    std = math.sqrt(sum((r - mean) ** 2 for r in known) / n) if n else None
    total = sum(known)
    grpo: List[Optional[float]] = []
    rloo: List[Optional[float]] = []
    for r in rewards:
        if r is None:
            grpo.append(None)
            rloo.append(None)
            continue
        grpo.append(0.0 if std == 0 else (r - mean) / std)
        rloo.append(r - (total - r) / (n - 1) if n > 1 else None)
    return {"group_mean_reward": [mean] * len(rewards), "grpo_advantage": grpo, "rloo_advantage": rloo}


def with_signed_columns(rows: Sequence[Mapping[str, Any]],
                        truncated_reward: Optional[float] = None) -> List[Dict[str, Any]]:
    """New rows of one problem with the four signed columns (see the module docstring)."""
    problems = {r["problem_id"] for r in rows}
    if len(problems) > 1:
        raise ValueError(f"signed columns are per problem; got rows of {len(problems)} problems")
    rewards = [reward(r, truncated_reward) for r in rows]
    group = group_advantages(rewards)
    return [dict(row, reward=rw, **{k: v[i] for k, v in group.items()})
            for i, (row, rw) in enumerate(zip(rows, rewards))]
