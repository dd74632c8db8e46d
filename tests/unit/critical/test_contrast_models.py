"""``counterpoint contrast-models`` (issue 21): cDPO's positive and negative contrast models from an output.

The base is the tiny 2-layer Llama of ``_tiny_model`` (embedded SmolLM2 tokenizer); the output is
``_tiny_model.corpus_rows`` (per problem two verified-correct and two verified-incorrect trajectories)
published through the one publish procedure. Training runs for real (two optimizer steps per side).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from _tiny_model import build_tiny_model, corpus_rows, write_validated_output
from counterpoint.cli import main as cli_main
from counterpoint.critical.train import ContrastModelsError, ContrastRecipe, make_contrast_models

N_PROBLEMS = 2
RECIPE = ContrastRecipe(max_steps=2, batch_size=2, learning_rate=1e-3, max_length=128)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "out"
    out.mkdir()
    return out, write_validated_output(out, n_problems=N_PROBLEMS)


def _expected_data(rows, verdict):
    """The training rows as the command must hash them, rebuilt here from the planted trajectories."""
    side = sorted((t for t in rows["trajectories"] if t["verdict"] == verdict), key=lambda t: t["id"])
    lines = [json.dumps({"completion": [{"content": t["completion"], "role": "assistant"}], "id": t["id"],
                         "prompt": [{"content": m["content"], "role": m["role"]} for m in t["prompt"]]},
                        sort_keys=True, ensure_ascii=False) + "\n" for t in side]
    return {"rows": len(side), "sha256": hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()}


def _params(folder):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_command_trains_both_models_and_records_recipe_and_data_hashes(base, output, tmp_path, capsys):
    out, rows = output
    dest = tmp_path / "contrast"
    rc = cli_main(["contrast-models", str(out), "--base", str(base), "--output", str(dest), "--max-steps", "2",
                   "--batch-size", "2", "--learning-rate", "1e-3", "--max-length", "128"])
    assert rc == 0
    meta = json.loads((dest / "contrast.json").read_text())
    assert meta == {
        "base": str(base), "recipe": {"method": "full", "epochs": 1.0, "max_steps": 2, "batch_size": 2,
                                      "learning_rate": 1e-3, "max_length": 128, "seed": 0, "lora_r": 8,
                                      "lora_alpha": 16, "lora_dropout": 0.0, "bf16_on_gpu": True},
        "data": {"positive": _expected_data(rows, "correct"), "negative": _expected_data(rows, "incorrect")},
        "source_output": str(out),
    }
    assert meta["data"]["positive"]["rows"] == meta["data"]["negative"]["rows"] == 2 * N_PROBLEMS
    assert sorted(os.listdir(dest)) == ["contrast.json", "negative", "positive"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contrast"]  # no temporary sibling left
    before, pos, neg = _params(base), _params(dest / "positive"), _params(dest / "negative")
    assert before.keys() == pos.keys() == neg.keys()
    # both fine-tunes moved the weights, and differently (different data)
    assert any(not (before[k] == pos[k]).all() for k in before)
    assert any(not (pos[k] == neg[k]).all() for k in pos)
    for side in ("positive", "negative"):
        assert (dest / side / "tokenizer_config.json").is_file()
    printed = capsys.readouterr().out
    assert "positive 4 rows, 2 steps" in printed and "negative 4 rows, 2 steps" in printed


def test_a_second_run_replaces_its_own_folder(base, output, tmp_path):
    out, _ = output
    dest = tmp_path / "contrast"
    dest.mkdir()
    (dest / "contrast.json").write_text("{}")
    (dest / "stale.txt").write_text("from an earlier run")
    meta = make_contrast_models(str(out), str(base), str(dest), RECIPE)
    assert sorted(os.listdir(dest)) == ["contrast.json", "negative", "positive"]
    assert json.loads((dest / "contrast.json").read_text())["data"] == meta["data"]
    assert [s["steps"] for s in meta["training"].values()] == [2, 2]


def test_a_base_that_does_not_load_is_refused_before_anything_is_written(output, tmp_path):
    out, _ = output
    dest = tmp_path / "contrast"
    with pytest.raises(ContrastModelsError, match="cannot load the base model .*pass --base"):
        make_contrast_models(str(out), str(tmp_path / "no-such-model"), str(dest), RECIPE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing,side", [("incorrect", "negative"), ("correct", "positive")])
def test_an_output_without_one_verdict_names_the_fix(base, tmp_path, missing, side):
    rows = corpus_rows(N_PROBLEMS)
    rows["trajectories"] = [t for t in rows["trajectories"] if t["verdict"] != missing]
    out = tmp_path / "out"
    out.mkdir()
    write_validated_output(out, rows=rows)
    with pytest.raises(ContrastModelsError, match=f"no verified-{missing} finished trajectory to train the {side} "
                                                  "model on: run with more samples"):
        make_contrast_models(str(out), str(base), str(tmp_path / "contrast"), RECIPE)
    assert not (tmp_path / "contrast").exists()


def test_a_foreign_non_empty_folder_is_refused_and_left_alone(base, output, tmp_path, capsys):
    out, _ = output
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    rc = cli_main(["contrast-models", str(out), "--base", str(base), "--output", str(dest)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"counterpoint contrast-models: --output {dest} is not empty and was not written by "
                   "`counterpoint contrast-models` (no contrast.json): give a new or empty folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"] and os.listdir(dest) == ["notes.txt"]


def test_lora_without_peft_names_the_install(base, output, tmp_path):
    pytest.importorskip("torch")
    try:
        import peft  # noqa: F401
        pytest.skip("peft is installed here")
    except ImportError:
        pass
    out, _ = output
    with pytest.raises(ContrastModelsError, match="pip install peft"):
        make_contrast_models(str(out), str(base), str(tmp_path / "c"), ContrastRecipe(method="lora"))
    assert list(tmp_path.iterdir()) == []


def test_a_bucket_destination_is_refused(output, base):
    out, _ = output
    with pytest.raises(ContrastModelsError, match="written to a local folder"):
        make_contrast_models(str(out), str(base), "gs://bucket/contrast", RECIPE)


def test_not_a_counterpoint_output(tmp_path, base):
    with pytest.raises(ContrastModelsError, match="has no trajectories config"):
        make_contrast_models(str(tmp_path), str(base), str(tmp_path / "c"), RECIPE)
    assert not Path(tmp_path / "c").exists()
