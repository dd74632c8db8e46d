"""Every file operation on an output folder, through Beam's ``FileSystems``.

Counterpoint writes to local disk, ``gs://`` and ``s3://`` alike: nothing else in
the package calls ``pathlib``/``os``/``shutil`` on an output folder. Pipeline
options (credentials, ``--s3_endpoint_url``, ...) reach every call once
:func:`configure` has been given them — in the driver as in the workers.

The folder layouts live in :mod:`counterpoint.storage.layout`, the lock in
:mod:`counterpoint.storage.lock`.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

WORK_DIR = "_work"
DATA_DIR = "data"
VALIDATION_DIR = "validation"
QUARANTINE_DIR = "quarantine"
CARD_FILE = "README.md"
REPORT_FILE = "report.html"
SUMMARY_FILE = "run_summary.json"
CONFIG_FILE = "run_config.json"


# ---------------------------------------------------------------------------
# FileSystems helpers
# ---------------------------------------------------------------------------
_CONFIGURED = None


def configure(options) -> None:
    """Gives Beam's filesystems the pipeline options (credentials, endpoints) for calls made outside a pipeline.

    Beam hands a pipeline's options to the filesystems inside its workers itself; the driver (and
    the ``validate`` / ``report`` / ``push`` / ``export`` commands) must do it before touching a
    remote path. The options are remembered (:func:`configured_options`) so that a pipeline the
    driver starts later (the validation gate) hands the same ones to its workers.
    """
    global _CONFIGURED
    if options is not None:
        FileSystems.set_options(options)
        _CONFIGURED = options


def configured_options():
    """The options last given to :func:`configure` (None if none were)."""
    return _CONFIGURED


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return FileSystems.join(base, *parts)


def relpath(path: str, root: str) -> str:
    """``path`` relative to ``root``, always with ``/`` separators."""
    root = root.rstrip("/")
    if is_local(path) and is_local(root):
        return os.path.relpath(_local(path), _local(root)).replace(os.sep, "/")
    if not path.startswith(root + "/"):
        raise ValueError(f"{path} is not under {root}")
    return path[len(root) + 1:]


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def match(pattern: str) -> List[str]:
    """Sorted paths matching a glob (``*`` stays within a folder, ``**`` crosses folders); [] if none."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError when nothing matches on some filesystems
        if "No files found" in str(e) or "not found" in str(e).lower():
            return []
        raise
    return sorted(m.path for m in result.metadata_list)


def match_sizes(pattern: str) -> List[Tuple[str, int]]:
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # noqa: BLE001
        if "No files found" in str(e) or "not found" in str(e).lower():
            return []
        raise
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


def list_tree(root: str) -> List[str]:
    """Every file below ``root`` (recursive)."""
    return match(join(root, "**"))


def exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception:  # noqa: BLE001
        return False


def is_file(path: str) -> bool:
    """True when ``path`` is a file (locally) or an object at exactly that key (object stores)."""
    if is_local(path):
        return os.path.isfile(_local(path))
    return exists(path) and not match(join(path, "*"))


def mkdirs(path: str) -> None:
    """Creates a folder (a no-op on object stores, where folders do not exist)."""
    if is_local(path):
        os.makedirs(_local(path), exist_ok=True)


def open_read(path: str, compression: str = CompressionTypes.UNCOMPRESSED):
    """A binary, readable (and for local and object-store files, seekable) stream."""
    return FileSystems.open(path, compression_type=compression)


def open_decompressed(path: str):
    """A binary stream with the compression inferred from the extension (.gz, .bz2, .zst, .xz, ...)."""
    return FileSystems.open(path, compression_type=CompressionTypes.detect_compression_type(path))


