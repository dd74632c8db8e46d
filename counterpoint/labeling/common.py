"""Pieces shared by the labellers: root rollouts, screening, labelled solutions, step_labels rows.

``mc_values`` fill rule (documented once, used by both labellers). A row holds
one value per step prefix ``steps[:i + 1]``:

* **measured** — a prefix with rollouts in the problem's cache gets its MC
  (``correct / known``), whatever its label; the last step of a wrong solution
  is the solution itself, whose value is its verdict: ``0.0``;
* **unmeasured, before the first error** (label True): a step is positive because
  a later prefix had MC > 0 (a correct completion passes through it), so its
  value is > 0 but unknown. It is filled by linear interpolation between the
  nearest measured *positive* values on each side, with MC(question) (the root,
  always > 0 after screening) as the value at index -1; after the last measured
  positive it is carried forward. Fills are therefore always in (0, 1];
* **unmeasured, from the first error on** (label False): ``0.0``.

Steps of a correct solution are never given MC = 1 without rollouts: correct
solutions get no ``step_labels`` row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.labeling.scheduler import ProblemContext, Rollout
from counterpoint.schemas import records
from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN
from counterpoint.segmentation import segment, step_content

SCREEN_KEPT = "kept"
SCREEN_ALL_CORRECT = "all_correct"
SCREEN_ALL_INCORRECT = "all_incorrect"
SCREEN_NO_VERDICT = "no_verdict"
SCREEN_STATUSES = (SCREEN_KEPT, SCREEN_ALL_CORRECT, SCREEN_ALL_INCORRECT, SCREEN_NO_VERDICT)


def trajectory_rollout(traj: Mapping[str, Any], mode: str) -> Rollout:
    """A sampled trajectory as a root rollout. Truncated (finish_reason "length") counts as incorrect."""
    truncated = traj.get("finish_reason") == "length"
    verdict = traj.get("verdict", VERDICT_UNKNOWN)
    if verdict not in records.VERDICTS:
        verdict = VERDICT_UNKNOWN
    if truncated:
        verdict = VERDICT_INCORRECT
    completion = traj.get("completion") or ""
    steps = traj.get("steps")
    if steps is None or "".join(steps) != completion:
        steps = segment(completion, mode)
    return Rollout(
        text=completion,
        verdict=verdict,
        truncated=truncated,
        num_tokens=int(traj.get("num_generated_tokens") or 0),
        finish_reason=traj.get("finish_reason") or "stop",
        sample_index=int(traj["sample_index"]),
        steps=tuple(steps),
    )


def seed_root(ctx: ProblemContext, trajectories: Sequence[Mapping[str, Any]]) -> List[Rollout]:
    """Puts the sampled trajectories into the cache as the rollouts of the empty prefix."""
    roots = [trajectory_rollout(t, ctx.segmentation_mode) for t in sorted(trajectories, key=lambda t: t["sample_index"])]
    ctx.cache[""] = list(roots)
    ctx.stats["trajectories"] += len(roots)
    ctx.stats["trajectories_truncated"] += sum(r.truncated for r in roots)
    ctx.stats["trajectories_unknown"] += sum(r.verdict == VERDICT_UNKNOWN for r in roots)
    return roots


def screen(roots: Sequence[Rollout]) -> str:
    """OmegaPRM's filter: keep problems whose sampled solutions are neither all right nor all wrong.

    Unknown verdicts are left out (never counted as wrong); with none known the
    problem is ``no_verdict``.
    """
    correct = sum(r.verdict == VERDICT_CORRECT for r in roots)
    incorrect = sum(r.verdict == VERDICT_INCORRECT for r in roots)
    if correct + incorrect == 0:
        return SCREEN_NO_VERDICT
    if incorrect == 0:
        return SCREEN_ALL_CORRECT
    if correct == 0:
        return SCREEN_ALL_INCORRECT
    return SCREEN_KEPT


def first_discovered_index(trajectories: Sequence[Mapping[str, Any]]) -> int:
    """Sample indices for searched rollouts found inside the tree start here (past every sampled one)."""
    top = max((int(t["sample_index"]) for t in trajectories), default=-1)
    return max(top + 1, len(trajectories))


def full_steps(ctx: ProblemContext, prefix_steps: Sequence[str], rollout: Rollout) -> List[str]:
    """Steps of ``prefix + rollout.text``, keeping the prefix's own segmentation.

    Sampled trajectories keep their stored steps. Otherwise the whole text is
    re-segmented; if that does not reproduce the prefix's steps (a continuation
    glued onto the last prefix step), the continuation is segmented on its own.
    Either way ``"".join(result) == prefix + rollout.text``.
    """
    if not prefix_steps and rollout.steps is not None:
        return list(rollout.steps)
    prefix = "".join(prefix_steps)
    whole = segment(prefix + rollout.text, ctx.segmentation_mode)
    d = len(prefix_steps)
    if whole[:d] == list(prefix_steps):
        return whole
    return list(prefix_steps) + segment(rollout.text, ctx.segmentation_mode)


@dataclasses.dataclass
class LabeledSolution:
    """A wrong solution whose first error was located (``first_error_index``), or not (``resolved=False``).

    ``sample_index`` is the trajectory's own index for sampled solutions; rollouts
    discovered inside an OmegaPRM tree and then searched get indices from
    :func:`first_discovered_index` upward (``sampled=False``). ``start_step`` is
    the number of leading steps known correct before the search began (the depth
    of the tree state the rollout was drawn from). ``n_rollouts`` counts the
    rollouts generated for this solution's search (cache hits are free).
    """

    sample_index: int
    sampled: bool
    steps: List[str]
    first_error_index: Optional[int]
    n_rollouts: int = 0
    start_step: int = 0
    resolved: bool = True
    probes: List[Tuple[int, Optional[float], int]] = dataclasses.field(default_factory=list)
    note: str = ""


def measured_values(ctx: ProblemContext, steps: Sequence[str], terminal_value: Optional[float]) -> List[Optional[float]]:
    """MC of every step prefix held in the cache (``None`` where unmeasured); last step = ``terminal_value``."""
    out: List[Optional[float]] = []
    prefix = ""
    for i, s in enumerate(steps):
        prefix += s
        est = ctx.estimate(prefix)
        v = est.value if est is not None else None
        if i == len(steps) - 1 and terminal_value is not None:
            v = terminal_value
        out.append(v)
    return out


def fill_mc_values(measured: Sequence[Optional[float]], first_error: Optional[int], root_value: float) -> List[float]:
    """Fills unmeasured entries per the module rule (interpolate positives, 0 from the first error)."""
    m = len(measured)
    end = m if first_error is None else first_error
    out: List[float] = [0.0] * m
    anchors = [(-1, float(root_value))] + [(i, float(v)) for i, v in enumerate(measured[:end]) if v is not None and v > 0]
    for i in range(m):
        v = measured[i]
        if v is not None:
            out[i] = float(v)
            continue
        if i >= end:
            out[i] = 0.0
            continue
        left = max((a for a in anchors if a[0] < i), key=lambda a: a[0])
        right = [a for a in anchors if a[0] > i]
        if right:
            r = min(right, key=lambda a: a[0])
            t = (i - left[0]) / (r[0] - left[0])
            out[i] = left[1] + t * (r[1] - left[1])
        else:
            out[i] = left[1]
    return [min(1.0, max(0.0, x)) for x in out]


def step_label_row(
    ctx: ProblemContext, sol: LabeledSolution, *, labeler: str, labeler_params: str, root_value: float
) -> Dict[str, Any]:
    """A ``step_labels`` row (TRL stepwise supervision) for a resolved solution."""
    e = sol.first_error_index
    measured = measured_values(ctx, sol.steps, 0.0)  # only wrong solutions are labelled
    labels = [e is None or i < e for i in range(len(sol.steps))]
    return records.STEP_LABELS.conform(
        {
            "id": f"{ctx.problem_id}/s{sol.sample_index}/{labeler}",
            "problem_id": ctx.problem_id,
            "sample_index": sol.sample_index,
            "prompt": ctx.question,
            "completions": [step_content(s) for s in sol.steps],
            "labels": labels,
            "mc_values": fill_mc_values(measured, e, root_value),
            "first_error_index": e,
            "n_rollouts": sol.n_rollouts,
            "labeler": labeler,
            "labeler_params": labeler_params,
        }
    )


def prompt_messages(ctx: ProblemContext) -> List[Dict[str, str]]:
    pairs = ([("system", ctx.system_prompt)] if ctx.system_prompt else []) + [("user", ctx.question)]
    return records.messages(*pairs)


def incorrect_targets(roots: Sequence[Rollout]) -> Tuple[List[Rollout], int]:
    """Sampled wrong solutions that can be labelled, and how many truncated ones are left out.

    Truncated trajectories count as wrong (for MC and screening) but are not
    searched: without a final answer their "first error" is not defined.
    """
    wrong = [r for r in roots if r.verdict == VERDICT_INCORRECT]
    return [r for r in wrong if not r.truncated], sum(r.truncated for r in wrong)
