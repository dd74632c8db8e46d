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

Scale: no config is ever held whole in the driver. Source shards are streamed batch by batch into
problem buckets and each format is built one bucket at a time (:mod:`.stream` says why this and not
a Beam job); the RL formats (issue 19) are in :mod:`.rl`.

Long: the export contract in one place: format tables, source checks, the publish extension and the command's
entry point.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from counterpoint import storage
from counterpoint.dataset import publish
from counterpoint.dataset.export import formats, rl, stream, token_pairs
from counterpoint.dataset.export.build import (BAND_FORMATS, RL_FORMATS, Built, Context, build_parts,
                                               options_record, record)
from counterpoint.dataset.publish import Extension, Staged
from counterpoint.dataset.summary import RunSummary
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import UsageError
from counterpoint.schemas import exports, records

log = logging.getLogger(__name__)

FORMATS = ("trl-stepwise", "openrlhf-prm", "step-dpo", "weighted-pairs")
FORMATS += ("grpo-prompts", "verl-rl", "npo-forget-retain", "grouped-negatives", "sft-positives")
FORMAT_CONFIG = {
    "trl-stepwise": exports.TRL_STEPWISE.name,
    "openrlhf-prm": exports.OPENRLHF_PRM.name,
    "step-dpo": exports.STEP_DPO.name,
    "weighted-pairs": exports.WEIGHTED_PAIRS.name,
    "grpo-prompts": exports.GRPO_PROMPTS.name,
    "verl-rl": exports.VERL_RL.name,
    "npo-forget-retain": exports.NPO_FORGET.name,
    "grouped-negatives": exports.GROUPED_NEGATIVES.name,
    "sft-positives": exports.SFT_POSITIVES.name,
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
    "grpo-prompts": (("problem_stats",), ()),
    "verl-rl": (("problem_stats",), ()),
    "npo-forget-retain": (("trajectories",), ()),
    "grouped-negatives": (("trajectories",), ()),
    "sft-positives": (("trajectories",), ()),
}
# Configs a format writes besides FORMAT_CONFIG's (the controls only with --control).
FORMAT_EXTRA_CONFIGS = {
    "grpo-prompts": (exports.GRPO_PROMPTS_CONTROL.name,),
    "verl-rl": (exports.VERL_RL_CONTROL.name,),
    "npo-forget-retain": (exports.NPO_RETAIN.name,),
}
# Source columns a format reads (a format not listed reads every column).
FORMAT_COLUMNS = {
    "npo-forget-retain": rl.TRAJECTORY_COLUMNS,
    "grouped-negatives": rl.TRAJECTORY_COLUMNS,
    "sft-positives": rl.TRAJECTORY_COLUMNS,
}
FORMAT_SOURCES.update({
    "correction-sft": (("corrections",), ()),
    "correction-dpo": (("corrections",), ()),
})
FORMATS += ("token-weighted-pairs",)
FORMAT_CONFIG["token-weighted-pairs"] = exports.TOKEN_WEIGHTED_PAIRS.name
FORMAT_SOURCES["token-weighted-pairs"] = (("critical_tokens", "trajectories"), ())
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
# Reading: exactly the bytes the gate saw, streamed
# ---------------------------------------------------------------------------
def _source_configs(source: storage.DatasetLayout,
                    fmts: Sequence[str]) -> Tuple[Verdict, Dict[str, Optional[List[str]]]]:
    """The passing verdict and ``{source config: columns to read (None = all)}`` of the formats.

    Nothing is read but the verdict and the file listing: raises before anything is written.
    """
    what = f"cannot export from {source.root}"
    verdict = Verdict.require(source, what)

    def present(config: str) -> bool:
        if source.shards(config):
            return True
        if config in verdict.configs and verdict.configs[config].published:
            verdict.check_file_set(config)  # validated shards gone since: VerdictMismatch
        return False

    wanted: Dict[str, Optional[List[str]]] = {}

    def want(config: str, f: str) -> None:
        cols = FORMAT_COLUMNS.get(f)
        if config in wanted and (wanted[config] is None or cols is None):
            wanted[config] = None
        else:
            wanted[config] = None if cols is None else list(dict.fromkeys([*(wanted.get(config) or []), *cols]))

    for f in fmts:
        required, optional = FORMAT_SOURCES[f]
        for c in required:
            if not present(c):
                raise ExportError(f"format {f!r} needs the {c!r} config, which {source.root} does not have"
                                  + _missing_fix(c))
            if f in RL_FORMATS and c in verdict.configs and not verdict.configs[c].rows:
                # "nothing to export": a run's --export treats it as a thin run, `counterpoint export` as an error
                raise ExportError(f"nothing to export for {f!r}: it needs rows of the {c!r} config, which is empty "
                                  f"in {source.root}" + _missing_fix(c))
            want(c, f)
        for c in optional:
            if present(c):
                want(c, f)
    return Verdict.require(source, what, list(wanted)), wanted


