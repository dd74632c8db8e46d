"""Checks across a config's shards, and ``ValidateDataset``: the gate's whole Beam graph as one composite.

``ValidateDataset(configs, min_rows, expected)`` — input: a PCollection of shard tasks
(:func:`counterpoint.validation.shard.shard_task`); output: one result dict per config::

    SpreadShards (Reshuffle) -> ValidateShard (ParDo) -> results -> KeyShardByConfig -----------------\\
                                                      -> keys -> GroupKeyBuckets -> FindDuplicates --+-> GroupByConfig
    ListConfigs ------------------------------------------------------------------------------------/   (CoGroupByKey)
      -> ValidateConfig

The cross-shard suite — uniqueness and compound uniqueness, a row-count floor when the run asks
for one (``min_rows``), and the shards and rows the run says it wrote (``expected``) — is
evaluated distributively: each shard emits the key values of every uniqueness rule in hash
buckets, one ``GroupByKey`` brings a bucket's keys from every shard together, and
``FindDuplicates`` reports the values held by more than one row, so uniqueness holds across
shards and no worker (nor the driver) ever holds a whole config. A config with no file counts
as zero rows and passes without a floor or an expectation (a thin run is not a defective one);
with ``expected`` it fails when shards or rows went missing (deleted, quarantined, truncated).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam

from counterpoint.validation.results import MAX_EXAMPLES, ROW_KEY, SHARD_KEY, Failure, truncate
from counterpoint.validation.shard import ValidateShardDoFn

WRITTEN_SHARDS = "expect_written_shards_present"
WRITTEN_ROWS = "expect_written_rows_present"


def count_failures(config: str, n_shards: int, rows: int, floor: Optional[int] = None,
                   expected: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
    """Config-level failure dicts for the row floor and for the shards/rows the run wrote.

    ``expected``: ``{"shards": n, "rows": n}``, the run's own written counts. Fewer shards, fewer
    rows, or no shard at all where rows were written, fail (a deleted or quarantined shard).
    """
    def fail(etype: str, rule: str, observed: int, minimum: int, why: str) -> Dict[str, Any]:
        return dataclasses.asdict(Failure(
            config=config, shard=None, expectation_type=etype, column=None, rule=rule,
            detail=f"observed_value={observed}" + (f": {why}" if why else ""), level="config",
            kwargs={"min_value": minimum}))

    out = []
    if floor and rows < floor:
        out.append(fail("expect_table_row_count_to_be_between", "min_rows", rows, floor, ""))
    want_shards = int((expected or {}).get("shards") or 0)
    want_rows = int((expected or {}).get("rows") or 0)
    if n_shards < want_shards or (want_rows and not n_shards):
        out.append(fail(WRITTEN_SHARDS, "written_shards", n_shards, max(want_shards, 1),
                        f"the run wrote {want_shards} shard(s); rerun it or restore the missing shard(s)"))
    if rows < want_rows:
        out.append(fail(WRITTEN_ROWS, "written_rows", rows, want_rows,
                        f"the run wrote {want_rows} row(s); rerun it or restore the missing shard(s)"))
    return out


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
                                     **{c: truncate(v) for c, v in zip(columns, values)}})
        yield config, {"expectation_type": etype, "columns": list(columns), "duplicated_values": len(dups),
                       "rows": sum(len(v) for v in dups.values()),
                       "shards": sorted({shard for v in dups.values() for shard, _ in v}), "examples": examples}


def _duplicate_failures(config: str, duplicates) -> tuple:
    """``(failure dicts, offending shards)`` from the FindDuplicates outputs of one config."""
    merged: Dict[tuple, Dict[str, Any]] = {}
    for d in duplicates:
        key = (d["expectation_type"], tuple(d["columns"]))
        m = merged.setdefault(key, {"duplicated_values": 0, "rows": 0, "shards": set(), "examples": []})
        m["duplicated_values"] += d["duplicated_values"]
        m["rows"] += d["rows"]
        m["shards"].update(d["shards"])
        m["examples"] = sorted(m["examples"] + d["examples"], key=lambda e: (e[SHARD_KEY], e[ROW_KEY]))
    failures, offending = [], set()
    for (etype, columns), m in sorted(merged.items()):
        offending |= m["shards"]
        rule = "unique" if etype == "expect_column_values_to_be_unique" else "unique_together"
        failures.append(dataclasses.asdict(Failure(
            config=config, shard=None, expectation_type=etype, column=",".join(columns), rule=rule,
            unexpected_count=m["rows"], examples=m["examples"][:MAX_EXAMPLES],
            detail=f"{m['duplicated_values']} value(s) held by more than one row", level="config",
            kwargs={"column": columns[0]} if len(columns) == 1 else {"column_list": list(columns)})))
    return failures, sorted(offending)


class ValidateConfigDoFn(beam.DoFn):
    """The cross-shard suite of one config: uniqueness (from :class:`FindDuplicatesDoFn`), floor, written counts.

    Input: ``(config, {"config", "shards", "duplicates"})``. Output: the config's result dict
    (``config``, ``shards`` sorted by path, ``failures`` of the config level, ``offending_shards``).
    """

    def __init__(self, min_rows: Optional[Dict[str, int]] = None,
                 expected: Optional[Dict[str, Dict[str, int]]] = None):
        self.min_rows = dict(min_rows or {})
        self.expected = dict(expected or {})

    def process(self, element):
        config, grouped = element
        t0 = time.monotonic()
        shards = sorted(grouped["shards"], key=lambda s: s["shard"])
        failures, offending = _duplicate_failures(config, grouped["duplicates"])
        rows = sum(s["rows"] or 0 for s in shards)
        failures += count_failures(config, len(shards), rows, self.min_rows.get(config), self.expected.get(config))
        yield {"config": config, "shards": shards, "gx_result": None, "failures": failures,
               "offending_shards": offending, "elapsed_s": time.monotonic() - t0}


def key_by_config(result):
    return result["config"], result


class ValidateDataset(beam.PTransform):
    """Shard tasks in, one result dict per config out (every config in ``configs``, with or without shards)."""

    def __init__(self, configs: Sequence[str], min_rows: Optional[Dict[str, int]] = None,
                 expected: Optional[Dict[str, Dict[str, int]]] = None, buckets: int = 64):
        super().__init__()
        self.configs = list(configs)
        self.min_rows = dict(min_rows or {})
        self.expected = dict(expected or {})
        self.buckets = buckets

    def expand(self, tasks):
        validated = (
            tasks
            | "SpreadShards" >> beam.Reshuffle()
            | "ValidateShard" >> beam.ParDo(ValidateShardDoFn(self.buckets)).with_outputs("keys", main="results")
        )
        shard_results = validated.results | "KeyShardByConfig" >> beam.Map(key_by_config)
        duplicates = (
            validated.keys
            | "GroupKeyBuckets" >> beam.GroupByKey()
            | "FindDuplicates" >> beam.ParDo(FindDuplicatesDoFn())
        )
        config_keys = tasks.pipeline | "ListConfigs" >> beam.Create([(c, c) for c in self.configs])
        return (
            {"config": config_keys, "shards": shard_results, "duplicates": duplicates}
            | "GroupByConfig" >> beam.CoGroupByKey()
            | "ValidateConfig" >> beam.ParDo(ValidateConfigDoFn(self.min_rows, self.expected))
        )
