"""Consensus filtering of step labels with a judge model (Qwen team, "The Lessons of Developing
Process Reward Models in Mathematical Reasoning", 2025).

The MC / OmegaPRM labels are noisy; the Qwen report keeps only the samples on which
Monte Carlo estimation and an LLM judge agree on the first erroneous step. Here:

1. :func:`solution_targets` lists every labelled solution that has rows which can
   become training data — a ``step_labels`` row, or (a negative without one)
   ``step_values`` rows — with the first error MC gives it (the label's
   ``first_error_index``; for a values-only solution the first measured step with
   ``q_value == 0``, else its last step);
2. :func:`judge_requests` turns them into ProcessBench-style prompts (Zheng et al.
   2024; the template lives in ``counterpoint.prompts``): the problem, the steps as
   tagged paragraphs indexed from 0, "return the index of the earliest wrong
   paragraph, or -1, in ``\\boxed{}``". Any generator answers them;
3. :func:`parse_judgement` reads the reply (``None`` = unparsable);
4. :func:`apply_consensus` records ``judge_first_error_index`` and ``judge_agrees``
   on every judged step-label row. ``keep-agreeing`` keeps a solution's rows — step
   labels, step values, step and first-pit pairs — only when the judge parsed and
   agreed; everything else is dropped with a row-scope reject:
   ``consensus_disagreement``, ``consensus_unparsable`` (the reply had no index) or
   ``consensus_not_judged`` (no reply at all). ``annotate`` keeps every row and
   flags it; ``off`` returns the rows untouched.

Agreement: the judge's index equals the MC first error (with ``tolerance = t``:
differs by at most ``t`` steps; default 0, exact match). A judge answer of -1
("no error") never agrees with a labelled negative.

This module is Beam-free; the Beam stage around it is ``transforms.judge``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.generators.base import GenerationRequest, SamplingParams
from counterpoint.prompts import PROCESSBENCH_TEMPLATE, judge_prompt, read_judge_prompt, tag_steps  # noqa: F401
from counterpoint.schemas import records
from counterpoint.schemas.records import PAIR_FIRST_PIT, PAIR_STEP
from counterpoint.schemas.rows import step_label_id
from counterpoint.verifiers.extract import extract_final_answer

CONSENSUS_MODES = ("off", "keep-agreeing", "annotate")
REASON_DISAGREEMENT = "consensus_disagreement"
REASON_UNPARSABLE = "consensus_unparsable"
REASON_NOT_JUDGED = "consensus_not_judged"


@dataclasses.dataclass
class ConsensusConfig:
    """``mode``: "off" | "keep-agreeing" | "annotate". Judge sampling: greedy by default
    (``temperature=0``); ``max_tokens`` bounds the critique. ``tolerance``: agree when
    ``|judge - label| <= tolerance`` (0 = exact match). ``prompt_template`` must contain
    ``{problem}`` and ``{tagged_response}``; ``seed`` seeds the judge requests."""

    mode: str = "off"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    tolerance: int = 0
    prompt_template: str = PROCESSBENCH_TEMPLATE
    seed: int = 0

    def __post_init__(self):
        if self.mode not in CONSENSUS_MODES:
            raise ValueError(f"consensus.mode must be one of {CONSENSUS_MODES}, got {self.mode!r}")
        if self.tolerance < 0:
            raise ValueError(f"consensus.tolerance must be >= 0 (0 = exact match), got {self.tolerance}")
        if self.temperature < 0 or not (0 < self.top_p <= 1) or self.max_tokens < 1:
            raise ValueError("consensus.temperature must be >= 0, top_p in (0, 1], max_tokens >= 1")
        for field in ("{problem}", "{tagged_response}"):
            if field not in self.prompt_template:
                raise ValueError(f"consensus.prompt_template must contain {field}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def _question(row: Mapping[str, Any], problems: Mapping[str, Any]) -> str:
    p = problems.get(row["problem_id"]) if problems else None
    if isinstance(p, Mapping):
        return str(p["question"])
    if isinstance(p, str):
        return p
    return str(row["prompt"])


def judge_requests(rows: Sequence[Mapping[str, Any]], problems: Mapping[str, Any],
                   system_prompt: Optional[str] = None, *, config: Optional[ConsensusConfig] = None
                   ) -> List[GenerationRequest]:
    """One judge request per ``step_labels`` row or :func:`solution_targets` target, aligned with
    ``rows`` (``request_id`` = the row id).

    ``problems`` maps problem id to a problem row (or its question); a missing one
    falls back to the row's ``prompt`` (which holds the question).
    """
    config = config or ConsensusConfig()
    params = config.sampling()
    out = []
    for row in rows:
        text = judge_prompt(_question(row, problems), row["completions"], config.prompt_template)
        seed = int(records.content_id("judge", config.seed, row["id"], length=8), 16) & 0x7FFFFFFF
        out.append(GenerationRequest.chat(system_prompt, text, n=1, params=params, seed=seed,
                                          request_id=str(row["id"])))
    return out


_INDEX_RE = re.compile(r"^[+-]?\d+$")


def parse_judgement(text: Optional[str]) -> Optional[int]:
    """The judge's earliest wrong step index (``-1`` = none) from its ``\\boxed{k}``; None if unparsable."""
    if not text:
        return None
    answer = extract_final_answer(text)
    if answer is None:
        return None
    answer = answer.replace("\\text", "").strip("{} ")
    if not _INDEX_RE.match(answer):
        return None
    k = int(answer)
    return k if k >= -1 else None


