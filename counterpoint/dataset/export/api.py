"""``export_output``: trainer-ready configs from a validated Counterpoint dataset, validated and published.

Input: a dataset that passed the validation gate (its verdict covers every config the export
reads); each source shard's bytes are checked against the verdict's sha256 before they are read
(:meth:`~counterpoint.dataset.verdicts.Verdict.read_verified`). Output: one Hub-layout config per
format, ``data/<config>/train-0000i-of-0000N.parquet`` (zstd), in a new version of the target
output folder (the source's own by default, with its other configs carried over; or a separate
dataset folder), made by the one publish procedure (:mod:`counterpoint.dataset.publish`): staged,
gated against the rows written, merged into the verdict, described by the card, switched in by
the manifest. A run's ``--export`` formats go through the same code as a publish extension
(:func:`run_exports`). A failed gate publishes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Union

import pyarrow as pa

from counterpoint import storage
from counterpoint.dataset import publish
from counterpoint.dataset.export import formats
from counterpoint.dataset.publish import Extension, Staged
from counterpoint.dataset.summary import RunSummary
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import UsageError
from counterpoint.schemas import exports, records

log = logging.getLogger(__name__)

FORMATS = ("trl-stepwise", "openrlhf-prm", "step-dpo", "weighted-pairs")
FORMAT_CONFIG = {
    "trl-stepwise": exports.TRL_STEPWISE.name,
    "openrlhf-prm": exports.OPENRLHF_PRM.name,
    "step-dpo": exports.STEP_DPO.name,
    "weighted-pairs": exports.WEIGHTED_PAIRS.name,
}
FORMATS += ("correction-sft", "correction-dpo")
FORMAT_CONFIG.update({
    "correction-sft": exports.CORRECTION_SFT.name,
    "correction-dpo": exports.CORRECTION_DPO.name,
})
# Source configs each format reads: (required, optional-if-present).
FORMAT_SOURCES = {
    "trl-stepwise": (("step_labels",), ()),
    "openrlhf-prm": (("step_labels",), ()),
    "step-dpo": (("preferences",), ()),
    "weighted-pairs": (("preferences",), ("step_values", "step_labels")),
}
FORMAT_SOURCES.update({
    "correction-sft": (("corrections",), ()),
    "correction-dpo": (("corrections",), ()),
})
MAX_ROWS_PER_SHARD = 100_000


class ExportError(UsageError):
    """The export cannot be made as asked (unknown format, bad option, missing source config, nothing to export).

    An unvalidated or changed source raises :class:`~counterpoint.dataset.verdicts.NotValidated` or
    :class:`~counterpoint.errors.VerdictMismatch`; an export that fails the gate raises
    :class:`~counterpoint.dataset.publish.ValidationFailed`.
    """


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
# Reading: exactly the bytes the gate saw
# ---------------------------------------------------------------------------
def _validated_sources(source: storage.DatasetLayout, fmts: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Rows of every source config the formats read, each shard's bytes checked against the verdict."""
    what = f"cannot export from {source.root}"
    verdict = Verdict.require(source, what)

    def present(config: str) -> bool:
        if source.shards(config):
            return True
        if config in verdict.configs and verdict.configs[config].published:
            verdict.check_file_set(config)  # validated shards gone since: VerdictMismatch
        return False

    wanted: Dict[str, bool] = {}
    for f in fmts:
        required, optional = FORMAT_SOURCES[f]
        for c in required:
            if not present(c):
                raise ExportError(f"format {f!r} needs the {c!r} config, which {source.root} does not have"
                                  + (" (run with a labeller, e.g. --labeler omegaprm)" if c in records.STEP_CONFIGS
                                     else " (add it with `counterpoint corrections OUT`, or run with --corrections)"
                                     if c in records.CORRECTION_CONFIGS else ""))
            wanted[c] = True
        for c in optional:
            if present(c):
                wanted.setdefault(c, False)
    verdict = Verdict.require(source, what, list(wanted))
    return {c: verdict.read_verified(c).to_pylist() for c in wanted}


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
    if fmt == "correction-sft":
        return formats.correction_sft_rows(sources["corrections"])
    if fmt == "correction-dpo":
        return formats.correction_dpo_rows(sources["corrections"])
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
# Staging and publishing (through the one publish procedure)
# ---------------------------------------------------------------------------
def stage_exports(source: storage.DatasetLayout, fmts: Sequence[str], into: storage.DatasetLayout, *,
                  placeholder: str, default_weight: float, max_rows_per_shard: int) -> Dict[str, formats.ExportRows]:
    """Builds the formats from ``source``'s verified configs and writes their shards into ``into``.

    Raises :class:`ExportError` ("nothing to export ...") for a format without a row.
    """
    sources = _validated_sources(source, fmts)
    built: Dict[str, formats.ExportRows] = {}
    for f in fmts:
        rows = build_export(f, sources, placeholder=placeholder, default_weight=default_weight)
        if not rows.rows:
            raise ExportError(
                f"nothing to export for {f!r}: {rows.not_applicable} source row(s) of another kind, "
                f"{len(rows.rejects)} rejected {rows.rejects_by_reason() or ''}".rstrip())
        built[rows.config] = rows
    for c, rows in built.items():
        _write_shards(into.config_dir(c), c, rows.rows, max_rows_per_shard)
    return built


