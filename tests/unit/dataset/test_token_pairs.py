"""The ``token-weighted-pairs`` export (issue 21): cDPO pairs whose rejected side carries per-token weights.

The corpus is ``_tiny_model.corpus_rows`` (2 correct, 2 incorrect samples per problem) plus planted
``critical_tokens`` rows tokenized with the embedded SmolLM2 tokenizer (the policy's), published through the
one publish procedure; every expectation is computed here from those rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from _tiny_model import corpus_rows, critical_token_rows, write_validated_output
from counterpoint import storage
from counterpoint.dataset.export import ExportError, export_output, token_weighted_pair_rows
from counterpoint.dataset.publish import ValidationFailed
from counterpoint.errors import UsageError
from counterpoint.schemas import exports

N_PROBLEMS = 3


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from counterpoint.generators.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def _rows(n: int):
    """``corpus_rows`` with the reward column a run writes (1.0 correct, 0.0 incorrect)."""
    rows = corpus_rows(n)
    for t in rows["trajectories"]:
        t["reward"] = 1.0 if t["verdict"] == "correct" else 0.0
    return rows


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tokenizer):
    rows = _rows(N_PROBLEMS)
    rows["critical_tokens"] = critical_token_rows(rows, tokenizer)
    out = tmp_path_factory.mktemp("critical") / "out"
    out.mkdir()
    write_validated_output(out, rows=rows)
    return out, rows


def _read(out: Path, config: str):
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def _expected(c: dict, chosen: dict, tokenizer_name: str) -> dict:
    return {
        "id": c["id"], "problem_id": c["problem_id"], "prompt": c["prompt"],
        "chosen": [{"role": "assistant", "content": chosen["completion"]}],
        "rejected": [{"role": "assistant", "content": c["completion"]}],
        "rejected_token_ids": c["token_ids"], "rejected_weights": c["token_weights"],
        "chosen_sample_index": chosen["sample_index"], "rejected_sample_index": c["sample_index"],
        "score_form": "full_distribution", "top_critical_positions": c["top_critical_positions"],
        "rollout_critical_position": c["rollout_critical_position"], "first_wrong_step": c["first_wrong_step"],
        "contrast_models": c["contrast_models"], "model_id": "embedded:smollm2-135m-instruct",
        "tokenizer": tokenizer_name,
    }


def test_export_pairs_each_critical_row_with_a_verified_correct_trajectory(planted, tmp_path, tokenizer):
    src, rows = planted
    out = tmp_path / "out"
    shutil.copytree(src, out)
    result = export_output(storage.DatasetLayout(str(out)), "token-weighted-pairs")
    got = _read(out, "token_weighted_pairs")
    assert result.rows == {"token_weighted_pairs": 2 * N_PROBLEMS} and result.rejects == []
    traj = {(t["problem_id"], t["sample_index"]): t for t in rows["trajectories"]}
    # Samples 0 and 1 are correct with one text: one distinct positive (sample 0) for both incorrect samples.
    want = sorted((_expected(c, traj[(c["problem_id"], 0)], "embedded:smollm2-135m-instruct")
                   for c in rows["critical_tokens"]), key=lambda r: r["id"])
    assert got == want
    for r in got:  # the alignment the export promises, with the policy tokenizer itself
        ids = tokenizer(r["rejected"][0]["content"], add_special_tokens=False)["input_ids"]
        assert ids == r["rejected_token_ids"] and len(r["rejected_weights"]) == len(ids)
        assert 1.0 in r["rejected_weights"] and 0.25 in r["rejected_weights"]
    # The card declares the export and the loss it is for.
    card = (out / "README.md").read_text()
    assert "token_weighted_pairs" in card and "token_weighted_dpo_loss" in card


def test_the_distinct_positives_are_taken_in_turn(planted):
    _, rows = planted
    pid = "arith-001"
    traj = [dict(t, completion=t["completion"] + " Done.") if (t["problem_id"], t["sample_index"]) == (pid, 1) else t
            for t in rows["trajectories"]]
    crit = [c for c in rows["critical_tokens"] if c["problem_id"] == pid]
    built = token_weighted_pair_rows(crit, traj, tokenize=lambda text: next(c["token_ids"] for c in crit
                                                                            if c["completion"] == text))
    assert [(r["rejected_sample_index"], r["chosen_sample_index"]) for r in built.rows] == [(2, 0), (3, 1)]
    assert built.rows[1]["chosen"] == [{"role": "assistant", "content": traj[5]["completion"]}]


def test_rows_made_with_another_tokenizer_are_rejected_not_shifted(planted, tokenizer):
    _, rows = planted
    crit = [dict(c) for c in rows["critical_tokens"]]
    bad = crit[0]
    bad["token_ids"], bad["token_weights"] = bad["token_ids"][:-1], bad["token_weights"][:-1]  # one token short
    shifted = crit[1]
    shifted["token_ids"] = shifted["token_ids"][1:] + shifted["token_ids"][:1]  # same length, other ids
    built = token_weighted_pair_rows(crit, rows["trajectories"], "embedded")
    assert [r["id"] for r in built.rows] == sorted(c["id"] for c in crit[2:])
    assert built.rejects_by_reason() == {"export_token_weights_misaligned": 2}
    assert {r["problem_id"] for r in built.rejects} == {bad["problem_id"], shifted["problem_id"]}
    assert all(r["stage"] == "write" and r["scope"] == "row" for r in built.rejects)
    assert "the weights were made with another tokenizer" in built.rejects[0]["detail"]


def test_a_problem_without_a_verified_correct_trajectory_is_skipped(planted):
    _, rows = planted
    pid = rows["critical_tokens"][0]["problem_id"]
    # The correct samples are duplicates or right-answer-wrong-process: no positive left for this problem.
    traj = [dict(t, duplicate_of="x") if t["problem_id"] == pid and t["sample_index"] == 0 else
            dict(t, process_error=True) if t["problem_id"] == pid and t["sample_index"] == 1 else t
            for t in rows["trajectories"]]
    built = token_weighted_pair_rows(rows["critical_tokens"], traj, tokenize=lambda text: [])
    # the tokenizer is never asked for the skipped rows, and every other row is refused by the stub
    assert built.rows == [] and built.skipped == {"no_verified_correct": 2}
    assert built.rejects_by_reason() == {"export_token_weights_misaligned": 2 * (N_PROBLEMS - 1)}


def test_an_output_without_critical_tokens_names_the_commands_that_make_them(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write_validated_output(out, n_problems=2)
    with pytest.raises(ExportError, match="counterpoint critical-tokens OUT --contrast-models DIR.*contrast-models"):
        export_output(storage.DatasetLayout(str(out)), "token-weighted-pairs")


def test_an_unknown_tokenizer_is_a_usage_error_naming_the_option(planted, tmp_path):
    src, _ = planted
    out = tmp_path / "out"
    shutil.copytree(src, out)
    with pytest.raises(UsageError) as e:
        export_output(storage.DatasetLayout(str(out)), "token-weighted-pairs", tokenizer=str(tmp_path / "nope"))
    assert "--tokenizer" in str(e.value) and "cannot load the policy tokenizer" in str(e.value)


def test_validation_refuses_a_weight_list_of_another_length(tmp_path, tokenizer):
    rows = _rows(2)
    rows["critical_tokens"] = critical_token_rows(rows, tokenizer)
    pairs = token_weighted_pair_rows(rows["critical_tokens"], rows["trajectories"], "embedded").rows
    pairs[0]["rejected_weights"] = pairs[0]["rejected_weights"][:-1]
    rows["token_weighted_pairs"] = pairs
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValidationFailed, match="token_weighted_pairs"):
        write_validated_output(out, rows=rows)
    assert exports.TOKEN_WEIGHTED_PAIRS.equal_length == (("rejected_token_ids", "rejected_weights"),)


def test_card_and_report_describe_the_critical_tokens(planted, tmp_path):
    from counterpoint.dataset.critical_tokens import critical_figures
    from counterpoint.dataset.report import build_report

    src, rows = planted
    out = tmp_path / "out"
    shutil.copytree(src, out)
    f = critical_figures(rows["critical_tokens"])
    # planted: the rollout-found token is the top contrastive one, in OmegaPRM's first wrong step
    assert (f["rows"], f["found"], f["agree_token"], f["agree_step"], f["rollout_in_first_wrong_step"]) == \
        (2 * N_PROBLEMS, 2 * N_PROBLEMS, 1.0, 1.0, 1.0)
    card = (out / "README.md").read_text()
    assert "### Critical tokens (cDPO)" in card
    assert f"| scored incorrect trajectories | {2 * N_PROBLEMS} |  |" in card
    assert f"| success after banning a random token | 0.000 | {2 * N_PROBLEMS} |" in card
    assert "Score forms: {'full_distribution': 6}" in card
    page = Path(build_report(storage.DatasetLayout(str(out)))).read_text()
    section = page.split('<section id="critical-tokens">')[1].split("</section>")[0]
    assert "<h2>Critical tokens</h2><table>" in section and section.count('<img alt="plot"') == 1
    assert "<td>contrast = rollout (same token)</td><td>1.000</td>" in section


def test_export_command_takes_the_policy_tokenizer(planted, tmp_path, capsys):
    from counterpoint.cli import main as cli_main

    src, rows = planted
    out = tmp_path / "out"
    shutil.copytree(src, out)
    assert cli_main(["export", str(out), "--format", "token-weighted-pairs", "--tokenizer", "embedded"]) == 0
    got = _read(out, "token_weighted_pairs")
    assert len(got) == len(rows["critical_tokens"]) and {r["tokenizer"] for r in got} == {"embedded"}
    assert "token_weighted_pairs" in capsys.readouterr().out