def judgements_from(rows: Sequence[Mapping[str, Any]], replies: Sequence[Optional[str]]) -> Dict[str, Optional[int]]:
    """``{row id: parsed judgement}`` from replies aligned with ``rows`` (e.g. ``judge_requests`` answers)."""
    if len(rows) != len(replies):
        raise ValueError(f"{len(replies)} judge replies for {len(rows)} rows")
    return {str(r["id"]): parse_judgement(t) for r, t in zip(rows, replies)}


def agrees(label_index: Optional[int], judge_index: Optional[int], tolerance: int = 0) -> Optional[bool]:
    """None when the judge is unparsable; -1 agrees only with a solution labelled without error."""
    if judge_index is None:
        return None
    if label_index is None or judge_index == -1:
        return label_index is None and judge_index == -1
    return abs(judge_index - label_index) <= tolerance


def _solution_key(row: Mapping[str, Any], index_field: str = "sample_index") -> str:
    return step_label_id(row["problem_id"], row[index_field], row.get("labeler"))


def solution_targets(step_labels: Sequence[Mapping[str, Any]], step_values: Sequence[Mapping[str, Any]]
                     ) -> List[Dict[str, Any]]:
    """One judge target per labelled solution (module docstring, 1): ``id`` (the step-label row id of
    the solution, also for values-only ones), ``problem_id``, ``prompt``, ``completions`` and the MC
    ``first_error_index``. Step-label rows first, in order; then values-only solutions."""
    out = [dict(id=str(r["id"]), problem_id=r["problem_id"], prompt=r["prompt"], completions=list(r["completions"]),
                first_error_index=r["first_error_index"]) for r in step_labels]
    seen = {t["id"] for t in out}
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for v in step_values:
        key = _solution_key(v)
        if key not in seen:
            groups.setdefault(key, []).append(v)
    for key, vals in groups.items():
        vals = sorted(vals, key=lambda v: v["step_index"])
        zero = next((v["step_index"] for v in vals if v["measured"] and v["q_value"] == 0.0), vals[-1]["step_index"])
        out.append(dict(id=key, problem_id=vals[0]["problem_id"], prompt="", completions=[v["step"] for v in vals],
                        first_error_index=zero))
    return out


