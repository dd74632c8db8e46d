"""Step-level preference pairs, built from the final evidence store (after every estimate is in).

* ``pair_type="step"`` (Step-DPO, Lai et al. 2024, at the first error): prompt =
  [system?, user]; ``prefix`` = the solution's steps before its first error ``e``;
  rejected = prefix + step ``e``; chosen = prefix + the next step of a
  verified-correct completion that shares all of ``steps[:e]`` (a rollout from that
  prefix or a sampled solution through it — the evidence trie), picked in
  canonical order (deepest origin first), skipping a step equal to the rejected
  one, a step with a false arithmetic claim, and a step that states an answer not
  verified correct. In DPO the prefix's log-ratio cancels, so this conversational
  layout is equivalent to Step-DPO's.
* ``pair_type="first_pit"`` (Setlur et al. 2024): chosen = a correct sampled
  solution, rejected = the wrong one cut after its first pit step; only when the
  pit's advantage is outside sampling noise (``first_pit_require_signal``) and the
  pit is not the last step (then "rejected" would be the whole wrong solution,
  i.e. an outcome pair: issue 9, defect 7).

Pairs that cannot be built are skipped, counted in ``ctx.stats`` and reported as
row-scope rejects; a step pair whose (chosen, rejected) repeats one already made for
the problem (two wrong solutions sharing the prefix and the wrong step) is
dropped the same way (``step_pair_duplicate``).

**Cut sides are continuations, not finished answers** (issue 15). A step pair's
chosen and rejected, and a first-pit pair's rejected, stop mid-solution. TRL's
DPOTrainer (1.x) renders a conversational chosen/rejected through the chat template,
which closes the assistant turn (end-of-turn / EOS token): trained that way, a half
solution is taught as a complete answer. The metadata of every pair says which
sides are cut (``"chosen_complete"``, ``"rejected_complete"``); a trainer export must
then render a cut side as a continuation — prompt = the conversation with the
assistant's text so far, completion = the rest without an end-of-turn (TRL's
prompt/completion form with ``continue_final_message``) — or drop the pair.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from counterpoint.labeling.advantages import StepValue
from counterpoint.labeling.arithmetic import false_claims
from counterpoint.labeling.common import LabeledSolution, prompt_messages
from counterpoint.labeling.scheduler import ProblemContext, Rollout
from counterpoint.schemas import records, rows
from counterpoint.schemas.records import PAIR_FIRST_PIT, PAIR_STEP, VERDICT_CORRECT
from counterpoint.segmentation import step_content


def label_reject(ctx: ProblemContext, reason: str, key: Any, detail: str) -> Dict[str, Any]:
    return records.make_reject(stage="label", reason=reason, problem_id=ctx.problem_id, scope="row",
                               detail=detail, key=key)


def _usable_chosen_step(ctx: ProblemContext, prefix: str, step: str, *, check_arithmetic: bool) -> bool:
    if check_arithmetic and false_claims(step):
        return False
    text = prefix + step
    if ctx.store.states_answer(text):
        v = ctx.store.verdict_of(text)
        return v is not None and v[0] == VERDICT_CORRECT
    return True


def step_pairs(ctx: ProblemContext, sols: Sequence[LabeledSolution], label_rows: Dict[int, dict], *,
               labeler: str, limit: int, check_arithmetic: bool, rejects: list) -> List[dict]:
    """Step-DPO pairs at the first error of each labelled solution (labelling order, up to ``limit``).

    Long: each skip rule of a Step-DPO pair is one counted, rejected branch.
    """
    out: List[dict] = []
    made = set()  # (chosen, rejected) of the pairs made so far: step pairs are distinct
    for sol in sols:
        if len(out) >= limit:
            break
        row = label_rows.get(sol.sample_index)
        if row is None or row["first_error_index"] is None:
            continue
        e = row["first_error_index"]
        prefix = "".join(sol.steps[:e])
        wrong = step_content(sol.steps[e])
        candidates = ctx.store.correct_next_steps(sol.steps[:e])
        if not candidates:
            ctx.stats["step_pairs_no_correct_continuation"] += 1
            rejects.append(label_reject(ctx, "step_pair_no_correct_continuation", sol.sample_index, f"first error {e}"))
            continue
        pick = None
        identical = 0
        for step, source in candidates:
            if step_content(step) == wrong:
                identical += 1
                continue
            if _usable_chosen_step(ctx, prefix, step, check_arithmetic=check_arithmetic):
                pick = (step, source)
                break
        if pick is None:
            reason = "step_pair_chosen_equals_rejected" if identical == len(candidates) else "step_pair_no_clean_continuation"
            ctx.stats[reason.replace("step_pair_", "step_pairs_")] += 1
            rejects.append(label_reject(ctx, reason, sol.sample_index, f"first error {e}"))
            continue
        step, source = pick
        if (prefix + step_content(step), prefix + wrong) in made:
            ctx.stats["step_pairs_duplicate"] += 1
            rejects.append(label_reject(ctx, "step_pair_duplicate", sol.sample_index,
                                        f"first error {e}: the same pair as an earlier solution's"))
            continue
        made.add((prefix + step_content(step), prefix + wrong))
        est = ctx.estimate(prefix)
        out.append(rows.preference_row(
            id=f"{ctx.problem_id}/step/{labeler}/s{sol.sample_index}",
            problem_id=ctx.problem_id,
            prompt=prompt_messages(ctx),
            chosen=prefix + step_content(step),
            rejected=prefix + wrong,
            pair_type=PAIR_STEP,
            chosen_sample_index=source.sample_index,
            rejected_sample_index=sol.sample_index,
            step_index=e,
            prefix=prefix,
            labeler=labeler,
            metadata={
                "policy": "step_dpo_first_error",
                "n_rollouts": row["n_rollouts"],
                "prefix_mc": None if est is None else est.value,
                "prefix_rollouts": ctx.held(prefix),
                "chosen_source": "sampled" if source.sample_index is not None else "rollout",
                "rejected_sampled": sol.sampled,
                "first_error_source": row["first_error_source"],
                "chosen_complete": ctx.store.states_answer(prefix + step),
                "rejected_complete": e == len(sol.steps) - 1,
            },
        ))
    return out


def first_pit_pair(ctx: ProblemContext, target: Rollout, vals: Sequence[StepValue], correct: Sequence[Rollout],
                   n_made: int, *, labeler: str, require_signal: bool, rejects: list) -> Optional[dict]:
    """The first-pit pair of one wrong sampled solution, or None (counted, and a reject where it is a defect)."""
    pit = next((v for v in vals if v.is_first_pit), None)
    if pit is None:
        return None
    steps = list(target.steps or ())
    if pit.step_index == len(steps) - 1:
        ctx.stats["first_pit_is_last_step"] += 1
        rejects.append(label_reject(ctx, "first_pit_is_last_step", target.sample_index,
                                    f"pit {pit.step_index}: rejected would be the whole solution (an outcome pair)"))
        return None
    if not correct:
        ctx.stats["first_pit_no_correct_solution"] += 1
        return None
    if pit.within_noise and require_signal:
        ctx.stats["first_pit_within_noise"] += 1
        return None
    chosen = correct[n_made % len(correct)]
    rejected_text = "".join(steps[: pit.step_index + 1]).rstrip()
    if chosen.text == rejected_text or not rejected_text:
        ctx.stats["first_pit_identical"] += 1
        rejects.append(label_reject(ctx, "first_pit_chosen_equals_rejected", target.sample_index, f"pit {pit.step_index}"))
        return None
    return rows.preference_row(
        id=f"{ctx.problem_id}/first_pit/{labeler}/s{target.sample_index}-s{chosen.sample_index}",
        problem_id=ctx.problem_id,
        prompt=prompt_messages(ctx),
        chosen=chosen.text,
        rejected=rejected_text,
        pair_type=PAIR_FIRST_PIT,
        chosen_sample_index=chosen.sample_index,
        rejected_sample_index=target.sample_index,
        step_index=pit.step_index,
        prefix=None,
        labeler=labeler,
        metadata={
            "policy": "first_pit",
            "pit_q": pit.q_value,
            "pit_advantage": pit.advantage,
            "within_noise": pit.within_noise,
            "n_rollouts": sum(v.n_rollouts or 0 for v in vals if v.measured),
            "chosen_complete": True,
            "rejected_complete": False,  # cut after the pit (never the last step: see above)
        },
    )
