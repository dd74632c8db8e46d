"""``export_output``: trainer-ready configs from a validated Counterpoint output, validated and documented.

Input: an output directory that passed the validation gate
(``validation/summary.json`` with ``success: true``, covering every config the
export reads, with the row counts still on disk). Output: one Hub-layout config
per format, ``data/<config>/train-0000i-of-0000N.parquet`` (zstd), either next
to the other configs (default) or in a separate dataset folder (``output_dir``).

Each export is written to a staging folder (``<target>/_work/export-<ns>/``),
validated there by the same gate (``validate_output(staging, configs=[...])``,
suites from :mod:`counterpoint.schemas.exports`) and only then moved into
``<target>/data/`` (replacing an earlier export of the same config). Its
validation result is merged into ``<target>/validation/summary.json`` (the
other configs' entries and Data Docs stay; ``counterpoint validate`` rebuilds
Data Docs for every config, exports included) and the dataset card is rewritten so that
``datasets.load_dataset(target, "<config>")`` works. A failed validation leaves
``data/`` untouched and keeps the staging folder for inspection.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Union

import pyarrow as pa

from counterpoint import storage
from counterpoint.dataset.export import formats
from counterpoint.schemas import exports, records

log = logging.getLogger(__name__)

FORMATS = ("trl-stepwise", "openrlhf-prm", "step-dpo", "weighted-pairs")
FORMAT_CONFIG = {
    "trl-stepwise": exports.TRL_STEPWISE.name,
    "openrlhf-prm": exports.OPENRLHF_PRM.name,
    "step-dpo": exports.STEP_DPO.name,
    "weighted-pairs": exports.WEIGHTED_PAIRS.name,
}
# Source configs each format reads: (required, optional-if-present).
FORMAT_SOURCES = {
    "trl-stepwise": (("step_labels",), ()),
    "openrlhf-prm": (("step_labels",), ()),
    "step-dpo": (("preferences",), ()),
    "weighted-pairs": (("preferences",), ("step_values", "step_labels")),
}
MAX_ROWS_PER_SHARD = 100_000
WORK_DIR = "_work"


class ExportError(RuntimeError):
    """The output cannot be exported (not validated, changed since, nothing to export, invalid export)."""


@dataclasses.dataclass
class ExportResult:
    source_dir: str
    target_dir: str
    formats: List[str]
    rows: Dict[str, int]  # export config -> rows written
    paths: Dict[str, List[str]]  # export config -> shard paths (absolute)
    rejects: List[Dict[str, Any]]  # records.REJECTS rows (stage "write", reason "export_*")
    not_applicable: Dict[str, int]  # export config -> source rows not of its kind (e.g. outcome pairs)
    validation_summary: str
    elapsed_s: float

    @property
    def rejects_by_reason(self) -> Dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejects))

    def message(self) -> str:
        lines = [f"Exported {', '.join(self.formats)} from {self.source_dir} into {self.target_dir} "
                 f"in {self.elapsed_s:.1f}s (validated)"]
        for config, n in self.rows.items():
            lines.append(f"  {config:<16} {n} row(s) in {len(self.paths[config])} shard(s)")
        if self.rejects:
            lines.append(f"  rejected: {self.rejects_by_reason}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Reading (one function, so the FileSystems-based reader is a one-line switch)
# ---------------------------------------------------------------------------
def read_source_config(out_dir: str, config: str) -> pa.Table:
    from counterpoint.pipelines.finalize import read_config

    return read_config(out_dir, config)


def _load_json(path: str) -> Optional[dict]:
    data = storage.read_json(path)
    return data if isinstance(data, dict) else None


def _has_config(out: str, config: str) -> bool:
    return bool(storage.DatasetLayout(out).shards(config))


def _validated_sources(src: str, fmts: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Rows of every source config the formats read, after checking they passed validation unchanged."""
    summary = _load_json(storage.DatasetLayout(src).validation_summary)
    if summary is None:
        raise ExportError(f"{src} has not been validated (no validation/summary.json): "
                          f"run `counterpoint validate {src}` first")
    if not summary.get("success"):
        raise ExportError(f"{src} failed validation ({storage.DatasetLayout(src).validation_summary}): fix the output and "
                          "re-validate before exporting")
    validated = summary.get("configs") or {}
    wanted: Dict[str, bool] = {}
    for f in fmts:
        required, optional = FORMAT_SOURCES[f]
        for c in required:
            if not _has_config(src, c):
                raise ExportError(f"format {f!r} needs the {c!r} config, which {src} does not have"
                                  + (" (run with a labeller, e.g. --labeler omegaprm)" if c in records.STEP_CONFIGS
                                     else ""))
            wanted[c] = True
        for c in optional:
            if _has_config(src, c):
                wanted.setdefault(c, False)
    sources: Dict[str, List[Dict[str, Any]]] = {}
    for c in wanted:
        entry = validated.get(c)
        if entry is None or not entry.get("success"):
            raise ExportError(f"config {c!r} of {src} was not validated: run `counterpoint validate {src}` first")
        table = read_source_config(str(src), c)
        expected = entry.get("rows_published", entry.get("rows"))
        if expected is not None and table.num_rows != expected:
            raise ExportError(f"config {c!r} of {src} has {table.num_rows} rows but {expected} were validated: "
                              f"it changed since validation; run `counterpoint validate {src}` again")
        sources[c] = table.to_pylist()
    return sources


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------
def build_export(fmt: str, sources: Dict[str, List[Dict[str, Any]]], *, placeholder: str,
                 default_weight: float) -> formats.ExportRows:
    """The rows of one format from the source configs' rows (pure; see :mod:`.formats`)."""
    if fmt == "trl-stepwise":
        return formats.trl_stepwise_rows(sources["step_labels"])
    if fmt == "openrlhf-prm":
        return formats.openrlhf_prm_rows(sources["step_labels"], placeholder=placeholder)
    if fmt == "step-dpo":
        return formats.step_dpo_rows(sources["preferences"])
    if fmt == "weighted-pairs":
        return formats.weighted_pair_rows(sources["preferences"], sources.get("step_values", ()),
                                          sources.get("step_labels", ()), default_weight=default_weight)
    raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def _write_shards(folder: str, config: str, rows: List[Dict[str, Any]], max_rows: int) -> List[str]:
    n = max(1, -(-len(rows) // max_rows))
    per = -(-len(rows) // n)
    paths = []
    for i in range(n):
        path = storage.join(folder, f"train-{i:05d}-of-{n:05d}.parquet")
        storage.write_parquet(path, records.rows_to_table(config, rows[i * per:(i + 1) * per]))
        paths.append(path)
    return paths


def _normalize_formats(fmt: Union[str, Sequence[str]]) -> List[str]:
    fmts = [fmt] if isinstance(fmt, str) else list(fmt)
    if not fmts:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)}")
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(fmts))


