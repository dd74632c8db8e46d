"""The validation gate: every Parquet shard of a dataset folder against its GX suites, as one Beam pipeline.

``validate_output(layout)`` — input: a dataset folder (a :class:`counterpoint.storage.DatasetLayout`,
or its root as a string: local, ``gs://``, ``s3://``); output: a :class:`ValidationReport` and
``<validation dir>/summary.json``. The driver lists the shards, runs::

    ListShards -> ValidateDataset (see :mod:`.cross_shard`) -> WriteResults (one JSON part per config)

and then, back in the driver, quarantines failed shards (:mod:`.quarantine`), writes the
summary and builds the GX Data Docs (:mod:`.data_docs`). ``ValidateShard`` (:mod:`.shard`)
reads each shard once and records the size and SHA-256 of the bytes it validated, so the
verdict is bound to content: ``summary.json`` lists per config every shard's ``path``
(relative to the data folder), ``size``, ``sha256`` and ``rows``. With ``expected`` (the run's
own written shard and row counts) a config that lost shards or rows fails.

Paths come only from the layout (``data_dir``, ``validation_dir``, ``shards``), so a layout that
resolves them elsewhere (a versioned dataset) is validated where it lives.

Runner: the default is ``--runner=FnApiRunner`` (the in-process portable runner,
``direct_num_workers`` threads). Beam 2.77's ``DirectRunner`` first tries to
download the Prism runner binary from GitHub; offline that fails (or hangs on
DNS) before it falls back, so we never name it. Any Beam runner options can be
passed through ``runner_options``; ``pipeline_options`` (the run's own) carry the
filesystem options (credentials, ``--s3_endpoint_url``) to the gate's workers.
Results are exchanged through ``<validation dir>/.parts/``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import apache_beam as beam

from counterpoint import storage
from counterpoint.schemas import records
from counterpoint.validation import data_docs
from counterpoint.validation.cross_shard import ValidateDataset
from counterpoint.validation.quarantine import quarantine_config
from counterpoint.validation.results import Failure, ValidationReport, jsonable
from counterpoint.validation.shard import shard_task

__all__ = ["DEFAULT_RUNNER_OPTIONS", "Failure", "ValidationReport", "validate_output"]

DEFAULT_RUNNER_OPTIONS = [
    "--runner=FnApiRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_threading",
]


class WriteResultDoFn(beam.DoFn):
    """A config result (dict) -> ``<parts_dir>/<config>.json``, read back by the driver."""

    def __init__(self, parts_dir: str):
        self._parts_dir = parts_dir

    def process(self, element):
        path = storage.join(self._parts_dir, f"{element['config']}.json")
        storage.write_text(path, json.dumps(element, ensure_ascii=False, default=str))
        yield path


def _gate_options(runner_options: Optional[List[str]], pipeline_options, on_job_runner: bool = False):
    """The gate's runner and options.

    Default: the in-process FnApiRunner plus the run's filesystem options. ``on_job_runner``: the
    run's own runner and options (a portable / Flink / Dataflow job validates on the same cluster,
    so the launcher never holds the shards), as a job of its own name.
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    if on_job_runner and pipeline_options is not None and runner_options is None:
        # Counterpoint's own options (cp_*) are the run's, not the gate's
        run_options = {k: list(v) if isinstance(v, tuple) else v
                       for k, v in pipeline_options.get_all_options(drop_default=True).items()
                       if not k.startswith("cp_") and v is not None}
        gate = PipelineOptions.from_dictionary(run_options)
        job = pipeline_options.view_as(GoogleCloudOptions).job_name
        if job:
            gate.view_as(GoogleCloudOptions).job_name = f"{job}-validate"
        return gate
    flags = list(runner_options) if runner_options is not None else list(DEFAULT_RUNNER_OPTIONS)
    inherited: Dict[str, Any] = {}
    pipeline_options = pipeline_options if pipeline_options is not None else storage.configured_options()
    if pipeline_options is not None:
        keep = ("s3_", "aws_", "gcs_", "project", "hdfs_", "azure_", "blob_service")
        inherited = {k: v for k, v in pipeline_options.get_all_options(drop_default=True).items()
                     if k.startswith(keep) and v is not None}
    return PipelineOptions(flags, **inherited)


