"""Run configuration: dataclasses, YAML loading and the one table of command-line flags.

A run is fully described by :class:`RunConfig`. Each part is a dataclass that lives
next to the component it configures and checks itself when built (a bad value
fails in the driver, with a message that names the key and the fix, before any
worker starts): ``ProblemSourceConfig`` (sources), ``GeneratorConfig`` and
``SamplingParams`` (generators), ``LabelerConfig`` (labeling), and the
pipeline-level ones below. ``counterpoint run --config FILE.yaml`` loads one
(nested keys mirror the dataclasses); every command-line flag maps to one config
path through :data:`FLAGS`. The resolved config is written next to the dataset
(``run_config.json``) and summarised in the dataset card.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.generators.base import SamplingParams
from counterpoint.generators.config import COMPILE_MODES, GENERATOR_KINDS, SEED_MODES, GeneratorConfig
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig
from counterpoint.labeling.consensus import ConsensusConfig
from counterpoint.schemas import content_id
from counterpoint.segmentation import MODES as SEGMENTATION_MODES
from counterpoint.sources import KINDS as SOURCE_KINDS
from counterpoint.sources import PRESETS, ProblemSourceConfig
from counterpoint.sources.mapping import FieldMapping

__all__ = [
    "RunConfig", "GeneratorConfig", "VerifierConfig", "PairingConfig", "RetryConfig", "SamplingParams",
    "FLAGS", "Flag", "from_dict", "load_config", "dumps_config", "apply_overrides", "DEFAULT_SYSTEM_PROMPT",
]

from counterpoint.prompts import DEFAULT_SYSTEM_PROMPT  # noqa: E402  (every prompt lives in counterpoint.prompts)

VERIFIER_NAMES = ("auto", "numeric", "math", "exact")
# Problems per Parquet shard when num_shards is auto (a few hundred MB of trajectories per shard at most).
SHARD_PROBLEMS = 5000
LABELER_NAMES = ("omegaprm", "mc")


@dataclasses.dataclass
class VerifierConfig:
    """``auto`` picks the verifier from each problem's answer_type (numeric / math / exact)."""

    name: str = "auto"
    timeout_s: float = 5.0
    pool_size: int = 2
    # Tests only: "module:function" run in each math-verify worker before every item (MathVerifier).
    fault_injector: Optional[str] = None

    def __post_init__(self):
        if self.name not in VERIFIER_NAMES:
            raise ValueError(f"verifier.name: unknown verifier {self.name!r}; choose one of {list(VERIFIER_NAMES)}")
        if self.timeout_s <= 0:
            raise ValueError(f"verifier.timeout_s must be > 0, got {self.timeout_s}")
        if self.pool_size < 1:
            raise ValueError(f"verifier.pool_size must be >= 1, got {self.pool_size}")


@dataclasses.dataclass
class PairingConfig:
    """Outcome pairing: each correct sample is paired with an incorrect one, round-robin."""

    max_pairs_per_problem: int = 4
    # Truncated samples never become ``chosen``; set False to also keep them out of ``rejected``.
    truncated_as_rejected: bool = True

    def __post_init__(self):
        if self.max_pairs_per_problem < 0:
            raise ValueError(f"pairing.max_pairs_per_problem must be >= 0, got {self.max_pairs_per_problem}")


