"""What the validation gate reports: ``Failure`` and ``ValidationReport``, trimmed GX results, shard fingerprints.

Pure and picklable (no Beam, no GX import): the gate's DoFns build failure dicts with these
helpers, the driver turns them back into :class:`Failure` objects, and the verdict reader of a
published dataset re-hashes shards with :func:`shard_fingerprint`, the function the gate used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

MAX_EXAMPLES = 5
PARTIAL_UNEXPECTED = 20
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


def shard_fingerprint(data: bytes) -> Tuple[int, str]:
    """``(size, sha256 hex)`` of a shard's bytes: what the gate records and what push/export compare."""
    return len(data), hashlib.sha256(data).hexdigest()


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
            ex = "; ".join(short_json(e, 400) for e in self.examples[:MAX_EXAMPLES])
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


def failure_dict(config: str, shard: Optional[str], reason: str, detail: str) -> Dict[str, Any]:
    """A shard-level failure that is not an expectation (corrupt, schema, unknown config), as a dict."""
    return dataclasses.asdict(Failure(config=config, shard=shard, expectation_type=None, column=None,
                                      reason=reason, detail=detail))


# ---------------------------------------------------------------------------
# Size-bounded, JSON-safe values
# ---------------------------------------------------------------------------
def truncate(value: Any, depth: int = 0) -> Any:
    """JSON-friendly, size-bounded copy of a cell value for example rows."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _STR_LIMIT else value[:_STR_LIMIT] + f"...(+{len(value) - _STR_LIMIT} chars)"
    if isinstance(value, dict):
        return {str(k): truncate(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy scalar/array
        return truncate(value.tolist(), depth)
    if isinstance(value, (list, tuple)):
        items = [truncate(v, depth + 1) for v in list(value)[:_LIST_LIMIT]]
        if len(value) > _LIST_LIMIT:
            items.append(f"...(+{len(value) - _LIST_LIMIT} items)")
        return items
    return truncate(str(value), depth)


def short_json(obj: Any, limit: int) -> str:
    s = json.dumps(obj, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + "..."


def jsonable(obj: Any) -> Any:
    """Recursively makes numpy/NaN values JSON-safe."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return jsonable(obj.item())
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return obj if isinstance(obj, (str, int, bool, type(None))) else str(obj)


# ---------------------------------------------------------------------------
# GX results
# ---------------------------------------------------------------------------
def trim_result(d: Dict[str, Any]) -> Dict[str, Any]:
    """Bounds the size of list fields in a GX result dict (for parts and Data Docs)."""
    for r in d.get("results", []):
        res = r.get("result") or {}
        for k in ("unexpected_list", "unexpected_index_list", "partial_unexpected_list",
                  "partial_unexpected_index_list", "partial_unexpected_counts"):
            if isinstance(res.get(k), list) and len(res[k]) > PARTIAL_UNEXPECTED:
                res[k] = res[k][:PARTIAL_UNEXPECTED]
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


def failures_from_result(config: str, shard: Optional[str], level: str, result: Dict[str, Any],
                         example_rows: Callable[[Dict[str, Any], List[str]], List[Dict[str, Any]]],
                         ) -> List[Dict[str, Any]]:
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
            kwargs=jsonable({k: v for k, v in (cfg.get("kwargs") or {}).items()
                             if k not in ("batch_id", "value_set")}),
        )))
    return out