def apply_consensus(
    step_labels: Sequence[Mapping[str, Any]],
    step_values: Sequence[Mapping[str, Any]],
    preferences: Sequence[Mapping[str, Any]],
    judgements: Mapping[str, Optional[int]],
    mode: str,
    *,
    tolerance: int = 0,
) -> Tuple[Dict[str, List[dict]], List[dict], Dict[str, Any]]:
    """Applies the judge's verdicts; returns ``(kept rows per config, rejects, stats)``.

    ``judgements`` maps solution ids (:func:`solution_targets` ``id``) to parsed judge
    indices (None = unparsable). Preferences other than step / first-pit pairs (e.g.
    outcome pairs) are never touched. ``stats``: judged, agreed, disagreed, unparsable,
    not_judged, agreement_rate (agreed / (agreed + disagreed); None if neither), the
    dropped and kept row counts per kind.

    Long: every kind of trainable row (labels, values, step and first-pit pairs) is judged or dropped in one
    pass, so none escapes.
    """
    if mode not in CONSENSUS_MODES:
        raise ValueError(f"consensus mode must be one of {CONSENSUS_MODES}, got {mode!r}")
    kinds = ("step_labels", "step_values", "preferences")
    stats: Dict[str, Any] = {"judged": 0, "agreed": 0, "disagreed": 0, "unparsable": 0, "not_judged": 0,
                             "agreement_rate": None, **{f"dropped_{k}": 0 for k in kinds},
                             **{f"kept_{k}": 0 for k in kinds}}
    if mode == "off":
        return ({"step_labels": [dict(r) for r in step_labels], "step_values": [dict(r) for r in step_values],
                 "preferences": [dict(r) for r in preferences]}, [], stats)
    verdicts: Dict[str, Tuple[Optional[bool], Optional[int], Optional[str]]] = {}
    rejects: List[dict] = []
    for t in solution_targets(step_labels, step_values):
        if t["id"] not in judgements:
            stats["not_judged"] += 1
            verdicts[t["id"]] = (None, None, REASON_NOT_JUDGED)
            continue
        j = judgements[t["id"]]
        stats["judged"] += 1
        verdict = agrees(t["first_error_index"], j, tolerance)
        stats["unparsable" if verdict is None else "agreed" if verdict else "disagreed"] += 1
        reason = REASON_UNPARSABLE if verdict is None else None if verdict else REASON_DISAGREEMENT
        verdicts[t["id"]] = (verdict, j, reason)
        if reason is not None and mode == "keep-agreeing":
            rejects.append(records.make_reject(
                stage="label", reason=reason, problem_id=t["problem_id"], scope="row", key=t["id"],
                detail=f"label first error {t['first_error_index']}, judge {j}"))
    for p in preferences:  # a pair whose solution has no label or value row: nothing judged it
        key = _solution_key(p, "rejected_sample_index")
        if p["pair_type"] in (PAIR_STEP, PAIR_FIRST_PIT) and key not in verdicts:
            stats["not_judged"] += 1
            verdicts[key] = (None, None, REASON_NOT_JUDGED)
    decided = stats["agreed"] + stats["disagreed"]
    stats["agreement_rate"] = stats["agreed"] / decided if decided else None
    if mode == "keep-agreeing":
        for key, (verdict, j, reason) in verdicts.items():
            if reason == REASON_NOT_JUDGED:
                problem_id = key.rsplit("/s", 1)[0]
                rejects.append(records.make_reject(stage="label", reason=reason, problem_id=problem_id,
                                                   scope="row", key=key, detail="no judge reply"))

    def keep(key: Optional[str]) -> bool:
        return mode != "keep-agreeing" or key is None or verdicts.get(key, (None,))[0] is True

    out: Dict[str, List[dict]] = {k: [] for k in kinds}
    for row in step_labels:
        r = dict(row)
        verdict, j, _ = verdicts.get(str(row["id"]), (None, None, None))
        r["judge_first_error_index"], r["judge_agrees"] = j, verdict
        if keep(str(row["id"])):
            out["step_labels"].append(r)
    out["step_values"] = [dict(v) for v in step_values if keep(_solution_key(v))]
    out["preferences"] = [dict(p) for p in preferences
                          if keep(_solution_key(p, "rejected_sample_index")
                                  if p["pair_type"] in (PAIR_STEP, PAIR_FIRST_PIT) else None)]
    for k, rows_in in (("step_labels", step_labels), ("step_values", step_values), ("preferences", preferences)):
        stats[f"kept_{k}"] = len(out[k])
        stats[f"dropped_{k}"] = len(rows_in) - len(out[k])
    return out, rejects, stats
