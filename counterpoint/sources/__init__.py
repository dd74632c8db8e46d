"""Problem sources: procedural word problems, problem files, Hugging Face datasets.

Every source yields ``("problem", row)`` or ``("reject", reject_row)`` items:
``row`` has exactly the ``records.PROBLEMS`` columns, ``reject_row`` the
``records.REJECTS`` ones. Nothing here raises on bad data; configuration errors
(unknown kind / preset, procedural source without ``num_problems``, an HF
dataset that cannot be loaded) do raise.

The Beam pipeline can call the pieces directly to parallelise reading:
``procedural.procedural_problem(seed, i)`` for index ranges,
``files.expand_paths`` + ``files.read_problem_file`` per file, and
``validate.validate_problem`` on every problem; :func:`iter_source` chains them
for a single process.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from counterpoint.errors import ConfigError
from counterpoint.schemas import records

from counterpoint.sources.mapping import (
    GOLD_FORMATS,
    PRESETS,
    FieldMapping,
    extract_boxed,
    extract_gold,
    extract_gsm8k_answer,
    map_record,
    preset,
)
from counterpoint.sources.validate import DEFAULT_MAX_QUESTION_CHARS, dedupe_key, validate_problem

Item = Tuple[str, Dict[str, Any]]
KINDS = ("procedural", "chain", "file", "hf")

__all__ = [
    "FieldMapping", "PRESETS", "GOLD_FORMATS", "ProblemSourceConfig", "iter_source", "preset",
    "map_record", "extract_boxed", "extract_gsm8k_answer", "extract_gold",
    "validate_problem", "dedupe_key", "KINDS",
]


@dataclasses.dataclass
class ProblemSourceConfig:
    """Where problems come from.

    ``num_problems`` caps the items read (problems + rejects); it is required for
    ``procedural``. ``preset`` (``gsm8k`` / ``math`` / ``math500``) supplies the
    mapping and HF defaults; otherwise ``mapping`` is used. ``hf_*`` override the
    mapping's HF defaults; ``hf_data_files`` / ``hf_kwargs`` pass through to
    ``datasets.load_dataset``.
    """

    kind: str = "procedural"
    num_problems: Optional[int] = None
    seed: int = 0
    min_ops: int = 2
    max_ops: int = 4
    paths: List[str] = dataclasses.field(default_factory=list)
    preset: Optional[str] = None
    mapping: FieldMapping = dataclasses.field(default_factory=FieldMapping)
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    hf_split: Optional[str] = None
    hf_data_files: Any = None
    hf_streaming: bool = False
    hf_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS

    def __post_init__(self):
        if isinstance(self.mapping, Mapping):
            self.mapping = FieldMapping.from_dict(self.mapping)
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; known: {sorted(PRESETS)}")
        if self.num_problems is not None and self.num_problems < 0:
            raise ConfigError(f"num_problems must be >= 0, got {self.num_problems}")

    def check(self) -> None:
        """Checks that the source is complete and names something to read (called in the driver once every
        override is applied): a file source's paths must each match at least one file, through Beam's
        filesystems (local, gs://, s3://), so a typo fails here instead of publishing an empty dataset."""
        if self.kind in ("procedural", "chain") and self.num_problems is None:
            raise ConfigError(f"source.kind={self.kind} needs source.num_problems (--num-problems N)")
        if self.kind in ("procedural", "chain"):
            if not (1 <= self.min_ops <= self.max_ops):
                raise ConfigError(f"source needs 1 <= min_ops <= max_ops, got {self.min_ops}..{self.max_ops}")
        if self.kind == "file" and not self.paths:
            raise ConfigError("source.kind=file needs at least one path: --input FILE_OR_GLOB (repeatable)")
        if self.kind == "hf":
            self.hf_args()  # raises with the fix when no dataset is named
        if self.num_problems == 0:
            raise ConfigError("source.num_problems is 0 (--num-problems 0): a run needs at least one problem; "
                              "give N >= 1, or leave it out to read the whole input")
        if self.kind == "file":
            from counterpoint.sources.files import check_inputs

            check_inputs(self.paths)
        if self.max_question_chars < 1:
            raise ConfigError(f"source.max_question_chars must be >= 1, got {self.max_question_chars}")

    def resolved_mapping(self) -> FieldMapping:
        return PRESETS[self.preset] if self.preset else self.mapping

    def hf_args(self) -> Tuple[str, Optional[str], str]:
        """(name, config, split) after applying the preset / mapping defaults."""
        m = self.resolved_mapping()
        name = self.hf_name or m.hf_name
        if not name:
            raise ConfigError("source.kind=hf needs source.hf_name or a preset that names a dataset "
                             "(--preset gsm8k|math|math500)")
        config = self.hf_config if self.hf_config is not None else (m.hf_config if not self.hf_name else None)
        split = self.hf_split or m.split or "train"
        return name, config, split


def _validated(items: Iterator[Item], max_question_chars: int) -> Iterator[Item]:
    for kind, row in items:
        if kind == "problem":
            rej = validate_problem(row, max_question_chars=max_question_chars)
            if rej is not None:
                yield "reject", rej
                continue
        yield kind, row


def _file_items(cfg: ProblemSourceConfig) -> Iterator[Item]:
    from counterpoint.sources.files import expand_paths, read_problem_file

    mapping = cfg.resolved_mapping()
    for pattern in cfg.paths:
        try:
            paths = expand_paths(pattern)
        except Exception as e:  # noqa: BLE001 - e.g. a bucket we cannot list
            yield "reject", records.make_reject(
                stage="read", reason="unreadable_file", problem_id=None, scope="problem",
                detail=f"{pattern}: cannot expand: {type(e).__name__}: {e}", key=f"{pattern}:expand")
            continue
        if not paths:
            yield "reject", records.make_reject(
                stage="read", reason="no_files_matched", problem_id=None, scope="problem",
                detail=f"{pattern}: no file matches", key=f"{pattern}:nomatch")
            continue
        for path in paths:
            yield from read_problem_file(path, mapping)


def _raw_items(cfg: ProblemSourceConfig) -> Iterator[Item]:
    if cfg.kind == "procedural":
        from counterpoint.sources.procedural import iter_procedural

        if cfg.num_problems is None:
            raise ValueError("procedural source needs num_problems")
        return (("problem", row) for row in iter_procedural(cfg.seed, 0, cfg.num_problems, cfg.min_ops, cfg.max_ops))
    if cfg.kind == "file":
        if not cfg.paths:
            raise ValueError("file source needs at least one path")
        return _file_items(cfg)
    from counterpoint.sources.hf import iter_hf_problems

    name, config, split = cfg.hf_args()
    return iter_hf_problems(name, config, split, cfg.resolved_mapping(), data_files=cfg.hf_data_files,
                            streaming=cfg.hf_streaming, limit=cfg.num_problems, load_kwargs=cfg.hf_kwargs)


def iter_source(cfg: ProblemSourceConfig) -> Iterator[Item]:
    """Every item of ``cfg``'s source, validated, capped at ``num_problems`` items."""
    items = _raw_items(cfg)
    if cfg.num_problems is not None:
        items = itertools.islice(items, cfg.num_problems)
    return _validated(items, cfg.max_question_chars)