# ---------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------
def _merge_validation(target: str, staging: str, configs: Sequence[str], fmts: Sequence[str],
                      built: Dict[str, formats.ExportRows], src: str) -> str:
    """Adds the export configs' validation entries to ``<target>/validation/summary.json``."""
    staged = _load_json(storage.DatasetLayout(staging).validation_summary) or {}
    path = storage.DatasetLayout(target).validation_summary
    summary = _load_json(path)
    if summary is None:
        summary = {k: v for k, v in staged.items() if k not in ("configs", "data_docs", "quarantined")}
        summary.update({"success": True, "configs": {}, "quarantined": [], "data_docs": None})
    summary.setdefault("configs", {}).update({c: staged["configs"][c] for c in configs})
    summary["success"] = bool(summary.get("success")) and all(staged["configs"][c]["success"] for c in configs)
    exported = summary.setdefault("exports", {})
    for fmt in fmts:
        c = FORMAT_CONFIG[fmt]
        exported[c] = {
            "format": fmt,
            "source": str(src),
            "rows": len(built[c].rows),
            "rejects_by_reason": built[c].rejects_by_reason(),
            "not_applicable": built[c].not_applicable,
            "validated_at": staged.get("validated_at"),
        }
    storage.write_json(path, summary)
    return path


def _write_run_summary(target: str, src: str, configs: Sequence[str], fmts: Sequence[str], options: dict) -> None:
    """A separate export dataset's ``run_summary.json``: the source's provenance, its own configs."""
    path = storage.DatasetLayout(target).summary_path
    existing = _load_json(path)
    base = existing if existing is not None else (_load_json(storage.DatasetLayout(src).summary_path) or {})
    summary = {k: v for k, v in base.items() if k in ("provenance", "counts", "timing", "configs")}
    earlier = (base.get("configs") or []) if existing is not None else []
    summary["configs"] = list(dict.fromkeys([*earlier, *configs]))
    prov = dict(summary.get("provenance") or {})
    prov["export"] = {"source": str(src), "formats": sorted({*(prov.get("export") or {}).get("formats", []), *fmts}),
                      "options": options}
    summary["provenance"] = prov
    storage.write_json(path, summary)