def read_bytes(path: str) -> Optional[bytes]:
    """The file's bytes, or None when it does not exist or cannot be read."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except Exception:  # noqa: BLE001 - missing is the common case
        return None


def read_text(path: str) -> Optional[str]:
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8")


def read_json(path: str) -> Optional[Any]:
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("ignoring unreadable JSON file %s", path)
        return None


def write_bytes(path: str, data: bytes, *, atomic: bool = True) -> None:
    """Writes ``data``; with ``atomic`` a reader sees the old file or the whole new one, never a torn one.

    Local: a temporary name in the same folder, then ``os.replace``. Object stores: an object only
    becomes visible once its upload completes, so a plain create is already atomic.
    """
    if is_local(path):
        local = _local(path)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        if not atomic:
            with open(local, "wb") as f:
                f.write(data)
            return
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, local)
        return
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, *, indent: Optional[int] = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str, ensure_ascii=False))


def write_jsonl_gz(path: str, rows: Iterable[Any]) -> int:
    buf = io.BytesIO()
    n = 0
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for row in rows:
            gz.write(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
            n += 1
    write_bytes(path, buf.getvalue())
    return n


def read_jsonl_gz(path: str) -> Iterator[Any]:
    data = read_bytes(path)
    if data is None:
        return
    for line in gzip.decompress(data).splitlines():
        if line.strip():
            yield json.loads(line)


def delete(paths: Sequence[str]) -> None:
    if paths:
        FileSystems.delete(list(paths))


def delete_tree(root: str) -> None:
    """Removes ``root`` and everything below it (missing is fine)."""
    if is_local(root):
        shutil.rmtree(_local(root), ignore_errors=True)
        return
    files = list_tree(root)
    if files:
        FileSystems.delete(files)


def copy_file(src: str, dst: str) -> None:
    if is_local(src) and is_local(dst):
        os.makedirs(os.path.dirname(_local(dst)) or ".", exist_ok=True)
        shutil.copyfile(_local(src), _local(dst))
        return
    data = read_bytes(src)
    if data is None:
        raise FileNotFoundError(src)
    write_bytes(dst, data)


def clone_file(src: str, dst: str) -> None:
    """A cheap copy of a file that is never rewritten in place (a published shard).

    Local: a hard link (no bytes copied; either name can be removed alone), a copy where links are
    not possible. Object stores: a server-side copy.
    """
    if is_local(src) and is_local(dst):
        os.makedirs(os.path.dirname(_local(dst)) or ".", exist_ok=True)
        try:
            os.link(_local(src), _local(dst))
        except OSError:
            shutil.copyfile(_local(src), _local(dst))
        return
    FileSystems.copy([src], [dst])


def top_level_names(root: str) -> List[str]:
    """The names directly below ``root`` (files and folders; [] when it is missing or empty)."""
    if is_local(root):
        local = _local(root)
        return sorted(os.listdir(local)) if os.path.isdir(local) else []
    return sorted({relpath(p, root).split("/")[0] for p in list_tree(root)})


def move_file(src: str, dst: str) -> None:
    if is_local(src) and is_local(dst):
        os.makedirs(os.path.dirname(_local(dst)) or ".", exist_ok=True)
        os.replace(_local(src), _local(dst))
        return
    FileSystems.rename([src], [dst])


def replace_tree(src: str, dst: str) -> None:
    """Makes ``dst`` hold exactly what ``src`` holds; ``src`` is consumed.

    Local: two renames (the old tree is moved aside first), so readers see the old tree or the
    new one. Object stores have no rename of folders: new objects are copied in first (same names
    overwrite), then the objects only the old tree had are deleted.
    """
    if is_local(src) and is_local(dst):
        s, d = _local(src), _local(dst)
        if os.path.exists(d):
            trash = f"{d}.old-{uuid.uuid4().hex[:8]}"
            os.rename(d, trash)
            os.rename(s, d)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
            os.rename(s, d)
        return
    new = list_tree(src)
    wanted = {relpath(p, src) for p in new}
    old = [p for p in list_tree(dst) if relpath(p, dst) not in wanted]
    if new:
        FileSystems.rename(new, [join(dst, relpath(p, src)) for p in new])
    if old:
        FileSystems.delete(old)


def copy_tree(src: str, dst: str) -> None:
    for path in list_tree(src):
        copy_file(path, join(dst, relpath(path, src)))


def download_tree(src: str, local_dir: str) -> str:
    """Copies a (remote) tree into ``local_dir``; for libraries that only read local folders."""
    for path in list_tree(src):
        target = os.path.join(local_dir, *relpath(path, src).split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        data = read_bytes(path)
        with open(target, "wb") as f:
            f.write(data or b"")
    return local_dir


def upload_tree(local_dir: str, dst: str) -> List[str]:
    """Copies every file of a local folder to ``dst`` (local or remote); returns the written paths."""
    written = []
    for folder, _, files in os.walk(local_dir):
        for name in files:
            src = os.path.join(folder, name)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            target = join(dst, *rel.split("/"))
            with open(src, "rb") as f:
                write_bytes(target, f.read())
            written.append(target)
    return written


class LocalScratch:
    """A temporary local folder (for libraries that write only to local disk), removed on exit."""

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix="counterpoint-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def _parquet_file(f):
    """A ``ParquetFile`` over a seekable stream (only the footer and the wanted columns are read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.PythonFile(f, mode="r"))


def read_parquet(path: str, columns: Optional[Sequence[str]] = None):
    """One Parquet file as a ``pyarrow.Table`` (any filesystem; only ``columns`` are read when given)."""
    with open_read(path) as f:
        return _parquet_file(f).read(columns=list(columns) if columns else None)


def parquet_num_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer alone."""
    with open_read(path) as f:
        return _parquet_file(f).metadata.num_rows


def write_parquet(path: str, table, *, compression: str = "zstd") -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    write_bytes(path, buf.getvalue())
