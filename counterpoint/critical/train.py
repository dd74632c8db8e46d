"""``counterpoint contrast-models OUT --base MODEL --output DIR``: cDPO's positive and negative contrast models.

Contrastive estimation ("Critical Tokens Matter", Lin et al. 2024, arXiv 2411.19943, §3) scores each
token of an incorrect trajectory with two models fine-tuned from the same base: one on verified-correct
trajectories (positive), one on verified-incorrect ones (negative); tokens the negative model likes much
more than the positive one are critical. This module makes that pair from a Counterpoint output's own
``trajectories`` (read through :class:`counterpoint.storage.DatasetLayout`, so gs:// and s3:// work).

Input: OUT's ``trajectories``: positives = verdict ``correct``, negatives = verdict ``incorrect``, both
finished normally (``finish_reason == "stop"``), never a duplicate (``duplicate_of``), positives never a
right-answer-wrong-process sample (``process_error``); each as TRL's conversational prompt-completion
row (the prompt column's chat messages + the completion as one assistant message).

Output: ``DIR/positive/`` and ``DIR/negative/`` (``save_pretrained`` folders: model + tokenizer) and
``DIR/contrast.json`` = ``{"base", "recipe", "data": {"positive"|"negative": {"rows", "sha256"}},
"source_output"}``. Training: TRL's ``SFTTrainer`` with completion-only loss; full fine-tuning by
default (a 135M model trains on a CPU in minutes), or LoRA merged into the weights (``--lora``, needs
``peft``). Both models are trained into a temporary sibling of DIR that replaces DIR only at the end: a
failure leaves DIR as it was. A DIR that is not empty and holds no ``contrast.json`` is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from counterpoint import storage
from counterpoint.errors import UsageError

log = logging.getLogger(__name__)

CONTRAST_JSON = "contrast.json"
SIDES = ("positive", "negative")


class ContrastModelsError(UsageError):
    """The contrast models cannot be made as asked (bad base, missing data, a foreign output folder; exit 2)."""


@dataclasses.dataclass(frozen=True)
class ContrastRecipe:
    """Every hyperparameter of both fine-tunes (the same for each side), recorded in ``contrast.json``.

    Defaults are sized for the embedded 135M model on a small CPU: one epoch capped at ``max_steps``
    optimizer steps, completions cut at ``max_length`` tokens (prompt included).
    """

    method: str = "full"  # "full" or "lora" (merged)
    epochs: float = 1.0
    max_steps: int = 20
    batch_size: int = 4
    learning_rate: float = 5e-5
    max_length: int = 256
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    bf16_on_gpu: bool = True  # bf16 mixed precision where a CUDA device with bf16 is present (fp32 weights)

    def check(self) -> None:
        if self.method not in ("full", "lora"):
            raise ContrastModelsError(f"method must be 'full' or 'lora', got {self.method!r}")
        for name in ("epochs", "max_steps", "batch_size", "learning_rate", "max_length"):
            if not getattr(self, name) > 0:
                raise ContrastModelsError(f"{name} must be > 0, got {getattr(self, name)}")


# ---------------------------------------------------------------------------
# Data (pure)
# ---------------------------------------------------------------------------
def split_trajectories(trajectories: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """``{"positive": [...], "negative": [...]}`` SFT rows (id, prompt, completion), sorted by id."""
    out: Dict[str, List[Dict[str, Any]]] = {s: [] for s in SIDES}
    for t in trajectories:
        if t.get("finish_reason") != "stop" or t.get("duplicate_of"):
            continue
        if t["verdict"] == "correct" and not t.get("process_error"):
            side = "positive"
        elif t["verdict"] == "incorrect":
            side = "negative"
        else:
            continue
        out[side].append({"id": t["id"], "prompt": [{"role": m["role"], "content": m["content"]} for m in t["prompt"]],
                          "completion": [{"role": "assistant", "content": t["completion"]}]})
    return {s: sorted(rows, key=lambda r: r["id"]) for s, rows in out.items()}


def data_sha256(rows: List[Dict[str, Any]]) -> str:
    """sha256 of the training rows: one canonical JSON line (sorted keys) per row, in id order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def read_training_data(out: str) -> Dict[str, List[Dict[str, Any]]]:
    """The two sides' SFT rows from OUT's live ``trajectories``; refuses an output lacking either side."""
    layout = storage.DatasetLayout(out)
    if not layout.shards("trajectories"):
        raise ContrastModelsError(f"{out} has no trajectories config: give a Counterpoint output folder (the OUT "
                                  "of `counterpoint run`)")
    cols = ["id", "prompt", "completion", "verdict", "finish_reason", "duplicate_of", "process_error"]
    table = layout.read_table("trajectories")
    data = split_trajectories(table.select([c for c in cols if c in table.column_names]).to_pylist())
    for side, verdict in (("negative", "incorrect"), ("positive", "correct")):
        if not data[side]:
            raise ContrastModelsError(
                f"{out} has no verified-{verdict} finished trajectory to train the {side} model on: run with more "
                "samples per problem (--samples-per-problem) or on harder/easier problems so both verdicts occur")
    return data


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def _base_path(base: str) -> Tuple[str, str]:
    """(name recorded in contrast.json, what transformers loads)."""
    from counterpoint.generators.embedded import EMBEDDED_MODEL_NAME, resolve_model

    if base in ("embedded", EMBEDDED_MODEL_NAME):
        return EMBEDDED_MODEL_NAME, resolve_model(base)
    return base, base


