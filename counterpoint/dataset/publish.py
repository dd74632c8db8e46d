"""The one publish procedure of runs and exports: gate the staged shards, then switch versions atomically.

An output folder is *owned* (its manifest ``counterpoint.json`` marks it; :func:`claim` refuses a
non-empty folder without one, so nothing of a user's is ever written over) and has one writer at
a time (:class:`~counterpoint.storage.OutputLock`). :func:`publish` takes a staging folder that
holds the new shards and makes it the live version::

    1. gate     validate the staged configs against the counts the run wrote (expected shards and
                rows), bind the verdict to each shard's size and sha256; a failure quarantines the
                bad shards, keeps the run record and publishes nothing (ValidationFailed)
    2. extend   further staged configs built from the verified ones (a run's trainer exports), each
                gated on its own and merged in (shards moved, verdict entries merged)
    3. carry    configs of the live version that stay (an export adds to a dataset): shards cloned
                (hard links locally), verdict entries merged after their hashes are checked
    4. describe run_summary.json, run_config.json, report.html, README.md inside the staging folder
    5. install  the staging folder becomes versions/<version_id>/ (one rename locally)
    6. switch   the manifest names the new version (one atomic write: the commit point)
    7. card     <root>/README.md points ``datasets`` at the live version's shards
    8. clean    every version but the live one and the one it replaced is deleted (and staging leftovers)

A kill before step 6 leaves the manifest on the old version (the new folder is an unreferenced
leftover, deleted by the next publish); after it, the new version is whole. The previous version
is kept until the next publish completes, so a root card not yet rewritten still points at whole
shards. ``FAULT_HOOK`` (tests only) is called with the step's name after every file operation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import socket
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from counterpoint import __version__, storage
from counterpoint.dataset import verdicts
from counterpoint.dataset.summary import RunSummary
from counterpoint.dataset.verdicts import Counts, Verdict
from counterpoint.errors import OutputNotOwned, RunFailed, UsageError

log = logging.getLogger(__name__)

FAULT_HOOK: Optional[Callable[[str], None]] = None  # tests only: called after every file operation of a publish


def new_version_id() -> str:
    """A sortable, unique version id (the same form as a run id: ``YYYYmmddTHHMMSS-xxxxxx``)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _done(step: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(step)


class ValidationFailed(RunFailed):
    """The validation gate failed; failing shards were quarantined and the live dataset was left as it was."""


# ---------------------------------------------------------------------------
# Ownership and the lock
# ---------------------------------------------------------------------------
LEGACY_NAMES = {storage.DATA_DIR, storage.SUMMARY_FILE}


def require_owned(output: storage.OutputLayout, *, create: bool) -> storage.Manifest:
    """The folder's manifest; a new one for an empty (or missing) folder when ``create``.

    Raises :class:`OutputNotOwned` for a non-empty folder without a manifest (a user's folder, or an
    output of Counterpoint before versioned outputs: see the message) and for a path that is a file.
    """
    m = output.manifest()
    if m is not None:
        return m
    root = output.root
    if storage.is_file(root):
        raise OutputNotOwned(f"{root} is a file, not an output folder: choose a folder path for --output")
    names = storage.top_level_names(root)
    m = output.manifest()  # another process may have claimed the empty folder since the first look
    if m is not None:
        return m
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if LEGACY_NAMES <= set(names):
            raise OutputNotOwned(
                f"{root} holds an output of an earlier Counterpoint (data/, run_summary.json, no "
                f"{storage.MANIFEST_FILE}): write to a new folder, or move that folder aside first (nothing "
                "in it is changed)")
        raise OutputNotOwned(f"{root} is not empty and is not a Counterpoint output (found {shown}; no "
                             f"{storage.MANIFEST_FILE}): choose an empty or new folder; nothing was written there")
    if not create:
        raise UsageError(f"{root} holds no Counterpoint output: give the --output folder of a run")
    storage.mkdirs(root)
    now = storage.now_iso()
    manifest = storage.Manifest(created_by=f"counterpoint {__version__} on {socket.gethostname()}",
                                created_at=now, updated_at=now)
    storage.create_exclusive(output.manifest_path, json.dumps(manifest.to_dict(), indent=2).encode("utf-8"))
    return output.manifest() or manifest


@contextlib.contextmanager
def claim(output: storage.OutputLayout, command: str, *, create: bool = True) -> Iterator[storage.Manifest]:
    """Ownership, then the folder's lock for the duration of the block (OutputLocked at once if held)."""
    manifest = require_owned(output, create=create)
    with storage.OutputLock(output.lock_path, output.root, command):
        yield manifest


# ---------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class GateOptions:
    """How the validation gate runs (see ``counterpoint.validation.validate_output``)."""

    pipeline_options: Any = None
    runner_options: Optional[List[str]] = None
    min_rows: Optional[Dict[str, int]] = None
    on_job_runner: bool = False
    enabled: bool = True


def run_gate(dataset: storage.DatasetLayout, configs: Optional[Sequence[str]], *, expected: Optional[Counts],
             quarantine_dir: str, gate: GateOptions) -> Tuple[Any, Verdict]:
    """Validates ``configs`` of ``dataset`` against ``expected``; returns the report and the bound verdict."""
    from counterpoint.validation import validate_output

    report = validate_output(dataset.root, configs=None if configs is None else list(configs),
                             quarantine_dir=quarantine_dir, min_rows=gate.min_rows, expected=expected,
                             runner_options=gate.runner_options, pipeline_options=gate.pipeline_options,
                             on_job_runner=gate.on_job_runner)
    _done("gate")
    return report, Verdict.read(dataset)


def _failure_message(report: Any, verdict: Verdict) -> str:
    lines = [report.message()] if verdict.success == report.success else []
    for c in verdict.configs.values():
        if not c.success:
            lines.append(f"  {c.name}: {', '.join(c.failed) or 'failed'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The procedure
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Staged:
    """Configs staged for a version: their written counts and top-level verdict fields to record."""

    written: Counts
    verdict_extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


# Builds more configs from the gated, verified ones into a part folder; None when it adds nothing.
Extension = Callable[[Verdict, storage.DatasetLayout], Optional[Staged]]


@dataclasses.dataclass
class Publication:
    """What :func:`publish` makes into a version."""

    staging: storage.StagingLayout  # holds data/<config>/ of the staged configs
    staged: Staged
    summary: RunSummary
    run_config: Optional[Dict[str, Any]] = None
    fingerprint: Optional[str] = None
    carry: Sequence[str] = ()  # configs of the live version kept as they are
    extensions: Sequence[Extension] = ()
    report: bool = True
    record_dir: Optional[str] = None  # where a failed gate's verdict is kept
    started: Optional[float] = None  # time.perf_counter() at the run's start: the summary's total_s


def _gate_staged(output: storage.OutputLayout, dataset: storage.DatasetLayout, staged: Staged,
                 gate: GateOptions, run_id: str, record_dir: Optional[str]) -> Verdict:
    report, verdict = run_gate(dataset, list(staged.written), expected=staged.written,
                               quarantine_dir=output.quarantine_dir(run_id), gate=gate)
    if not verdict.success:
        if record_dir:
            storage.copy_tree(dataset.validation_dir, storage.join(record_dir, storage.VALIDATION_DIR))
        message = _failure_message(report, verdict)
        if record_dir:  # the staged results are deleted with the staging folder: point at the record's copy
            message = message.replace(dataset.validation_dir, storage.join(record_dir, storage.VALIDATION_DIR))
        error = ValidationFailed(message + "\n  the published dataset was left as it was"
                                 + (f"; run record: {record_dir}" if record_dir else ""))
        error.failures = max(len(report.failures), 1)
        raise error
    if staged.verdict_extra:
        verdict = verdicts.annotate(dataset, **staged.verdict_extra)
    return verdict


def _extend(output: storage.OutputLayout, pub: Publication, verdict: Verdict, gate: GateOptions) -> Verdict:
    """Step 2: each extension's configs, gated in their own part folder, moved into the staging folder."""
    staging = pub.staging
    for i, extension in enumerate(pub.extensions):
        part = storage.DatasetLayout(staging.path("parts", str(i)), plain=True)
        staged = extension(verdict, part)
        if not staged or not staged.written:
            continue
        part_verdict = _gate_staged(output, part, staged, gate, staging.run_id, pub.record_dir)
        for c in staged.written:
            storage.replace_tree(part.config_dir(c), staging.config_dir(c))
            _done("extend_move")
        verdicts.merge(staging, part_verdict, list(staged.written))
        _done("extend_merge")
        pub.summary.written.update(staged.written)
        verdict = Verdict.read(staging)
    storage.delete_tree(staging.path("parts"))
    return verdict


def _carry(output: storage.OutputLayout, pub: Publication) -> None:
    """Step 3: the live version's configs that stay, cloned after their hashes are checked."""
    live = output.live_version()
    if live is None or not pub.carry:
        return
    source = Verdict.require(live, f"carrying over {', '.join(pub.carry)}", pub.carry)
    for c in pub.carry:
        for path in source.check_file_set(c):
            source.verified_bytes(c, path)  # refuse to carry a shard that changed since its verdict
            storage.clone_file(path, storage.join(pub.staging.data_dir, storage.relpath(path, live.data_dir)))
            _done("carry_clone")
    verdicts.merge(pub.staging, source, list(pub.carry))
    _done("carry_merge")


def _describe(pub: Publication) -> None:
    """Step 4: summary, config, report and card inside the staging folder (the version's own files)."""
    from counterpoint.dataset.card import write_dataset_card

    staging = pub.staging
    pub.summary.written_files = verdicts.published_files(Verdict.read(staging))
    storage.write_json(staging.summary_path, pub.summary.to_dict())
    _done("summary")
    if pub.run_config is not None:
        storage.write_json(staging.config_path, pub.run_config)
        _done("config")
    if pub.report:
        from counterpoint.dataset.report import build_report

        t = time.perf_counter()
        build_report(staging)
        pub.summary.timing["report_s"] = round(time.perf_counter() - t, 3)
        _done("report")
    if pub.started is not None:
        pub.summary.timing["total_s"] = round(time.perf_counter() - pub.started, 3)
    storage.write_json(staging.summary_path, pub.summary.to_dict())  # with the report's and total timing
    _done("summary")
    write_dataset_card(staging)
    _done("card")


def _install(output: storage.OutputLayout, staging: storage.StagingLayout, version_id: str) -> storage.DatasetLayout:
    """Step 5: the staging folder becomes ``versions/<version_id>/`` (its working subfolders dropped)."""
    keep = set(staging.dataset_names())
    for name in storage.top_level_names(staging.root):
        if name not in keep:
            storage.delete_tree(staging.path(name))
            _done("install_drop")
    version = output.version(version_id)
    storage.replace_tree(staging.root, version.root)
    _done("install")
    return version


def _switch(output: storage.OutputLayout, version_id: str, fingerprint: Optional[str]) -> storage.Manifest:
    """Step 6, the commit point: the manifest names the new version."""
    manifest = output.manifest() or storage.Manifest(created_by=f"counterpoint {__version__}",
                                                     created_at=storage.now_iso())
    manifest.previous, manifest.live = manifest.live, version_id
    manifest.config_fingerprint = fingerprint
    storage.write_manifest(output.root, manifest)
    output.refresh()
    _done("switch")
    return manifest


def clean_versions(output: storage.OutputLayout) -> None:
    """Step 8: deletes every version folder but the live one and the one it replaced (and staging leftovers)."""
    storage.delete_tree(output.staging_root)  # we hold the lock: no other publish is staging
    manifest = output.manifest()
    keep = {manifest.live, manifest.previous} if manifest else set()
    for vid in output.version_ids():
        if vid not in keep:
            storage.delete_tree(output.version(vid).root)
            _done("clean")


def publish(output: storage.OutputLayout, pub: Publication, gate: GateOptions) -> str:
    """Makes the staged configs (plus extensions and carried configs) the live version; returns its id.

    The caller holds the folder (:func:`claim`). Raises :class:`ValidationFailed` when a gate fails
    (nothing is published; the staging folder is deleted).
    """
    staging, timing = pub.staging, pub.summary.timing
    try:
        if gate.enabled:
            t = time.perf_counter()
            verdict = _gate_staged(output, staging, pub.staged, gate, staging.run_id, pub.record_dir)
            pub.summary.validation = {"success": True, "failures": 0}
            timing["validate_s"] = round(time.perf_counter() - t, 3)
            if pub.extensions:
                t = time.perf_counter()
                _extend(output, pub, verdict, gate)
                timing["export_s"] = round(time.perf_counter() - t, 3)
        _carry(output, pub)
    except ValidationFailed as e:
        pub.summary.validation = {"success": False, "failures": getattr(e, "failures", 1)}
        storage.delete_tree(staging.root)
        raise
    _describe(pub)
    _install(output, staging, staging.run_id)
    _switch(output, staging.run_id, pub.fingerprint)
    write_root_card(output)
    clean_versions(output)
    log.info("published %s", output.version(staging.run_id).root)
    return staging.run_id


def write_root_card(output: storage.OutputLayout) -> None:
    """``<root>/README.md``: the live version's card with its ``data_files`` under ``versions/<id>/``."""
    from counterpoint.dataset.card import render_card

    live = output.live_version()
    if live is None:
        return
    storage.write_text(output.root_card_path, render_card(live, prefix=storage.relpath(live.root, output.root) + "/"))
    _done("root_card")


def revalidate(output: storage.OutputLayout, gate: GateOptions, *, accept_current: bool = False
               ) -> Tuple[Any, Verdict]:
    """``counterpoint validate``: the gate on the live version, against the counts its run wrote.

    The expected shards and rows per config, and each shard's sha256, come from the live version's
    run summary (``written``, ``written_files``), so a deleted, quarantined, rewritten or added shard
    fails, every time, until the run is redone — or until ``accept_current`` accepts what is there
    now; that acceptance is recorded in the verdict (``accepted_current``) and later validations
    expect those counts and bytes.
    Failing shards go to ``<root>/quarantine/<config>/``. Rewrites the version's and the root's card.
    """
    with claim(output, "validate", create=False):
        live = output.live_version()
        if live is None:
            raise UsageError(f"{output.root} has no published dataset yet: finish a `counterpoint run` into it first")
        summary = RunSummary.read(live) or RunSummary()
        prior = Verdict.read(live)
        accepted = prior.raw.get("accepted_current") if prior else None
        if accept_current:
            configs = list(dict.fromkeys([*summary.configs, *live.present_configs()]))
            accepted = {"at": storage.now_iso(), "expected": summary.written,
                        "found": verdicts.found_counts(live, configs)}
        expected = (accepted or {}).get("found") or summary.written or None
        report, verdict = run_gate(live, None, expected=expected, quarantine_dir=output.quarantine_dir(), gate=gate)
        if accept_current:
            accepted["files"] = verdicts.published_files(verdict)
        if accepted:
            verdicts.annotate(live, accepted_current=accepted)
        verdict = verdicts.check_written_files(live, (accepted or {}).get("files") or summary.written_files)
        from counterpoint.dataset.card import write_dataset_card

        write_dataset_card(live)
        write_root_card(output)
        return report, verdict
