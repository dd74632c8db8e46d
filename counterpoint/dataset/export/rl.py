"""RL-ready and negative-only export rows (issue 19), Beam-free and pure.

Each builder takes the rows of whole problems (one bucket of :mod:`.stream`, or a whole small
config) as plain dicts and returns :class:`~counterpoint.dataset.export.formats.ExportRows`,
sorted by id; rows it leaves out are counted by reason in ``skipped`` (not defects: an unknown
verdict is no evidence either way).

* :func:`grpo_prompt_rows` (``problem_stats`` -> ``grpo_prompts``): TRL ``GRPOTrainer`` prompts
  in a pass-rate band (offline difficulty filtering; DAPO's dynamic sampling, Yu et al. 2025);
* :func:`verl_rows` (``problem_stats`` -> ``verl_rl``): verl's RL parquet layout, same band;
* :func:`npo_rows` (``trajectories`` -> ``npo_forget`` + ``npo_retain``): NPO (Zhang et al. 2024);
* :func:`grouped_negative_rows` (``trajectories`` -> ``grouped_negatives``): D2O (Duan et al. 2024);
* :func:`sft_positive_rows` (``trajectories`` -> ``sft_positives``): rejection-sampling
  fine-tuning (Yuan et al. 2023).

A sample is a *positive* only if verified correct with reward 1 and finished normally
(``finish_reason == "stop"``), a *negative* only if verified incorrect with reward 0 and finished
normally: unknown verdicts and truncated samples are neither, whatever their text says.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from counterpoint.dataset.export.formats import ExportRows
from counterpoint.dataset.export.stream import problem_hash
from counterpoint.rl.band import BAND_FORMATS, ExportOptions, in_band, parse_pass_band  # noqa: F401  (re-exported)
from counterpoint.schemas import exports, records

Row = Dict[str, Any]
POSITIVE, NEGATIVE = "positive", "negative"
_MISSING = object()


RLOptions = ExportOptions  # the run config's export_options and `counterpoint export`'s flags


def sample_kind(t: Mapping[str, Any]) -> str:
    """``positive`` / ``negative``, or why a trajectory row is neither (a snake_case reason)."""
    if t.get("finish_reason") == "length":
        return "truncated"
    if t.get("finish_reason") != "stop":
        return "not_finished"
    reward = t.get("reward", _MISSING)  # outputs written before issue 19 have no reward column
    if t.get("verdict") == records.VERDICT_CORRECT:
        return POSITIVE if reward in (_MISSING, 1.0) else "reward_disagrees_with_verdict"
    if t.get("verdict") == records.VERDICT_INCORRECT:
        return NEGATIVE if reward in (_MISSING, 0.0) else "reward_disagrees_with_verdict"
    return "unknown_verdict"


def _by_problem(rows: Iterable[Mapping[str, Any]]) -> Dict[str, List[Mapping[str, Any]]]:
    out: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["problem_id"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["sample_index"])
    return out


def _done(spec: records.TableSpec, rows: List[Row], skipped: Counter, other: int = 0) -> ExportRows:
    return ExportRows(spec.name, sorted((spec.conform(r) for r in rows), key=lambda r: r["id"]),
                      not_applicable=other, skipped=dict(skipped))


# ---------------------------------------------------------------------------
# problem_stats -> grpo_prompts / verl_rl (+ controls)
# ---------------------------------------------------------------------------
def grpo_prompt_row(s: Mapping[str, Any]) -> Row:
    return {"id": s["problem_id"], "problem_id": s["problem_id"], "source": s["source"], "prompt": s["prompt"],
            "answer": s["gold_answer"], "verifier": s["verifier"], "verifier_version": s["verifier_version"],
            "pass_rate": s["pass_rate"], "pass_rate_lo": s["pass_rate_lo"], "pass_rate_hi": s["pass_rate_hi"],
            "samples": s["samples"]}


def verl_row(s: Mapping[str, Any], split: str, index: int) -> Row:
    """verl's RL row; ``index`` is the row's position in its config (verl's ``extra_info.index``)."""
    return {"id": s["problem_id"], "data_source": exports.VERL_DATA_SOURCE_PREFIX + s["verifier"],
            "prompt": s["prompt"], "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": s["gold_answer"]},
            "extra_info": {"split": split, "index": index, "pass_rate": s["pass_rate"], "problem_id": s["problem_id"],
                           "verifier": s["verifier"], "verifier_version": s["verifier_version"]}}


def banded(stats: Iterable[Mapping[str, Any]],
           band: Optional[Sequence[float]]) -> Tuple[List[Mapping[str, Any]], Counter]:
    """The problem_stats rows in the band (by problem id), and the others counted by reason."""
    kept, skipped = [], Counter()
    for s in stats:
        if in_band(s["pass_rate"], band):
            kept.append(s)
        else:
            skipped["no_known_verdict" if s["pass_rate"] is None else "outside_pass_band"] += 1
    return sorted(kept, key=lambda s: s["problem_id"]), skipped


def control_draw(stats: Iterable[Mapping[str, Any]], quota: int) -> List[Mapping[str, Any]]:
    """The ``quota`` rows with the smallest (problem_hash, problem_id): a bucket's share of the control draw."""
    return sorted(stats, key=lambda s: (problem_hash(s["problem_id"]), s["problem_id"]))[:max(0, quota)]