def export_output(
    out_dir: str,
    fmt: Union[str, Sequence[str]],
    *,
    output_dir: Optional[str] = None,
    placeholder: str = exports.DEFAULT_PLACEHOLDER,
    default_weight: float = 1.0,
    runner_options: Optional[List[str]] = None,
    pipeline_options=None,
    max_rows_per_shard: int = MAX_ROWS_PER_SHARD,
    write_card: bool = True,
) -> ExportResult:
    """Writes the export config(s) of ``fmt`` (one format or several) for the validated output ``out_dir``.

    ``output_dir``: write a separate Hub-layout dataset there instead of adding the configs
    to ``out_dir``. ``placeholder``: the step tag of ``openrlhf-prm`` (one token of the
    trainer's tokenizer; see ``check_openrlhf_prm``). ``default_weight``: the
    ``weighted-pairs`` weight of outcome pairs and of unmeasured step pairs.
    ``runner_options`` / ``pipeline_options``: Beam options of the validation gate (the latter
    carries filesystem options). Folders may be local, ``gs://`` or ``s3://``. Raises :class:`ExportError`.
    """
    t0 = time.monotonic()
    fmts = _normalize_formats(fmt)
    if max_rows_per_shard < 1:
        raise ExportError(f"max_rows_per_shard must be >= 1, got {max_rows_per_shard}")
    if "openrlhf-prm" in fmts:
        try:
            formats.check_placeholder(placeholder)
        except ValueError as e:
            raise ExportError(f"placeholder: {e}") from None
    if not 0.0 <= default_weight <= 1.0:
        raise ExportError(f"default_weight must be in [0, 1], got {default_weight}")
    def resolve(path: str) -> str:
        return os.path.abspath(path) if storage.is_local(path) else path.rstrip("/")

    src = resolve(out_dir)
    if not (os.path.isdir(src) if storage.is_local(src) else storage.match(storage.join(src, "**"))):
        raise ExportError(f"output directory {src} does not exist")
    target = resolve(output_dir) if output_dir else src

    sources = _validated_sources(src, fmts)
    built: Dict[str, formats.ExportRows] = {}
    for f in fmts:
        rows = build_export(f, sources, placeholder=placeholder, default_weight=default_weight)
        if not rows.rows:
            raise ExportError(
                f"nothing to export for {f!r}: {rows.not_applicable} source row(s) of another kind, "
                f"{len(rows.rejects)} rejected {rows.rejects_by_reason() or ''}".rstrip())
        built[rows.config] = rows
    configs = list(built)

    staging = storage.join(target, WORK_DIR, f"export-{time.time_ns()}")
    staged = storage.DatasetLayout(staging)
    for c, rows in built.items():
        _write_shards(staged.config_dir(c), c, rows.rows, max_rows_per_shard)
    from counterpoint.validation import validate_output

    report = validate_output(staging, configs=configs, runner_options=runner_options,
                             pipeline_options=pipeline_options)
    if not report.success:
        raise ExportError(f"export failed validation; nothing was published (staging kept at {staging}):\n"
                          + report.message())

    paths: Dict[str, List[str]] = {}
    published = storage.DatasetLayout(target)
    for c in configs:
        storage.replace_tree(staged.config_dir(c), published.config_dir(c))
        paths[c] = published.shards(c)
    summary_path = _merge_validation(target, staging, configs, fmts, built, src)
    if target != src:
        _write_run_summary(target, src, configs, fmts,
                           {"placeholder": placeholder, "default_weight": default_weight})
    storage.delete_tree(staging)
    if write_card:
        from counterpoint.dataset.card import write_dataset_card

        write_dataset_card(target)
    result = ExportResult(
        source_dir=str(src),
        target_dir=str(target),
        formats=fmts,
        rows={c: len(r.rows) for c, r in built.items()},
        paths=paths,
        rejects=[rej for r in built.values() for rej in r.rejects],
        not_applicable={c: r.not_applicable for c, r in built.items()},
        validation_summary=str(summary_path),
        elapsed_s=time.monotonic() - t0,
    )
    log.info("%s", result.message())
    return result
