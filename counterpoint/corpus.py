"""Beam-free building blocks of a corpus: trajectory rows, verdicts, outcome pairs.

A problem travels through the pipeline as one :class:`counterpoint.state.ProblemState`;
the functions here build its rows and return new rows / states (inputs are never changed).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

from counterpoint import schemas
from counterpoint.generators.base import Completion, GenerationRequest, SamplingParams
from counterpoint.schemas import records
from counterpoint.schemas.rows import preference_row
from counterpoint.segmentation import segment
from counterpoint import state as state_mod
from counterpoint.state import ProblemState

ROW_CONFIGS = state_mod.ROW_CONFIGS
new_state = state_mod.new_state


def request_seed(run_seed: int, problem_id: str) -> int:
    """Per-problem seed, stable across runs and independent of batching."""
    return int(schemas.content_id("sample", run_seed, problem_id, length=8), 16) & 0x7FFFFFFF


def prompt_messages(system_prompt: Optional[str], question: str) -> List[Dict[str, str]]:
    msgs = [("system", system_prompt)] if system_prompt else []
    return records.messages(*msgs, ("user", question))


def sample_request(problem: Dict[str, Any], *, system_prompt: Optional[str], n: int,
                   params: SamplingParams, run_seed: int) -> GenerationRequest:
    return GenerationRequest.chat(
        system_prompt, problem["question"], n=n, params=params,
        seed=request_seed(run_seed, problem["problem_id"]), request_id=problem["problem_id"],
    )


def trajectory_rows(problem: Dict[str, Any], completions: Sequence[Completion], *,
                    request: GenerationRequest, model_id: str, segmentation: str) -> List[Dict[str, Any]]:
    """Unverified trajectory rows (verdict fields are filled by :func:`apply_verdicts`)."""
    sampling = schemas.dumps(request.params.to_dict())
    prompt = request.message_dicts()
    rows = []
    for i, comp in enumerate(completions):
        steps = segment(comp.text, segmentation)
        rows.append({
            "id": schemas.trajectory_id(problem["problem_id"], i),
            "problem_id": problem["problem_id"],
            "sample_index": i,
            "source": problem["source"],
            "question": problem["question"],
            "prompt": prompt,
            "completion": comp.text,
            "steps": steps,
            "num_steps": len(steps),
            "final_answer": None,
            "gold_answer": problem["gold_answer"],
            "verdict": records.VERDICT_UNKNOWN,
            "verdict_reason": "not_verified",
            "verifier": "",
            "verifier_version": "",
            "finish_reason": comp.finish_reason if comp.finish_reason in records.FINISH_REASONS else "abort",
            "num_prompt_tokens": comp.num_prompt_tokens,
            "num_generated_tokens": comp.num_tokens,
            "cumulative_logprob": comp.cumulative_logprob,
            "model_id": model_id,
            "sampling": sampling,
            "seed": request.seed,
        })
    return rows


def apply_verdicts(rows: Sequence[Dict[str, Any]], verdicts, *, verifier_name: str,
                   verifier_version: str) -> List[Dict[str, Any]]:
    """New trajectory rows with the verdict fields filled in (``rows`` are left as they were)."""
    return [dict(row, final_answer=v.final_answer, verdict=v.verdict, verdict_reason=v.reason,
                 verifier=verifier_name, verifier_version=verifier_version)
            for row, v in zip(rows, verdicts)]


def _round_robin_pairs(chosen: Sequence[Dict], rejected: Sequence[Dict], cap: int):
    """Distinct (chosen, rejected) pairs, spreading both sides before repeating either.

    Pairs whose two completions are the same text are skipped without using up ``cap``.
    """
    if not chosen or not rejected or cap <= 0:
        return []
    pairs, seen = [], set()
    # Diagonals of the grid visit every row and column once before reusing any.
    for offset in range(len(rejected)):
        for i in range(len(chosen)):
            j = (i + offset) % len(rejected)
            if (i, j) not in seen:
                seen.add((i, j))
                if chosen[i]["completion"] == rejected[j]["completion"]:
                    continue
                pairs.append((chosen[i], rejected[j]))
                if len(pairs) >= cap:
                    return pairs
    return pairs


def outcome_rows(state: ProblemState, *, max_pairs_per_problem: int, truncated_as_rejected: bool = True) -> ProblemState:
    """A new state with outcome preference pairs and unpaired rows from the verified trajectories.

    Input: ``state.trajectories`` with verdicts. Output: ``preferences``
    (pair_type "outcome": chosen = a correct sample, rejected = an incorrect one,
    round-robin, at most ``max_pairs_per_problem``) and ``unpaired`` (label =
    verdict is correct). Unknown verdicts never become negatives and appear in
    neither; truncated samples are never positives.
    """
    trajectories = state.trajectories
    preferences: List[Dict[str, Any]] = []
    unpaired: List[Dict[str, Any]] = []
    correct = [t for t in trajectories if t["verdict"] == records.VERDICT_CORRECT and t["finish_reason"] != "length"]
    incorrect = [
        t for t in trajectories
        if t["verdict"] == records.VERDICT_INCORRECT and (truncated_as_rejected or t["finish_reason"] != "length")
    ]
    # Shorter correct solutions first: a deterministic, mild preference for concision.
    correct.sort(key=lambda t: (t["num_generated_tokens"], t["sample_index"]))
    for chosen, rejected in _round_robin_pairs(correct, incorrect, max_pairs_per_problem):
        preferences.append(preference_row(
            id=f"{chosen['problem_id']}/outcome/{chosen['sample_index']}-{rejected['sample_index']}",
            problem_id=chosen["problem_id"], prompt=chosen["prompt"],
            chosen=chosen["completion"], rejected=rejected["completion"], pair_type=records.PAIR_OUTCOME,
            chosen_sample_index=chosen["sample_index"], rejected_sample_index=rejected["sample_index"],
            metadata={"policy": "round_robin", "max_pairs_per_problem": max_pairs_per_problem,
                      "rejected_verdict_reason": rejected["verdict_reason"]},
        ))
    for t in trajectories:
        if t["verdict"] == records.VERDICT_UNKNOWN:
            continue
        label = t["verdict"] == records.VERDICT_CORRECT and t["finish_reason"] != "length"
        unpaired.append({
            "id": t["id"],
            "problem_id": t["problem_id"],
            "sample_index": t["sample_index"],
            "prompt": t["prompt"],
            "completion": records.messages(("assistant", t["completion"])),
            "label": label,
        })
    return state.evolve(preferences=list(state.preferences) + preferences, unpaired=list(state.unpaired) + unpaired)


def rows_for(config: str, states: Iterable[ProblemState]) -> Iterable[Dict[str, Any]]:
    spec = schemas.table(config)
    for state in states:
        for row in state.rows(config):
            yield spec.conform(row)