def grpo_prompt_rows(stats: Iterable[Mapping[str, Any]], band: Optional[Sequence[float]] = None) -> ExportRows:
    kept, skipped = banded(stats, band)
    return _done(exports.GRPO_PROMPTS, [grpo_prompt_row(s) for s in kept], skipped)


def verl_rows(stats: Iterable[Mapping[str, Any]], band: Optional[Sequence[float]] = None, *,
              first_index: int = 0) -> ExportRows:
    """``verl_rl`` rows of the band; ``first_index``: rows already written (verl's index runs over the config)."""
    kept, skipped = banded(stats, band)
    return _done(exports.VERL_RL, [verl_row(s, "train", first_index + i) for i, s in enumerate(kept)], skipped)


def control_rows(drawn: Sequence[Mapping[str, Any]], verl: bool, first_index: int = 0) -> ExportRows:
    """The control config of ``grpo-prompts`` (``verl`` False) or ``verl-rl``, from :func:`control_draw` rows."""
    drawn = sorted(drawn, key=lambda s: s["problem_id"])
    if verl:
        return _done(exports.VERL_RL_CONTROL,
                     [verl_row(s, "control", first_index + i) for i, s in enumerate(drawn)], Counter())
    return _done(exports.GRPO_PROMPTS_CONTROL, [grpo_prompt_row(s) for s in drawn], Counter())


# ---------------------------------------------------------------------------
# trajectories -> npo_forget / npo_retain, grouped_negatives, sft_positives
# ---------------------------------------------------------------------------
def _npo_row(t: Mapping[str, Any]) -> Row:
    return {"id": t["id"], "problem_id": t["problem_id"], "sample_index": t["sample_index"],
            "question": t["question"], "answer": t["completion"], "prompt": t["prompt"],
            "verifier": t["verifier"], "verifier_version": t["verifier_version"]}


def npo_rows(trajectories: Iterable[Mapping[str, Any]]) -> Tuple[ExportRows, ExportRows]:
    """(forget, retain): every negative, every positive; other samples counted in the forget's ``skipped``."""
    forget, retain, skipped = [], [], Counter()
    for t in trajectories:
        kind = sample_kind(t)
        if kind == NEGATIVE:
            forget.append(_npo_row(t))
        elif kind == POSITIVE:
            retain.append(_npo_row(t))
        else:
            skipped[kind] += 1
    return _done(exports.NPO_FORGET, forget, skipped), _done(exports.NPO_RETAIN, retain, Counter())


def _distinct(samples: Sequence[Mapping[str, Any]], kind: str, skipped: Counter) -> List[Mapping[str, Any]]:
    """The first sample (lowest sample_index) of each distinct completion text of ``kind``."""
    seen, out = set(), []
    for t in samples:
        if sample_kind(t) != kind:
            continue
        if t["completion"] in seen:
            skipped[f"duplicate_{kind}"] += 1
            continue
        seen.add(t["completion"])
        out.append(t)
    return out


def grouped_negative_rows(trajectories: Iterable[Mapping[str, Any]]) -> ExportRows:
    """One row per problem with a negative; ``not_applicable`` = problems without one."""
    rows, skipped, other = [], Counter(), 0
    for pid, samples in _by_problem(trajectories).items():
        for t in samples:
            kind = sample_kind(t)
            if kind not in (POSITIVE, NEGATIVE):
                skipped[kind] += 1
        neg, pos = _distinct(samples, NEGATIVE, skipped), _distinct(samples, POSITIVE, skipped)
        if not neg:
            other += 1
            continue
        first = samples[0]
        rows.append({"id": pid, "problem_id": pid, "prompt": first["prompt"], "answer": first["gold_answer"],
                     "negatives": [t["completion"] for t in neg],
                     "negative_sample_indices": [t["sample_index"] for t in neg],
                     "positives": [t["completion"] for t in pos],
                     "positive_sample_indices": [t["sample_index"] for t in pos],
                     "verifier": first["verifier"], "verifier_version": first["verifier_version"]})
    return _done(exports.GROUPED_NEGATIVES, rows, skipped, other)


def sft_positive_rows(trajectories: Iterable[Mapping[str, Any]], max_per_problem: Optional[int] = None) -> ExportRows:
    """Distinct positives per problem, lowest sample index first, at most ``max_per_problem`` (None: all)."""
    rows, skipped = [], Counter()
    for _, samples in _by_problem(trajectories).items():
        pos = _distinct(samples, POSITIVE, skipped)
        if max_per_problem is not None and len(pos) > max_per_problem:
            skipped["over_max_per_problem"] += len(pos) - max_per_problem
            pos = pos[:max_per_problem]
        rows += [{"id": t["id"], "problem_id": t["problem_id"], "sample_index": t["sample_index"],
                  "prompt": t["prompt"], "completion": [{"role": "assistant", "content": t["completion"]}],
                  "verifier": t["verifier"], "verifier_version": t["verifier_version"]} for t in pos]
    return _done(exports.SFT_POSITIVES, rows, skipped)


# Trajectory columns the sample-level formats read (the others, e.g. steps, stay on disk).
TRAJECTORY_COLUMNS = ("id", "problem_id", "sample_index", "question", "prompt", "completion", "gold_answer",
                      "verdict", "verifier", "verifier_version", "finish_reason", "reward")
