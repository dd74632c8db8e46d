"""Issue 21 on the scripted poison-token world: a labelled run with ``critical_tokens`` and the
``counterpoint critical-tokens`` command, rows asserted whole, loaded with ``datasets``, gated; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from counterpoint import storage
from counterpoint.config import from_dict
from counterpoint.generators.scripted import chain_problem
from counterpoint.testing.critical import POISON, POISON_CHAIN, poison_step, poison_token_position

from _critical import break_tokenizer, copy_dir, make_contrast_dir

IN_PROCESS = ["--runner=FnApiRunner"]


def _read(out: Path, config: str):
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from counterpoint.generators.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def contrast_dir(tmp_path_factory):
    return make_contrast_dir(tmp_path_factory.mktemp("contrast") / "cm")


def _cfg(tmp: Path, tokenizer, contrast_dir, critical: bool, n: int = 4):
    problems = [chain_problem(11, i, num_steps=5) for i in range(n)]
    (tmp / "chain.jsonl").write_text("".join(json.dumps({"id": p["problem_id"], "question": p["question"],
                                                         "answer": p["gold_answer"]}) + "\n" for p in problems))
    (poison_id,) = tokenizer(POISON, add_special_tokens=False)["input_ids"]
    return problems, from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "chain.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": POISON_CHAIN, "poison_rate": 0.4,
                                                       "poison_token_id": poison_id}},
        "samples_per_problem": 6, "labeler": "omegaprm", "labeling": {"omegaprm": {"k": 8}},
        "critical_tokens": {"enabled": critical, "contrast_models": str(contrast_dir) if critical else None,
                            "k": 8, "ban_rollouts": 4, "top_k": 3},
        "report": True, "output": str(tmp / "out"),
    }), poison_id


def _check_rows(out: Path, problems, tokenizer, poison_id, contrast_dir):
    import datasets

    from counterpoint.critical import contrast

    rows = _read(out, "critical_tokens")
    trajs = {(t["problem_id"], t["sample_index"]): t for t in _read(out, "trajectories")}
    labels = {(r["problem_id"], r["sample_index"]): r for r in _read(out, "step_labels")}
    wrong = {k for k, t in trajs.items() if t["verdict"] == "incorrect" and not t["duplicate_of"]}
    assert rows and {(r["problem_id"], r["sample_index"]) for r in rows} == wrong
    question = {p["problem_id"]: p["question"] for p in problems}
    for r in rows:
        key = (r["problem_id"], r["sample_index"])
        t, label = trajs[key], labels.get(key)
        ids = tokenizer(t["completion"], add_special_tokens=False)["input_ids"]
        poison = poison_token_position(ids, poison_id)
        weights = contrast.token_weights(r["contrastive_score"])
        starts, fws = r["step_token_starts"], poison_step(question[r["problem_id"]])
        top = contrast.top_positions(r["contrastive_score"], 3)
        searched = label is not None
        rand = r["random_ban_position"]
        assert r == {
            "id": f"{r['problem_id']}/s{r['sample_index']}/critical", "problem_id": t["problem_id"],
            "sample_index": t["sample_index"], "prompt": t["prompt"], "completion": t["completion"],
            "token_ids": ids, "tokens": [tokenizer.decode([i]) for i in ids],
            "logp_positive": r["logp_positive"], "logp_negative": r["logp_negative"],
            "contrastive_score": r["contrastive_score"], "token_weights": weights,
            "score_form": "full_distribution", "top_critical_positions": top,
            "first_wrong_step": fws if searched else None, "step_token_starts": starts,
            "rollout_critical_position": poison if searched else None,
            "rollout_critical_step": fws if searched else None,
            "contrast_in_first_wrong_step": (starts[fws] <= top[0] < starts[fws + 1]) if searched else None,
            "search_rollouts": r["search_rollouts"],
            "banned_success_rate": 1.0 if searched else None,
            "contrast_ban_success_rate": r["contrast_ban_success_rate"],
            "random_ban_position": rand,
            "random_ban_success_rate": 0.0 if rand > poison else r["random_ban_success_rate"],
            "ban_rollouts": 4, "contrast_models": r["contrast_models"], "model_id": "scripted/chain-solver-v1",
        }
        assert (r["search_rollouts"] > 0) == searched and len(starts) == len(t["steps"])
        assert len(r["logp_positive"]) == len(r["logp_negative"]) == len(ids)
        assert all(x <= 0 for x in r["logp_positive"] + r["logp_negative"])
        assert r["contrastive_score"] == pytest.approx(
            [min(1.0, s) for s in r["contrastive_score"]]) and all(0 < s <= 1 for s in r["contrastive_score"])
        assert json.loads(r["contrast_models"])["directory"] == str(contrast_dir)
    # the planted gap: banning the poison always recovers, a random token (after it: never) far less often
    searched = [r for r in rows if r["banned_success_rate"] is not None]
    assert searched and all(r["banned_success_rate"] == 1.0 for r in searched)
    assert sum(r["random_ban_success_rate"] for r in rows) / len(rows) < 0.75
    ds = datasets.load_dataset(str(storage.DatasetLayout(str(out)).dataset_dir), "critical_tokens", split="train")
    assert ds.num_rows == len(rows)
    return rows


def test_labelled_run_with_critical_tokens(tmp_path, tokenizer, contrast_dir):
    from counterpoint.dataset.verdicts import Verdict
    from counterpoint.pipelines.generate_corpus import run

    problems, cfg, poison_id = _cfg(tmp_path, tokenizer, contrast_dir, True)
    assert "critical_tokens" in cfg.configs()
    summary = run(IN_PROCESS, config=cfg)
    out = tmp_path / "out"
    rows = _check_rows(out, problems, tokenizer, poison_id, contrast_dir)
    assert summary["written"]["critical_tokens"]["rows"] == len(rows)
    found = [r for r in rows if r["rollout_critical_position"] is not None]
    assert found  # every searched trajectory found the planted poison (asserted per row above)
    layout = storage.OutputLayout(str(out))
    verdict = Verdict.require(layout.live_version(), "test", ["critical_tokens"])
    assert verdict.configs["critical_tokens"].success


def test_command_adds_critical_tokens_through_publish(tmp_path, tokenizer, contrast_dir):
    from counterpoint.cli import main
    from counterpoint.dataset.verdicts import Verdict
    from counterpoint.pipelines.generate_corpus import run

    problems, cfg, poison_id = _cfg(tmp_path, tokenizer, contrast_dir, False)
    run(IN_PROCESS, config=cfg)
    out = tmp_path / "out"
    layout = storage.OutputLayout(str(out))
    before = layout.manifest().live
    labels = _read(out, "step_labels")
    assert main(["critical-tokens", str(out), "--contrast-models", str(contrast_dir), "--k", "8",
                 "--ban-rollouts", "4", "--top-k", "3"]) == 0
    layout.refresh()
    assert layout.manifest().live != before and layout.manifest().previous == before
    _check_rows(out, problems, tokenizer, poison_id, contrast_dir)
    assert _read(out, "step_labels") == labels  # carried over unchanged
    verdict = Verdict.require(layout.live_version(), "test", ["critical_tokens", "step_labels", "trajectories"])
    assert verdict.configs["critical_tokens"].success


def _files(out: Path):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".lock" not in p.name)


def test_bad_input_is_a_clear_error_and_nothing_is_written(tmp_path, tokenizer, contrast_dir, capsys):
    from counterpoint.cli import main
    from counterpoint.errors import ConfigError, UsageError
    from counterpoint.pipelines.critical import add_critical_tokens
    from counterpoint.pipelines.generate_corpus import run

    problems, cfg, _ = _cfg(tmp_path, tokenizer, contrast_dir, False, n=2)
    import dataclasses

    # all correct (no poison): nothing to score
    clean = dataclasses.replace(cfg, generator=dataclasses.replace(
        cfg.generator, scripted={**cfg.generator.scripted, "poison_rate": 0.0}))
    run(IN_PROCESS, config=clean)
    out = tmp_path / "out"
    before = _files(out)
    with pytest.raises(UsageError, match="(no incorrect trajectory|no step_labels)"):
        add_critical_tokens(str(out), contrast_models=str(contrast_dir))
    assert _files(out) == before

    # a labelled output with incorrect trajectories, and contrast models that cannot be used
    out2 = tmp_path / "out2"
    run(IN_PROCESS, config=dataclasses.replace(cfg, output=str(out2)))
    before = _files(out2)
    mismatch = copy_dir(contrast_dir, tmp_path / "mismatch")
    break_tokenizer(mismatch)
    assert main(["critical-tokens", str(out2), "--contrast-models", str(mismatch)]) == 2
    err = capsys.readouterr().err
    assert "another tokenizer than the policy" in err and "contrast-models --base" in err and err.count("\n") == 1
    broken = copy_dir(contrast_dir, tmp_path / "broken")
    (broken / "negative" / "config.json").write_text("{not json")
    assert main(["critical-tokens", str(out2), "--contrast-models", str(broken)]) == 2
    assert "negative contrast model" in capsys.readouterr().err
    assert main(["critical-tokens", str(out2), "--contrast-models", str(tmp_path / "nowhere")]) == 2
    assert "not a contrast-models directory" in capsys.readouterr().err
    assert _files(out2) == before

    # a run asking for critical tokens fails at the door: without a labeller, or with unusable contrast models
    with pytest.raises(ConfigError, match="--labeler omegaprm"):
        from counterpoint.config import from_dict as fd

        fd({**cfg.to_dict(), "labeler": None, "critical_tokens": {"enabled": True, "contrast_models": "x"}})
    out3 = tmp_path / "out3"
    bad_run = dataclasses.replace(cfg, output=str(out3), critical_tokens=dataclasses.replace(
        cfg.critical_tokens, enabled=True, contrast_models=str(mismatch)))
    with pytest.raises(UsageError, match="another tokenizer"):
        run(IN_PROCESS, config=bad_run)
    assert not out3.exists() or not storage.OutputLayout(str(out3)).live_version()
