"""After the pipeline: account for every problem, then publish the run — or leave the live dataset as it was.

Runs in the driver once the Beam job succeeded, on the run's staging folder, while the run holds
the output folder's lock:

1. every config gets at least one (schema-carrying) shard;
2. the run summary is built from ``counts/run_stats.json`` (one small record combined in the
   pipeline — the driver never reads the rows), with the rows and shards the run wrote;
3. **accounting**: problems in == problems with output + problems rejected, and at least one
   problem was read (an empty or missing input must not replace a good dataset with an empty one);
4. :func:`counterpoint.dataset.publish.publish`: the gate on the staged shards, the trainer
   exports (``--export``), summary, config, report and card, one atomic version switch.

A run that fails a check leaves the live dataset exactly as it was; its summary (and a failed
gate's results) are kept under ``_work/runs/<run_id>/``.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Sequence

from counterpoint import schemas, storage
from counterpoint.config import RunConfig
from counterpoint.dataset import publish
from counterpoint.dataset.publish import ValidationFailed  # noqa: F401 - what a failed run raises
from counterpoint.dataset.summary import AccountingError, RunSummary, read_run_stats
from counterpoint.errors import RunFailed


def ensure_shards(layout: storage.DatasetLayout, configs: Sequence[str]) -> None:
    """Writes one empty, schema-carrying shard for a config that produced no rows (Hub configs need a file)."""
    for config in configs:
        if not layout.shards(config):
            empty = schemas.table(config).arrow_schema().empty_table()
            storage.write_parquet(storage.join(layout.config_dir(config), "train-00000-of-00001.parquet"), empty)


def _record(record: str, cfg: RunConfig, summary: RunSummary) -> None:
    storage.write_json(storage.join(record, storage.CONFIG_FILE), cfg.to_dict())
    storage.write_json(storage.join(record, storage.SUMMARY_FILE), summary.to_dict())


def _check_counts(summary: RunSummary, cfg: RunConfig, record: str) -> None:
    summary_path = storage.join(record, storage.SUMMARY_FILE)
    summary.check_accounting(summary_path)
    c = summary.counts
    if summary.problems_read == 0:
        # An empty or missing input, a glob that matched nothing, --num-problems 0: publishing would
        # replace the live dataset with an empty one. (Problems read and all rejected, e.g. by an
        # engine outage, are published: their rejects say why, and a rerun retries them.)
        source = ", ".join(cfg.source.paths or []) or cfg.source.kind
        why = ", ".join(f"{k} {v}" for k, v in summary.rejects_by_reason.items()) or "none"
        raise RunFailed(f"the run read 0 problems (source: {source}; {c['problems_in']} in, "
                        f"{c['problems_rejected']} rejected: {why}): nothing was published and the dataset in "
                        f"{cfg.output} was left as it was; check --input / --num-problems (summary: {summary_path})")


def finalize_run(cfg: RunConfig, *, layout: storage.OutputLayout, staging: storage.StagingLayout,
                 timing: Dict[str, float], started: float, options=None, pipeline_result=None,
                 on_job_runner: bool = False) -> Dict[str, Any]:
    """Accounting, then the one publish procedure; returns the run summary (``run_summary.json``)."""
    from counterpoint.dataset.export import run_exports

    configs = cfg.configs()
    record = layout.run_record_dir(staging.run_id)
    stats_path = storage.join(staging.counts_dir, "run_stats.json")
    if not storage.exists(stats_path):
        # The job "succeeded" without running (e.g. --dry_run=True) or lost its counted output: counting
        # nothing as 0 in = 0 + 0 would publish empty shards over the live dataset.
        storage.delete_tree(staging.root)
        raise AccountingError(f"the pipeline wrote no run stats ({stats_path}): nothing was counted, so nothing "
                              "is published; the dataset was left as it was")
    ensure_shards(staging, configs)
    summary = RunSummary.from_stats(cfg, read_run_stats(staging), configs,
                                    dict(timing, wall_s=time.perf_counter() - started))
    summary.run_id = staging.run_id
    summary.written = {c: {"shards": len(staging.shards(c)), "rows": int(summary.counts.get(f"rows_{c}", 0))}
                       for c in configs}
    _record(record, cfg, summary)
    try:
        _check_counts(summary, cfg, record)
        publication = publish.Publication(
            staging=staging, staged=publish.Staged(written=dict(summary.written)), summary=summary,
            run_config=cfg.to_dict(), fingerprint=cfg.output_fingerprint(),
            extensions=[run_exports(cfg.exports, summary, cfg.export_options)] if cfg.exports else [],
            report=cfg.report,
            record_dir=record, started=started)
        publish.publish(layout, publication, publish.GateOptions(
            pipeline_options=options, min_rows=cfg.min_rows, on_job_runner=on_job_runner, enabled=cfg.validate))
    except RunFailed:
        storage.delete_tree(staging.root)
        _record(record, cfg, summary)
        raise
    _record(record, cfg, summary)
    return summary.to_dict()
