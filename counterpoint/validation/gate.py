"""The validation gate: every Parquet shard of an output directory against its GX suites.

``validate_output(out_dir)`` runs an Apache Beam pipeline::

    ListShards -> SpreadShards (Reshuffle) -> ValidateShard (ParDo, one GX context per DoFn instance)
      -> results -> KeyShardByConfig ----------------------------------------\
      -> keys (hash buckets) -> GroupKeyBuckets (GroupByKey) -> FindDuplicates --+-> GroupByConfig
    ListConfigs -----------------------------------------------------------------/   (CoGroupByKey)
      -> ValidateConfig (cross-shard suite) -> WriteResults (one JSON part per config)

``ValidateShard`` reads one shard with pyarrow (a truncated or corrupt file is a
``corrupt_shard`` failure carrying the pyarrow error, never a crash), checks the
Arrow schema, and validates the shard suite (see :mod:`.suites`). The cross-shard
suite (uniqueness, compound uniqueness, and a row-count floor when the run asks
for one with ``min_rows``) is evaluated distributively: each shard emits the key
values of every uniqueness rule split into hash buckets, one ``GroupByKey`` brings
a bucket's keys from every shard together, and ``FindDuplicates`` reports the
values held by more than one row — so uniqueness holds across shards and no
worker (nor the driver) ever holds a whole config. A config with no file counts as
zero rows; an empty config passes without a floor (a thin run is not a defective one).

Back in the driver: shards with a failure are moved to the quarantine folder
(``<out>/quarantine/<config>/`` by default; a run's staging check passes
``<out>/quarantine/<run_id>``), with a ``<file>.failures.json`` sidecar, so the
publishable ``data/`` tree excludes them; for a cross-shard failure (e.g. an id
duplicated in two shards) every shard holding an offending row is moved.
Results go to ``<dataset>/validation/summary.json`` and GX Data Docs are built
(locally, then copied) into ``<dataset>/validation/data_docs/``. Every file
operation goes through :mod:`counterpoint.storage`: the gate validates local,
``gs://`` and ``s3://`` folders alike.

Runner: the default is ``--runner=FnApiRunner`` (the in-process portable runner,
``direct_num_workers`` threads). Beam 2.77's ``DirectRunner`` first tries to
download the Prism runner binary from GitHub; offline that fails (or hangs on
DNS) before it falls back, so we never name it. Any Beam runner options can be
passed through ``runner_options``; ``pipeline_options`` (the run's own) carry the
filesystem options (credentials, ``--s3_endpoint_url``) to the gate's workers.
Results are exchanged through ``<dataset>/validation/.parts/``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence

import apache_beam as beam

from counterpoint import storage
from counterpoint.schemas import records

DEFAULT_RUNNER_OPTIONS = [
    "--runner=FnApiRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_threading",
]
SHARD_GLOB = "*.parquet"
MAX_EXAMPLES = 5
_PARTIAL_UNEXPECTED = 20
_STR_LIMIT = 200
_LIST_LIMIT = 8

# Where a cross-shard example row lives: shard path (relative to the output dir) and row number.
SHARD_KEY = "__shard"
ROW_KEY = "__row"

# Failure reasons
EXPECTATION_FAILED = "expectation_failed"
EXPECTATION_ERROR = "expectation_error"
CORRUPT_SHARD = "corrupt_shard"
SCHEMA_MISMATCH = "schema_mismatch"
UNKNOWN_CONFIG = "unknown_config"


# ---------------------------------------------------------------------------
# Report objects
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Failure:
    """One failed check: a GX expectation, or a shard that could not be validated."""

    config: str
    shard: Optional[str]  # path relative to the output dir; None for config-level checks
    expectation_type: Optional[str]  # GX expectation type; None for corrupt/schema/unknown-config
    column: Optional[str]  # source column(s), comma-joined; None for table-level checks
    reason: str = EXPECTATION_FAILED
    rule: Optional[str] = None  # the TableSpec rule: not_null, value_set, range, must_differ, ...
    unexpected_count: Optional[int] = None
    examples: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    detail: Optional[str] = None
    level: str = "shard"
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        what = self.expectation_type or self.reason
        where = self.shard or "(all shards)"
        col = f" on {self.column}" if self.column else ""
        rule = f" [{self.rule}]" if self.rule else ""
        n = f": {self.unexpected_count} unexpected row(s)" if self.unexpected_count else ""
        detail = f": {self.detail}" if self.detail else ""
        text = f"{self.config} {where}: {what}{col}{rule}{n}{detail}"
        if self.examples:
            ex = "; ".join(_short_json(e, 400) for e in self.examples[:MAX_EXAMPLES])
            text += f"\n    example rows: {ex}"
        return text


@dataclasses.dataclass
class ValidationReport:
    out_dir: str
    success: bool
    configs: Dict[str, Dict[str, Any]]
    failures: List[Failure]
    quarantined: List[Dict[str, str]]
    elapsed_s: float
    summary_path: str
    data_docs_index: Optional[str]
    runner_options: List[str]

    def __bool__(self) -> bool:
        return self.success

    def failures_for(self, config: Optional[str] = None, expectation_type: Optional[str] = None,
                     reason: Optional[str] = None) -> List[Failure]:
        return [
            f for f in self.failures
            if (config is None or f.config == config)
            and (expectation_type is None or f.expectation_type == expectation_type)
            and (reason is None or f.reason == reason)
        ]

    def message(self) -> str:
        if self.success:
            rows = sum(c.get("rows", 0) or 0 for c in self.configs.values())
            return (f"Validation passed for {self.out_dir}: {len(self.configs)} config(s), {rows} row(s) "
                    f"in {self.elapsed_s:.1f}s")
        bad = sorted({f.config for f in self.failures})
        lines = [f"Validation FAILED for {self.out_dir}: {len(self.failures)} failure(s) in "
                 f"{len(bad)} config(s) ({', '.join(bad)})"]
        lines += ["  - " + f.describe() for f in self.failures]
        if self.quarantined:
            lines.append(f"  quarantined {len(self.quarantined)} shard(s): "
                         + ", ".join(q["to"] for q in self.quarantined))
        lines.append(f"  summary: {self.summary_path}")
        return "\n".join(lines)

    __str__ = message


# ---------------------------------------------------------------------------
# Small helpers (pure, picklable)
# ---------------------------------------------------------------------------
def _truncate(value: Any, depth: int = 0) -> Any:
    """JSON-friendly, size-bounded copy of a cell value for example rows."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _STR_LIMIT else value[:_STR_LIMIT] + f"...(+{len(value) - _STR_LIMIT} chars)"
    if isinstance(value, dict):
        return {str(k): _truncate(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy scalar/array
        return _truncate(value.tolist(), depth)
    if isinstance(value, (list, tuple)):
        items = [_truncate(v, depth + 1) for v in list(value)[:_LIST_LIMIT]]
        if len(value) > _LIST_LIMIT:
            items.append(f"...(+{len(value) - _LIST_LIMIT} items)")
        return items
    return _truncate(str(value), depth)


def _short_json(obj: Any, limit: int) -> str:
    s = json.dumps(obj, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def _jsonable(obj: Any) -> Any:
    """Recursively makes numpy/NaN values JSON-safe."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _jsonable(obj.item())
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj if isinstance(obj, (str, int, bool, type(None))) else str(obj)


def _trim_result(d: Dict[str, Any]) -> Dict[str, Any]:
    """Bounds the size of list fields in a GX result dict (for parts and Data Docs)."""
    for r in d.get("results", []):
        res = r.get("result") or {}
        for k in ("unexpected_list", "unexpected_index_list", "partial_unexpected_list",
                  "partial_unexpected_index_list", "partial_unexpected_counts"):
            if isinstance(res.get(k), list) and len(res[k]) > _PARTIAL_UNEXPECTED:
                res[k] = res[k][:_PARTIAL_UNEXPECTED]
        res.pop("unexpected_index_query", None)
    return d


def _source_columns(cfg: Dict[str, Any]) -> Optional[str]:
    meta = (cfg.get("meta") or {}).get("counterpoint") or {}
    cols = meta.get("columns")
    if cols:
        return ",".join(cols)
    kw = cfg.get("kwargs") or {}
    for key in ("column", "column_list"):
        if kw.get(key):
            return kw[key] if isinstance(kw[key], str) else ",".join(kw[key])
    if kw.get("column_A"):
        return f"{kw['column_A']},{kw['column_B']}"
    return None


def _failures_from_result(config: str, shard: Optional[str], level: str, result: Dict[str, Any],
                          example_rows) -> List[Dict[str, Any]]:
    """Failure dicts for every unsuccessful expectation of a GX result dict.

    ``example_rows(er_result, source_columns) -> list[dict]`` builds the example rows of one result.
    """
    out = []
    for r in result.get("results", []):
        if r.get("success"):
            continue
        cfg = r.get("expectation_config") or {}
        exc = r.get("exception_info") or {}
        res = r.get("result") or {}
        raised = bool(exc.get("raised_exception"))
        column = _source_columns(cfg)
        out.append(dataclasses.asdict(Failure(
            config=config,
            shard=shard,
            expectation_type=cfg.get("type"),
            column=column,
            reason=EXPECTATION_ERROR if raised else EXPECTATION_FAILED,
            rule=((cfg.get("meta") or {}).get("counterpoint") or {}).get("rule"),
            unexpected_count=res.get("unexpected_count"),
            examples=[] if raised else example_rows(res, column.split(",") if column else []),
            detail=(exc.get("exception_message") if raised
                    else (f"observed_value={res['observed_value']}" if "observed_value" in res else None)),
            level=level,
            kwargs=_jsonable({k: v for k, v in (cfg.get("kwargs") or {}).items()
                              if k not in ("batch_id", "value_set")}),
        )))
    return out


# ---------------------------------------------------------------------------
# Beam DoFns
# ---------------------------------------------------------------------------
class ValidateShardDoFn(beam.DoFn):
    """Validates one shard (element: ``{"config", "path", "rel"}``) against its shard suite.

    One ephemeral GX context per DoFn instance, created in ``setup``.
    """

    def setup(self):
        from counterpoint.validation import suites

        self._suites_mod = suites
        self._context, self._batch_definition, self._suites = suites.make_context(
            list(records.OUTPUT_TABLES), levels=(suites.SHARD,)
        )

    def __init__(self, buckets: int = 64):
        self.buckets = buckets

    def process(self, element):
        result, table = self._validate(element)
        if table is not None:
            yield from self._keys(result["config"], result["shard"], table)
        yield result

    def _keys(self, config: str, rel: str, table):
        """Key values of the cross-shard uniqueness rules, split into hash buckets (tagged ``keys``).

        Element: ``((config, expectation_type, columns, bucket), (shard, [(key_json, row), ...]))``;
        a bucket's keys from every shard meet in one worker, so no worker ever holds a whole config.
        """
        for etype, columns in uniqueness_rules(config):
            values = table.select(list(columns)).to_pylist()
            buckets: Dict[int, List[tuple]] = {}
            for i, row in enumerate(values):
                key = json.dumps([row[c] for c in columns], sort_keys=True, default=str, ensure_ascii=False)
                b = zlib.crc32(key.encode("utf-8")) % self.buckets
                buckets.setdefault(b, []).append((key, i))
            for b, entries in buckets.items():
                yield beam.pvalue.TaggedOutput("keys", ((config, etype, columns, b), (rel, entries)))

    def _validate(self, element):
        """``(result, table)``: the shard's result dict and its table (None when unreadable)."""
        import pyarrow as pa

        suites = self._suites_mod
        config, rel = element["config"], element["rel"]
        t0 = time.monotonic()
        out = {"config": config, "shard": rel, "rows": None, "success": False, "failures": [],
               "gx_result": None, "elapsed_s": 0.0}
        if config not in records.OUTPUT_TABLES:
            out["failures"].append(dataclasses.asdict(Failure(
                config=config, shard=rel, expectation_type=None, column=None, reason=UNKNOWN_CONFIG,
                detail=f"{config!r} is not a known config; known: {sorted(records.OUTPUT_TABLES)}")))
            out["elapsed_s"] = time.monotonic() - t0
            return out, None
        spec = records.table(config)
        try:
            table = storage.read_parquet(element["path"])
        except Exception as e:  # truncated / corrupt / not Parquet at all
            out["failures"].append(dataclasses.asdict(Failure(
                config=config, shard=rel, expectation_type=None, column=None, reason=CORRUPT_SHARD,
                detail=f"{type(e).__name__}: {e}")))
            out["elapsed_s"] = time.monotonic() - t0
            return out, None
        out["rows"] = table.num_rows

        # Names, order and types must match the TableSpec. Nullability flags are not compared:
        # nulls in a non-nullable column are the not-null expectation's business.
        expected = spec.arrow_schema()
        if table.column_names != expected.names or not all(
            table.schema.field(f.name).type.equals(f.type) for f in expected
        ):
            missing = [n for n in expected.names if n not in table.column_names]
            extra = [n for n in table.column_names if n not in expected.names]
            wrong = [f"{f.name}: {table.schema.field(f.name).type} != {f.type}" for f in expected
                     if f.name in table.column_names and not table.schema.field(f.name).type.equals(f.type)]
            detail = "; ".join(x for x in (
                f"missing columns {missing}" if missing else "",
                f"unexpected columns {extra}" if extra else "",
                f"wrong types {wrong}" if wrong else "") if x) or "column order differs"
            out["failures"].append(dataclasses.asdict(Failure(
                config=config, shard=rel, expectation_type=None, column=None, reason=SCHEMA_MISMATCH,
                detail=detail)))
            if missing:
                out["elapsed_s"] = time.monotonic() - t0
                return out, None
            table = table.select(expected.names)
            try:
                table = table.cast(pa.schema([f.with_nullable(True) for f in expected]))
            except Exception:
                pass  # validated as read; the schema_mismatch failure already fails the shard

        df = suites.shard_frame(table, spec)
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            self._suites[(config, suites.SHARD)],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL_UNEXPECTED,
                           "return_unexpected_index_query": False},
        )
        gx_result = _trim_result(_jsonable(result.to_json_dict()))

        def example_rows(res, columns):
            rows = []
            for idx in (res.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]:
                if isinstance(idx, dict):  # index given as {column: value}
                    rows.append(_truncate(idx))
                    continue
                try:
                    i = int(idx)
                    row = table.slice(i, 1).to_pylist()[0]
                except (TypeError, ValueError, IndexError):
                    continue
                # id, row number and the offending columns first, so truncated messages stay useful
                order = ["id", *columns, *row]
                rows.append({"__row": i, **{k: _truncate(row[k]) for k in dict.fromkeys(order) if k in row}})
            return rows

        out["failures"].extend(_failures_from_result(config, rel, suites.SHARD, gx_result, example_rows))
        out["gx_result"] = gx_result
        out["success"] = not out["failures"]
        out["elapsed_s"] = time.monotonic() - t0
        return out, table


def uniqueness_rules(config: str) -> List[tuple]:
    """``(expectation_type, columns)`` of the config suite's uniqueness expectations (from the TableSpec)."""
    from counterpoint.validation import suites

    rules = []
    for e in suites.expectations(config, suites.CONFIG):
        if e.expectation_type == "expect_column_values_to_be_unique":
            rules.append((e.expectation_type, (e.column,)))
        elif e.expectation_type == "expect_compound_columns_to_be_unique":
            rules.append((e.expectation_type, tuple(e.column_list)))
    return rules


class FindDuplicatesDoFn(beam.DoFn):
    """One hash bucket of one rule: the key values held by more than one row, across every shard.

    Output: ``(config, {"expectation_type", "columns", "duplicated_values", "rows", "shards", "examples"})``
    per bucket with duplicates (examples: ``__shard``, ``__row`` and the key columns, at most MAX_EXAMPLES).
    """

    def process(self, element):
        (config, etype, columns, _bucket), parts = element
        seen: Dict[str, List[tuple]] = {}
        for shard, entries in parts:
            for key, row in entries:
                seen.setdefault(key, []).append((shard, row))
        dups = {k: v for k, v in seen.items() if len(v) > 1}
        if not dups:
            return
        examples = []
        for key, where in sorted(dups.items()):
            values = json.loads(key)
            for shard, row in sorted(where):
                if len(examples) < MAX_EXAMPLES:
                    examples.append({SHARD_KEY: shard, ROW_KEY: row,
                                     **{c: _truncate(v) for c, v in zip(columns, values)}})
        yield config, {"expectation_type": etype, "columns": list(columns), "duplicated_values": len(dups),
                       "rows": sum(len(v) for v in dups.values()),
                       "shards": sorted({shard for v in dups.values() for shard, _ in v}), "examples": examples}


class ValidateConfigDoFn(beam.DoFn):
    """The cross-shard suite of one config: uniqueness (from :class:`FindDuplicatesDoFn`) and the row floor.

    Input: ``(config, {"config", "shards", "duplicates"})``. Output: the config's result dict.
    """

    def __init__(self, min_rows: Optional[Dict[str, int]] = None):
        self.min_rows = dict(min_rows or {})

    def process(self, element):
        config, grouped = element
        shards = sorted(grouped["shards"], key=lambda s: s["shard"])
        t0 = time.monotonic()
        out = {"config": config, "shards": shards, "gx_result": None, "failures": [], "elapsed_s": 0.0,
               "offending_shards": []}
        merged: Dict[tuple, Dict[str, Any]] = {}
        for d in grouped["duplicates"]:
            key = (d["expectation_type"], tuple(d["columns"]))
            m = merged.setdefault(key, {"duplicated_values": 0, "rows": 0, "shards": set(), "examples": []})
            m["duplicated_values"] += d["duplicated_values"]
            m["rows"] += d["rows"]
            m["shards"].update(d["shards"])
            m["examples"] = sorted(m["examples"] + d["examples"], key=lambda e: (e[SHARD_KEY], e[ROW_KEY]))
        offending = set()
        for (etype, columns), m in sorted(merged.items()):
            offending |= m["shards"]
            rule = "unique" if etype == "expect_column_values_to_be_unique" else "unique_together"
            out["failures"].append(dataclasses.asdict(Failure(
                config=config, shard=None, expectation_type=etype, column=",".join(columns), rule=rule,
                unexpected_count=m["rows"], examples=m["examples"][:MAX_EXAMPLES],
                detail=f"{m['duplicated_values']} value(s) held by more than one row", level="config",
                kwargs={"column": columns[0]} if len(columns) == 1 else {"column_list": list(columns)})))
        floor = self.min_rows.get(config)
        rows = sum(s["rows"] or 0 for s in shards)
        if floor and rows < floor:
            out["failures"].append(dataclasses.asdict(Failure(
                config=config, shard=None, expectation_type="expect_table_row_count_to_be_between", column=None,
                rule="min_rows", unexpected_count=None, detail=f"observed_value={rows}", level="config",
                kwargs={"min_value": floor})))
        out["offending_shards"] = sorted(offending)
        out["elapsed_s"] = time.monotonic() - t0
        yield out


class WriteResultDoFn(beam.DoFn):
    def __init__(self, parts_dir: str):
        self._parts_dir = parts_dir

    def process(self, element):
        path = storage.join(self._parts_dir, f"{element['config']}.json")
        storage.write_text(path, json.dumps(element, ensure_ascii=False, default=str))
        yield path


def _key_by_config(result):
    return result["config"], result


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def _discover(layout: storage.DatasetLayout, configs: Optional[Sequence[str]]) -> Dict[str, List[str]]:
    present = layout.present_configs()
    if configs is None:
        summary = storage.read_json(layout.summary_path)
        expected = list((summary or {}).get("configs") or []) if isinstance(summary, dict) else []
        if not expected:
            expected = list(records.OUTCOME_CONFIGS)
        wanted = list(dict.fromkeys([*expected, *present]))
    else:
        wanted = list(configs)
        unknown = [c for c in wanted if c not in records.OUTPUT_TABLES]
        if unknown:
            raise ValueError(f"unknown config(s) {unknown}; known: {sorted(records.OUTPUT_TABLES)}")
    return {c: layout.shards(c) for c in wanted}


def _quarantine(layout: storage.DatasetLayout, quarantine_dir: str, config: str, rel: str,
                failures: List[Dict[str, Any]]) -> Optional[Dict[str, str]]:
    src = layout.path(*rel.split("/"))
    if not storage.exists(src):
        return None
    dest = storage.join(quarantine_dir, config, storage.basename(src))
    if storage.exists(dest):
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        stem, dot, suffix = storage.basename(src).rpartition(".")
        dest = storage.join(quarantine_dir, config, f"{stem}.{stamp}{dot}{suffix}")
    storage.move_file(src, dest)
    storage.write_json(dest + ".failures.json", failures)
    try:
        to = storage.relpath(dest, layout.root)
    except ValueError:
        to = dest
    return {"config": config, "from": rel, "to": to}


def _build_data_docs(docs_dir: str, configs: Iterable[str], results: List[tuple], run_name: str,
                     min_rows: Optional[Dict[str, int]] = None) -> Optional[str]:
    """Renders GX Data Docs for ``results`` (``(suite name, batch id, result dict)``) into ``docs_dir``.

    GX's site builder writes to local disk only: the site is built in a scratch folder and copied
    to ``docs_dir`` (any filesystem).
    """
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from counterpoint.validation import suites

    storage.delete_tree(docs_dir)
    with storage.LocalScratch() as scratch:
        context, _, _ = suites.make_context([c for c in configs if c in records.OUTPUT_TABLES], min_rows=min_rows)
        context.add_data_docs_site(
            "counterpoint",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": scratch},
            },
        )
        run_id = RunIdentifier(run_name=run_name, run_time=_dt.datetime.now(_dt.timezone.utc))
        for name, batch_id, result in results:
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=name),
                run_id=run_id,
                batch_identifier=batch_id,
            )
            context.validation_results_store.set(key, ExpectationSuiteValidationResult(**result))
        context.build_data_docs(site_names=["counterpoint"])
        written = storage.upload_tree(scratch, docs_dir)
    index = storage.join(docs_dir, "index.html")
    return index if index in written else None


