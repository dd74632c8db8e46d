"""The one home of row builders for the trainer-facing configs built from solutions.

``preference_row`` (outcome, step and first-pit pairs), ``step_label_row`` and
``step_value_row`` spell each layout out once; callers pass values, never column
lists. Every builder returns a row conformed to its :class:`TableSpec` (a missing
required field fails here, at the builder, not in the writer).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from counterpoint.schemas import records
from counterpoint.segmentation import step_content

Messages = List[Dict[str, str]]


def _assistant(content: Union[str, Messages]) -> Messages:
    return [{"role": "assistant", "content": content}] if isinstance(content, str) else list(content)


def step_label_id(problem_id: str, sample_index: int, labeler: str) -> str:
    return f"{problem_id}/s{sample_index}/{labeler}"


def preference_row(
    *,
    id: str,
    problem_id: str,
    prompt: Messages,
    chosen: Union[str, Messages],
    rejected: Union[str, Messages],
    pair_type: str,
    rejected_sample_index: int,
    chosen_sample_index: Optional[int] = None,
    step_index: Optional[int] = None,
    prefix: Optional[str] = None,
    labeler: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    chosen_source: str = records.CHOSEN_POLICY,
) -> Dict[str, Any]:
    """A ``preferences`` row (TRL conversational DPO). ``chosen``/``rejected`` given as a string are
    one assistant message; ``metadata`` is stored as canonical JSON."""
    if pair_type not in records.PAIR_TYPES:
        raise ValueError(f"pair_type must be one of {records.PAIR_TYPES}, got {pair_type!r}")
    return records.PREFERENCES.conform(
        {
            "id": id,
            "problem_id": problem_id,
            "prompt": list(prompt),
            "chosen": _assistant(chosen),
            "rejected": _assistant(rejected),
            "pair_type": pair_type,
            "chosen_source": chosen_source,
            "chosen_sample_index": chosen_sample_index,
            "rejected_sample_index": rejected_sample_index,
            "step_index": step_index,
            "prefix": prefix,
            "labeler": labeler,
            "metadata": None if metadata is None else records.dumps(dict(metadata)),
        }
    )


def step_label_row(
    *,
    problem_id: str,
    sample_index: int,
    prompt: str,
    steps: Sequence[str],
    labels: Sequence[bool],
    mc_values: Sequence[float],
    mc_measured: Sequence[bool],
    n_rollouts_per_step: Sequence[int],
    first_error_index: Optional[int],
    first_error_source: Optional[str],
    labeler: str,
    labeler_params: str,
    judge_first_error_index: Optional[int] = None,
    judge_agrees: Optional[bool] = None,
    claim_overruled: Optional[bool] = None,
    n_format_failure_rollouts: Optional[int] = None,
    n_truncated_rollouts: Optional[int] = None,
) -> Dict[str, Any]:
    """A ``step_labels`` row (TRL stepwise supervision). ``steps`` are the raw segments; the row holds
    their stripped contents. ``n_rollouts`` is the sum of ``n_rollouts_per_step``."""
    m = len(steps)
    for name, col in (("labels", labels), ("mc_values", mc_values), ("mc_measured", mc_measured),
                      ("n_rollouts_per_step", n_rollouts_per_step)):
        if len(col) != m:
            raise ValueError(f"step_labels.{name} has {len(col)} entries for {m} steps")
    return records.STEP_LABELS.conform(
        {
            "id": step_label_id(problem_id, sample_index, labeler),
            "problem_id": problem_id,
            "sample_index": sample_index,
            "prompt": prompt,
            "completions": [step_content(s) for s in steps],
            "labels": [bool(x) for x in labels],
            "mc_values": [float(x) for x in mc_values],
            "mc_measured": [bool(x) for x in mc_measured],
            "n_rollouts_per_step": [int(x) for x in n_rollouts_per_step],
            "first_error_index": first_error_index,
            "first_error_source": first_error_source,
            "n_rollouts": int(sum(n_rollouts_per_step)),
            "labeler": labeler,
            "labeler_params": labeler_params,
            "judge_first_error_index": judge_first_error_index,
            "judge_agrees": judge_agrees,
            "claim_overruled": claim_overruled,
            "n_format_failure_rollouts": n_format_failure_rollouts,
            "n_truncated_rollouts": n_truncated_rollouts,
        }
    )


def step_value_row(
    *,
    problem_id: str,
    sample_index: int,
    labeler: str,
    step_index: int,
    step: str,
    q_value: Optional[float],
    advantage: Optional[float],
    measured: bool,
    n_rollouts: int,
    n_correct: int,
    is_first_pit: bool,
    within_noise: bool,
    best_of_k_value: Optional[float] = None,
    n_format_failure_rollouts: Optional[int] = None,
    n_truncated_rollouts: Optional[int] = None,
) -> Dict[str, Any]:
    """A ``step_values`` row. Unmeasured steps have ``measured=False`` and null ``q_value``/``advantage``."""
    if not measured and (q_value is not None or advantage is not None):
        raise ValueError("an unmeasured step has no q_value / advantage")
    return records.STEP_VALUES.conform(
        {
            "id": f"{step_label_id(problem_id, sample_index, labeler)}/t{step_index}",
            "problem_id": problem_id,
            "sample_index": sample_index,
            "step_index": step_index,
            "step": step_content(step),
            "q_value": q_value,
            "advantage": advantage,
            "measured": bool(measured),
            "n_rollouts": int(n_rollouts),
            "n_correct": int(n_correct),
            "is_first_pit": bool(is_first_pit),
            "within_noise": bool(within_noise),
            "best_of_k_value": best_of_k_value,
            "labeler": labeler,
            "n_format_failure_rollouts": n_format_failure_rollouts,
            "n_truncated_rollouts": n_truncated_rollouts,
        }
    )
