"""Pieces shared by the labellers: root rollouts, screening, labelled solutions, per-step measurements.

``mc_values`` fill rule (documented once, used by both labellers). A row holds
one value per step prefix ``steps[:i + 1]``, with ``mc_measured[i]`` saying
whether it was measured:

* **measured** — a terminal prefix (it states a final answer) judged correct /
  wrong by the verifier: exactly 1.0 / 0.0 with 0 rollouts; the last step of a
  wrong solution is the solution itself: its verdict, 0.0; any other prefix whose
  rollouts in the evidence store give a *resolved* estimate (a correct rollout, or
  at least ``min_known_verdicts`` known verdicts): its MC = correct / known,
  whatever its label;
* **unmeasured, before the first error** (label True): the value is > 0 but
  unknown. It is filled by linear interpolation between the nearest measured
  *positive* values on each side, with MC(question) (the root, always > 0 after
  screening) as the value at index -1; after the last measured positive it is
  carried forward. Fills are therefore always in (0, 1];
* **unmeasured, from the first error on** (label False): ``0.0``.

Steps of a correct solution are never given MC = 1 without rollouts: correct
solutions get no ``step_labels`` row.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from counterpoint.labeling.evidence import Rollout
from counterpoint.labeling.scheduler import ProblemContext
from counterpoint.schemas import records
from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN
from counterpoint.segmentation import segment

SCREEN_KEPT = "kept"
SCREEN_ALL_CORRECT = "all_correct"
SCREEN_ALL_INCORRECT = "all_incorrect"
SCREEN_NO_VERDICT = "no_verdict"
SCREEN_STATUSES = (SCREEN_KEPT, SCREEN_ALL_CORRECT, SCREEN_ALL_INCORRECT, SCREEN_NO_VERDICT)


def trajectory_rollout(traj: Mapping[str, Any], mode: str) -> Rollout:
    """A sampled trajectory as a root rollout. Truncated (finish_reason "length") counts as incorrect; a
    correct one flagged ``process_error`` (a false arithmetic claim) counts as unknown."""
    truncated = traj.get("finish_reason") == "length"
    verdict = traj.get("verdict", VERDICT_UNKNOWN)
    reason = traj.get("verdict_reason")
    if verdict not in records.VERDICTS:
        verdict = VERDICT_UNKNOWN
    if truncated:
        verdict, reason = VERDICT_INCORRECT, "truncated"
    elif traj.get("process_error") and verdict == VERDICT_CORRECT:
        # Right answer, wrong process (issue 20): no correct extension in the evidence store, no chosen side.
        verdict, reason = VERDICT_UNKNOWN, "process_error"
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
        reason=None if verdict == VERDICT_CORRECT else reason,
    )


def seed_root(ctx: ProblemContext, trajectories: Sequence[Mapping[str, Any]]) -> List[Rollout]:
    """Puts the sampled trajectories into the evidence store as the rollouts of the empty prefix."""
    roots = [trajectory_rollout(t, ctx.segmentation_mode) for t in sorted(trajectories, key=lambda t: t["sample_index"])]
    ctx.store.add_root(roots)
    ctx.stats["trajectories"] += len(roots)
    ctx.stats["trajectories_truncated"] += sum(r.truncated for r in roots)
    ctx.stats["trajectories_unknown"] += sum(r.verdict == VERDICT_UNKNOWN for r in roots)
    return roots


def screen(roots: Sequence[Rollout]) -> str:
    """OmegaPRM's filter: keep problems whose sampled solutions are neither all right nor all wrong.

    Unknown verdicts are left out (never counted as wrong); with none known the
    problem is ``no_verdict``. Format failures count as wrong here (outcome level).
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
    """Steps of ``prefix + rollout.text`` (see :meth:`EvidenceStore.full_steps`)."""
    return ctx.store.full_steps(prefix_steps, rollout)


