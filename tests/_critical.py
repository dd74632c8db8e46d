"""Test helper for issue 21: a contrast-models directory made without training.

:func:`make_contrast_dir` writes what ``counterpoint contrast-models`` writes (``positive/``,
``negative/`` Hugging Face folders and ``contrast.json``) from two tiny Llamas (``_tiny_model``) with
different seeds, or from copies of any model folder (``source``) with small different perturbations.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional


def make_contrast_dir(folder: Path, source: Optional[Path] = None, *, scale: float = 0.02) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for seed, side in enumerate(("positive", "negative")):
        if source is None:
            from _tiny_model import build_tiny_model

            build_tiny_model(folder / side, seed=seed)
            continue
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # a small, different nudge per side: the two models disagree a little
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.detach().abs().mean())
        model.save_pretrained(folder / side)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder / side)
    manifest = {"base": str(source or "tiny-llama"), "recipe": {"kind": "test-fixture", "scale": scale},
                "data": {s: {"rows": 0, "sha256": "0" * 64} for s in ("positive", "negative")},
                "source_output": "tests"}
    (folder / "contrast.json").write_text(json.dumps(manifest, indent=2))
    return folder


def break_tokenizer(folder: Path) -> None:
    """Replaces the negative model's tokenizer with one of another vocabulary (a mismatch)."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    side = folder / "negative"
    for f in side.glob("tokenizer*"):
        f.unlink()
    for f in ("special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"):
        (side / f).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(side)


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
