"""Row transforms from a Counterpoint output's configs to trainer-ready export rows (Beam-free, pure).

Every builder takes plain ``dict`` rows (as ``pyarrow.Table.to_pylist()`` gives
them; columns are read by name) and returns an :class:`ExportRows`: the export
rows, conformed to their ``TableSpec`` (:mod:`counterpoint.schemas.exports`),
and a ``rejects`` row (stage ``write``, reason ``export_*``) for every source row
that could not be exported. Rows are sorted by ``id`` so an export does not
depend on how its source was sharded.

* :func:`trl_stepwise_rows` (``step_labels`` -> ``trl_stepwise``): TRL's
  stepwise supervision (prompt / completions / labels) for TRL <= 1.13's
  ``PRMTrainer`` (process supervision, Uesato et al. 2022).
* :func:`openrlhf_prm_rows` (``step_labels`` -> ``openrlhf_prm``): Math-Shepherd
  (Wang et al. 2024) placeholder format of OpenRLHF's ``train_prm``.
* :func:`step_dpo_rows` (``preferences`` step pairs -> ``step_dpo``): Step-DPO
  (Lai et al. 2024) with the correct prefix in the prompt.
* :func:`weighted_pair_rows` (``preferences`` + ``step_values`` + ``step_labels``
  -> ``weighted_pairs``): per-pair weights from the per-step advantage of
  Setlur et al. 2024 (formula in ``exports.WEIGHT_FORMULA``).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from counterpoint.schemas import exports, records

Row = Dict[str, Any]


@dataclasses.dataclass
class ExportRows:
    config: str
    rows: List[Row]
    rejects: List[Row] = dataclasses.field(default_factory=list)
    # Source rows that are not this export's kind (e.g. outcome pairs for step_dpo): not errors.
    not_applicable: int = 0
    # Source rows left out on purpose, by reason (issue 19 formats: unknown verdicts, duplicates, ...).
    skipped: Dict[str, int] = dataclasses.field(default_factory=dict)

    def rejects_by_reason(self) -> Dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejects))


def _reject(reason: str, row: Mapping[str, Any], detail: str) -> Row:
    return records.make_reject(
        stage="write", reason=reason, problem_id=row.get("problem_id"), scope="row", detail=detail,
        payload={"id": row.get("id")}, key=row.get("id"),
    )


def _sorted(spec: records.TableSpec, rows: Iterable[Row]) -> List[Row]:
    return sorted((spec.conform(r) for r in rows), key=lambda r: r["id"])


# ---------------------------------------------------------------------------
# step_labels -> trl_stepwise
# ---------------------------------------------------------------------------
def trl_stepwise_rows(step_labels: Iterable[Mapping[str, Any]]) -> ExportRows:
    """``step_labels`` rows -> ``trl_stepwise`` rows (id, prompt, completions, labels).

    A row without steps is rejected (``export_no_steps``): PRMTrainer would train on nothing.
    """
    rows, rejects = [], []
    for r in step_labels:
        if not r["completions"]:
            rejects.append(_reject("export_no_steps", r, "step_labels row has no steps"))
            continue
        rows.append({"id": r["id"], "prompt": r["prompt"], "completions": list(r["completions"]),
                     "labels": [bool(x) for x in r["labels"]]})
    return ExportRows(exports.TRL_STEPWISE.name, _sorted(exports.TRL_STEPWISE, rows), rejects)


# ---------------------------------------------------------------------------
# step_labels -> openrlhf_prm
# ---------------------------------------------------------------------------
def check_placeholder(placeholder: str, reward_tokens: Sequence[str] = exports.REWARD_TOKENS) -> None:
    """Raises ``ValueError`` for a placeholder OpenRLHF could not find reliably in the text."""
    if not placeholder or placeholder != placeholder.strip():
        raise ValueError(f"placeholder must be non-empty without surrounding whitespace, got {placeholder!r}")
    if placeholder in reward_tokens:
        raise ValueError(f"placeholder {placeholder!r} must differ from the reward tokens {list(reward_tokens)}")
    if len(reward_tokens) != 2 or len(set(reward_tokens)) != 2:
        raise ValueError(f"reward_tokens must be two distinct tokens (positive, negative), got {list(reward_tokens)}")


def openrlhf_input(question: str, steps: Sequence[str], placeholder: str) -> str:
    """``question`` + newline + every step followed by ``' ' + placeholder``, steps joined by newlines."""
    return question + "\n" + "\n".join(f"{step} {placeholder}" for step in steps)


def openrlhf_prm_rows(
    step_labels: Iterable[Mapping[str, Any]],
    *,
    placeholder: str = exports.DEFAULT_PLACEHOLDER,
    reward_tokens: Sequence[str] = exports.REWARD_TOKENS,
) -> ExportRows:
    """``step_labels`` rows -> ``openrlhf_prm`` rows (OpenRLHF ``ProcessRewardDataset`` layout).

    ``label`` holds ``reward_tokens[0]`` for a correct step and ``reward_tokens[1]`` for a
    wrong one; ``soft_label`` the step prefix's Monte Carlo value (``mc_values``). OpenRLHF
    labels the i-th placeholder token of the tokenized ``input`` with the i-th label, so a
    row whose question or steps already contain the placeholder is rejected
    (``export_placeholder_in_text``), as is a row without steps (``export_no_steps``).
    """
    check_placeholder(placeholder, reward_tokens)
    positive, negative = reward_tokens
    rows, rejects = [], []
    for r in step_labels:
        steps = list(r["completions"])
        if not steps:
            rejects.append(_reject("export_no_steps", r, "step_labels row has no steps"))
            continue
        if placeholder in r["prompt"] or any(placeholder in s for s in steps):
            rejects.append(_reject("export_placeholder_in_text", r,
                                   f"the text already contains the placeholder {placeholder!r}"))
            continue
        rows.append({
            "id": r["id"],
            "problem_id": r["problem_id"],
            "sample_index": r["sample_index"],
            "input": openrlhf_input(r["prompt"], steps, placeholder),
            "label": [positive if ok else negative for ok in r["labels"]],
            "soft_label": [float(v) for v in r["mc_values"]],
            "placeholder": placeholder,
        })
    return ExportRows(exports.OPENRLHF_PRM.name, _sorted(exports.OPENRLHF_PRM, rows), rejects)


# ---------------------------------------------------------------------------
# preferences (step pairs) -> step_dpo
# ---------------------------------------------------------------------------
def _single_assistant_text(msgs: Optional[Sequence[Mapping[str, Any]]]) -> Optional[str]:
    if not msgs or len(msgs) != 1 or msgs[0].get("role") != "assistant":
        return None
    return msgs[0].get("content")


def step_dpo_rows(preferences: Iterable[Mapping[str, Any]]) -> ExportRows:
    """``preferences`` rows with ``pair_type == "step"`` -> ``step_dpo`` rows.

    A step pair's ``chosen`` / ``rejected`` are ``prefix + step`` (one assistant message
    each); the export moves the prefix into the prompt as a final partial assistant
    message (none when the prefix is empty) and keeps only the step in each completion.
    Rejects: ``export_step_pair_malformed`` (not one assistant message each, or no
    ``step_index``), ``export_step_pair_prefix_mismatch`` (a completion does not start
    with ``prefix``), ``export_step_pair_empty_step``, ``export_step_pair_chosen_equals_rejected``.
    """
    rows, rejects, other = [], [], 0
    for r in preferences:
        if r["pair_type"] != records.PAIR_STEP:
            other += 1
            continue
        chosen, rejected = _single_assistant_text(r["chosen"]), _single_assistant_text(r["rejected"])
        if chosen is None or rejected is None or r["step_index"] is None:
            rejects.append(_reject("export_step_pair_malformed", r,
                                   "expected one assistant message in chosen and in rejected, and a step_index"))
            continue
        prefix = r["prefix"] or ""
        if not (chosen.startswith(prefix) and rejected.startswith(prefix)):
            rejects.append(_reject("export_step_pair_prefix_mismatch", r,
                                   "chosen or rejected does not start with the pair's prefix"))
            continue
        chosen_step, rejected_step = chosen[len(prefix):], rejected[len(prefix):]
        if not chosen_step.strip() or not rejected_step.strip():
            rejects.append(_reject("export_step_pair_empty_step", r, "no step after the prefix"))
            continue
        if chosen_step == rejected_step:
            rejects.append(_reject("export_step_pair_chosen_equals_rejected", r, "the two next steps are equal"))
            continue
        prompt = [dict(m) for m in r["prompt"]]
        if prefix:
            prompt.append({"role": "assistant", "content": prefix})
        rows.append({
            "id": r["id"],
            "problem_id": r["problem_id"],
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen_step}],
            "rejected": [{"role": "assistant", "content": rejected_step}],
            "prefix": prefix,
            "step_index": r["step_index"],
            "chosen_sample_index": r["chosen_sample_index"],
            "rejected_sample_index": r["rejected_sample_index"],
            "labeler": r["labeler"],
            "metadata": r["metadata"],
        })
    return ExportRows(exports.STEP_DPO.name, _sorted(exports.STEP_DPO, rows), rejects, not_applicable=other)


# ---------------------------------------------------------------------------
# preferences (+ step_values, step_labels) -> weighted_pairs
# ---------------------------------------------------------------------------
def _clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _metadata_number(metadata: Optional[str], key: str) -> Optional[float]:
    if not metadata:
        return None
    try:
        value = json.loads(metadata).get(key)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pick(candidates: Sequence[Row], labeler: Optional[str]) -> Optional[Row]:
    """The candidate row of the pair's labeller (or the only candidate when the pair names none)."""
    if labeler is not None:
        return next((c for c in candidates if c.get("labeler") == labeler), None)
    return candidates[0] if len(candidates) == 1 else None