def _missing_fix(config: str) -> str:
    if config in records.STEP_CONFIGS:
        return " (run with a labeller, e.g. --labeler omegaprm)"
    if config == "critical_tokens":
        return (" (add it with `counterpoint critical-tokens OUT --contrast-models DIR`, the contrast models made by "
                "`counterpoint contrast-models OUT --base MODEL --output DIR`)")
    if config in records.CORRECTION_CONFIGS:
        return " (add it with `counterpoint corrections OUT`, or run with --corrections)"
    if config == "problem_stats":
        return (" (a run made before problem_stats existed, or without samples: re-run it with this Counterpoint "
                "version, which writes problem_stats, or drop --pass-band/--control and grpo-prompts/verl-rl)")
    return ""


# ---------------------------------------------------------------------------
# Building, one bucket of whole problems at a time
# ---------------------------------------------------------------------------
def build_export(fmt: str, sources: Dict[str, List[Dict[str, Any]]], *, placeholder: str,
                 default_weight: float, tokenizer: Optional[str] = None) -> formats.ExportRows:
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
    if fmt == "token-weighted-pairs":
        return token_pairs.token_weighted_pair_rows(sources["critical_tokens"], sources["trajectories"], tokenizer)
    raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


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
                  placeholder: str, default_weight: float, max_rows_per_shard: int,
                  rl_options: rl.RLOptions = rl.RLOptions(),
                  rows_per_bucket: int = stream.ROWS_PER_BUCKET, tokenizer: Optional[str] = None) -> Dict[str, Built]:
    """Builds the formats from ``source``'s verified configs and writes their shards into ``into``.

    Streams (:mod:`.stream`): the sources are spilled into problem buckets in local scratch, each
    bucket is built and its rows appended to rolling shards, which are copied into ``into`` only
    once every format has rows. Raises :class:`ExportError` ("nothing to export ...") for a format
    without a row, before anything is written into ``into``.
    """
    verdict, wanted = _source_configs(source, fmts)
    ctx = Context(lambda f, src: build_export(f, src, placeholder=placeholder, default_weight=default_weight,
                                              tokenizer=tokenizer), rl_options)
    with storage.LocalScratch() as scratch:
        spill = stream.spill_sources(verdict, wanted, scratch, rows_per_bucket)
        if rl_options.control:  # the control is as large as the banded set: count it first
            for f in (f for f in fmts if f in BAND_FORMATS):
                ctx.control_left[f] = sum(len(rl.banded(spill.read("problem_stats", b), rl_options.band)[0])
                                          for b in range(spill.n))
        writers: Dict[str, stream.ShardWriter] = {}
        for b in range(spill.n):
            sources = {c: spill.read(c, b) for c in wanted}
            for f in fmts:
                for part in build_parts(f, sources, ctx):
                    ctx.built.setdefault(part.config, Built(part.config)).add(part)
                    writers.setdefault(part.config, stream.ShardWriter(part.config, scratch, max_rows_per_shard)) \
                        .write(part.rows)
            stream.release_memory()
        for f in fmts:
            _require_rows(f, ctx.built.get(FORMAT_CONFIG[f]) or Built(FORMAT_CONFIG[f]))
        for c, w in writers.items():
            w.place(into.config_dir(c))
            ctx.built[c].shards = w.shards
    return ctx.built


def _require_rows(f: str, b: Built) -> None:
    if b.rows:
        return
    why = f"{b.not_applicable} source row(s) of another kind, {len(b.rejects)} rejected {b.rejects_by_reason() or ''}"
    if b.skipped:
        why += f"; left out: {dict(b.skipped)}"
    if f in RL_FORMATS:
        why = f"source rows left out: {dict(b.skipped) or 'none'}; {b.not_applicable} problem(s) without one"
    raise ExportError(f"nothing to export for {f!r}: {why}".rstrip())


def _format_configs(f: str, built: Dict[str, Built]) -> List[str]:
    return [c for c in (FORMAT_CONFIG[f], *FORMAT_EXTRA_CONFIGS.get(f, ())) if c in built]


def _staged(built: Dict[str, Built], fmts: Sequence[str], origin: str,
            rl_options: rl.RLOptions = rl.RLOptions()) -> Staged:
    """What the gate expects of the staged exports, and their records in the verdict."""
    written = {c: {"shards": b.shards, "rows": b.rows} for c, b in built.items()}
    records_ = {c: record(f, c, built[c], origin, rl_options) for f in fmts for c in _format_configs(f, built)}
    return Staged(written=written, verdict_extra={"exports": records_})


