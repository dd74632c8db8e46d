"""Public entry point: step labels, step values and step-level preference pairs for many problems.

:func:`label_problems` builds one coroutine per problem — screening, then the
labeller (OmegaPRM tree or per-step MC), then optionally per-step values, then
the rows — and runs them all through one :class:`RoundScheduler`, so every
round is one engine call (and one verifier call) across all trees. It is
deterministic for deterministic generators (e.g. ``ScriptedGenerator``).

Rows conform to ``records.STEP_LABELS`` / ``STEP_VALUES`` / ``PREFERENCES``:

* ``step_labels``: one per searched wrong solution (see ``common`` for the
  ``mc_values`` fill rule); id ``<problem_id>/s<sample_index>/<labeler>``;
* ``step_values``: one per measured step of each wrong untruncated sampled
  trajectory (``n_rollouts`` = known-verdict rollouts behind ``q_value``; 0 for
  the last step, whose value is the verdict itself);
* ``preferences`` ``pair_type="step"`` (Step-DPO, first error): prompt =
  [system?, user]; ``prefix`` = the shared assistant text before the first
  error; chosen = prefix + first step of a correct rollout from that prefix,
  rejected = prefix + the erroneous step (in DPO the prefix's log-ratio cancels,
  so this conversational layout is equivalent to Step-DPO's);
* ``preferences`` ``pair_type="first_pit"`` (Setlur et al.): chosen = a correct
  sampled solution, rejected = the wrong one cut after its first pit step; only
  when the pit's advantage is outside sampling noise (``first_pit_require_signal``).

Pairs whose chosen equals rejected, or without a correct continuation, are
skipped and counted (and reported as row-scope ``rejects``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from counterpoint.generators.base import Generator
from counterpoint.labeling.advantages import estimate_values, step_values
from counterpoint.labeling.common import (
    SCREEN_KEPT,
    SCREEN_STATUSES,
    LabeledSolution,
    first_discovered_index,
    incorrect_targets,
    prompt_messages,
    screen,
    seed_root,
    step_label_row,
)
from counterpoint.labeling.mc import mc_label
from counterpoint.labeling.omegaprm import OmegaPRMConfig, OmegaPRMTree
from counterpoint.labeling.scheduler import ProblemContext, RoundScheduler, VerifyFn, side_by_side
from counterpoint.schemas import records
from counterpoint.schemas.records import PAIR_FIRST_PIT, PAIR_STEP, VERDICT_CORRECT
from counterpoint.segmentation import segment, step_content

LABELERS = ("omegaprm", "mc")


@dataclasses.dataclass
class ProblemForLabeling:
    problem: Dict[str, Any]  # a records.PROBLEMS row
    trajectories: List[Dict[str, Any]]  # sampled solutions (trajectory rows) of this problem
    system_prompt: Optional[str] = None
    segmentation_mode: str = "paragraph"


@dataclasses.dataclass
class LabelerConfig:
    """``labeler``: "omegaprm" or "mc" (per-step Math-Shepherd baseline; uses ``omegaprm.k`` and
    ``omegaprm.rollout_params``). ``noise_z``/``noise_min_n`` parameterise ``within_noise``."""

    labeler: str = "omegaprm"
    omegaprm: OmegaPRMConfig = dataclasses.field(default_factory=OmegaPRMConfig)
    compute_values: bool = True
    best_of_k: Optional[int] = None
    max_step_pairs_per_problem: int = 4
    max_first_pit_pairs_per_problem: int = 4
    seed: int = 0
    noise_z: float = 1.96
    noise_min_n: int = 4
    first_pit_require_signal: bool = True
    # Estimate values alongside the search instead of after it (fuller engine rounds; see _problem_task).
    overlap_values: bool = False

    def __post_init__(self):
        if self.labeler not in LABELERS:
            raise ValueError(f"labeler must be one of {LABELERS}, got {self.labeler!r}")

    def labeler_params(self) -> str:
        o = self.omegaprm
        if self.labeler == "omegaprm":
            return o.params_json()
        return records.dumps({"k": o.k, "rollout_params": o.rollout_params.to_dict(), "last_step": "verdict"})


@dataclasses.dataclass
class LabelingResult:
    problem_id: str
    step_labels: List[Dict[str, Any]]
    step_values: List[Dict[str, Any]]
    preferences: List[Dict[str, Any]]
    stats: Dict[str, Any]
    rejects: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def _context(item: ProblemForLabeling) -> ProblemContext:
    p = item.problem
    for t in item.trajectories:
        if t.get("problem_id", p["problem_id"]) != p["problem_id"]:
            raise ValueError(f"trajectory {t.get('id')} does not belong to problem {p['problem_id']}")
    return ProblemContext(
        problem_id=p["problem_id"],
        question=p["question"],
        gold_answer=str(p["gold_answer"]),
        answer_type=p.get("answer_type") or "numeric",
        system_prompt=item.system_prompt,
        segmentation_mode=item.segmentation_mode,
    )


def _first_step(ctx: ProblemContext, rollout) -> str:
    if rollout.steps:
        return rollout.steps[0]
    parts = segment(rollout.text, ctx.segmentation_mode)
    return parts[0] if parts else ""


def _reject(ctx: ProblemContext, reason: str, key: Any, detail: str) -> Dict[str, Any]:
    return records.make_reject(
        stage="label", reason=reason, problem_id=ctx.problem_id, scope="row", detail=detail, key=key
    )


def step_pairs(ctx: ProblemContext, sols: Sequence[LabeledSolution], *, labeler: str, limit: int, rejects: list) -> List[dict]:
    """Step-DPO pairs at the first error of each labelled solution (in labelling order, up to ``limit``)."""
    rows: List[dict] = []
    for sol in sols:
        if len(rows) >= limit:
            break
        if not sol.resolved or sol.first_error_index is None:
            continue
        e = sol.first_error_index
        prefix = "".join(sol.steps[:e])
        wrong = step_content(sol.steps[e])
        est = ctx.estimate(prefix)
        correct = [r for r in (est.rollouts if est else ()) if r.verdict == VERDICT_CORRECT]
        if not correct:
            ctx.stats["step_pairs_no_correct_continuation"] += 1
            rejects.append(_reject(ctx, "step_pair_no_correct_continuation", sol.sample_index, f"first error {e}"))
            continue
        pick = next((r for r in correct if step_content(_first_step(ctx, r)) != wrong), None)
        if pick is None:
            ctx.stats["step_pairs_identical"] += 1
            rejects.append(_reject(ctx, "step_pair_chosen_equals_rejected", sol.sample_index, f"first error {e}"))
            continue
        good = step_content(_first_step(ctx, pick))
        rows.append(
            records.PREFERENCES.conform(
                {
                    "id": f"{ctx.problem_id}/step/{labeler}/s{sol.sample_index}",
                    "problem_id": ctx.problem_id,
                    "prompt": prompt_messages(ctx),
                    "chosen": [{"role": "assistant", "content": prefix + good}],
                    "rejected": [{"role": "assistant", "content": prefix + wrong}],
                    "pair_type": PAIR_STEP,
                    "chosen_sample_index": pick.sample_index,
                    "rejected_sample_index": sol.sample_index,
                    "step_index": e,
                    "prefix": prefix,
                    "labeler": labeler,
                    "metadata": records.dumps(
                        {
                            "policy": "step_dpo_first_error",
                            "n_rollouts": sol.n_rollouts,
                            "prefix_mc": est.value,
                            "prefix_rollouts": est.n,
                            "chosen_source": "sampled" if pick.sample_index is not None else "rollout",
                            "rejected_sampled": sol.sampled,
                        }
                    ),
                }
            )
        )
    return rows


def _problem_task(item: ProblemForLabeling, ctx: ProblemContext, config: LabelerConfig):
    """Coroutine for one problem; returns its :class:`LabelingResult`."""
    labeler = config.labeler
    params = config.labeler_params()
    stats: Dict[str, Any] = {f"screened_{s}": 0 for s in SCREEN_STATUSES}
    rejects: List[dict] = []
    roots = seed_root(ctx, item.trajectories)
    status = screen(roots)
    stats["screening"] = status
    stats[f"screened_{status}"] = 1
    if status != SCREEN_KEPT:
        return LabelingResult(ctx.problem_id, [], [], [], _stats(ctx, stats), rejects)

    root = ctx.estimate("")
    targets, n_trunc = incorrect_targets(roots)
    ctx.stats["trajectories_truncated_not_labelled"] += n_trunc
    k = config.omegaprm.k
    if labeler == "omegaprm":
        tree = OmegaPRMTree(ctx, config.omegaprm, first_discovered_index=first_discovered_index(item.trajectories))
        labelling = tree.run()
    else:
        labelling = mc_label(ctx, targets, k)
    want_values = config.compute_values and bool(targets)
    per_traj = None
    if want_values and config.overlap_values:
        # Values need every step prefix of the sampled negatives anyway: asking for them alongside the
        # search fills the first rounds, and the search's probes on those prefixes then come from the
        # shared per-problem cache. Same rollouts in total, fewer and fuller engine rounds; the price is
        # that a search's own n_rollouts no longer counts the probes the value pass paid for.
        sols, per_traj = yield from side_by_side(labelling, estimate_values(ctx, targets, k))
    else:
        sols = yield from labelling
    label_rollouts = ctx.stats["rollouts"]

    step_label_rows = []
    for sol in sols:
        if not sol.resolved:
            ctx.stats["searches_unresolved"] += 1
            rejects.append(_reject(ctx, f"label_{sol.note or 'unresolved'}", sol.sample_index, "first error not located"))
            continue
        step_label_rows.append(step_label_row(ctx, sol, labeler=labeler, labeler_params=params, root_value=root.value))
    preferences = step_pairs(ctx, sols, labeler=labeler, limit=config.max_step_pairs_per_problem, rejects=rejects)

    value_rows: List[dict] = []
    if want_values:
        if per_traj is None:
            per_traj = yield from estimate_values(ctx, targets, k)
        correct = [r for r in roots if r.verdict == VERDICT_CORRECT and not r.truncated]
        n_pit_pairs = 0
        for r in targets:
            if r.sample_index not in per_traj:
                continue
            stats_i, n_new = per_traj[r.sample_index]
            vals = step_values(
                root.value, root.n_known, stats_i, best_of_k=config.best_of_k, z=config.noise_z, min_n=config.noise_min_n
            )
            ctx.stats["values_unmeasured"] += sum(s is None for s in stats_i)
            for v in vals:
                value_rows.append(
                    records.STEP_VALUES.conform(
                        {
                            "id": f"{ctx.problem_id}/s{r.sample_index}/{labeler}/t{v.step_index}",
                            "problem_id": ctx.problem_id,
                            "sample_index": r.sample_index,
                            "step_index": v.step_index,
                            "step": step_content(r.steps[v.step_index]),
                            "q_value": v.q_value,
                            "advantage": v.advantage,
                            "n_rollouts": v.n_rollouts or 0,
                            "n_correct": v.n_correct,
                            "is_first_pit": v.is_first_pit,
                            "within_noise": v.within_noise,
                            "best_of_k_value": v.best_of_k_value,
                            "labeler": labeler,
                        }
                    )
                )
            pit = next((v for v in vals if v.is_first_pit), None)
            if pit is None or n_pit_pairs >= config.max_first_pit_pairs_per_problem:
                continue
            if not correct:
                ctx.stats["first_pit_no_correct_solution"] += 1
                continue
            if pit.within_noise and config.first_pit_require_signal:
                ctx.stats["first_pit_within_noise"] += 1
                continue
            chosen = correct[n_pit_pairs % len(correct)]
            rejected_text = "".join(r.steps[: pit.step_index + 1]).rstrip()
            if chosen.text == rejected_text or not rejected_text:
                ctx.stats["first_pit_identical"] += 1
                rejects.append(_reject(ctx, "first_pit_chosen_equals_rejected", r.sample_index, f"pit {pit.step_index}"))
                continue
            n_pit_pairs += 1
            preferences.append(
                records.PREFERENCES.conform(
                    {
                        "id": f"{ctx.problem_id}/first_pit/{labeler}/s{r.sample_index}-s{chosen.sample_index}",
                        "problem_id": ctx.problem_id,
                        "prompt": prompt_messages(ctx),
                        "chosen": [{"role": "assistant", "content": chosen.text}],
                        "rejected": [{"role": "assistant", "content": rejected_text}],
                        "pair_type": PAIR_FIRST_PIT,
                        "chosen_sample_index": chosen.sample_index,
                        "rejected_sample_index": r.sample_index,
                        "step_index": pit.step_index,
                        "prefix": None,
                        "labeler": labeler,
                        "metadata": records.dumps(
                            {
                                "policy": "first_pit",
                                "pit_q": pit.q_value,
                                "pit_advantage": pit.advantage,
                                "within_noise": pit.within_noise,
                                "n_rollouts": sum(s[1] or 0 for s in stats_i if s is not None),
                                "n_rollouts_new": n_new,
                            }
                        ),
                    }
                )
            )
    ctx.stats["label_rollouts"] += label_rollouts
    ctx.stats["value_rollouts"] += ctx.stats["rollouts"] - label_rollouts
    ctx.stats["step_label_rows"] += len(step_label_rows)
    ctx.stats["step_value_rows"] += len(value_rows)
    ctx.stats["step_pairs"] += sum(p["pair_type"] == PAIR_STEP for p in preferences)
    ctx.stats["first_pit_pairs"] += sum(p["pair_type"] == PAIR_FIRST_PIT for p in preferences)
    return LabelingResult(ctx.problem_id, step_label_rows, value_rows, preferences, _stats(ctx, stats), rejects)


def _stats(ctx: ProblemContext, extra: Mapping[str, Any]) -> Dict[str, Any]:
    base = {
        "rollouts": 0,
        "rollout_tokens": 0,
        "prompt_tokens": 0,
        "cached_prompt_tokens": 0,
        "requests": 0,
        "unknown": 0,
        "truncated": 0,
        "selections": 0,
        "label_rollouts": 0,
        "value_rollouts": 0,
        "searches_unresolved": 0,
        "step_label_rows": 0,
        "step_value_rows": 0,
        "step_pairs": 0,
        "first_pit_pairs": 0,
    }
    base.update(ctx.stats)
    base.update(extra)
    return dict(base)


def label_problems(
    items: Sequence[ProblemForLabeling],
    generator: Generator,
    verify: VerifyFn,
    config: LabelerConfig,
    *,
    on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> List[LabelingResult]:
    """Labels every problem of ``items``; all their trees advance together, one engine call per round.

    ``verify(items) -> verdicts`` gets ``(assistant_text, gold_answer, truncated,
    answer_type)`` tuples (for rollouts, the text is prefix + continuation).
    ``on_round`` receives each round's stats (requests, samples, prompt / cached
    prompt / generated tokens, ...). Generator errors propagate to the caller.
    """
    contexts = [_context(it) for it in items]
    scheduler = RoundScheduler(
        generator,
        verify,
        config.omegaprm.rollout_params,
        seed=config.seed,
        max_active=config.omegaprm.max_trees,
        on_round=on_round,
    )
    tasks = [(ctx, _problem_task(it, ctx, config)) for it, ctx in zip(items, contexts)]
    results = scheduler.run(tasks)
    for res in results:
        res.stats["rounds"] = len(scheduler.rounds)
    return results
