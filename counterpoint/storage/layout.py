"""Where an output folder's pieces live, and the manifest that names its live version.

Layout of an output folder (``OutputLayout``)::

    <root>/
      counterpoint.json                        # the manifest: marks the folder as ours, names the live version
      README.md                                # dataset card of the live version (data_files -> versions/<id>/data/...)
      versions/<version_id>/                   # one published dataset, never changed once the manifest names it
        data/<config>/train-SSSSS-of-NNNNN.parquet
        validation/summary.json  validation/data_docs/
        README.md  report.html  run_summary.json  run_config.json
      quarantine/<run_id>/<config>/...         # shards that failed validation (never published)
      _work/
        lock.json                              # the one-writer lock (see counterpoint.storage.lock)
        staging/<run_id>/                      # a run's shards, counts and gate results before publishing
        runs/<run_id>/run_summary.json         # every run's summary, failed runs included
        problems/<fingerprint>/*.jsonl.gz      # batched per-problem checkpoints (resume)
        cache/<model>/<problem>.json           # per-problem request ledgers (pay once)

A version folder has the Hugging Face Hub layout (``data/<config>/``, ``README.md``), so it is
what ``counterpoint push`` uploads. ``DatasetLayout(root)`` reads the manifest of an output
folder and resolves every dataset path (``data_dir``, ``shards``, ``validation_summary``, ...)
inside the live version; on a folder without a manifest (a staging folder, a version folder, a
plain dataset) it resolves them below ``root`` itself.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from typing import Any, Dict, List, Optional, Sequence

from counterpoint.storage.files import (
    CARD_FILE,
    CONFIG_FILE,
    DATA_DIR,
    QUARANTINE_DIR,
    REPORT_FILE,
    SUMMARY_FILE,
    VALIDATION_DIR,
    WORK_DIR,
    is_local,
    join,
    match,
    read_json,
    read_parquet,
    relpath,
    write_json,
)

MANIFEST_FILE = "counterpoint.json"
VERSIONS_DIR = "versions"
LOCK_FILE = "lock.json"
FORMAT = "counterpoint-output"
FORMAT_VERSION = 2
_VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Manifest:
    """``counterpoint.json``: the ownership marker of an output folder and the name of its live version.

    ``live``: the version readers use (None until the first publish). ``previous``: the version
    it replaced, kept whole until the next publish completes. ``config_fingerprint``: what shaped
    the live version's rows (``RunConfig.output_fingerprint``; None for an export-only dataset).
    """

    live: Optional[str] = None
    previous: Optional[str] = None
    created_by: str = ""
    created_at: str = ""
    updated_at: str = ""
    config_fingerprint: Optional[str] = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Manifest":
        fields = {f.name for f in dataclasses.fields(cls)}
        m = cls(**{k: v for k, v in d.items() if k in fields})
        for vid in (m.live, m.previous):
            if vid is not None and not _VERSION_ID.match(str(vid)):
                raise ValueError(f"manifest names an invalid version id {vid!r}")
        return m

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def read_manifest(root: str) -> Optional[Manifest]:
    """The manifest of the output folder ``root``; None when it has none (or it is not ours)."""
    data = read_json(join(root, MANIFEST_FILE))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        return Manifest.from_dict(data)
    except (TypeError, ValueError):
        return None


def write_manifest(root: str, manifest: Manifest) -> None:
    """Atomic: a reader sees the previous manifest or this one (a local rename; one object PUT remotely)."""
    manifest.updated_at = now_iso()
    write_json(join(root, MANIFEST_FILE), manifest.to_dict())


class DatasetLayout:
    """Where a dataset's pieces live: ``data/``, ``validation/``, card, summary, config and report.

    ``root`` is an output folder (its manifest names the live version, which holds the pieces)
    or any dataset folder (a run's staging folder, a version folder): then the pieces are below it.
    The manifest is read once; :meth:`refresh` reads it again.
    """

    def __init__(self, root: str, *, plain: bool = False):
        self.root = root.rstrip("/") if not is_local(root) else root
        self._dataset_dir: Optional[str] = self.root if plain else None

    def refresh(self) -> None:
        self._dataset_dir = None

    @property
    def dataset_dir(self) -> str:
        """The folder that holds the dataset (the live version of an output folder)."""
        if self._dataset_dir is None:
            m = read_manifest(self.root)
            self._dataset_dir = join(self.root, VERSIONS_DIR, m.live) if m and m.live else self.root
        return self._dataset_dir

    def path(self, *parts: str) -> str:
        """A path below ``root`` (the folder given)."""
        return join(self.root, *parts)

    def dataset_path(self, *parts: str) -> str:
        """A path below :attr:`dataset_dir`."""
        return join(self.dataset_dir, *parts)

    @property
    def data_dir(self) -> str:
        return self.dataset_path(DATA_DIR)

    def config_dir(self, config: str) -> str:
        return self.dataset_path(DATA_DIR, config)

    def shards(self, config: str) -> List[str]:
        return match(join(self.config_dir(config), "*.parquet"))

    def present_configs(self) -> List[str]:
        """Config folders under ``data/`` that hold at least one shard."""
        names = {relpath(p, self.data_dir).split("/")[0] for p in match(join(self.data_dir, "*", "*.parquet"))}
        return sorted(names)

    @property
    def validation_dir(self) -> str:
        return self.dataset_path(VALIDATION_DIR)

    @property
    def validation_summary(self) -> str:
        return self.dataset_path(VALIDATION_DIR, "summary.json")

    @property
    def summary_path(self) -> str:
        return self.dataset_path(SUMMARY_FILE)

    @property
    def config_path(self) -> str:
        return self.dataset_path(CONFIG_FILE)

    @property
    def card_path(self) -> str:
        """The dataset's own card (Hub layout: ``data_files`` relative to :attr:`dataset_dir`)."""
        return self.dataset_path(CARD_FILE)

    @property
    def report_path(self) -> str:
        return self.dataset_path(REPORT_FILE)

    def read_table(self, config: str, columns: Optional[Sequence[str]] = None):
        """Every shard of ``config`` concatenated (the config's empty table when it has none)."""
        import pyarrow as pa

        from counterpoint import schemas

        tables = [read_parquet(p, columns) for p in self.shards(config)]
        if not tables:
            schema = schemas.table(config).arrow_schema()
            if columns:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        return pa.concat_tables(tables, promote_options="default")


class OutputLayout(DatasetLayout):
    """An output folder: the manifest, its versions and its working area."""

    @property
    def manifest_path(self) -> str:
        return self.path(MANIFEST_FILE)

    def manifest(self) -> Optional[Manifest]:
        return read_manifest(self.root)

    @property
    def root_card_path(self) -> str:
        """``<root>/README.md``: the live version's card with ``data_files`` under ``versions/<id>/``."""
        return self.path(CARD_FILE)

    @property
    def versions_dir(self) -> str:
        return self.path(VERSIONS_DIR)

    def version(self, version_id: str) -> DatasetLayout:
        if not _VERSION_ID.match(version_id):
            raise ValueError(f"invalid version id {version_id!r}")
        return DatasetLayout(self.path(VERSIONS_DIR, version_id), plain=True)

    def live_version(self) -> Optional[DatasetLayout]:
        """The version the manifest names (None before the first publish)."""
        m = self.manifest()
        return self.version(m.live) if m and m.live else None

    def version_ids(self) -> List[str]:
        """Every version folder present (published or left by an interrupted publish)."""
        names = {relpath(p, self.versions_dir).split("/")[0] for p in match(join(self.versions_dir, "**"))}
        return sorted(n for n in names if _VERSION_ID.match(n))

    @property
    def lock_path(self) -> str:
        return self.path(WORK_DIR, LOCK_FILE)

    @property
    def work_dir(self) -> str:
        return self.path(WORK_DIR)

    def staging(self, run_id: str) -> "StagingLayout":
        return StagingLayout(self.path(WORK_DIR, "staging", run_id), run_id)

    @property
    def staging_root(self) -> str:
        return self.path(WORK_DIR, "staging")

    def run_record_dir(self, run_id: str) -> str:
        return self.path(WORK_DIR, "runs", run_id)

    def quarantine_dir(self, run_id: Optional[str] = None) -> str:
        return self.path(QUARANTINE_DIR, run_id) if run_id else self.path(QUARANTINE_DIR)

    def checkpoints_dir(self, fingerprint: str) -> str:
        return self.path(WORK_DIR, "problems", fingerprint)

    def cache_dir(self, model_key: str) -> str:
        return self.path(WORK_DIR, "cache", model_key)


class StagingLayout(DatasetLayout):
    """One run's staging folder: shards, counted outputs, gate results — published only after every check."""

    def __init__(self, root: str, run_id: str):
        super().__init__(root, plain=True)
        self.run_id = run_id

    @property
    def counts_dir(self) -> str:
        return self.path("counts")

    @property
    def state_summaries_dir(self) -> str:
        return self.path("state_summaries")

    def dataset_names(self) -> List[str]:
        """What of the staging folder becomes the version folder (the rest is the run's working state)."""
        return [DATA_DIR, VALIDATION_DIR, CARD_FILE, REPORT_FILE, SUMMARY_FILE, CONFIG_FILE]