def _layout(out: Union[str, storage.DatasetLayout]) -> storage.DatasetLayout:
    """The dataset's layout (a root string is wrapped); raises FileNotFoundError when there is nothing there."""
    if isinstance(out, storage.DatasetLayout):
        layout = out
    else:
        if storage.is_local(out):
            import os

            out = os.path.abspath(out)
        layout = storage.DatasetLayout(out)
    if storage.is_local(layout.root):
        import os

        if not os.path.isdir(layout.root):
            raise FileNotFoundError(f"output directory {layout.root} does not exist")
    elif not storage.match(storage.join(layout.root, "**")):
        raise FileNotFoundError(f"output directory {layout.root} does not exist (no object under it)")
    return layout


def _discover(layout: storage.DatasetLayout, configs: Optional[Sequence[str]],
              expected: Optional[Dict[str, Dict[str, int]]] = None) -> Dict[str, List[str]]:
    """Config -> its shards: the configs asked for (default: the run summary's, else the outcome configs,
    plus every config with a shard), and every config the run says it wrote."""
    if configs is None:
        summary = storage.read_json(layout.summary_path)
        wanted = list((summary or {}).get("configs") or []) if isinstance(summary, dict) else []
        wanted = list(dict.fromkeys([*(wanted or records.OUTCOME_CONFIGS), *layout.present_configs()]))
    else:
        wanted = list(configs)
    unknown = [c for c in [*(configs or []), *(expected or {})] if c not in records.OUTPUT_TABLES]
    if unknown:  # named by the caller; a stray folder under data/ is an unknown_config failure instead
        raise ValueError(f"unknown config(s) {unknown}; known: {sorted(records.OUTPUT_TABLES)}")
    return {c: layout.shards(c) for c in dict.fromkeys([*wanted, *(expected or {})])}


def _run_gate(tasks: List[Dict[str, str]], configs: List[str], parts_dir: str, options,
              min_rows: Optional[Dict[str, int]], expected: Optional[Dict[str, Dict[str, int]]]) -> Dict[str, Any]:
    """Runs the gate's pipeline; config -> its result dict (see :class:`.cross_shard.ValidateConfigDoFn`)."""
    storage.delete_tree(parts_dir)
    storage.mkdirs(parts_dir)
    with beam.Pipeline(options=options) as p:
        (
            p
            | "ListShards" >> beam.Create(tasks)
            | "ValidateDataset" >> ValidateDataset(configs, min_rows=min_rows, expected=expected)
            | "WriteResults" >> beam.ParDo(WriteResultDoFn(parts_dir))
        )
    parts = {c: json.loads(storage.read_text(storage.join(parts_dir, f"{c}.json"))) for c in configs}
    storage.delete_tree(parts_dir)
    return parts


def _config_summary(part: Dict[str, Any], moved: Dict[str, str], floor: Optional[int],
                    expected: Optional[Dict[str, int]]) -> Dict[str, Any]:
    """One config's entry of summary.json; every shard with its content fingerprint."""
    failures = [f for s in part["shards"] for f in s["failures"]] + part["failures"]
    offending = set(part.get("offending_shards", []))
    shards = [{"shard": s["shard"], "path": s["path"], "size": s["size"], "sha256": s["sha256"], "rows": s["rows"],
               "success": not s["failures"] and s["shard"] not in offending,
               "cross_shard_failure": s["shard"] in offending, "elapsed_s": round(s["elapsed_s"], 4),
               "quarantined_to": moved.get(s["shard"])} for s in part["shards"]]
    return {
        "success": not failures,
        "rows": sum(s["rows"] or 0 for s in part["shards"]),
        "rows_published": sum(s["rows"] or 0 for s in part["shards"] if s["shard"] not in moved),
        "n_shards": len(part["shards"]),
        "min_rows": floor,
        "expected": dict(expected) if expected is not None else None,
        "shards": shards,
        "failed_expectations": failures,
        "elapsed_s": round(sum(s["elapsed_s"] for s in part["shards"]) + part["elapsed_s"], 4),
    }


