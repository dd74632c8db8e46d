"""One shard at a time: read it once, fingerprint those bytes, check its schema and shard suite, emit its keys.

Input element (:func:`shard_task`): ``{"config", "uri", "shard", "path"}`` — the shard's full
path, its path relative to the dataset folder (how failures name it) and relative to the data
folder (how the verdict names it). Output: the shard's result dict (rows, failures, size, sha256,
trimmed GX result) and, tagged ``keys``, the key values of every cross-shard uniqueness rule in
hash buckets for :class:`counterpoint.validation.cross_shard.FindDuplicatesDoFn`.

The size and SHA-256 are those of the exact bytes that were parsed and validated, so a verdict
names content, not file names: a shard rewritten after validation (same name, same row count)
no longer matches (:func:`counterpoint.validation.results.shard_fingerprint`).
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam

from counterpoint import storage
from counterpoint.schemas import records
from counterpoint.validation.results import (
    CORRUPT_SHARD,
    MAX_EXAMPLES,
    PARTIAL_UNEXPECTED,
    ROW_KEY,
    SCHEMA_MISMATCH,
    UNKNOWN_CONFIG,
    failure_dict,
    failures_from_result,
    jsonable,
    shard_fingerprint,
    trim_result,
    truncate,
)


def shard_task(config: str, uri: str, layout: storage.DatasetLayout) -> Dict[str, str]:
    """The DoFn's input element for one shard of ``layout``."""
    return {"config": config, "uri": uri, "shard": storage.relpath(uri, layout.root),
            "path": storage.relpath(uri, layout.data_dir)}


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


def parse_shard(data: bytes):
    """A Parquet shard parsed from bytes already read (raises when truncated or corrupt)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data)).read()


def schema_problem(table, spec) -> Tuple[Optional[str], bool]:
    """``(detail, fatal)``: how ``table``'s columns differ from the TableSpec (None when they match).

    Names, order and types must match. Nullability flags are not compared: nulls in a
    non-nullable column are the not-null expectation's business. Missing columns are fatal
    (the suite cannot run); extra, reordered or mistyped ones still let it run on a cast copy.
    """
    expected = spec.arrow_schema()
    if table.column_names == expected.names and all(
        table.schema.field(f.name).type.equals(f.type) for f in expected
    ):
        return None, False
    missing = [n for n in expected.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in expected.names]
    wrong = [f"{f.name}: {table.schema.field(f.name).type} != {f.type}" for f in expected
             if f.name in table.column_names and not table.schema.field(f.name).type.equals(f.type)]
    detail = "; ".join(x for x in (
        f"missing columns {missing}" if missing else "",
        f"unexpected columns {extra}" if extra else "",
        f"wrong types {wrong}" if wrong else "") if x) or "column order differs"
    return detail, bool(missing)


def conform(table, spec):
    """``table`` with the spec's column order and (nullable) types, as far as a cast allows."""
    import pyarrow as pa

    expected = spec.arrow_schema()
    table = table.select(expected.names)
    try:
        return table.cast(pa.schema([f.with_nullable(True) for f in expected]))
    except Exception:  # noqa: BLE001 - validated as read; the schema_mismatch failure already fails the shard
        return table


def example_rows_of(table):
    """``example_rows(result, columns)`` for :func:`failures_from_result`: the offending rows of ``table``."""

    def example_rows(res: Dict[str, Any], columns: List[str]) -> List[Dict[str, Any]]:
        rows = []
        for idx in (res.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]:
            if isinstance(idx, dict):  # index given as {column: value}
                rows.append(truncate(idx))
                continue
            try:
                i = int(idx)
                row = table.slice(i, 1).to_pylist()[0]
            except (TypeError, ValueError, IndexError):
                continue
            # id, row number and the offending columns first, so truncated messages stay useful
            order = ["id", *columns, *row]
            rows.append({ROW_KEY: i, **{k: truncate(row[k]) for k in dict.fromkeys(order) if k in row}})
        return rows

    return example_rows


class ValidateShardDoFn(beam.DoFn):
    """Validates one shard (element: :func:`shard_task`) against its shard suite; see the module docstring.

    One ephemeral GX context per DoFn instance, created in ``setup``.
    """

    def __init__(self, buckets: int = 64):
        self.buckets = buckets

    def setup(self):
        from counterpoint.validation import suites

        self._suites_mod = suites
        self._context, self._batch_definition, self._suites = suites.make_context(
            list(records.OUTPUT_TABLES), levels=(suites.SHARD,)
        )

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
        """``(result, table)``: the shard's result dict and its table (None when it cannot be checked)."""
        config, rel = element["config"], element["shard"]
        t0 = time.monotonic()
        out = {"config": config, "shard": rel, "path": element["path"], "rows": None, "size": None,
               "sha256": None, "success": False, "failures": [], "gx_result": None, "elapsed_s": 0.0}
        table = self._check(element, out)
        if table is not None:
            self._run_suite(config, rel, table, out)
        out["success"] = not out["failures"]
        out["elapsed_s"] = time.monotonic() - t0
        return out, table

    def _check(self, element, out: Dict[str, Any]):
        """Reads and fingerprints the shard and checks its schema; the table to validate, or None."""
        config, rel = element["config"], element["shard"]
        if config not in records.OUTPUT_TABLES:
            known = sorted(records.OUTPUT_TABLES)
            out["failures"].append(failure_dict(
                config, rel, UNKNOWN_CONFIG, f"{config!r} is not a known config; known: {known}"))
            return None
        try:
            with storage.open_read(element["uri"]) as f:
                data = f.read()
            out["size"], out["sha256"] = shard_fingerprint(data)
            table = parse_shard(data)
        except Exception as e:  # noqa: BLE001 - truncated / corrupt / not Parquet at all
            out["failures"].append(failure_dict(config, rel, CORRUPT_SHARD, f"{type(e).__name__}: {e}"))
            return None
        out["rows"] = table.num_rows
        spec = records.table(config)
        detail, fatal = schema_problem(table, spec)
        if detail is None:
            return table
        out["failures"].append(failure_dict(config, rel, SCHEMA_MISMATCH, detail))
        return None if fatal else conform(table, spec)

    def _run_suite(self, config: str, rel: str, table, out: Dict[str, Any]) -> None:
        suites = self._suites_mod
        df = suites.shard_frame(table, records.table(config))
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            self._suites[(config, suites.SHARD)],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED,
                           "return_unexpected_index_query": False},
        )
        gx_result = trim_result(jsonable(result.to_json_dict()))
        out["failures"].extend(failures_from_result(config, rel, suites.SHARD, gx_result, example_rows_of(table)))
        out["gx_result"] = gx_result