@dataclasses.dataclass
class RetryConfig:
    """Bounded retries of engine calls; then the problems of the batch are rejected."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    call_timeout_s: Optional[float] = None

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be >= 1, got {self.max_attempts}")
        if self.call_timeout_s is not None and self.call_timeout_s <= 0:
            raise ValueError(f"retry.call_timeout_s must be > 0 (or null), got {self.call_timeout_s}")


@dataclasses.dataclass
class RunConfig:
    source: ProblemSourceConfig = dataclasses.field(
        default_factory=lambda: ProblemSourceConfig(kind="procedural", num_problems=24, min_ops=1, max_ops=2)
    )
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    sampling: SamplingParams = dataclasses.field(default_factory=lambda: SamplingParams(temperature=0.8, top_p=0.95, max_tokens=256))
    samples_per_problem: int = 8
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    segmentation: str = "paragraph"
    verifier: VerifierConfig = dataclasses.field(default_factory=VerifierConfig)
    labeler: Optional[str] = None  # None | "omegaprm" | "mc"
    labeling: LabelerConfig = dataclasses.field(default_factory=LabelerConfig)
    # Consensus filtering: a judge model names the first wrong step of each labelled negative.
    consensus: ConsensusConfig = dataclasses.field(default_factory=ConsensusConfig)
    # The judge's engine (default: the run's own generator).
    judge: Optional[GeneratorConfig] = None
    pairing: PairingConfig = dataclasses.field(default_factory=PairingConfig)
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    # Problems per engine call in the sampling stage (each asks for samples_per_problem samples).
    batch_size: int = 32
    # Problems whose trees advance together in one labelling call; None = sized from the engine's capacity.
    labeling_batch_size: Optional[int] = None
    # Parquet shards per config; None = one per SHARD_PROBLEMS problems (at least one), so a big run's
    # configs are written, validated and read back by many workers.
    num_shards: Optional[int] = None
    validate: bool = True
    # Floors per config (``--min-rows preferences=10``); an empty config is no defect without one.
    min_rows: Dict[str, int] = dataclasses.field(default_factory=dict)
    report: bool = True
    # Trainer exports made after validation (``counterpoint export`` formats).
    exports: List[str] = dataclasses.field(default_factory=list)
    quiet: bool = False
    license: str = "mit"
    output: str = "out"

    def __post_init__(self):
        if self.samples_per_problem < 1:
            raise ValueError(f"samples_per_problem must be >= 1, got {self.samples_per_problem}")
        if self.segmentation not in SEGMENTATION_MODES:
            raise ValueError(f"segmentation: unknown mode {self.segmentation!r}; choose one of {list(SEGMENTATION_MODES)}")
        if self.labeler is not None and self.labeler not in LABELER_NAMES:
            raise ValueError(f"labeler: unknown labeller {self.labeler!r}; choose one of {list(LABELER_NAMES)} or none")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1 (or null for auto), got {self.num_shards}")
        if self.labeling_batch_size is not None and self.labeling_batch_size < 1:
            raise ValueError(f"labeling_batch_size must be >= 1 (or null for auto), got {self.labeling_batch_size}")
        if not self.output:
            raise ValueError("output: an output folder is required (--output DIR, gs://..., s3://...)")
        from counterpoint.schemas import records

        for config, n in self.min_rows.items():
            if config not in records.OUTPUT_TABLES:
                raise ValueError(f"min_rows: unknown config {config!r}; known: {sorted(records.OUTPUT_TABLES)}")
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"min_rows[{config}] must be an integer >= 0, got {n!r}")
        if self.consensus.mode != "off" and not self.labeler:
            raise ValueError("consensus needs a labeller: add --labeler omegaprm (or mc), or set --consensus off")

    # -- derived views ------------------------------------------------------------------
    @property
    def labeling_config(self) -> LabelerConfig:
        """The labelling slice with the run's labeller and seed filled in."""
        return dataclasses.replace(self.labeling, labeler=self.labeler or self.labeling.labeler,
                                   seed=self.generator.seed)

    def shards(self) -> int:
        """Parquet shards per config (``num_shards``, or from the number of problems when it is auto)."""
        if self.num_shards is not None:
            return self.num_shards
        n = self.source.num_problems
        return 1 if n is None else max(1, -(-n // SHARD_PROBLEMS))

    def configs(self) -> List[str]:
        """Output configs this run writes."""
        from counterpoint.schemas import records

        return list(records.OUTCOME_CONFIGS) + (list(records.STEP_CONFIGS) if self.labeler else [])

    def to_dict(self) -> Dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def output_fingerprint(self) -> str:
        """Hash of the settings that shape each problem's rows (not the source, output or sharding).

        Checkpoints live under it, so a resumed run reuses only results made with the same settings.
        """
        d = self.to_dict()
        shaping = {k: d[k] for k in ("generator", "sampling", "samples_per_problem", "system_prompt",
                                     "segmentation", "verifier", "labeler", "pairing")}
        # Where the engine runs and how fast (servers, compile mode, fault injection) does not shape rows.
        gen = {k: v for k, v in shaping["generator"].items()
               if k not in ("base_urls", "api_key", "compile", "engine_kwargs", "max_num_seqs")}
        gen["scripted"] = {k: v for k, v in gen["scripted"].items()
                           if k not in ("fail_every", "hang_every", "hang_s", "die_every", "capacity")}
        shaping["generator"] = gen
        shaping["verifier"] = {"name": d["verifier"]["name"], "timeout_s": d["verifier"]["timeout_s"]}
        if self.labeler:
            shaping["labeling"] = self.labeling_config.labeler_params(self.sampling)
        if self.consensus.mode != "off":
            judge = d["judge"] or gen
            shaping["consensus"] = {**d["consensus"], "judge": {k: judge.get(k) for k in ("kind", "model", "seed")}}
        return content_id(shaping, length=16)


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if callable(obj):
        return getattr(obj, "__name__", "callable")
    return obj


def _build(cls, data: Dict[str, Any], where: str = ""):
    """Builds dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None and isinstance(value, Mapping):
            value = _build(sub, value, f"{where}.{name}")
        elif sub is not None and value is not None and not isinstance(value, sub):
            # e.g. a YAML section whose keys are all commented out loads as None
            raise ValueError(f"{where}.{name} must be a mapping of {sub.__name__} keys, got {type(value).__name__}")
        elif sub is not None and value is None and name not in _NULLABLE_SECTIONS:
            raise ValueError(f"{where}.{name} must be a mapping of {sub.__name__} keys, got null")
        elif cls is SamplingParams and name == "stop":
            value = tuple(value or ())
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


_NESTED = {
    (RunConfig, "source"): ProblemSourceConfig,
    (RunConfig, "generator"): GeneratorConfig,
    (RunConfig, "sampling"): SamplingParams,
    (RunConfig, "verifier"): VerifierConfig,
    (RunConfig, "labeling"): LabelerConfig,
    (RunConfig, "consensus"): ConsensusConfig,
    (RunConfig, "judge"): GeneratorConfig,
    (RunConfig, "pairing"): PairingConfig,
    (RunConfig, "retry"): RetryConfig,
    (ProblemSourceConfig, "mapping"): FieldMapping,
    (LabelerConfig, "omegaprm"): OmegaPRMConfig,
    (OmegaPRMConfig, "rollout_params"): SamplingParams,
}
_NULLABLE_SECTIONS = {"judge", "rollout_params"}


def from_dict(data: Dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data or {}, "config")


def load_config(path: Optional[str]) -> RunConfig:
    """Loads a YAML (or JSON) run config (any filesystem); ``None`` gives the defaults."""
    if not path:
        return RunConfig()
    import yaml

    from counterpoint import storage

    text = storage.read_text(path)
    if text is None:
        raise FileNotFoundError(f"--config {path}: file not found")
    return from_dict(yaml.safe_load(text) or {})


def dumps_config(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------------------
# Command-line flags: one table, used by the CLI's --help, the PipelineOptions subclass and the overrides
# ---------------------------------------------------------------------------
def _min_rows(text: str) -> Tuple[str, int]:
    import argparse

    config, sep, n = text.partition("=")
    if not sep or not n.strip().isdigit():
        # argparse shows an ArgumentTypeError's own message (a ValueError would become "invalid value")
        raise argparse.ArgumentTypeError(f"--min-rows takes CONFIG=N (e.g. preferences=10), got {text!r}")
    return config.strip(), int(n)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag: its names, the config path(s) it sets, and how it parses.

    ``action``: ``store`` (one value), ``append`` (repeatable: a list), ``false`` (a switch that sets False),
    ``true`` (a switch that sets True). ``implies``: other config paths set when the flag is given.
    """

    names: Tuple[str, ...]
    paths: Tuple[str, ...]
    group: str
    help: str
    type: Callable[[str], Any] = str
    choices: Optional[Sequence[Any]] = None
    action: str = "store"
    implies: Tuple[Tuple[str, Any], ...] = ()
    metavar: Optional[str] = None

    @property
    def dest(self) -> str:
        return "cp_" + self.names[0].lstrip("-").replace("-", "_")


NONE = "none"  # a flag value meaning "set this config key to null" (None itself means "flag not given")


def _none_or(kind):
    def parse(text: str):
        return NONE if text.lower() in ("none", "null", "auto") else kind(text)
    parse.__name__ = kind.__name__
    return parse


FLAG_GROUPS = ("source", "generator", "sampling", "labelling", "output")

FLAGS: Tuple[Flag, ...] = (
    # source
    Flag(("--source",), ("source.kind",), "source", "where problems come from", choices=SOURCE_KINDS),
    Flag(("--input",), ("source.paths",), "source", "problem file(s) or glob(s), local/gs:///s3://, "
         "JSONL/JSON/Parquet, .gz/.bz2/.zst (repeatable; implies --source file)", action="append",
         implies=(("source.kind", "file"),), metavar="PATH"),
    Flag(("--preset",), ("source.preset",), "source", "field mapping (and HF dataset) of a known dataset",
         choices=tuple(sorted(PRESETS))),
    Flag(("--num-problems", "--num_problems"), ("source.num_problems",), "source",
         "problems to read (the first N items; required for the procedural and chain sources)", type=int),
    Flag(("--seed",), ("generator.seed", "source.seed"), "source", "seed of the procedural source and the engine",
         type=int),
    # generator
    Flag(("--generator",), ("generator.kind",), "generator", "engine", choices=GENERATOR_KINDS),
    Flag(("--model",), ("generator.model",), "generator", "HF folder or Hub id, or 'embedded'"),
    Flag(("--server-url", "--server_url"), ("generator.base_urls",), "generator",
         "OpenAI-compatible server base URL (repeatable; implies --generator openai)", action="append",
         implies=(("generator.kind", "openai"),), metavar="URL"),
    Flag(("--seed-mode", "--seed_mode"), ("generator.seed_mode",), "generator",
         "per-request seeds (a sample never depends on its batch) or one engine seed", choices=SEED_MODES),
    Flag(("--compile",), ("generator.compile",), "generator",
         "vLLM torch.compile: on, off (eager) or auto (by the job's size)", choices=COMPILE_MODES),
    Flag(("--max-num-seqs", "--max_num_seqs"), ("generator.max_num_seqs",), "generator",
         "sequences the engine decodes at once", type=int),
    # sampling
    Flag(("--samples",), ("samples_per_problem",), "sampling", "solutions sampled per problem", type=int),
    Flag(("--temperature",), ("sampling.temperature",), "sampling", "sampling temperature (samples and rollouts)",
         type=float),
    Flag(("--top-p", "--top_p"), ("sampling.top_p",), "sampling", "nucleus sampling (samples and rollouts)",
         type=float),
    Flag(("--max-tokens", "--max_tokens"), ("sampling.max_tokens",), "sampling",
         "tokens per sample and per rollout", type=int),
    Flag(("--batch-size", "--batch_size"), ("batch_size",), "sampling", "problems per sampling engine call",
         type=int),
    # labelling
    Flag(("--labeler",), ("labeler",), "labelling", "step labeller: omegaprm, mc (Math-Shepherd) or none",
         choices=(NONE, "omegaprm", "mc")),
    Flag(("--rollouts",), ("labeling.omegaprm.k",), "labelling", "rollouts per prefix (OmegaPRM / MC k)", type=int),
    Flag(("--search-limit", "--search_limit"), ("labeling.omegaprm.search_limit",), "labelling",
         "OmegaPRM selections per problem", type=int),
    Flag(("--parallel-searches", "--parallel_searches"), ("labeling.omegaprm.parallel_searches",), "labelling",
         "speculative binary searches per tree (auto = sized from the engine; never changes labels)",
         type=lambda s: s if s == "auto" else int(s)),
    Flag(("--labeling-batch-size", "--labeling_batch_size"), ("labeling_batch_size",), "labelling",
         "problems whose trees share the engine (none = from the engine's capacity)", type=_none_or(int)),
    Flag(("--consensus",), ("consensus.mode",), "labelling",
         "judge-model consensus filter on step labels", choices=("off", "keep-agreeing", "annotate")),
    Flag(("--rollout-format-failures", "--rollout_format_failures"), ("labeling.rollout_format_failures",),
         "labelling", "a rollout with no readable final answer counts as 0 (zero: Math-Shepherd/OmegaPRM) "
         "or as an unknown verdict", choices=("zero", "unknown")),
    Flag(("--judge-model", "--judge_model"), ("judge.model",), "labelling",
         "judge model for --consensus (default: the run's model)"),
    # output
    Flag(("--config",), (), "output", "YAML run config (flags override it)", metavar="FILE"),
    Flag(("--output",), ("output",), "output", "output folder (local, gs://, s3://)"),
    Flag(("--num-shards", "--num_shards"), ("num_shards",), "output",
         "Parquet shards per config (none = one per 5,000 problems)", type=_none_or(int)),
    Flag(("--min-rows", "--min_rows"), ("min_rows",), "output",
         "fail validation when CONFIG has fewer than N rows (repeatable)", type=_min_rows, action="append",
         metavar="CONFIG=N"),
    Flag(("--export",), ("exports",), "output", "trainer export made after validation (repeatable)",
         action="append", metavar="FORMAT"),
    Flag(("--no-validate",), ("validate",), "output", "skip the Great Expectations gate", action="false"),
    Flag(("--no-report",), ("report",), "output", "skip report.html", action="false"),
    Flag(("--quiet", "-q"), ("quiet",), "output", "no progress display", action="true"),
)


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part)
        if obj is None:
            return None
    return obj


def _set_path(cfg, path: str, value):
    """A copy of dataclass ``cfg`` with ``path`` set (each level rebuilt, so ``__post_init__`` re-checks it)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    child = getattr(cfg, head)
    if child is None:
        sub = _NESTED.get((type(cfg), head))
        if sub is None:
            raise ValueError(f"cannot set {path}: {head} is empty")
        child = sub()
    return dataclasses.replace(cfg, **{head: _set_path(child, rest, value)})


def default_of(flag: Flag, cfg: Optional[RunConfig] = None) -> Any:
    if not flag.paths:
        return None
    value = _get_path(cfg or RunConfig(), flag.paths[0])
    if flag.action == "false":
        return value
    return value


def apply_overrides(cfg: RunConfig, values: Mapping[str, Any], *, from_defaults: bool = False) -> RunConfig:
    """``cfg`` with every given flag applied; ``values`` maps ``Flag.dest`` to the parsed value (None = not given).

    ``from_defaults``: ``cfg`` is the built-in default job (no ``--config``). Its 24-problem cap belongs
    to the procedural source: a flag that switches to files or a dataset reads all of it unless
    ``--num-problems`` says otherwise.
    """
    kind = cfg.source.kind
    for flag in FLAGS:
        value = values.get(flag.dest)
        if value is None or not flag.paths:
            continue
        if flag.action == "false":
            value = False
        elif flag.action == "true":
            value = bool(value)
        if flag.dest == "cp_min_rows":
            value = dict(cfg.min_rows, **dict(value))
        elif isinstance(value, str) and value == NONE:
            value = None
        for path in flag.paths:
            cfg = _set_path(cfg, path, list(value) if flag.action == "append" and path != "min_rows" else value)
        for key, implied in flag.implies:  # after the value: e.g. base_urls before kind=openai
            cfg = _set_path(cfg, key, implied)
    if values.get("cp_preset") and cfg.source.kind == "procedural":
        cfg = _set_path(cfg, "source.kind", "hf")  # a preset names a dataset: read it
    if from_defaults and cfg.source.kind != kind and values.get("cp_num_problems") is None:
        cfg = _set_path(cfg, "source.num_problems", None)
    return cfg


def add_flags(parser, *, with_defaults: bool = False, cfg: Optional[RunConfig] = None) -> None:
    """Adds every flag to an argparse parser (grouped for --help when the parser supports groups)."""
    groups = {}
    for flag in FLAGS:
        target = parser
        if with_defaults and hasattr(parser, "add_argument_group"):
            if flag.group not in groups:
                groups[flag.group] = parser.add_argument_group(flag.group)
            target = groups[flag.group]
        help_text = flag.help
        if with_defaults and flag.paths and flag.action not in ("false", "true"):
            help_text += f" (default: {_show(default_of(flag, cfg))})"
        kwargs: Dict[str, Any] = dict(dest=flag.dest, default=None, help=help_text)
        metavar = flag.metavar or {int: "N", float: "X"}.get(flag.type, None if flag.choices else "VALUE")
        if flag.action in ("false", "true"):
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = flag.type
            if flag.action == "append":
                kwargs["action"] = "append"
            if flag.choices is not None:
                kwargs["choices"] = list(flag.choices)
            if metavar:
                kwargs["metavar"] = metavar
        target.add_argument(*flag.names, **kwargs)


def _show(value: Any) -> str:
    if value in (None, [], {}):
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