def load_base(base: str):
    """(model in float32, tokenizer) of ``base``, or :class:`ContrastModelsError` naming the fix."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = _base_path(base)[1]
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, ImportError, KeyError) as e:
        raise ContrastModelsError(f"cannot load the base model {base!r} ({type(e).__name__}: {str(e)[:200]}): pass "
                                  "--base with a causal-LM folder, a Hub id or `embedded`") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _peft_config(recipe: ContrastRecipe):
    try:
        from peft import LoraConfig
    except ImportError:
        raise ContrastModelsError("--lora needs peft: `pip install peft` (or drop --lora for full fine-tuning)") \
            from None
    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      task_type="CAUSAL_LM", target_modules="all-linear")


def _require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError as e:
        raise ContrastModelsError("contrast-models trains with TRL, which is not installed: "
                                  "`pip install 'counterpoint[train]'` (or `pip install trl==1.16.0`)") from e


def train_side(base: str, rows: List[Dict[str, Any]], recipe: ContrastRecipe, dest: str, work: str) -> Dict[str, Any]:
    """Fine-tunes ``base`` on ``rows`` (SFT, completion-only loss) and saves model + tokenizer into ``dest``."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_base(base)
    peft_config = _peft_config(recipe) if recipe.method == "lora" else None
    steps = min(recipe.max_steps, math.ceil(len(rows) / recipe.batch_size * recipe.epochs))
    gpu = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=work, max_steps=steps, per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, max_length=recipe.max_length, completion_only_loss=True, seed=recipe.seed,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=not gpu,
        bf16=bool(recipe.bf16_on_gpu and gpu and torch.cuda.is_bf16_supported()),
        dataloader_num_workers=0, disable_tqdm=True,
    )
    data = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config)
    result = trainer.train()
    trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    trained.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "train_loss": result.training_loss, "step_losses": losses}


def _check_destination(output_dir: str) -> None:
    if not storage.is_local(output_dir):
        raise ContrastModelsError(f"--output {output_dir}: the contrast models are written to a local folder (copy "
                                  "it to a bucket afterwards if needed)")
    if os.path.isfile(output_dir):
        raise ContrastModelsError(f"--output {output_dir} is a file: give a folder (new, or made by this command)")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and \
            not os.path.isfile(os.path.join(output_dir, CONTRAST_JSON)):
        raise ContrastModelsError(f"--output {output_dir} is not empty and was not written by `counterpoint "
                                  "contrast-models` (no contrast.json): give a new or empty folder")


