"""Public entry point: step labels, step values and step-level preference pairs for many problems.

:func:`label_problems` builds one coroutine per problem and runs them all through
one :class:`RoundScheduler`. Each problem goes through:

1. **seed + screen** — the sampled trajectories become the root rollouts of the
   problem's evidence store (correct ones enter the correct-completion trie);
   problems whose samples are all right / all wrong / all unknown stop here;
2. **estimates** — the labeller (OmegaPRM tree or per-step MC) and, with
   ``compute_values``, the value pass over every step prefix of the sampled
   negatives; side by side (``overlap_values``, default) or one after the other;
3. **terminal verdicts** — every prefix of a labelled solution whose last step states
   a final answer is verified as it stands (rolled out only when the verdict is no
   evidence);
4. **rows, once** — from the final evidence store, so no row depends on which pass
   paid for a rollout, on ``overlap_values``, ``parallel_searches``, ``max_trees``,
   the batch or the order a streaming engine answers in (wherever the engine honours
   per-request seeds; the scheduled seeds depend only on the run seed, the problem,
   the prefix and the rollouts already held).

Rows conform to ``records.STEP_LABELS`` / ``STEP_VALUES`` / ``PREFERENCES`` (built by
``counterpoint.schemas.rows``); the semantics are in the package docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from counterpoint.generators.base import Generator, SamplingParams
from counterpoint.labeling.advantages import step_values, value_pass
from counterpoint.labeling.arithmetic import first_false_claim_step
from counterpoint.labeling.evidence import FORMAT_FAILURE_MODES, FORMAT_FAILURES_ZERO
from counterpoint.labeling.common import (
    SCREEN_KEPT,
    SCREEN_STATUSES,
    LabeledSolution,
    fill_mc_values,
    first_discovered_index,
    incorrect_targets,
    screen,
    seed_root,
    step_measures,
    terminal_prefixes,
    terminal_wrong_step,
)
from counterpoint.labeling.first_error import decide
from counterpoint.labeling.mc import mc_label
from counterpoint.labeling.omegaprm import OmegaPRMConfig, OmegaPRMTree
from counterpoint.labeling.pairs import first_pit_pair, label_reject, step_pairs
from counterpoint.labeling.scheduler import ProblemContext, RolloutAsk, RoundScheduler, VerifyFn, side_by_side
from counterpoint.schemas import records, rows
from counterpoint.schemas.records import PAIR_FIRST_PIT, PAIR_STEP, VERDICT_CORRECT

LABELERS = ("omegaprm", "mc")
#: Recorded in ``labeler_params``: how the first error is decided (see the package docstring).
LABEL_SEMANTICS = "first_error=min(max(search,evidence),terminal_wrong,false_claim_from_evidence)/v2"


@dataclasses.dataclass
class ProblemForLabeling:
    problem: Dict[str, Any]  # a records.PROBLEMS row
    trajectories: List[Dict[str, Any]]  # sampled solutions (trajectory rows) of this problem
    system_prompt: Optional[str] = None
    segmentation_mode: str = "paragraph"


@dataclasses.dataclass
class LabelerConfig:
    """``labeler``: "omegaprm" or "mc" (per-step Math-Shepherd baseline; uses ``omegaprm.k``,
    ``omegaprm.rollout_params`` and ``omegaprm.min_known_verdicts``). ``noise_z``/``noise_min_n``
    parameterise ``within_noise``. ``check_arithmetic``: a false explicit arithmetic claim makes its
    step an error, unless a verified-correct completion passes through it (``claims_over_evidence``:
    whatever the evidence says, issue 9's rule). ``rollout_format_failures``: "zero" (a rollout with no
    readable final answer counts as wrong, Math-Shepherd / OmegaPRM) or "unknown". ``overlap_values`` (a throughput knob, rows do not depend on it)
    estimates values alongside the search: fuller engine rounds."""

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
    check_arithmetic: bool = True
    overlap_values: bool = True
    rollout_format_failures: str = FORMAT_FAILURES_ZERO
    claims_over_evidence: bool = False

    def __post_init__(self):
        if self.labeler not in LABELERS:
            raise ValueError(f"labeling.labeler must be one of {LABELERS}, got {self.labeler!r}")
        if self.rollout_format_failures not in FORMAT_FAILURE_MODES:
            raise ValueError(f"labeling.rollout_format_failures must be one of {FORMAT_FAILURE_MODES}, "
                             f"got {self.rollout_format_failures!r}")

    def labeler_params(self, sampling: Optional[SamplingParams] = None) -> str:
        """JSON recorded on every row: everything the labels depend on (effective rollout sampling
        included), nothing they do not (throughput knobs)."""
        o = self.omegaprm
        common = {"check_arithmetic": self.check_arithmetic, "semantics": LABEL_SEMANTICS}
        if self.rollout_format_failures != FORMAT_FAILURES_ZERO:  # the default stays out: rows unchanged
            common["rollout_format_failures"] = self.rollout_format_failures
        if self.claims_over_evidence:
            common["claims_over_evidence"] = True
        if self.labeler == "omegaprm":
            return records.dumps({**o.params_dict(sampling), **common})
        return records.dumps({"k": o.k, "rollout_params": o.effective_rollout_params(sampling).to_dict(),
                              "min_known_verdicts": o.min_known, "last_step": "verdict", **common})


@dataclasses.dataclass
class LabelingResult:
    problem_id: str
    step_labels: List[Dict[str, Any]]
    step_values: List[Dict[str, Any]]
    preferences: List[Dict[str, Any]]
    stats: Dict[str, Any]
    rejects: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


def make_context(item: ProblemForLabeling, min_known: int, format_failures: str = FORMAT_FAILURES_ZERO
             ) -> ProblemContext:
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
        min_known=min_known,
        format_failures=format_failures,
    )


def verify_terminals(ctx: ProblemContext, solutions: Sequence[Sequence[str]], k: int):
    """Coroutine: has every prefix that states a final answer verified (one round). A prefix whose verdict
    is no step evidence (format class, unknown) is then rolled out like any other prefix (``k``)."""
    asks, seen = [], set()
    for steps in solutions:
        for prefix, psteps in terminal_prefixes(ctx, steps):
            if prefix not in seen and ctx.store.verdict_of(prefix) is None:
                seen.add(prefix)
                asks.append(RolloutAsk(prefix, k, psteps))
    if asks:
        yield asks


def problem_task(item: ProblemForLabeling, ctx: ProblemContext, config: LabelerConfig,
                  sampling: Optional[SamplingParams]):
    """Coroutine for one problem; returns its :class:`LabelingResult`.

    Long: one problem's whole labelling coroutine (screen, search, estimate, build rows) reads top to bottom.
    """
    labeler = config.labeler
    params = config.labeler_params(sampling)
    k = config.omegaprm.k
    stats: Dict[str, Any] = {f"screened_{s}": 0 for s in SCREEN_STATUSES}
    rejects: List[dict] = []
    # Duplicates (counterpoint.clean.dedup) are neither a second labelling target nor second evidence.
    roots = seed_root(ctx, [t for t in item.trajectories if not t.get("duplicate_of")])
    status = screen(roots)
    stats["screening"] = status
    stats[f"screened_{status}"] = 1
    if status != SCREEN_KEPT:
        return LabelingResult(ctx.problem_id, [], [], [], _stats(ctx, stats), rejects)

    root = ctx.estimate("")
    targets, n_trunc, n_format = incorrect_targets(roots)
    ctx.stats["trajectories_truncated_not_labelled"] += n_trunc
    ctx.stats["format_failures_not_labelled"] += n_format
    for r in roots:
        if r.is_format_failure:
            rejects.append(label_reject(ctx, "label_format_failure", r.sample_index,
                                        "no final answer: an outcome negative, not step-level evidence"))
    if labeler == "omegaprm":
        tree = OmegaPRMTree(ctx, config.omegaprm, first_discovered_index=first_discovered_index(item.trajectories))
        labelling = tree.run()
    else:
        labelling = mc_label(ctx, targets, k)
    want_values = config.compute_values and bool(targets)
    if want_values and config.overlap_values:
        sols, _ = yield from side_by_side(labelling, value_pass(targets, k))
    else:
        sols = yield from labelling
        if want_values:
            yield from value_pass(targets, k)
    value_targets = targets if want_values else []
    yield from verify_terminals(ctx, [s.steps for s in sols] + [list(t.steps) for t in value_targets], k)

    # -- rows, once, from the final evidence store --------------------------------
    label_rows: Dict[int, dict] = {}
    for sol in sols:
        row = _label_row(ctx, sol, labeler=labeler, params=params, root_value=root.value,
                         check_arithmetic=config.check_arithmetic, claims_over_evidence=config.claims_over_evidence)
        if row is None:
            ctx.stats["searches_unresolved"] += 1
            rejects.append(label_reject(ctx, f"label_{sol.note or 'unresolved'}", sol.sample_index,
                                        f"first error not decided (search bracket {sol.search})"))
            continue
        label_rows[sol.sample_index] = row
    preferences = step_pairs(ctx, sols, label_rows, labeler=labeler, limit=config.max_step_pairs_per_problem,
                             check_arithmetic=config.check_arithmetic, rejects=rejects)

    value_rows: List[dict] = []
    correct = [r for r in roots if r.verdict == VERDICT_CORRECT and not r.truncated]
    n_pit_pairs = 0
    for r in value_targets:
        steps = list(r.steps)
        measures = step_measures(ctx, steps, 0.0)
        vals = step_values(
            root.value, root.n_known,
            [(ms.value, ms.n_known, ms.n_correct) if ms.measured else None for ms in measures],
            best_of_k=config.best_of_k, z=config.noise_z, min_n=config.noise_min_n, c_root=root.n_correct,
        )
        ctx.stats["values_unmeasured"] += sum(not v.measured for v in vals)
        for v in vals:
            value_rows.append(rows.step_value_row(
                problem_id=ctx.problem_id, sample_index=r.sample_index, labeler=labeler,
                step_index=v.step_index, step=steps[v.step_index], q_value=v.q_value, advantage=v.advantage,
                measured=v.measured, n_rollouts=v.n_rollouts or 0, n_correct=v.n_correct,
                is_first_pit=v.is_first_pit, within_noise=v.within_noise, best_of_k_value=v.best_of_k_value,
                n_format_failure_rollouts=measures[v.step_index].n_format_failures,
                n_truncated_rollouts=measures[v.step_index].n_truncated,
            ))
        _count_format(ctx, measures)
        if n_pit_pairs >= config.max_first_pit_pairs_per_problem:
            continue
        pair = first_pit_pair(ctx, r, vals, correct, n_pit_pairs, labeler=labeler,
                              require_signal=config.first_pit_require_signal, rejects=rejects)
        if pair is not None:
            preferences.append(pair)
            n_pit_pairs += 1

    label_rollouts = sum(s.n_rollouts for s in sols)
    ctx.stats["label_rollouts"] += label_rollouts
    ctx.stats["value_rollouts"] += max(0, ctx.stats["rollouts"] - label_rollouts)
    ctx.stats["step_label_rows"] += len(label_rows)
    ctx.stats["step_value_rows"] += len(value_rows)
    ctx.stats["step_pairs"] += sum(p["pair_type"] == PAIR_STEP for p in preferences)
    ctx.stats["first_pit_pairs"] += sum(p["pair_type"] == PAIR_FIRST_PIT for p in preferences)
    return LabelingResult(ctx.problem_id, list(label_rows.values()), value_rows, preferences,
                          _stats(ctx, stats), rejects)


def _label_row(ctx: ProblemContext, sol: LabeledSolution, *, labeler: str, params: str, root_value: float,
               check_arithmetic: bool, claims_over_evidence: bool = False) -> Optional[dict]:
    """The step_labels row of one searched solution, or None when its first error is not decided."""
    steps = sol.steps
    m = len(steps)
    if m == 0 or sol.note in ("empty_rollout", "empty_solution"):
        return None
    decision = decide(
        m,
        sol.search,
        ctx.store.correct_depth(steps),
        terminal_wrong_step(ctx, steps),
        first_false_claim_step(steps) if check_arithmetic else None,
        claims_over_evidence,
    )
    sol.decision = decision
    if not decision.resolved:
        return None
    e = decision.index
    sol.first_error_index = e
    sol.resolved = True
    ctx.stats[f"first_error_from_{decision.source}"] += 1
    if decision.claim_overruled:
        ctx.stats["claims_overruled_by_evidence"] += 1
    measures = step_measures(ctx, steps, 0.0)
    _count_format(ctx, measures)
    values = [ms.value if ms.measured else None for ms in measures]
    return rows.step_label_row(
        problem_id=ctx.problem_id,
        sample_index=sol.sample_index,
        prompt=ctx.question,
        steps=steps,
        labels=[i < e for i in range(m)],
        mc_values=fill_mc_values(values, e, root_value),
        mc_measured=[ms.measured for ms in measures],
        n_rollouts_per_step=[ms.n_rollouts for ms in measures],
        first_error_index=e,
        first_error_source=decision.source,
        labeler=labeler,
        labeler_params=params,
        claim_overruled=decision.claim_overruled,
        n_format_failure_rollouts=sum(ms.n_format_failures for ms in measures),
        n_truncated_rollouts=sum(ms.n_truncated for ms in measures),
    )


def _count_format(ctx: ProblemContext, measures) -> None:
    """Run-level shares: rollouts behind row values, and how many of them were format failures /
    truncations (the summary reports ``format_failure_rollouts / row_rollouts``)."""
    ctx.stats["row_rollouts"] += sum(ms.n_rollouts for ms in measures)
    ctx.stats["row_format_failure_rollouts"] += sum(ms.n_format_failures for ms in measures)
    ctx.stats["row_truncated_rollouts"] += sum(ms.n_truncated for ms in measures)


def _stats(ctx: ProblemContext, extra: Mapping[str, Any]) -> Dict[str, Any]:
    base = {key: 0 for key in STATS_KEYS}
    base.update(ctx.stats)
    base.update(extra)
    return dict(base)


#: Counters the scheduler keeps per problem (what the engine did for it), final once the batch is done.
ENGINE_STATS_KEYS = ("rollouts", "rollout_tokens", "prompt_tokens", "cached_prompt_tokens", "requests", "unknown",
                     "truncated", "terminal_verifications", "prefetched", "prefetch_used", "prefetch_wasted",
                     "prefetch_wasted_tokens", "speculative_aborted")

#: Numeric stats every result carries (0 when nothing happened); see the README's labelling section.
STATS_KEYS = (
    "trajectories", "trajectories_truncated", "trajectories_unknown", "trajectories_truncated_not_labelled",
    "format_failures_not_labelled", "rollouts", "rollout_tokens", "prompt_tokens", "cached_prompt_tokens",
    "requests", "unknown", "truncated", "selections", "label_rollouts", "value_rollouts", "terminal_verifications",
    "unresolved_probes", "searches_unresolved", "step_label_rows", "step_value_rows", "step_pairs",
    "first_pit_pairs", "first_pit_is_last_step", "prefetched", "prefetch_used", "prefetch_wasted",
    "first_error_from_search", "first_error_from_evidence", "first_error_from_terminal", "first_error_from_claim",
    "first_error_from_verdict", "claims_overruled_by_evidence", "row_rollouts", "row_format_failure_rollouts",
    "row_truncated_rollouts", "prefetch_wasted_tokens", "speculative_aborted",
)


def label_problems(
    items: Sequence[ProblemForLabeling],
    generator: Generator,
    verify: VerifyFn,
    config: LabelerConfig,
    *,
    sampling: Optional[SamplingParams],
    on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_problem_done: Optional[Callable[[LabelingResult], None]] = None,
) -> List[LabelingResult]:
    """Labels every problem of ``items``; all their trees advance together through one scheduler.

    ``verify(items) -> List[Verdict]`` gets ``(assistant_text, gold_answer, truncated,
    answer_type)`` tuples (for rollouts, the text is prefix + continuation; for terminal
    prefixes, the prefix). ``sampling`` is the run's sampling: rollouts inherit it unless
    ``omegaprm.rollout_params`` is set. ``on_round`` receives each engine poll's stats;
    ``on_problem_done(result)`` is called as soon as a problem's rows are final (the
    batch-level ``rounds`` stat is filled in later). Generator errors propagate.
    """
    o = config.omegaprm
    params = o.effective_rollout_params(sampling)
    contexts = [make_context(it, o.min_known, config.rollout_format_failures) for it in items]

    def sync(i: int, result: LabelingResult) -> None:
        # Engine-side counters keep moving after a problem's rows are final: its unused prefetched
        # rollouts are discarded, and speculative requests still in flight may land later.
        for key in ENGINE_STATS_KEYS:
            result.stats[key] = contexts[i].stats[key]

    def done(i: int, result: LabelingResult) -> None:
        sync(i, result)
        if on_problem_done is not None:
            on_problem_done(result)

    scheduler = RoundScheduler(
        generator,
        verify,
        params,
        seed=config.seed,
        max_active=o.tree_cap,
        max_inflight_samples=o.max_inflight_samples,
        on_round=on_round,
        on_done=done,
    )
    tasks = [(ctx, problem_task(it, ctx, config, sampling)) for it, ctx in zip(items, contexts)]
    results = scheduler.run(tasks)
    for i, res in enumerate(results):
        sync(i, res)
        res.stats["rounds"] = len(scheduler.rounds)
    return results