def _staged(built: Dict[str, formats.ExportRows], fmts: Sequence[str], max_rows: int, origin: str) -> Staged:
    """What the gate expects of the staged exports, and their records in the verdict."""
    written = {c: {"shards": max(1, -(-len(r.rows) // max_rows)), "rows": len(r.rows)} for c, r in built.items()}
    records_ = {FORMAT_CONFIG[f]: {"format": f, "source": origin, "rows": len(built[FORMAT_CONFIG[f]].rows),
                                   "rejects_by_reason": built[FORMAT_CONFIG[f]].rejects_by_reason(),
                                   "not_applicable": built[FORMAT_CONFIG[f]].not_applicable}
                for f in fmts if FORMAT_CONFIG[f] in built}
    return Staged(written=written, verdict_extra={"exports": records_})


def run_exports(fmts: Sequence[str], summary: RunSummary) -> Extension:
    """The ``--export`` formats of a run, as a publish extension: built from the run's gated configs.

    A format with nothing to export (e.g. ``step-dpo`` of a run without step pairs) is a thin run,
    not a failure: it is recorded in the summary's ``exports``.
    """
    def extend(verdict: Verdict, part: storage.DatasetLayout) -> Optional[Staged]:
        built: Dict[str, formats.ExportRows] = {}
        summary.exports = {}
        for f in fmts:
            try:
                built.update(stage_exports(verdict.dataset, [f], part, placeholder=exports.DEFAULT_PLACEHOLDER,
                                           default_weight=1.0, max_rows_per_shard=MAX_ROWS_PER_SHARD))
                c = FORMAT_CONFIG[f]
                summary.exports[f] = {"rows": {c: len(built[c].rows)}, "rejects_by_reason": built[c].rejects_by_reason()}
            except ExportError as e:
                if not str(e).startswith("nothing to export"):
                    raise
                summary.exports[f] = {"rows": {}, "skipped": str(e)}
                log.info("export %s: %s", f, e)
        return _staged(built, [f for f in fmts if FORMAT_CONFIG[f] in built], MAX_ROWS_PER_SHARD, "this run") \
            if built else None

    return extend


def _export_summary(source: storage.DatasetLayout, target: storage.OutputLayout, configs: Sequence[str],
                    fmts: Sequence[str], options: dict, written: Dict[str, Dict[str, int]]) -> RunSummary:
    """The new version's summary: the target's (or, for a new dataset, the source's provenance), plus the export."""
    live = target.live_version()
    existing = RunSummary.read(live) if live is not None else None
    if existing is not None:
        summary = existing
    else:
        base = RunSummary.read(source) or RunSummary()
        summary = RunSummary(provenance=base.provenance, counts=base.counts, timing=base.timing)
    summary.configs = list(dict.fromkeys([*summary.configs, *configs]))
    summary.written = {**summary.written, **written}
    prov = dict(summary.provenance or {})
    prov["export"] = {"source": source.root,
                      "formats": sorted({*(prov.get("export") or {}).get("formats", []), *fmts}), "options": options}
    summary.provenance = prov
    return summary


def export_output(
    source: storage.DatasetLayout,
    fmt: Union[str, Sequence[str]],
    *,
    target: Optional[storage.OutputLayout] = None,
    placeholder: str = exports.DEFAULT_PLACEHOLDER,
    default_weight: float = 1.0,
    runner_options: Optional[List[str]] = None,
    pipeline_options=None,
    max_rows_per_shard: int = MAX_ROWS_PER_SHARD,
) -> ExportResult:
    """Publishes the export config(s) of ``fmt`` built from the validated dataset ``source``.

    ``target``: the output folder that gets a new version with the export configs (default:
    ``source``, whose other configs are carried into the new version; another folder must be
    empty or a Counterpoint output). ``placeholder``: the step tag of ``openrlhf-prm`` (one token
    of the trainer's tokenizer; see ``check_openrlhf_prm``). ``default_weight``: the
    ``weighted-pairs`` weight of outcome pairs and of unmeasured step pairs. ``runner_options`` /
    ``pipeline_options``: Beam options of the validation gate. Raises :class:`ExportError`,
    ``NotValidated``, ``VerdictMismatch``, ``ValidationFailed``, ``OutputNotOwned``, ``OutputLocked``.
    """
    t0 = time.monotonic()
    fmts = _normalize_formats(fmt)
    _check_options(fmts, placeholder, default_weight, max_rows_per_shard)
    if not storage.match(storage.join(source.root, "**")):
        raise ExportError(f"output directory {source.root} does not exist")
    target = target or storage.OutputLayout(source.root)
    with publish.claim(target, "export"):
        source.refresh()
        version_id = publish.new_version_id()
        staging = target.staging(version_id)
        built = stage_exports(source, fmts, staging, placeholder=placeholder, default_weight=default_weight,
                              max_rows_per_shard=max_rows_per_shard)
        staged = _staged(built, fmts, max_rows_per_shard, source.root)
        configs = list(built)
        summary = _export_summary(source, target, configs, fmts,
                                  {"placeholder": placeholder, "default_weight": default_weight}, staged.written)
        live = target.live_version()
        carry = [c for c in (live.present_configs() if live else []) if c not in built]
        run_config = storage.read_json(live.config_path) if live else None
        report = bool(live and storage.exists(live.report_path))
        publish.publish(target, publish.Publication(staging=staging, staged=staged, summary=summary,
                                                    run_config=run_config, carry=carry, report=report),
                        publish.GateOptions(pipeline_options=pipeline_options, runner_options=runner_options))
    target.refresh()
    result = ExportResult(
        source_dir=source.root,
        target_dir=target.root,
        formats=fmts,
        rows={c: len(r.rows) for c, r in built.items()},
        paths={c: target.shards(c) for c in configs},
        rejects=[rej for r in built.values() for rej in r.rejects],
        not_applicable={c: r.not_applicable for c, r in built.items()},
        validation_summary=target.validation_summary,
        elapsed_s=time.monotonic() - t0,
    )
    log.info("%s", result.message())
    return result


def _check_options(fmts: Sequence[str], placeholder: str, default_weight: float, max_rows_per_shard: int) -> None:
    if max_rows_per_shard < 1:
        raise ExportError(f"max_rows_per_shard must be >= 1, got {max_rows_per_shard}")
    if "openrlhf-prm" in fmts:
        try:
            formats.check_placeholder(placeholder)
        except ValueError as e:
            raise ExportError(f"placeholder: {e}") from None
    if not 0.0 <= default_weight <= 1.0:
        raise ExportError(f"default_weight must be in [0, 1], got {default_weight}")