def _quiet_gx() -> None:
    """GX sets one of its loggers to INFO itself (one line per ephemeral context): back to WARNING."""
    import logging

    import great_expectations  # noqa: F401  (its modules set their levels on import)

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


def validate_output(
    out_dir: str,
    *,
    runner_options: Optional[List[str]] = None,
    pipeline_options=None,
    configs: Optional[Sequence[str]] = None,
    quarantine: bool = True,
    quarantine_dir: Optional[str] = None,
    min_rows: Optional[Dict[str, int]] = None,
    on_job_runner: bool = False,
) -> ValidationReport:
    """Validates every config of a Counterpoint dataset folder (local, gs://, s3://); see the module docstring.

    ``configs``: the configs to validate (default: ``run_summary.json``'s "configs", else the
    outcome configs, plus every folder under ``data/``). A listed config without files has
    zero rows. ``quarantine``: move failing shards to ``quarantine_dir`` (default
    ``<out>/quarantine``). ``min_rows``: row-count floors per config (none by default).
    ``on_job_runner``: run the gate on ``pipeline_options``' runner (a cluster) instead of in-process.
    """
    t_start = time.monotonic()
    _quiet_gx()
    if storage.is_local(out_dir):
        import os

        out_dir = os.path.abspath(out_dir)
        if not os.path.isdir(out_dir):
            raise FileNotFoundError(f"output directory {out_dir} does not exist")
    layout = storage.DatasetLayout(out_dir)
    if not storage.is_local(out_dir) and not storage.match(storage.join(layout.root, "**")):
        raise FileNotFoundError(f"output directory {out_dir} does not exist (no object under it)")
    quarantine_dir = quarantine_dir or layout.path(storage.QUARANTINE_DIR)
    options = _gate_options(runner_options, pipeline_options, on_job_runner)
    shards_by_config = _discover(layout, configs)
    tasks = [
        {"config": c, "path": path, "rel": storage.relpath(path, layout.root)}
        for c, paths in shards_by_config.items() for path in paths
    ]
    validation_dir = layout.validation_dir
    parts_dir = storage.join(validation_dir, ".parts")
    storage.delete_tree(parts_dir)
    storage.mkdirs(parts_dir)

    t_pipeline = time.monotonic()
    with beam.Pipeline(options=options) as p:
        validated = (
            p
            | "ListShards" >> beam.Create(tasks)
            | "SpreadShards" >> beam.Reshuffle()
            | "ValidateShard" >> beam.ParDo(ValidateShardDoFn()).with_outputs("keys", main="results")
        )
        shard_results = validated.results | "KeyShardByConfig" >> beam.Map(_key_by_config)
        duplicates = (
            validated.keys
            | "GroupKeyBuckets" >> beam.GroupByKey()
            | "FindDuplicates" >> beam.ParDo(FindDuplicatesDoFn())
        )
        config_keys = p | "ListConfigs" >> beam.Create([(c, c) for c in shards_by_config])
        (
            {"config": config_keys, "shards": shard_results, "duplicates": duplicates}
            | "GroupByConfig" >> beam.CoGroupByKey()
            | "ValidateConfig" >> beam.ParDo(ValidateConfigDoFn(min_rows))
            | "WriteResults" >> beam.ParDo(WriteResultDoFn(parts_dir))
        )

    pipeline_s = time.monotonic() - t_pipeline
    parts = {}
    for c in shards_by_config:
        parts[c] = json.loads(storage.read_text(storage.join(parts_dir, f"{c}.json")))
    storage.delete_tree(parts_dir)

    failures: List[Failure] = []
    quarantined: List[Dict[str, str]] = []
    config_summaries: Dict[str, Dict[str, Any]] = {}
    docs_results: List[tuple] = []
    for c, part in parts.items():
        cfg_failures = [f for s in part["shards"] for f in s["failures"]] + part["failures"]
        bad_shards = {s["shard"] for s in part["shards"] if s["failures"]} | set(part.get("offending_shards", []))
        moved = {}
        if quarantine:
            for rel in sorted(bad_shards):
                why = [f for f in cfg_failures if f["shard"] in (rel, None)]
                q = _quarantine(layout, quarantine_dir, c, rel, why)
                if q:
                    moved[rel] = q["to"]
                    quarantined.append(q)
        shard_rows = []
        for s in part["shards"]:
            cross = s["shard"] in set(part.get("offending_shards", []))
            shard_rows.append({"shard": s["shard"], "rows": s["rows"], "success": not s["failures"] and not cross,
                               "cross_shard_failure": cross, "elapsed_s": round(s["elapsed_s"], 4),
                               "quarantined_to": moved.get(s["shard"])})
            if s.get("gx_result"):
                docs_results.append((f"counterpoint.{c}.shard", s["shard"].replace("/", "__"), s["gx_result"]))
        if part.get("gx_result"):
            docs_results.append((f"counterpoint.{c}.config", f"{c}__all_shards", part["gx_result"]))
        rows = sum(s["rows"] or 0 for s in part["shards"])
        config_summaries[c] = {
            "success": not cfg_failures,
            "rows": rows,
            "rows_published": sum(s["rows"] or 0 for s in part["shards"] if s["shard"] not in moved),
            "n_shards": len(part["shards"]),
            "min_rows": (min_rows or {}).get(c),
            "shards": shard_rows,
            "failed_expectations": cfg_failures,
            "elapsed_s": round(sum(s["elapsed_s"] for s in part["shards"]) + part["elapsed_s"], 4),
        }
        failures.extend(Failure(**f) for f in cfg_failures)

    success = not failures
    run_name = "counterpoint-validation-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    docs_index = None
    docs_error = None
    t_docs = time.monotonic()
    try:
        docs_index = _build_data_docs(storage.join(validation_dir, "data_docs"), shards_by_config, docs_results,
                                      run_name, min_rows)
    except Exception as e:  # Data Docs are a convenience; never let them hide the verdict
        docs_error = f"{type(e).__name__}: {e}"
    docs_s = time.monotonic() - t_docs
    elapsed = time.monotonic() - t_start

    import great_expectations as gx

    summary_path = layout.validation_summary
    summary = {
        "success": success,
        "validated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "elapsed_s": round(elapsed, 3),
        "timing": {"pipeline_s": round(pipeline_s, 3), "data_docs_s": round(docs_s, 3)},
        "runner_options": list(runner_options) if runner_options is not None else list(DEFAULT_RUNNER_OPTIONS),
        "great_expectations_version": gx.__version__,
        "configs": config_summaries,
        "min_rows": dict(min_rows or {}),
        "quarantined": quarantined,
        "data_docs": (storage.relpath(docs_index, layout.root) if docs_index else None),
        "data_docs_error": docs_error,
    }
    storage.write_json(summary_path, _jsonable(summary))
    return ValidationReport(
        out_dir=layout.root,
        success=success,
        configs=config_summaries,
        failures=failures,
        quarantined=quarantined,
        elapsed_s=elapsed,
        summary_path=summary_path,
        data_docs_index=docs_index,
        runner_options=summary["runner_options"],
    )