def _judge(parts: Dict[str, Any], tasks: List[Dict[str, str]], layout: storage.DatasetLayout,
           quarantine_dir: Optional[str], min_rows: Optional[Dict[str, int]],
           expected: Optional[Dict[str, Dict[str, int]]]) -> tuple:
    """``(config summaries, quarantined, Data Docs results)`` of the config results; failed shards are
    moved to ``quarantine_dir`` (None: they stay)."""
    uris = {t["shard"]: t["uri"] for t in tasks}
    quarantined: List[Dict[str, str]] = []
    summaries: Dict[str, Dict[str, Any]] = {}
    docs_results: List[tuple] = []
    for c, part in parts.items():
        moved = quarantine_config(part, uris, quarantine_dir, layout.root) if quarantine_dir else []
        quarantined += moved
        summaries[c] = _config_summary(part, {q["from"]: q["to"] for q in moved},
                                       (min_rows or {}).get(c), (expected or {}).get(c))
        docs_results += data_docs.results_of(c, part)
    return summaries, quarantined, docs_results


def validate_output(
    out_dir: Union[str, storage.DatasetLayout],
    *,
    runner_options: Optional[List[str]] = None,
    pipeline_options=None,
    configs: Optional[Sequence[str]] = None,
    quarantine: bool = True,
    quarantine_dir: Optional[str] = None,
    min_rows: Optional[Dict[str, int]] = None,
    on_job_runner: bool = False,
    expected: Optional[Dict[str, Dict[str, int]]] = None,
) -> ValidationReport:
    """Validates every config of a Counterpoint dataset folder (local, gs://, s3://); see the module docstring.

    ``configs``: the configs to validate (default: ``run_summary.json``'s "configs", else the
    outcome configs, plus every config with a shard). A listed config without files has
    zero rows. ``quarantine``: move failing shards to ``quarantine_dir`` (default
    ``<root>/quarantine``). ``min_rows``: row-count floors per config (none by default).
    ``expected``: ``{config: {"shards": n, "rows": n}}``, what the run wrote; fewer fails.
    ``on_job_runner``: run the gate on ``pipeline_options``' runner (a cluster) instead of in-process.
    """
    t_start = time.monotonic()
    data_docs.quiet_gx()
    layout = _layout(out_dir)
    shards_by_config = _discover(layout, configs, expected)
    tasks = [shard_task(c, uri, layout) for c, uris in shards_by_config.items() for uri in uris]
    t_pipeline = time.monotonic()
    parts = _run_gate(tasks, list(shards_by_config), storage.join(layout.validation_dir, ".parts"),
                      _gate_options(runner_options, pipeline_options, on_job_runner), min_rows, expected)
    pipeline_s = time.monotonic() - t_pipeline

    quarantine_dir = (quarantine_dir or layout.path(storage.QUARANTINE_DIR)) if quarantine else None
    config_summaries, quarantined, docs_results = _judge(parts, tasks, layout, quarantine_dir, min_rows, expected)
    failures = [Failure(**f) for s in config_summaries.values() for f in s["failed_expectations"]]

    docs_index, docs_error, docs_s = data_docs.build_safely(
        storage.join(layout.validation_dir, "data_docs"), shards_by_config, docs_results, min_rows)
    import great_expectations as gx

    summary_path = storage.join(layout.validation_dir, "summary.json")
    summary = {
        "success": not failures,
        "validated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "elapsed_s": round(time.monotonic() - t_start, 3),
        "timing": {"pipeline_s": round(pipeline_s, 3), "data_docs_s": round(docs_s, 3)},
        "runner_options": list(runner_options) if runner_options is not None else list(DEFAULT_RUNNER_OPTIONS),
        "great_expectations_version": gx.__version__,
        "configs": config_summaries,
        "min_rows": dict(min_rows or {}),
        "expected": dict(expected or {}),
        "quarantined": quarantined,
        "data_docs": (storage.relpath(docs_index, layout.root) if docs_index else None),
        "data_docs_error": docs_error,
    }
    storage.write_json(summary_path, jsonable(summary))
    return ValidationReport(out_dir=layout.root, success=not failures, configs=config_summaries, failures=failures,
                            quarantined=quarantined, elapsed_s=time.monotonic() - t_start, summary_path=summary_path,
                            data_docs_index=docs_index, runner_options=summary["runner_options"])
