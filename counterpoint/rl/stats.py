"""The ``problem_stats`` row of one problem, from its verified trajectories (Beam-free).

Input: one problem's ``trajectories`` rows (verdicts filled in). Output: one
``records.PROBLEM_STATS`` row: samples, correct / incorrect / unknown / truncated
counts, the pass rate over known verdicts with its 95% Wilson score interval, the
mean generated tokens, the verdict-reason histogram, the number of distinct final
answers and the most common wrong final answer.

Pass rate: ``correct / (correct + incorrect)``; unknown verdicts are left out (they
are neither right nor wrong), truncated samples count as incorrect (the verifier
judges them so: the policy did not finish within the token budget). Null when no
verdict is known.

Wilson score interval (Wilson 1927; Brown, Cai & DasGupta 2001), for ``k`` correct of
``n`` known verdicts, ``p = k / n`` and ``z = 1.959963984540054`` (the 97.5% normal
quantile)::

    centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
    half      = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    [lo, hi]  = [centre - half, centre + half], clipped to [0, 1]

Unlike the normal (Wald) interval it is never empty at p = 0 or 1 and stays in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.schemas import records

Z_95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z_95) -> Tuple[Optional[float], Optional[float]]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (module docstring); (None, None) if n = 0."""
    if n <= 0:
        return None, None
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At k = 0 (k = n) the bound is exactly 0 (1) in exact arithmetic; floating point can land a hair
    # inside, which would break lo <= p <= hi (a gate rule). Clamp around p.
    low = 0.0 if k == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if k == n else max(p, min(1.0, centre + half))
    return low, high


def _most_common(values: Sequence[str]) -> Tuple[Optional[str], int]:
    """Most frequent value and its count; ties go to the value that sorts first (deterministic)."""
    if not values:
        return None, 0
    value, count = min(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
    return value, count


def problem_stats_row(problem: Mapping[str, Any], trajectories: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``problem_stats`` row of ``problem`` from its verified ``trajectories`` (at least one)."""
    if not trajectories:
        raise ValueError(f"problem {problem['problem_id']!r} has no trajectories: no problem_stats row")
    verdicts = Counter(t["verdict"] for t in trajectories)
    correct = verdicts.get(records.VERDICT_CORRECT, 0)
    incorrect = verdicts.get(records.VERDICT_INCORRECT, 0)
    known = correct + incorrect
    lo, hi = wilson_interval(correct, known)
    reasons = Counter(t["verdict_reason"] for t in trajectories if t["verdict_reason"] is not None)
    wrong = [t["final_answer"] for t in trajectories
             if t["verdict"] == records.VERDICT_INCORRECT and t["finish_reason"] != "length"
             and t["final_answer"] is not None]
    wrong_answer, wrong_count = _most_common(wrong)
    first = trajectories[0]
    return records.PROBLEM_STATS.conform({
        "id": problem["problem_id"],
        "problem_id": problem["problem_id"],
        "source": first["source"],
        "prompt": first["prompt"],
        "gold_answer": first["gold_answer"],
        "verifier": first["verifier"],
        "verifier_version": first["verifier_version"],
        "samples": len(trajectories),
        "correct": correct,
        "incorrect": incorrect,
        "unknown": verdicts.get(records.VERDICT_UNKNOWN, 0),
        "truncated": sum(t["finish_reason"] == "length" for t in trajectories),
        "pass_rate": correct / known if known else None,
        "pass_rate_lo": lo,
        "pass_rate_hi": hi,
        "mean_generated_tokens": sum(t["num_generated_tokens"] for t in trajectories) / len(trajectories),
        "verdict_reasons": [{"reason": r, "count": c}
                            for r, c in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))],
        "distinct_final_answers": len({t["final_answer"] for t in trajectories if t["final_answer"] is not None}),
        "most_common_wrong_answer": wrong_answer,
        "most_common_wrong_answer_count": wrong_count,
    })


def problem_stats_rows(problem: Mapping[str, Any], trajectories: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """``[row]`` for a problem with samples, ``[]`` for one without (a failed problem writes none)."""
    return [problem_stats_row(problem, trajectories)] if trajectories else []