def pair_weight(
    pair: Mapping[str, Any],
    values_by_step: Mapping[Tuple[str, int, int], Sequence[Row]],
    labels_by_sample: Mapping[Tuple[str, int], Sequence[Row]],
    default_weight: float = 1.0,
) -> Tuple[float, str]:
    """``(weight, weight_source)`` of one preference pair; see ``exports.WEIGHT_FORMULA``."""
    e = pair["step_index"]
    if pair["pair_type"] == records.PAIR_OUTCOME or e is None:
        return float(default_weight), exports.WEIGHT_DEFAULT
    key = (pair["problem_id"], pair["rejected_sample_index"])
    value_row = _pick(values_by_step.get((*key, e), ()), pair["labeler"])
    if value_row is not None:
        return _clip01(-value_row["advantage"]), exports.WEIGHT_ADVANTAGE
    label_row = _pick(labels_by_sample.get(key, ()), pair["labeler"])
    if label_row is not None and e < len(label_row["mc_values"]):
        mc = label_row["mc_values"]
        before = mc[e - 1] if e >= 1 else _metadata_number(pair["metadata"], "prefix_mc")
        if before is not None:
            return _clip01(before - mc[e]), exports.WEIGHT_MC_GAP
    return float(default_weight), exports.WEIGHT_DEFAULT


