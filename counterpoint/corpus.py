"""Beam-free building blocks of a corpus: trajectory rows, verdicts, outcome pairs.

A problem travels through the pipeline as one :class:`counterpoint.state.ProblemState`;
the functions here build its rows and return new rows / states (inputs are never changed).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

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
            "duplicate_of": None,  # set by the clean stage (counterpoint.clean.dedup)
            "process_error": False,  # set by the clean stage for verified-correct rows
        })
    return rows


def apply_verdicts(rows: Sequence[Dict[str, Any]], verdicts, *, verifier_name: str,
                   verifier_version: str) -> List[Dict[str, Any]]:
    """New trajectory rows with the verdict fields filled in (``rows`` are left as they were)."""
    return [dict(row, final_answer=v.final_answer, verdict=v.verdict, verdict_reason=v.reason,
                 verifier=verifier_name, verifier_version=verifier_version)
            for row, v in zip(rows, verdicts)]


def clean_trajectories(rows: Sequence[Dict[str, Any]], dedup) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    """Verified rows with ``process_error`` (correct rows whose steps hold a false arithmetic claim) and
    ``duplicate_of`` (``dedup``: a :class:`counterpoint.clean.dedup.DedupConfig`, or None for no dedup) set."""
    from counterpoint.clean.dedup import dedup_rows
    from counterpoint.clean.pairing import has_process_error

    rows = [dict(r, process_error=r["verdict"] == records.VERDICT_CORRECT and has_process_error(r["steps"]),
                 duplicate_of=None) for r in rows]
    counts = {"exact": 0, "near": 0}
    if dedup is not None:
        rows, counts = dedup_rows(rows, dedup)
    return rows, {"clean_duplicates_exact": counts["exact"], "clean_duplicates_near": counts["near"]}


def reference_trajectory(state: ProblemState, segmentation: str) -> Optional[Dict[str, Any]]:
    """The source's reference solution as an unverified trajectory-like row (None without one, or when a step
    holds a false arithmetic claim). It is no sample: ``sample_index`` -1, never written to ``trajectories``."""
    from counterpoint.clean.pairing import has_process_error, reference_solution

    text = reference_solution(state.problem)
    if text is None or not state.trajectories:
        return None
    steps = segment(text, segmentation)
    if has_process_error(steps):
        return None
    p = state.problem
    return {"id": f"{p['problem_id']}/reference", "problem_id": p["problem_id"], "sample_index": -1,
            "prompt": state.trajectories[0]["prompt"], "completion": text, "steps": steps,
            "gold_answer": p["gold_answer"], "answer_type": p["answer_type"], "finish_reason": "stop",
            "num_generated_tokens": 0, "process_error": False, "duplicate_of": None}


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


def positive(t: Dict[str, Any]) -> bool:
    """A trajectory that may be a positive: verified correct, not truncated, no false arithmetic claim."""
    return (t["verdict"] == records.VERDICT_CORRECT and t["finish_reason"] != "length"
            and not t.get("process_error"))


def outcome_rows(state: ProblemState, *, max_pairs_per_problem: int, truncated_as_rejected: bool = True,
                 strategy: str = "nearest", reference: Optional[Dict[str, Any]] = None) -> ProblemState:
    """A new state with outcome preference pairs and unpaired rows from the verified trajectories.

    Input: ``state.trajectories`` with verdicts (and, after the clean stage, ``duplicate_of`` /
    ``process_error``). Output: ``preferences`` (pair_type "outcome": chosen = a :func:`positive` sample,
    rejected = an incorrect one that is no suspect negative, paired ``strategy`` = ``nearest`` (near-miss,
    counterpoint.clean.pairing) or ``round-robin``, at most ``max_pairs_per_problem``) and ``unpaired``
    (label = :func:`positive`). Unknown verdicts, duplicates (``duplicate_of`` set) and suspect negatives
    appear in neither; truncated samples and process-error samples are never positives. ``reference``
    (a verified reference trajectory, see :func:`counterpoint.clean.pairing.reference_solution`) is the
    chosen side when no sample is a positive (``chosen_source: reference``; off-policy).
    """
    from counterpoint.clean.pairing import nearest_pairs, suspect_negative

    live = [t for t in state.trajectories if not t.get("duplicate_of")]
    suspect = {t["id"] for t in live if t["verdict"] == records.VERDICT_INCORRECT and suspect_negative(t)}
    correct = [t for t in live if positive(t)]
    incorrect = [t for t in live if t["verdict"] == records.VERDICT_INCORRECT and t["id"] not in suspect
                 and (truncated_as_rejected or t["finish_reason"] != "length")]
    source = "policy"
    if not correct and reference is not None:
        correct, source = [reference], "reference"
    # Shorter correct solutions first: a deterministic, mild preference for concision.
    correct.sort(key=lambda t: (t["num_generated_tokens"], t["sample_index"]))
    pick = nearest_pairs if strategy == "nearest" else _round_robin_pairs
    preferences = [_outcome_pair(c, r, strategy, max_pairs_per_problem, source)
                   for c, r in pick(correct, incorrect, max_pairs_per_problem)]
    # Unpaired (KTO) rows: every live verified sample but suspect negatives and process-error ones.
    unpaired = [{
        "id": t["id"], "problem_id": t["problem_id"], "sample_index": t["sample_index"], "prompt": t["prompt"],
        "completion": records.messages(("assistant", t["completion"])), "label": positive(t),
    } for t in live if t["verdict"] != records.VERDICT_UNKNOWN and t["id"] not in suspect
        and not t.get("process_error")]
    stats = _clean_stats(state.trajectories, len(suspect), max_pairs_per_problem, len(preferences), source)
    return state.evolve(preferences=list(state.preferences) + preferences,
                        unpaired=list(state.unpaired) + unpaired).add_stats(**stats)


def _outcome_pair(chosen: Dict[str, Any], rejected: Dict[str, Any], strategy: str, cap: int,
                  source: str) -> Dict[str, Any]:
    ref = source == "reference"
    return preference_row(
        id=f"{chosen['problem_id']}/outcome/{'ref' if ref else chosen['sample_index']}-{rejected['sample_index']}",
        problem_id=chosen["problem_id"], prompt=chosen["prompt"],
        chosen=chosen["completion"], rejected=rejected["completion"], pair_type=records.PAIR_OUTCOME,
        chosen_sample_index=None if ref else chosen["sample_index"], rejected_sample_index=rejected["sample_index"],
        chosen_source=source,
        metadata={"policy": strategy.replace("-", "_"), "max_pairs_per_problem": cap,
                  "rejected_verdict_reason": rejected["verdict_reason"]},
    )


def _clean_stats(trajectories, suspect: int, cap: int, made: int, source: str) -> Dict[str, float]:
    """Per-problem counts for the summary: guards applied and outcome pairs they kept from being made."""
    raw_c = sum(t["verdict"] == records.VERDICT_CORRECT and t["finish_reason"] != "length" for t in trajectories)
    raw_r = sum(t["verdict"] == records.VERDICT_INCORRECT for t in trajectories)
    would = min(max(cap, 0), raw_c * raw_r)
    return {
        "clean_process_error_positives": sum(bool(t.get("process_error")) for t in trajectories),
        "clean_suspect_negatives": suspect,
        "clean_pairs_avoided": max(0, would - made) if source == "policy" else 0,
        "clean_reference_chosen_pairs": made if source == "reference" else 0,
    }


def rows_for(config: str, states: Iterable[ProblemState]) -> Iterable[Dict[str, Any]]:
    spec = schemas.table(config)
    for state in states:
        for row in state.rows(config):
            yield spec.conform(row)
