"""Run configuration: dataclasses, YAML loading and the flags applied over them.

A run is fully described by :class:`RunConfig`. Each part is a dataclass that lives
next to the component it configures and checks itself when built (a bad value
fails in the driver, with a message that names the key and the fix, before any
worker starts): ``ProblemSourceConfig`` (sources), ``GeneratorConfig`` and
``SamplingParams`` (generators), ``LabelerConfig`` (labeling), and the
pipeline-level ones below. ``counterpoint run --config FILE.yaml`` loads one
(nested keys mirror the dataclasses); every command-line flag maps to one config
path through :data:`~counterpoint.flags.FLAGS`. Every value is type-checked when it is set
(:mod:`counterpoint.config_values`: the error names the key and the expected type). The resolved
config is written next to the dataset (``run_config.json``, secrets redacted and local paths
shortened: :func:`~counterpoint.config_values.public`) and summarised in the dataset card.

Long: the RunConfig dataclass tree and its checks at the door are one contract; the flag table and the value
rules already live in flags.py and config_values.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

from counterpoint.config_values import (  # noqa: F401  (re-exported: the stored-config rules)
    API_KEY_ENV_VARS,
    API_KEY_REDACTED,
    LOCAL_PATH_PREFIX,
    REDACTED,
    check_value,
    is_secret_key,
    public,
)
from counterpoint.clean.decontam import DecontaminationConfig
from counterpoint.clean.dedup import DedupConfig
from counterpoint.clean.pairing import PAIRING_STRATEGIES
from counterpoint.errors import ConfigError
from counterpoint.flags import FLAG_GROUPS, FLAGS, NONE, Flag, _min_rows, _none_or  # noqa: F401  (re-exported)
from counterpoint.generators.base import SamplingParams
from counterpoint.generators.config import GeneratorConfig
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig
from counterpoint.labeling.consensus import ConsensusConfig
from counterpoint.critical.config import CriticalTokensConfig
from counterpoint.labeling.corrections import CorrectionsConfig
from counterpoint.rl.band import ExportOptions
from counterpoint.schemas import content_id
from counterpoint.segmentation import MODES as SEGMENTATION_MODES
from counterpoint.sources import ProblemSourceConfig
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
    # Tests only: "module:function" run in each math-verify worker before every item (MathVerifier),
    # e.g. counterpoint.testing.verifier_faults:inject.
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
    """Outcome pairing (counterpoint.clean.pairing): each correct sample is paired with an incorrect one.

    ``strategy``: ``nearest`` (default: the most similar wrong solution, a near-miss negative, issue 20) or
    ``round-robin`` (both sides spread evenly). ``reference_chosen``: where no sample is correct, the
    source's verified reference solution is the chosen side (``chosen_source: reference``; off-policy).
    """

    max_pairs_per_problem: int = 4
    # Truncated samples never become ``chosen``; set False to also keep them out of ``rejected``.
    truncated_as_rejected: bool = True
    strategy: str = "nearest"
    reference_chosen: bool = False

    def __post_init__(self):
        if self.strategy not in PAIRING_STRATEGIES:
            raise ValueError(f"pairing.strategy: unknown strategy {self.strategy!r}; choose one of "
                             f"{list(PAIRING_STRATEGIES)}")
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
    # Evaluation sets problems are checked against (issue 20; empty = no check) and trajectory dedup.
    decontamination: DecontaminationConfig = dataclasses.field(default_factory=DecontaminationConfig)
    dedup: DedupConfig = dataclasses.field(default_factory=DedupConfig)
    # Mistake -> correction traces after each proved first wrong step (issue 22; needs a labeller).
    corrections: CorrectionsConfig = dataclasses.field(default_factory=CorrectionsConfig)
    # The engine that writes the corrections (default: the run's own generator); still verified.
    corrector: Optional[GeneratorConfig] = None
    # Token-level negatives of cDPO: contrastive scores and rollout-verified critical tokens (issue 21).
    critical_tokens: CriticalTokensConfig = dataclasses.field(default_factory=CriticalTokensConfig)
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
    # Options of the RL exports (--pass-band, --control, --max-per-problem; counterpoint.rl.band).
    export_options: ExportOptions = dataclasses.field(default_factory=ExportOptions)
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
        self.export_options.check_formats(self.exports)
        if self.consensus.mode != "off" and not self.labeler:
            raise ValueError("consensus needs a labeller: add --labeler omegaprm (or mc), or set --consensus off")
        if self.corrections.enabled and not self.labeler:
            raise ValueError("corrections need located first errors: add --labeler omegaprm (or mc), or drop "
                             "--corrections")
        if self.critical_tokens.enabled and not self.labeler:
            raise ValueError("critical tokens are searched inside OmegaPRM's first wrong step: add --labeler "
                             "omegaprm, or drop --critical-tokens")

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

        return (list(records.OUTCOME_CONFIGS) + (list(records.STEP_CONFIGS) if self.labeler else [])
                + (list(records.CORRECTION_CONFIGS) if self.labeler and self.corrections.enabled else [])
                + (list(records.CRITICAL_CONFIGS) if self.labeler and self.critical_tokens.enabled else []))

    def to_dict(self) -> Dict[str, Any]:
        """The config as stored and published (``run_config.json``, the card): secrets redacted and local
        absolute paths shortened (see :func:`public`). Loads back with :func:`from_dict`."""
        return public(self._as_dict())

    def _as_dict(self) -> Dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def output_fingerprint(self) -> str:
        """Hash of the settings that shape each problem's rows (not the source, output or sharding).

        Checkpoints live under it, so a resumed run reuses only results made with the same settings.
        """
        d = self._as_dict()  # unredacted: two local models with one folder name must not share checkpoints
        shaping = {k: d[k] for k in ("generator", "sampling", "samples_per_problem", "system_prompt",
                                     "segmentation", "verifier", "labeler", "pairing", "dedup")}
        # Where the engine runs and how fast (servers, compile mode, fault injection) does not shape rows.
        gen = {k: v for k, v in shaping["generator"].items()
               if k not in ("base_urls", "api_key", "compile", "engine_kwargs", "max_num_seqs")}
        # A plugged-in engine (e.g. counterpoint.testing.faults) changes how calls fail, not what they return.
        gen["scripted"] = {k: v for k, v in gen["scripted"].items()
                           if k not in ("engine", "engine_options", "capacity")}
        shaping["generator"] = gen
        shaping["verifier"] = {"name": d["verifier"]["name"], "timeout_s": d["verifier"]["timeout_s"]}
        if self.labeler:
            shaping["labeling"] = self.labeling_config.labeler_params(self.sampling)
        if self.consensus.mode != "off":
            judge = d["judge"] or gen
            shaping["consensus"] = {**d["consensus"], "judge": {k: judge.get(k) for k in ("kind", "model", "seed")}}
        if self.corrections.enabled:
            corrector = d["corrector"] or gen
            shaping["corrections"] = {**d["corrections"],
                                      "corrector": {k: corrector.get(k) for k in ("kind", "model", "seed")}}
        if self.critical_tokens.enabled:
            shaping["critical_tokens"] = d["critical_tokens"]
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
    """Builds dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types by name."""
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None and isinstance(value, Mapping):
            value = _build(sub, value, f"{where}.{name}")
        elif sub is not None and value is not None and not isinstance(value, sub):
            # e.g. a YAML section whose keys are all commented out loads as None
            raise ConfigError(f"{where}.{name} must be a mapping of {sub.__name__} keys, got {type(value).__name__}")
        elif sub is not None and value is None and name not in _NULLABLE_SECTIONS:
            raise ConfigError(f"{where}.{name} must be a mapping of {sub.__name__} keys, got null")
        elif sub is None:
            if isinstance(value, str) and value.startswith(REDACTED[:-1]) and is_secret_key(name):
                value = None  # a stored config loads back: the secret comes from the environment again
            check_value(cls, name, value, f"{where}.{name}")
            if cls is SamplingParams and name == "stop":
                value = tuple(value or ())
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ConfigError:
        raise
    except ValueError as e:  # a component's own check (its message names the key and the fix)
        raise ConfigError(str(e)) from None


_NESTED = {
    (RunConfig, "source"): ProblemSourceConfig,
    (RunConfig, "generator"): GeneratorConfig,
    (RunConfig, "sampling"): SamplingParams,
    (RunConfig, "verifier"): VerifierConfig,
    (RunConfig, "labeling"): LabelerConfig,
    (RunConfig, "consensus"): ConsensusConfig,
    (RunConfig, "judge"): GeneratorConfig,
    (RunConfig, "pairing"): PairingConfig,
    (RunConfig, "decontamination"): DecontaminationConfig,
    (RunConfig, "dedup"): DedupConfig,
    (RunConfig, "retry"): RetryConfig,
    (RunConfig, "corrections"): CorrectionsConfig,
    (RunConfig, "corrector"): GeneratorConfig,
    (RunConfig, "critical_tokens"): CriticalTokensConfig,
    (RunConfig, "export_options"): ExportOptions,
    (ProblemSourceConfig, "mapping"): FieldMapping,
    (LabelerConfig, "omegaprm"): OmegaPRMConfig,
    (OmegaPRMConfig, "rollout_params"): SamplingParams,
}
_NULLABLE_SECTIONS = {"judge", "rollout_params", "corrector"}


def from_dict(data: Dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data or {}, "config")


def load_config(path: Optional[str]) -> RunConfig:
    """Loads a YAML (or JSON) run config (any filesystem); ``None`` gives the defaults."""
    if not path:
        return RunConfig()
    import yaml

    from counterpoint import storage

    data = storage.read_bytes(path)
    if data is None:
        raise ConfigError(f"--config {path}: file not found; check the path")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {e.start}); save the file as UTF-8 YAML") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"--config {path}: not valid YAML ({problem}{where}); fix the file") from None
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ConfigError(f"--config {path}: expected a YAML mapping of config keys (source:, generator:, ...), "
                          f"got {type(loaded).__name__}")
    try:
        return from_dict(loaded or {})
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None


def dumps_config(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------------------
# Command-line flags (the table is counterpoint.flags): applied over a config, added to a parser
# ---------------------------------------------------------------------------
def _get_path(obj, path: str):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part)
        if obj is None:
            return None
    return obj


def _set_path(cfg, path: str, value, full: str = ""):
    """A copy of dataclass ``cfg`` with ``path`` set (type-checked; each level rebuilt, so ``__post_init__``
    re-checks it)."""
    head, _, rest = path.partition(".")
    full = full or path
    if not rest:
        check_value(type(cfg), head, value, full)
        return dataclasses.replace(cfg, **{head: value})
    child = getattr(cfg, head)
    if child is None:
        sub = _NESTED.get((type(cfg), head))
        if sub is None:
            raise ConfigError(f"cannot set {path}: {head} is empty")
        child = sub()
    return dataclasses.replace(cfg, **{head: _set_path(child, rest, value, full)})


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
        try:
            for path in flag.paths:
                cfg = _set_path(cfg, path, list(value) if flag.action == "append" and path != "min_rows" else value)
            for key, implied in flag.implies:  # after the value: e.g. base_urls before kind=openai
                cfg = _set_path(cfg, key, implied)
        except ValueError as e:  # ConfigError included: name the flag the user typed
            raise ConfigError(f"{flag.names[0]}: {e}") from None
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
