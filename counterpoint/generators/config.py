"""Which engine samples, and how: :class:`GeneratorConfig` (checked when built)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

GENERATOR_KINDS = ("vllm", "openai", "scripted")
SEED_MODES = ("auto", "engine", "request")
COMPILE_MODES = ("auto", "on", "off")
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclasses.dataclass
class GeneratorConfig:
    """The engine: ``vllm`` (in-process), ``openai`` (a pool of OpenAI-compatible servers) or ``scripted`` (tests).

    ``seed_mode``: ``request`` gives every request its own seed (a sample does not depend on its batch
    neighbours), ``engine`` one engine-wide seed, ``auto`` = request. ``compile``: vLLM's torch.compile
    (``on``), eager mode (``off``) or ``auto`` (chosen from the job's size; see ``vllm_local.choose_compile``).
    ``max_num_seqs``: sequences the engine decodes at once (None: vLLM's default on a GPU; on a CPU
    ``vllm_local.CPU_MAX_NUM_SEQS``, the measured throughput peak). ``dtype``: the model's dtype; ``auto`` is
    bfloat16 on a GPU and on CPUs with native bf16 (AVX512_BF16, AMX, Arm BF16), float32 on other CPUs, where
    emulated bf16 decodes 2-4x slower (``vllm_local.resolve_dtype``). ``engine_kwargs`` go to ``vllm.LLM`` as
    they are; on a CPU ``block_size`` defaults to ``vllm_local.CPU_BLOCK_SIZE`` (32, not vLLM's 128: prefix
    caching hits whole blocks, and each of a request's n samples recomputes the prompt's last partial one).
    """

    kind: str = "vllm"
    model: str = "embedded"
    seed: int = 0
    seed_mode: str = "auto"
    max_model_len: int = 2048
    dtype: str = "auto"
    compile: str = "auto"
    max_num_seqs: Optional[int] = None
    engine_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    base_urls: List[str] = dataclasses.field(default_factory=list)
    api_key: Optional[str] = None
    # scripted generator: policy name and its options (see counterpoint.generators.scripted)
    scripted: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in GENERATOR_KINDS:
            raise ValueError(f"generator.kind: unknown generator {self.kind!r}; choose one of {list(GENERATOR_KINDS)}")
        if self.seed_mode not in SEED_MODES:
            raise ValueError(f"generator.seed_mode: {self.seed_mode!r} is not one of {list(SEED_MODES)}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"generator.compile: {self.compile!r} is not one of {list(COMPILE_MODES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"generator.dtype: {self.dtype!r} is not one of {list(DTYPES)}")
        if self.max_model_len < 16:
            raise ValueError(f"generator.max_model_len must be >= 16, got {self.max_model_len}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"generator.max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if isinstance(self.base_urls, str):
            self.base_urls = [self.base_urls]
        if self.kind == "openai" and not self.base_urls:
            raise ValueError("generator.kind=openai needs generator.base_urls: pass --server-url http://HOST:PORT "
                             "(repeatable) or set generator.base_urls in the config")
        if not isinstance(self.scripted, dict):
            raise ValueError("generator.scripted must be a mapping (policy name and options)")
