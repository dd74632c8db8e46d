"""Hugging Face datasets as problem sources (``datasets.load_dataset`` + a FieldMapping).

Works with Hub ids (``openai/gsm8k``), local dataset folders and packaged
builders with local files (``load_dataset("json", data_files=...)``). ``datasets``
is imported lazily so the rest of Counterpoint does not need it.

In a pipeline the driver only *resolves* a dataset to its data files
(:func:`resolve_data_files`: the Parquet / JSON files of the split, as the
``datasets`` builder sees them); workers read those files like any problem file,
so no example passes through the driver. :func:`iter_hf_problems` reads in-process
(tests, small scripts).

Loading failures (dataset not found, no network) raise: they are configuration
errors, not bad data. Bad records become rejects exactly as for files.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from counterpoint.sources.mapping import FieldMapping, map_record

Item = Tuple[str, Dict[str, Any]]


def import_datasets():
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise ImportError(
            "Hugging Face problem sources need the `datasets` package: "
            "pip install datasets (it is part of Counterpoint's dependencies)"
        ) from e
    return datasets


def load_hf_dataset(name: str, config: Optional[str] = None, split: str = "test", *,
                    data_files: Any = None, streaming: bool = False,
                    load_kwargs: Optional[Mapping[str, Any]] = None):
    """``datasets.load_dataset(name, config, split=split, ...)``; returns a (streaming) Dataset."""
    datasets = import_datasets()
    kwargs: Dict[str, Any] = dict(load_kwargs or {})
    if data_files is not None:
        kwargs["data_files"] = data_files
    if streaming:
        kwargs["streaming"] = True
    return datasets.load_dataset(name, config, split=split, **kwargs)


def _default_source(name: str, data_files: Any) -> str:
    if data_files is not None and isinstance(data_files, str) and name in ("json", "parquet", "csv"):
        from counterpoint.sources.files import default_source_name

        return default_source_name(data_files)
    if os.path.exists(name):
        return os.path.basename(os.path.normpath(name))
    return name


def iter_hf_problems(name: str, config: Optional[str], split: str, mapping: FieldMapping, *,
                     data_files: Any = None, streaming: bool = False, limit: Optional[int] = None,
                     load_kwargs: Optional[Mapping[str, Any]] = None) -> Iterator[Item]:
    """``("problem", row)`` / ``("reject", reject_row)`` per example, at most ``limit`` of them."""
    ds = load_hf_dataset(name, config, split, data_files=data_files, streaming=streaming,
                         load_kwargs=load_kwargs)
    source = _default_source(name, data_files)
    origin_base = {"hf_name": name, "hf_config": config, "split": split}
    for i, rec in enumerate(ds):
        if limit is not None and i >= limit:
            return
        key = f"hf:{name}:{config}:{split}:{i}"
        yield map_record(rec, mapping, source=source, key=key, origin={**origin_base, "index": i})


READABLE_EXTS = (".parquet", ".pq", ".jsonl", ".json", ".ndjson")


def resolve_data_files(name: str, config: Optional[str], split: str, *, data_files: Any = None,
                       load_kwargs: Optional[Mapping[str, Any]] = None) -> List[str]:
    """The data files (paths or ``hf://`` URLs) behind ``split`` of a dataset, in the builder's order.

    Raises ``ValueError`` naming the fix when the split has no files Counterpoint can read
    (Parquet / JSON(L), optionally compressed) — e.g. a script-based dataset.
    """
    from counterpoint.sources.files import _strip_compression

    if "[" in split:
        raise ValueError(f"source.hf_split={split!r}: split slicing is not supported; use --num-problems N")
    datasets = import_datasets()
    kwargs: Dict[str, Any] = dict(load_kwargs or {})
    if data_files is not None:
        kwargs["data_files"] = data_files
    builder = datasets.load_dataset_builder(name, config, **kwargs)
    files = getattr(builder.config, "data_files", None) or {}
    if split not in files:
        raise ValueError(f"dataset {name!r} (config {config!r}) has no data files for split {split!r}; "
                         f"splits with files: {sorted(files)}")
    paths = [str(f) for f in files[split]]
    unreadable = [f for f in paths if not _strip_compression(f).lower().endswith(READABLE_EXTS)]
    if not paths or unreadable:
        raise ValueError(f"dataset {name!r} split {split!r} is not stored as Parquet/JSON files "
                         f"({unreadable[:3] or 'no files'}); export it with datasets (to_parquet) and use "
                         "--input FILE instead")
    return paths
