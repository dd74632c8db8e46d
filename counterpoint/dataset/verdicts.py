"""The one reader of the validation gate's verdict (``validation/summary.json``) of a dataset.

Validate, export, push, the card and the report all ask it the same questions: did the
dataset pass, which configs were validated, and are the files still the ones the gate saw?
The verdict binds each shard to its content: ``path`` (relative to ``data/``), ``size``,
``sha256`` and ``rows``. :meth:`Verdict.read_verified` and :meth:`Verdict.verified_bytes`
hash exactly the bytes they hand back, so a shard rewritten after validation (even with the
same row count) is refused with :class:`~counterpoint.errors.VerdictMismatch`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any, Dict, List, Optional, Sequence

from counterpoint import storage
from counterpoint.errors import RunFailed, VerdictMismatch

Counts = Dict[str, Dict[str, int]]  # {config: {"shards": n, "rows": n}}


class NotValidated(RunFailed):
    """The dataset has no passing verdict (never validated, or failed): nothing is pushed or exported."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class ShardVerdict:
    path: str  # relative to data/: "<config>/train-00000-of-00001.parquet"
    rows: Optional[int]
    size: Optional[int]
    sha256: Optional[str]
    success: bool
    quarantined: bool

    @classmethod
    def from_entry(cls, e: Dict[str, Any]) -> "ShardVerdict":
        path = e.get("path") or e.get("shard", "")
        if path.startswith(storage.DATA_DIR + "/"):
            path = path[len(storage.DATA_DIR) + 1:]
        return cls(path=path, rows=e.get("rows"), size=e.get("size"), sha256=e.get("sha256"),
                   success=bool(e.get("success")), quarantined=bool(e.get("quarantined_to")))


@dataclasses.dataclass
class ConfigVerdict:
    name: str
    success: bool
    rows: int
    shards: List[ShardVerdict]
    failed: List[str]  # expectation types / failure reasons

    @property
    def published(self) -> List[ShardVerdict]:
        """The shards the gate passed and left in place."""
        return [s for s in self.shards if s.success and not s.quarantined]


