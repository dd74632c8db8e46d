"""Run configuration: dataclasses, YAML loading and CLI overrides.

A run is fully described by :class:`RunConfig`; ``counterpoint run --config
FILE.yaml`` loads one (nested keys mirror the dataclasses) and command-line flags
override single fields. The resolved config is written next to the dataset
(``run_config.json``) and summarised in the dataset card.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional

from counterpoint.generators.base import SamplingParams
from counterpoint.schemas import content_id
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig
from counterpoint.sources import ProblemSourceConfig
from counterpoint.sources.mapping import FieldMapping

# Measured with the embedded 135M model on 24 one-op procedural problems x 8 samples: this prompt
# 13/192 correct, a one-line "step by step, one step per paragraph" prompt 14/192 (a wash). This one
# is kept: its length (> one 128-token KV block with the question) lets rollouts from step prefixes
# share cached prompt blocks in vLLM.
DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step. Write each step as its own "
    "short paragraph, separated by a blank line. End with a final line of the form "
    "'The answer is <number>.'"
)


@dataclasses.dataclass
class GeneratorConfig:
    """Which engine samples: ``vllm`` (in-process), ``openai`` (HTTP server pool) or ``scripted`` (tests)."""

    kind: str = "vllm"
    model: str = "embedded"
    seed: int = 0
    seed_mode: str = "auto"
    max_model_len: int = 2048
    dtype: str = "bfloat16"
    # CPU default: skip torch.compile warm-up (90 s of start-up on 2 cores for ~no gain at this size).
    enforce_eager: Optional[bool] = None
    engine_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    base_urls: List[str] = dataclasses.field(default_factory=list)
    api_key: Optional[str] = None
    # scripted generator: policy name ("chain" | "answer_key") and its options
    scripted: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class VerifierConfig:
    """``auto`` picks the verifier from each problem's answer_type (numeric / math / exact)."""

    name: str = "auto"
    timeout_s: float = 5.0
    pool_size: int = 2
    # Tests only: "module:function" run in each math-verify worker before every item (MathVerifier).
    fault_injector: Optional[str] = None


@dataclasses.dataclass
class PairingConfig:
    """Outcome pairing: each correct sample is paired with an incorrect one, round-robin."""

    max_pairs_per_problem: int = 4
    # Truncated samples never become ``chosen``; set False to also keep them out of ``rejected``.
    truncated_as_rejected: bool = True


@dataclasses.dataclass
class RetryConfig:
    """Bounded retries of engine calls; then the problems of the batch are rejected."""

    max_attempts: int = 3
    backoff_s: float = 1.0
    call_timeout_s: Optional[float] = None


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
    pairing: PairingConfig = dataclasses.field(default_factory=PairingConfig)
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    # Problems per engine call in the sampling stage (each asks for samples_per_problem samples).
    batch_size: int = 32
    # Problems whose trees advance together in one labelling batch.
    labeling_batch_size: int = 16
    num_shards: int = 1
    validate: bool = True
    report: bool = True
    license: str = "mit"
    output: str = "out"

    def to_dict(self) -> Dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def output_fingerprint(self) -> str:
        """Hash of the settings that shape each problem's rows (not the source, output or sharding).

        Checkpoints live under it, so a resumed run reuses only results made with the same settings.
        """
        d = self.to_dict()
        shaping = {k: d[k] for k in ("generator", "sampling", "samples_per_problem", "system_prompt",
                                     "segmentation", "verifier", "labeler", "pairing")}
        # Where the engine runs and how fast (servers, eager mode, fault injection) does not shape rows.
        gen = {k: v for k, v in shaping["generator"].items()
               if k not in ("base_urls", "api_key", "enforce_eager", "engine_kwargs")}
        gen["scripted"] = {k: v for k, v in gen["scripted"].items()
                           if k not in ("fail_every", "hang_every", "hang_s", "die_every")}
        shaping["generator"] = gen
        shaping["verifier"] = {"name": d["verifier"]["name"], "timeout_s": d["verifier"]["timeout_s"]}
        if self.labeler:
            shaping["labeling"] = d["labeling"]
        return content_id(shaping, length=16)


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _build(cls, data: Dict[str, Any]):
    """Builds dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value)
        elif sub is not None and not isinstance(value, sub):
            # e.g. a YAML section whose keys are all commented out loads as None
            raise ValueError(f"{cls.__name__}.{name} must be a mapping of {sub.__name__} keys, "
                             f"got {type(value).__name__}")
        elif cls is SamplingParams and name == "stop":
            value = tuple(value or ())
        kwargs[name] = value
    return cls(**kwargs)


_NESTED = {
    (RunConfig, "source"): ProblemSourceConfig,
    (RunConfig, "generator"): GeneratorConfig,
    (RunConfig, "sampling"): SamplingParams,
    (RunConfig, "verifier"): VerifierConfig,
    (RunConfig, "labeling"): LabelerConfig,
    (RunConfig, "pairing"): PairingConfig,
    (RunConfig, "retry"): RetryConfig,
    (ProblemSourceConfig, "mapping"): FieldMapping,
    (LabelerConfig, "omegaprm"): OmegaPRMConfig,
    (OmegaPRMConfig, "rollout_params"): SamplingParams,
}


def from_dict(data: Dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data or {})


def load_config(path: Optional[str]) -> RunConfig:
    """Loads a YAML (or JSON) run config; ``None`` gives the defaults."""
    if not path:
        return RunConfig()
    import yaml
    from smart_open import open as sopen

    with sopen(path, "r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return from_dict(data)


def dumps_config(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)