def weighted_pair_rows(
    preferences: Iterable[Mapping[str, Any]],
    step_values: Iterable[Mapping[str, Any]] = (),
    step_labels: Iterable[Mapping[str, Any]] = (),
    *,
    default_weight: float = 1.0,
) -> ExportRows:
    """``preferences`` rows -> ``weighted_pairs`` rows (every column of the pair + weight, weight_source).

    Step and first-pit pairs join ``step_values`` on (problem_id, rejected_sample_index,
    step_index) and ``step_labels`` on (problem_id, rejected_sample_index), each
    restricted to the pair's labeller. No pair is dropped.
    """
    if not 0.0 <= default_weight <= 1.0:
        raise ValueError(f"default_weight must be in [0, 1], got {default_weight}")
    values_by_step: Dict[Tuple[str, int, int], List[Row]] = {}
    for v in step_values:
        values_by_step.setdefault((v["problem_id"], v["sample_index"], v["step_index"]), []).append(v)
    labels_by_sample: Dict[Tuple[str, int], List[Row]] = {}
    for s in step_labels:
        labels_by_sample.setdefault((s["problem_id"], s["sample_index"]), []).append(s)
    rows = []
    for p in preferences:
        weight, source = pair_weight(p, values_by_step, labels_by_sample, default_weight)
        rows.append({**p, "weight": weight, "weight_source": source})
    return ExportRows(exports.WEIGHTED_PAIRS.name, _sorted(exports.WEIGHTED_PAIRS, rows))