@dataclasses.dataclass
class Verdict:
    """A dataset's verdict, read from ``validation/summary.json``."""

    dataset: storage.DatasetLayout
    success: bool
    validated_at: Optional[str]
    configs: Dict[str, ConfigVerdict]
    raw: Dict[str, Any]

    @classmethod
    def read(cls, dataset: storage.DatasetLayout) -> Optional["Verdict"]:
        raw = storage.read_json(dataset.validation_summary)
        if not isinstance(raw, dict):
            return None
        configs = {}
        for name, c in (raw.get("configs") or {}).items():
            failed = sorted({str(f.get("expectation_type") or f.get("reason")) for f in c.get("failed_expectations", [])})
            configs[name] = ConfigVerdict(name=name, success=bool(c.get("success")), rows=int(c.get("rows") or 0),
                                          shards=[ShardVerdict.from_entry(s) for s in c.get("shards", [])],
                                          failed=failed)
        return cls(dataset=dataset, success=raw.get("success") is True, validated_at=raw.get("validated_at"),
                   configs=configs, raw=raw)

    @classmethod
    def require(cls, dataset: storage.DatasetLayout, what: str, configs: Optional[Sequence[str]] = None) -> "Verdict":
        """The passing verdict of ``dataset`` (covering ``configs``), or :class:`NotValidated` naming the fix."""
        v = cls.read(dataset)
        where = dataset.root
        if v is None:
            raise NotValidated(f"{what}: {where} has not been validated (no verdict); run `counterpoint validate` first")
        if not v.success:
            failed = [f"{c.name} ({', '.join(c.failed) or 'failed'})" for c in v.configs.values() if not c.success]
            raise NotValidated(f"{what}: validation failed for {', '.join(failed) or 'unknown configs'}; fix the "
                               f"data and run `counterpoint validate` again (see {dataset.validation_summary})")
        missing = [c for c in configs or () if c not in v.configs or not v.configs[c].success]
        if missing:
            raise NotValidated(f"{what}: config(s) {missing} of {where} were not validated; run `counterpoint "
                               "validate` first")
        return v

    # -- content binding --------------------------------------------------------------------------
    def expected_files(self, config: str) -> Dict[str, ShardVerdict]:
        return {s.path: s for s in self.configs[config].published}

    def check_file_set(self, config: str) -> List[str]:
        """The shard paths of ``config`` on disk, after checking they are exactly the validated ones."""
        data_dir = self.dataset.data_dir
        present = {storage.relpath(p, data_dir): p for p in self.dataset.shards(config)}
        wanted = self.expected_files(config)
        if set(present) != set(wanted):
            extra, gone = sorted(set(present) - set(wanted)), sorted(set(wanted) - set(present))
            raise VerdictMismatch(
                f"config {config!r} changed since validation (not validated: {extra or 'none'}; validated but "
                f"missing: {gone or 'none'}); run `counterpoint validate {self._root()}` again")
        return [present[k] for k in sorted(present)]

    def verified_bytes(self, config: str, path: str) -> bytes:
        """The bytes of one shard of ``config``, after checking size and sha256 against the verdict."""
        rel = storage.relpath(path, self.dataset.data_dir)
        expected = self.expected_files(config).get(rel)
        data = storage.read_bytes(path)
        if expected is None or data is None:
            raise VerdictMismatch(f"shard {rel} of {self._root()} is not the one validated (missing or unknown); "
                                  "run `counterpoint validate` again")
        if expected.sha256 is None:
            raise VerdictMismatch(f"the verdict of {self._root()} does not record the content of {rel}; run "
                                  "`counterpoint validate` again")
        if len(data) != expected.size or sha256(data) != expected.sha256:
            raise VerdictMismatch(f"shard {rel} of {self._root()} changed since validation (size or sha256 differs "
                                  "from the verdict); redo the run or run `counterpoint validate` again")
        return data

    def read_verified(self, config: str, columns: Optional[Sequence[str]] = None):
        """``config`` as one table, built from exactly the bytes that were checked against the verdict."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(io.BytesIO(self.verified_bytes(config, p)), columns=columns)
                  for p in self.check_file_set(config)]
        if not tables:
            return self.dataset.read_table(config, columns)
        return pa.concat_tables(tables, promote_options="default")

    def _root(self) -> str:
        return self.dataset.root


def _rows_or_zero(path: str) -> int:
    try:
        return storage.parquet_num_rows(path)
    except Exception:  # noqa: BLE001 - an unreadable shard holds no usable row (the gate says why)
        return 0


def found_counts(dataset: storage.DatasetLayout, configs: Sequence[str]) -> Counts:
    """What is on disk now: ``{config: {"shards": n, "rows": n}}``."""
    out = {}
    for c in configs:
        shards = dataset.shards(c)
        out[c] = {"shards": len(shards), "rows": sum(_rows_or_zero(p) for p in shards)}
    return out


def published_files(verdict: Optional[Verdict]) -> Dict[str, str]:
    """``{shard path under data/: sha256}`` of every shard the verdict passed and left in place."""
    if verdict is None:
        return {}
    return {s.path: s.sha256 for c in verdict.configs.values() for s in c.published if s.sha256}


def check_written_files(dataset: storage.DatasetLayout, written: Dict[str, str]) -> Optional[Verdict]:
    """Fails each config of the verdict whose shards differ from what the run wrote (``written``).

    A shard with another sha256, or one the run did not write, is a ``changed_since_written``
    failure (a lost shard already fails the gate's ``written_shards`` rule). No-op without a record of the run's files.
    """
    verdict = Verdict.read(dataset)
    if verdict is None or not written:
        return verdict
    raw = verdict.raw
    for name, c in verdict.configs.items():
        changed = [s.path for s in c.published if written.get(s.path) != s.sha256]
        if changed:
            entry = raw["configs"][name]
            entry["success"] = False
            entry.setdefault("failed_expectations", []).append(
                {"config": name, "shard": None, "expectation_type": None, "reason": "changed_since_written",
                 "details": f"not the bytes the run wrote: {changed}"})
            raw["success"] = False
    storage.write_json(dataset.validation_summary, raw)
    return Verdict.read(dataset)


def annotate(dataset: storage.DatasetLayout, **fields: Any) -> Optional[Verdict]:
    """Adds top-level fields to the verdict (an export's records, an accepted state) and reads it back."""
    raw = storage.read_json(dataset.validation_summary)
    if not isinstance(raw, dict):
        return None
    raw.update(fields)
    storage.write_json(dataset.validation_summary, raw)
    return Verdict.read(dataset)


def merge(into: storage.DatasetLayout, source: Verdict, configs: Sequence[str]) -> None:
    """Copies the verdict entries of ``configs`` (and their export records) from ``source`` into ``into``'s."""
    path = into.validation_summary
    raw = storage.read_json(path)
    if not isinstance(raw, dict):
        raw = {k: v for k, v in source.raw.items() if k not in ("configs", "data_docs", "quarantined", "exports")}
        raw.update({"success": True, "configs": {}, "quarantined": [], "data_docs": None})
    raw.setdefault("configs", {}).update({c: source.raw["configs"][c] for c in configs})
    raw["success"] = bool(raw.get("success")) and all(source.raw["configs"][c].get("success") for c in configs)
    exports = {c: e for c, e in (source.raw.get("exports") or {}).items() if c in configs}
    if exports:
        raw.setdefault("exports", {}).update(exports)
    storage.write_json(path, raw)
