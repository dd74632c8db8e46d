"""Problem files: JSONL / JSON array / Parquet, local or remote, optionally compressed.

Everything is opened through Beam's ``FileSystems`` (so ``gs://``, ``s3://`` and
the pipeline's filesystem options work, in the driver and in workers alike), with
the compression inferred from the extension (``.gz`` / ``.bz2`` / ``.zst`` / ``.xz``).
Schemes Beam has no filesystem for (``hf://``, ``https://``) go through fsspec.

:func:`read_problem_file` never raises on bad data: every input item becomes
exactly one ``("problem", row)`` or ``("reject", reject_row)``. Reject reasons
(stage ``read``, scope ``problem``): ``empty_file``, ``unreadable_file``,
``invalid_utf8``, ``malformed_json``, ``not_an_object``, ``missing_field``,
``invalid_field_type``, ``unparsable_gold``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from counterpoint.schemas import records

from counterpoint.sources.mapping import FieldMapping, map_record

Item = Tuple[str, Dict[str, Any]]

COMPRESSION_EXTS = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".lzma")
PARQUET_EXTS = (".parquet", ".pq")
_RAW_PAYLOAD_CHARS = 1000
_GLOB_CHARS = "*?["


def _strip_compression(path: str) -> str:
    low = path.lower()
    for ext in COMPRESSION_EXTS:
        if low.endswith(ext):
            return path[: -len(ext)]
    return path


def detect_format(path: str) -> str:
    """``"parquet"``, ``"json"`` (array or single object, falling back to lines) or ``"jsonl"``."""
    base = _strip_compression(path).lower()
    if base.endswith(PARQUET_EXTS):
        return "parquet"
    if base.endswith(".json"):
        return "json"
    return "jsonl"


def default_source_name(path: str) -> str:
    """File stem without format / compression extensions (``data/train.jsonl.gz`` -> ``train``)."""
    name = _strip_compression(path.rstrip("/")).rsplit("/", 1)[-1]
    for ext in (".jsonl", ".ndjson", ".json", ".parquet", ".pq"):
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return name


def expand_paths(pattern: str) -> List[str]:
    """Sorted paths matching ``pattern`` (a glob or a plain path).

    A plain path is returned as is (even if missing: reading it then yields an
    ``unreadable_file`` reject). Globs go through Beam's ``FileSystems.match``
    (``*`` within a folder, ``**`` across folders) on every filesystem.
    """
    from counterpoint import storage

    if not any(c in pattern for c in _GLOB_CHARS):
        return [pattern]
    local = pattern[len("file://"):] if pattern.startswith("file://") else pattern
    if "://" not in local:
        local = os.path.expanduser(local)
    return [p for p in storage.match(local) if not p.endswith("/")]


def check_inputs(patterns: List[str]) -> None:
    """Driver-side: every ``--input`` path or glob matches at least one file, and not every file is
    empty (Beam ``FileSystems.match``, so gs:// and s3:// too); raises :class:`ConfigError` naming them.
    An empty file among others is read as usual (an ``empty_file`` reject)."""
    from counterpoint import storage
    from counterpoint.errors import ConfigError

    missing: List[str] = []
    sizes: List[int] = []
    for pattern in patterns:
        if pattern.startswith("<local>/"):
            raise ConfigError(f"--input {pattern} is a path shortened in a stored run_config.json (published files "
                              "name no local folders): give the file with --input PATH")
        local = pattern[len("file://"):] if pattern.startswith("file://") else pattern
        if "://" not in local:
            local = os.path.expanduser(local)
            if os.path.isdir(local):
                raise ConfigError(f"--input {pattern} is a folder: name its files, e.g. --input "
                                  f"'{os.path.join(pattern, '*.jsonl')}'")
        found = [(p, size) for p, size in storage.match_sizes(local) if not p.endswith("/")]
        if not found:
            missing.append(pattern)
        sizes.extend(size for _, size in found)
    if missing:
        raise ConfigError(f"--input {', '.join(missing)}: no such file (nothing matches); check the path or glob "
                          "(nothing was read or written)")
    if not any(sizes):
        raise ConfigError(f"--input {', '.join(patterns)}: every matching file is empty; a run needs at least one "
                          "problem (nothing was read or written)")


def _reject(reason: str, detail: str, key: str, payload: Any = None) -> Item:
    return "reject", records.make_reject(
        stage="read", reason=reason, problem_id=None, scope="problem", detail=detail,
        payload=payload, key=key,
    )


def _raw(text: str) -> str:
    return text[:_RAW_PAYLOAD_CHARS]


def read_problem_file(path: str, mapping: FieldMapping, *, fmt: Optional[str] = None) -> Iterator[Item]:
    """Yields ``("problem", row)`` / ``("reject", reject_row)`` for every item of ``path``.

    Blank lines are skipped silently; every other line (or array element, or
    Parquet row) yields exactly one item. A file without any item yields one
    ``empty_file`` reject. ``fmt`` overrides the format detected from the name.
    """
    fmt = fmt or detect_format(path)
    source = default_source_name(path)
    if fmt == "parquet":
        items = _read_parquet(path, mapping, source)
    elif fmt == "json":
        items = _read_json(path, mapping, source)
    elif fmt == "jsonl":
        items = _read_jsonl(path, mapping, source)
    else:
        raise ValueError(f"unknown format {fmt!r} (jsonl, json, parquet)")
    shown = shown_path(path)
    for kind, row in items:
        yield kind, (row if shown == path else _with_shown_path(row, path, shown))


def shown_path(path: str) -> str:
    """How a problem file is named in published rows (reject details, provenance): a local absolute
    path keeps only its file name (``<local>/name.jsonl``), so the rejects config names no local
    folders or users; remote paths (gs://, s3://, hf://) stay whole."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if "://" in local or not os.path.isabs(local):
        return path
    return "<local>/" + os.path.basename(local)


def _with_shown_path(row: Dict[str, Any], path: str, shown: str) -> Dict[str, Any]:
    # Only the text a person reads changes; ids (computed from the full path) stay as they were.
    return {k: v.replace(path, shown) if isinstance(v, str) and k in ("detail", "payload", "metadata") else v
            for k, v in row.items()}


def _beam_can_open(path: str) -> bool:
    if "://" not in path or path.startswith("file://"):
        return True
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(path)
        return True
    except ValueError:
        return False


def _open(path: str):
    """Binary, decompressed stream for ``path`` (any filesystem; compression from the extension)."""
    from counterpoint import storage

    if _beam_can_open(path):
        return storage.open_decompressed(path)
    import fsspec  # hf://, https://: schemes Beam has no filesystem for

    return fsspec.open(path, "rb", compression="infer").open()


def _is_empty(path: str) -> bool:
    try:
        with _open(path) as f:
            return f.read(1) == b""
    except Exception:  # noqa: BLE001
        return False


def _record_items(obj: Any, lineno: int, path: str, mapping: FieldMapping, source: str,
                  origin_extra: Optional[Dict[str, Any]] = None) -> Item:
    key = f"{path}:{lineno}"
    origin = {"path": path, "line": lineno, **(origin_extra or {})}
    return map_record(obj, mapping, source=source, key=key, origin=origin)


def _parse_line(raw: bytes, lineno: int, path: str, mapping: FieldMapping, source: str) -> Optional[Item]:
    key = f"{path}:{lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _reject("invalid_utf8", f"{key}: invalid UTF-8 at byte {e.start}: {e.reason}", key,
                       payload=_raw(raw.decode("utf-8", "replace")))
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, huge int, absurd nesting
        return _reject("malformed_json", f"{key}: line {lineno}: {e}", key, payload=_raw(text))
    return _record_items(obj, lineno, path, mapping, source)


def _read_jsonl(path: str, mapping: FieldMapping, source: str, data: Optional[bytes] = None) -> Iterator[Item]:
    n_items = 0
    lineno = 0
    try:
        if data is not None:
            lines = iter(data.splitlines(keepends=True))
            f = None
        else:
            f = _open(path)
            lines = iter(f.readline, b"")  # Beam's decompressing streams are not iterable
        try:
            for lineno, raw in enumerate(lines, start=1):
                item = _parse_line(raw.rstrip(b"\r\n"), lineno, path, mapping, source)
                if item is not None:
                    n_items += 1
                    yield item
        finally:
            if f is not None:
                f.close()
    except GeneratorExit:
        raise
    except Exception as e:  # noqa: BLE001 - missing file, permissions, corrupt compression...
        where = f"after line {lineno}" if lineno else "on open"
        yield _reject("unreadable_file", f"{path}: {where}: {type(e).__name__}: {e}", f"{path}:unreadable")
        return
    if n_items == 0:
        yield _reject("empty_file", f"{path}: no records", f"{path}:empty")


def _read_json(path: str, mapping: FieldMapping, source: str) -> Iterator[Item]:
    try:
        with _open(path) as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001
        yield _reject("unreadable_file", f"{path}: {type(e).__name__}: {e}", f"{path}:unreadable")
        return
    stripped = data.lstrip()
    if stripped.startswith(b"\xef\xbb\xbf"):
        stripped = stripped[3:].lstrip()
    if not stripped.startswith(b"["):
        # Not an array: a single object spanning lines, or JSON lines in a .json file.
        try:
            obj = json.loads(data.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            yield _record_items(obj, 1, path, mapping, source)
            return
        yield from _read_jsonl(path, mapping, source, data=data)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield _reject("invalid_utf8", f"{path}: invalid UTF-8 at byte {e.start} (line {line}): {e.reason}",
                      f"{path}:{line}", payload=_raw(data.decode("utf-8", "replace")))
        return
    try:
        arr = json.loads(text)
    except (ValueError, RecursionError) as e:
        line = getattr(e, "lineno", None)
        yield _reject("malformed_json", f"{path}: line {line}: {e}", f"{path}:{line}", payload=_raw(text))
        return
    if not arr:
        yield _reject("empty_file", f"{path}: empty JSON array", f"{path}:empty")
        return
    for i, obj in enumerate(arr):
        yield map_record(obj, mapping, source=source, key=f"{path}#{i}", origin={"path": path, "index": i})


def _read_parquet(path: str, mapping: FieldMapping, source: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    n = 0
    try:
        with _open(path) as f:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=1024):
                for rec in batch.to_pylist():
                    key = f"{path}#row{n}"
                    yield map_record(rec, mapping, source=source, key=key, origin={"path": path, "row": n})
                    n += 1
    except GeneratorExit:
        raise
    except Exception as e:  # noqa: BLE001 - missing file, not Parquet, corrupt pages...
        if n == 0 and _is_empty(path):
            yield _reject("empty_file", f"{path}: zero bytes", f"{path}:empty")
            return
        where = f"after row {n}" if n else "on open"
        yield _reject("unreadable_file", f"{path}: {where}: {type(e).__name__}: {e}", f"{path}:unreadable")
        return
    if n == 0:
        yield _reject("empty_file", f"{path}: no rows", f"{path}:empty")