# ---------------------------------------------------------------------------
# corrections -> correction_sft / correction_dpo (issue 22)
# ---------------------------------------------------------------------------
def _correction_prompt(r: Mapping[str, Any]) -> List[Row]:
    """The chat, then the assistant's partial turn: its steps through the wrong one and the cue."""
    from counterpoint.labeling.corrections import SEPARATOR

    return [dict(m) for m in r["prompt"]] + [{"role": "assistant", "content": r["prefix"] + SEPARATOR + r["cue"]}]


def correction_sft_rows(corrections: Iterable[Mapping[str, Any]]) -> ExportRows:
    """Kept ``corrections`` rows -> ``correction_sft`` rows (prompt with the mistake, completion = the correction).

    Rows that are no verified correction are not of this kind; reject: ``export_correction_empty``.
    """
    rows, rejects, other = [], [], 0
    for r in corrections:
        if not r["kept"]:
            other += 1
            continue
        if not r["correction"].strip():
            rejects.append(_reject("export_correction_empty", r, "the kept correction is empty"))
            continue
        rows.append({"id": r["id"], "problem_id": r["problem_id"], "prompt": _correction_prompt(r),
                     "completion": [{"role": "assistant", "content": r["correction"]}],
                     "wrong_step_index": r["wrong_step_index"], "wrong_step_source": r["wrong_step_source"],
                     "flip_class": r["flip_class"], "cue": r["cue"]})
    return ExportRows(exports.CORRECTION_SFT.name, _sorted(exports.CORRECTION_SFT, rows), rejects, other)


def correction_dpo_rows(corrections: Iterable[Mapping[str, Any]]) -> ExportRows:
    """``corrections`` rows -> ``correction_dpo`` pairs: per (problem, negative, cue), the kept corrections
    paired in sample order with the continuations that state a wrong answer (a verified-wrong verdict: not a
    format failure, not truncated, not unknown). Unpaired rows are not applicable; reject:
    ``export_correction_pair_equal`` (chosen and rejected texts equal)."""
    from counterpoint.verifiers.base import REASON_CLASS_ANSWER, reason_class

    groups: Dict[Tuple[str, int, str], List[Mapping[str, Any]]] = {}
    for r in corrections:
        groups.setdefault((r["problem_id"], r["negative_sample_index"], r["cue"]), []).append(r)
    rows, rejects, used = [], [], 0
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r["sample_index"])
        kept = [r for r in group if r["kept"]]
        wrong = [r for r in group if r["verdict"] == records.VERDICT_INCORRECT
                 and reason_class(r["verdict_reason"]) == REASON_CLASS_ANSWER and r["finish_reason"] != "length"]
        for good, bad in zip(kept, wrong):
            used += 2
            if good["correction"] == bad["correction"]:
                rejects.append(_reject("export_correction_pair_equal", good, "chosen equals rejected"))
                continue
            rows.append({"id": records.content_id("correction_dpo", good["id"], bad["id"]),
                         "problem_id": good["problem_id"], "prompt": _correction_prompt(good),
                         "chosen": [{"role": "assistant", "content": good["correction"]}],
                         "rejected": [{"role": "assistant", "content": bad["correction"]}],
                         "wrong_step_index": good["wrong_step_index"], "wrong_step_source": good["wrong_step_source"],
                         "flip_class": good["flip_class"], "cue": good["cue"]})
    total = sum(len(g) for g in groups.values())
    return ExportRows(exports.CORRECTION_DPO.name, _sorted(exports.CORRECTION_DPO, rows), rejects, total - used)