def run_exports(fmts: Sequence[str], summary: RunSummary, rl_options: rl.RLOptions = rl.RLOptions()) -> Extension:
    """The ``--export`` formats of a run, as a publish extension: built from the run's gated configs.

    A format with nothing to export (e.g. ``step-dpo`` of a run without step pairs) is a thin run,
    not a failure: it is recorded in the summary's ``exports``.
    """
    def extend(verdict: Verdict, part: storage.DatasetLayout) -> Optional[Staged]:
        built: Dict[str, Built] = {}
        summary.exports = {}
        for f in fmts:
            try:
                got = stage_exports(verdict.dataset, [f], part, placeholder=exports.DEFAULT_PLACEHOLDER,
                                    default_weight=1.0, max_rows_per_shard=MAX_ROWS_PER_SHARD, rl_options=rl_options)
                built.update(got)
                summary.exports[f] = {"rows": {c: b.rows for c, b in got.items()},
                                      "rejects_by_reason": got[FORMAT_CONFIG[f]].rejects_by_reason()}
            except ExportError as e:
                if not str(e).startswith("nothing to export"):
                    raise
                summary.exports[f] = {"rows": {}, "skipped": str(e)}
                log.info("export %s: %s", f, e)
        done = [f for f in fmts if FORMAT_CONFIG[f] in built]
        return _staged(built, done, "this run", rl_options) if built else None

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
    pass_band: Any = None,
    control: bool = False,
    max_per_problem: Optional[int] = None,
    rows_per_bucket: int = stream.ROWS_PER_BUCKET,
    tokenizer: Optional[str] = None,
) -> ExportResult:
    """Publishes the export config(s) of ``fmt`` built from the validated dataset ``source``.

    ``target``: the output folder that gets a new version with the export configs (default:
    ``source``, whose other configs are carried into the new version; another folder must be
    empty or a Counterpoint output). ``placeholder``: the step tag of ``openrlhf-prm`` (one token
    of the trainer's tokenizer; see ``check_openrlhf_prm``). ``default_weight``: the
    ``weighted-pairs`` weight of outcome pairs and of unmeasured step pairs. ``runner_options`` /
    ``pipeline_options``: Beam options of the validation gate. ``pass_band`` (``"LO,HI"`` or a pair;
    ``grpo-prompts`` / ``verl-rl``; ``exports.PASS_BAND_DOC``), ``control`` (their unfiltered control
    configs), ``max_per_problem`` (``sft-positives``): see :func:`rl_options`. ``rows_per_bucket``:
    the driver's working set (:mod:`.stream`). ``tokenizer``: ``token-weighted-pairs``' policy (default: the rows'
    ``model_id``). Raises ExportError, NotValidated, VerdictMismatch, ValidationFailed, OutputNotOwned, OutputLocked.
    """
    t0 = time.monotonic()
    fmts = _normalize_formats(fmt)
    _check_options(fmts, placeholder, default_weight, max_rows_per_shard)
    options = rl_options(fmts, pass_band, control, max_per_problem)
    if not storage.match(storage.join(source.root, "**")):
        raise ExportError(f"output directory {source.root} does not exist")
    _source_configs(source, fmts)  # unvalidated, changed or missing sources: refused before the lock is taken
    target = target or storage.OutputLayout(source.root)
    with publish.claim(target, "export"):
        source.refresh()
        staging = target.staging(publish.new_version_id())
        built = stage_exports(source, fmts, staging, placeholder=placeholder, default_weight=default_weight,
                              max_rows_per_shard=max_rows_per_shard, rl_options=options,
                              rows_per_bucket=rows_per_bucket, tokenizer=tokenizer)
        staged = _staged(built, fmts, source.root, options)
        summary = _export_summary(source, target, list(built), fmts,
                                  {"placeholder": placeholder, "default_weight": default_weight,
                                   **({"tokenizer": tokenizer} if tokenizer else {}),
                                   **{k: v for f in fmts for k, v in options_record(f, options).items()}},
                                  staged.written)
        live = target.live_version()
        carry = [c for c in (live.present_configs() if live else []) if c not in built]
        run_config = storage.read_json(live.config_path) if live else None
        report = bool(live and storage.exists(live.report_path))
        publish.publish(target, publish.Publication(staging=staging, staged=staged, summary=summary,
                                                    run_config=run_config, carry=carry, report=report),
                        publish.GateOptions(pipeline_options=pipeline_options, runner_options=runner_options))
    target.refresh()
    result = _result(source, target, fmts, built, time.monotonic() - t0)
    log.info("%s", result.message())
    return result


def _result(source: storage.DatasetLayout, target: storage.OutputLayout, fmts: List[str],
            built: Dict[str, Built], elapsed_s: float) -> ExportResult:
    return ExportResult(
        source_dir=source.root,
        target_dir=target.root,
        formats=fmts,
        rows={c: r.rows for c, r in built.items()},
        paths={c: target.shards(c) for c in built},
        rejects=[rej for r in built.values() for rej in r.rejects],
        not_applicable={c: r.not_applicable for c, r in built.items()},
        validation_summary=target.validation_summary,
        elapsed_s=elapsed_s,
    )


def rl_options(fmts: Sequence[str], pass_band: Any = None, control: bool = False,
               max_per_problem: Optional[int] = None) -> rl.RLOptions:
    """The checked RL options, or :class:`ExportError` naming the fix (nothing is read or written yet)."""
    try:
        options = rl.RLOptions(pass_band=pass_band, control=bool(control), max_per_problem=max_per_problem)
        options.check_formats(fmts)
    except ValueError as e:
        raise ExportError(str(e)) from None
    return options


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