@dataclasses.dataclass
class LabeledSolution:
    """A wrong solution and what its search found about the first error.

    ``search`` brackets the search's first error ``(lo, hi)``: equal when the search
    resolved, wider when an unresolved probe stopped it, None when it had nothing to
    search. ``first_error_index`` / ``resolved`` are filled by the final decision
    (``first_error.decide``) once every estimate of the problem is in.
    ``sample_index`` is the trajectory's own index for sampled solutions; rollouts
    discovered inside an OmegaPRM tree and then searched get indices from
    :func:`first_discovered_index` upward (``sampled=False``). ``start_step`` is the
    number of leading steps known correct before the search began (the depth of the
    tree state the rollout was drawn from). ``n_rollouts`` counts the rollouts this
    search caused to be generated (statistics; rows count rollouts held instead).
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
    search: Optional[Tuple[int, int]] = None
    decision: Any = None  # first_error.FirstError, set by the final decision


@dataclasses.dataclass(frozen=True)
class StepMeasure:
    """What the evidence store holds for one step prefix of a solution."""

    value: Optional[float]  # measured value (None: unmeasured)
    measured: bool
    n_rollouts: int  # rollouts held for the prefix (0 for exact terminal values)
    n_known: Optional[int]  # known-verdict rollouts behind the value; None for exact values
    n_correct: int
    exact: bool  # value from a verdict (terminal prefix / the whole solution), not from rollouts
    n_format_failures: int = 0  # held rollouts that are format failures
    n_truncated: int = 0  # held rollouts that hit max_tokens


def step_measures(ctx: ProblemContext, steps: Sequence[str], final_verdict_value: Optional[float] = 0.0
                  ) -> List[StepMeasure]:
    """The measurement of every step prefix ``steps[:i+1]`` in the evidence store.

    The last step is the whole solution: its value is ``final_verdict_value`` (0.0 for
    a wrong solution), exact.
    """
    out: List[StepMeasure] = []
    prefix = ""
    m = len(steps)
    for i, s in enumerate(steps):
        prefix += s
        if i == m - 1 and final_verdict_value is not None:
            out.append(StepMeasure(float(final_verdict_value), True, 0, None, 0, True))
            continue
        est = ctx.estimate(prefix)
        if est is None:
            out.append(StepMeasure(None, False, ctx.held(prefix), 0, 0, False))
        elif est.is_terminal:
            ok = est.resolved
            out.append(StepMeasure(est.value if ok else None, ok, 0, None, int(est.value == 1.0), True))
        else:
            out.append(StepMeasure(est.value if est.resolved else None, est.resolved, est.n, est.n_known,
                                   est.n_correct, False, est.n_format_failures, est.n_truncated))
    return out


def terminal_wrong_step(ctx: ProblemContext, steps: Sequence[str]) -> Optional[int]:
    """First step whose prefix states a final answer the verifier judged wrong (None if none).

    Only a wrong stated answer counts: a format-class or unknown verdict is no evidence
    (``EvidenceStore.terminal``). Every terminal prefix must have been verified first
    (``labeler.verify_terminals``).
    """
    prefix = ""
    for i, s in enumerate(steps):
        prefix += s
        if ctx.store.terminal(prefix) and ctx.store.verdict_of(prefix)[0] == VERDICT_INCORRECT:
            return i
    return None


def terminal_prefixes(ctx: ProblemContext, steps: Sequence[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """Every prefix of ``steps`` that states a final answer (with its steps)."""
    out = []
    prefix = ""
    for i, s in enumerate(steps):
        prefix += s
        if ctx.store.states_answer(prefix):
            out.append((prefix, tuple(steps[: i + 1])))
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


def prompt_messages(ctx: ProblemContext) -> List[dict]:
    pairs = ([("system", ctx.system_prompt)] if ctx.system_prompt else []) + [("user", ctx.question)]
    return records.messages(*pairs)


def incorrect_targets(roots: Sequence[Rollout]) -> Tuple[List[Rollout], int, int]:
    """Sampled wrong solutions that can be labelled, and how many truncated / format-failure ones are left out.

    Truncated trajectories count as wrong (for MC and screening) but are not
    searched: without a final answer their "first error" is not defined. Format
    failures (no final answer could be read) are outcome negatives, not step-level
    evidence: no step label, no step pair, no values, no first-pit pair.
    """
    wrong = [r for r in roots if r.verdict == VERDICT_INCORRECT]
    return ([r for r in wrong if r.searchable], sum(r.truncated for r in wrong),
            sum(r.is_format_failure for r in wrong))