def make_contrast_models(out: str, base: str, output_dir: str,
                         recipe: ContrastRecipe = ContrastRecipe()) -> Dict[str, Any]:
    """Trains both contrast models from OUT's trajectories and writes DIR; returns contrast.json's content
    plus ``training`` (steps and losses per side). Nothing is written into DIR unless both models train."""
    recipe.check()
    _check_destination(output_dir)
    output_dir = os.path.abspath(os.path.expanduser(output_dir[len("file://"):] if output_dir.startswith("file://")
                                                    else output_dir))
    data = read_training_data(out)
    base_name = _base_path(base)[0]
    load_base(base)  # a base that does not load fails before any training
    _require_trl()  # a missing trainer fails before any training
    if recipe.method == "lora":
        _peft_config(recipe)  # so does --lora without peft
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        training = {}
        for side in SIDES:
            log.info("contrast-models: training the %s model on %d rows", side, len(data[side]))
            training[side] = train_side(base, data[side], recipe, os.path.join(tmp, side),
                                        os.path.join(tmp, f".work-{side}"))
            shutil.rmtree(os.path.join(tmp, f".work-{side}"), ignore_errors=True)
        meta = {"base": base_name, "recipe": dataclasses.asdict(recipe),
                "data": {s: {"rows": len(data[s]), "sha256": data_sha256(data[s])} for s in SIDES},
                "source_output": out}
        with open(os.path.join(tmp, CONTRAST_JSON), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        _replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**meta, "training": training}


def _replace(tmp: str, output_dir: str) -> None:
    """Moves the finished folder into place; an earlier contrast-models folder is swapped out, then removed."""
    old: Optional[str] = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=os.path.dirname(output_dir))
        os.rename(output_dir, os.path.join(old, "dir"))
    os.rename(tmp, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def add_parser(subparsers) -> None:
    """The ``contrast-models`` subcommand's arguments (wired by :mod:`counterpoint.cli`)."""
    d = ContrastRecipe()
    p = subparsers.add_parser("contrast-models", help="fine-tune cDPO's positive and negative contrast models on an "
                                                      "output's verified-correct and verified-incorrect trajectories")
    p.add_argument("dir", help="a Counterpoint output folder (its trajectories are the training data)")
    p.add_argument("--base", required=True, help="base model: a folder, a Hub id or `embedded`")
    p.add_argument("--output", required=True, help="local folder for positive/, negative/ and contrast.json")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters and merge them (needs peft)")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=int, default=d.max_steps, help=f"optimizer steps cap (default {d.max_steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=None,
                   help=f"default {d.learning_rate} (full), 2e-4 (--lora)")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per row, prompt included")
    p.add_argument("--seed", type=int, default=d.seed)


def command(args) -> int:
    """``counterpoint contrast-models``: trains, writes DIR, prints one line per side."""
    meta = make_contrast_models(args.dir, args.base, args.output, recipe_from_args(args))
    data, training = meta["data"], meta["training"]
    print(f"contrast models of {meta['base']} written to {args.output}: " + ", ".join(
        f"{s} {data[s]['rows']} rows, {training[s]['steps']} steps, loss {training[s]['train_loss']:.4f}"
        for s in ("positive", "negative")))
    return 0


def recipe_from_args(args) -> ContrastRecipe:
    lr = args.learning_rate if args.learning_rate is not None else (2e-4 if args.lora else ContrastRecipe.learning_rate)
    return ContrastRecipe(method="lora" if args.lora else "full", epochs=args.epochs, max_steps=args.max_steps,
                          batch_size=args.batch_size, learning_rate=lr, max_length=args.max_length, seed=args.seed)
