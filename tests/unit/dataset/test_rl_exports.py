"""The RL-ready and negative-only exports (issue 19) on a run with planted outcomes.

A scripted ``replay`` engine replays planted samples: problems whose success rates over known
verdicts are exactly 0, 1/4, 1/2 and 1, one with no known verdict at all, and unknown (right
number, wrong unit) and truncated samples among them. Correct samples come in textual variants
(``C``/``D``/``E``) so deduplication and the ``--max-per-problem`` cap are visible. Every
expectation is computed here from the plan alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from counterpoint import corpus
from counterpoint.cli import main as cli_main
from counterpoint.config import from_dict
from counterpoint.dataset.export import export_output, rl
from counterpoint.dataset.export.api import ExportError
from counterpoint.dataset.verdicts import NotValidated
from counterpoint.errors import VerdictMismatch
from counterpoint.pipelines.generate_corpus import run
from counterpoint.storage import DatasetLayout, OutputLayout

IN_PROCESS = ["--runner=FnApiRunner"]
# Labels: C/D/E correct (three different texts), W wrong (numbered answers), N no final answer,
# T truncated after a right-looking answer, U unknown (right number, wrong unit).
PLAN = {
    "p-zero": (10, "WWWNUW"),     # 0 / 5 known
    "p-quarter": (20, "CWWTUU"),  # 1 / 4 (the truncated sample counts as incorrect)
    "p-half": (30, "CUDWTU"),     # 2 / 4
    "p-one": (40, "CCDEDU"),      # 5 / 5; distinct positives C (s0), D (s2), E (s3)
    "p-none": (50, "UUUUUU"),     # no known verdict: pass rate null
}
MIDDLE = ["p-half", "p-quarter"]
POSITIVE, NEGATIVE = set("CDE"), set("WN")


def _text(lab: str, gold: int, wrong) -> str:
    if lab in "CDE":
        lead = {"C": "I add things up.", "D": "I add the parts.", "E": "Adding gives the total."}[lab]
        return f"Step 1: {lead}\n\nThe answer is {gold} minutes."
    if lab == "W":
        return f"Step 1: I add things up.\n\nThe answer is {next(wrong)} minutes."
    if lab == "N":
        return "Step 1: I am not sure how to go on."
    if lab == "T":
        return f"Step 1: I add things up.\n\nThe answer is {gold} minutes. Then"
    return f"Step 1: I add things up.\n\nThe answer is {gold} seconds."


def _texts(gold: int, labels: str):
    wrong = iter([gold + 1, gold + 2, gold + 1, gold + 1, gold + 3])
    return [_text(lab, gold, wrong) for lab in labels]


def _question(pid: str) -> str:
    return f"How many minutes does task {pid} take?"


def _hash(pid: str) -> int:
    return int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "big")


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl-planted")
    (tmp / "problems.jsonl").write_text("".join(
        json.dumps({"id": pid, "question": _question(pid), "answer": f"{gold} minutes"}) + "\n"
        for pid, (gold, _) in PLAN.items()))
    script = {_question(pid): [{"text": t, "finish_reason": "length" if lab == "T" else "stop"}
                               for lab, t in zip(labels, _texts(gold, labels))]
              for pid, (gold, labels) in PLAN.items()}
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "problems.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "replay", "script": script}},
        "sampling": {"temperature": 0.8, "max_tokens": 64},
        "samples_per_problem": 6, "batch_size": 2, "num_shards": 2, "output": str(tmp / "out"),
    })
    run(IN_PROCESS, config=cfg)
    out = tmp / "out"
    traj = {t["id"]: t for t in DatasetLayout(str(out)).read_table("trajectories").to_pylist()}
    # Everything in one export (a separate dataset folder), with a bucket so small that problems spread
    # over several buckets: the streamed build must equal the whole-config one.
    target = tmp / "rl"
    result = export_output(DatasetLayout(str(out)), ["grpo-prompts", "verl-rl", "npo-forget-retain",
                                                     "grouped-negatives", "sft-positives"],
                           target=OutputLayout(str(target)), control=True, max_per_problem=2, rows_per_bucket=7)
    return {"out": out, "cfg": cfg, "traj": traj, "target": target, "result": result,
            "read": lambda c: sorted(DatasetLayout(str(target)).read_table(c).to_pylist(), key=lambda r: r["id"]),
            "file_order": lambda c: DatasetLayout(str(target)).read_table(c).to_pylist()}


def _label(tid: str) -> str:
    pid, s = tid.rsplit("/s", 1)
    return PLAN[pid][1][int(s)]


def _ids(pid_labels) -> set:
    return {f"{pid}/s{i}" for pid, (_, labels) in PLAN.items() for i, lab in enumerate(labels) if lab in pid_labels}


# ---------------------------------------------------------------------------
# grpo-prompts and verl-rl
# ---------------------------------------------------------------------------
def test_default_band_keeps_exactly_the_planted_middle_problems(planted):
    rows = planted["read"]("grpo_prompts")
    assert [r["problem_id"] for r in rows] == MIDDLE
    traj = planted["traj"]
    half = next(r for r in rows if r["problem_id"] == "p-half")
    lo, hi = half.pop("pass_rate_lo"), half.pop("pass_rate_hi")
    assert 0.0 < lo < 0.5 < hi < 1.0
    assert half == {
        "id": "p-half", "problem_id": "p-half", "source": "problems",
        "prompt": corpus.prompt_messages(planted["cfg"].system_prompt, _question("p-half")),
        "answer": "30 minutes", "verifier": "numeric", "verifier_version": traj["p-half/s0"]["verifier_version"],
        "pass_rate": 0.5, "samples": 6,
    }
    assert planted["result"].rows["grpo_prompts"] == 2


def test_control_is_an_equal_size_unfiltered_draw_by_hash(planted):
    control = planted["read"]("grpo_prompts_control")
    want = sorted(sorted(PLAN, key=lambda p: (_hash(p), p))[:len(MIDDLE)])
    assert [r["problem_id"] for r in control] == want and len(control) == len(MIDDLE)
    verl_control = planted["read"]("verl_rl_control")
    assert [r["id"] for r in verl_control] == want
    assert [r["extra_info"]["split"] for r in verl_control] == ["control"] * len(want)
    in_file = planted["file_order"]("verl_rl_control")  # verl's index: the row's position in its config
    assert [r["extra_info"]["index"] for r in in_file] == list(range(len(want)))


def test_verl_rows_whole_record_and_data_source_matches_no_builtin(planted):
    rows = planted["read"]("verl_rl")
    assert [r["id"] for r in rows] == MIDDLE
    assert [r["extra_info"]["index"] for r in planted["file_order"]("verl_rl")] == [0, 1]
    version = planted["traj"]["p-quarter/s0"]["verifier_version"]
    quarter = rows[1]
    assert quarter["extra_info"].pop("index") in (0, 1)
    assert quarter == {
        "id": "p-quarter", "data_source": "counterpoint/numeric",
        "prompt": corpus.prompt_messages(planted["cfg"].system_prompt, _question("p-quarter")),
        "ability": "math", "reward_model": {"style": "rule", "ground_truth": "20 minutes"},
        "extra_info": {"split": "train", "pass_rate": 0.25, "problem_id": "p-quarter",
                       "verifier": "numeric", "verifier_version": version},
    }
    # verl's default_compute_score dispatches on these names (verl/utils/reward_score/__init__.py);
    # an export must fall through all of them to the custom reward function.
    builtins = {"openai/gsm8k", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500",
                "math_dapo", "numina_aops_forum", "numina_synthetic_math", "numina_amc_aime", "numina_synthetic_amc",
                "numina_cn_k12", "numina_olympiads", "codecontests", "apps", "codeforces", "taco",
                "hiyouga/geometry3k"}
    assert all(r["data_source"] not in builtins and not r["data_source"].startswith("aime") for r in rows)


def test_verl_compute_score_called_as_verls_reward_manager_calls_it(planted):
    from counterpoint.rewards import verl_compute_score

    row = planted["read"]("verl_rl")[0]  # p-half, gold 30 minutes

    def score(response, **options):  # verl's NaiveRewardManager passes these four by keyword
        return verl_compute_score(data_source=row["data_source"], solution_str=response,
                                  ground_truth=row["reward_model"]["ground_truth"], extra_info=row["extra_info"],
                                  **options)

    assert score("Step 1: I add things up.\n\nThe answer is 30 minutes.") == 1.0
    assert score("The answer is 31 minutes.") == 0.0
    assert score("The answer is 30 seconds.") == 0.0  # unknown scores the default 0.0, never 1
    assert score("The answer is 30 seconds.", unknown_score=-0.5) == -0.5
    assert score("") == 0.0 and score("I am not sure.") == 0.0


# ---------------------------------------------------------------------------
# npo-forget-retain, grouped-negatives, sft-positives
# ---------------------------------------------------------------------------
def test_forget_holds_only_verified_incorrect_and_retain_only_verified_correct(planted):
    forget, retain = planted["read"]("npo_forget"), planted["read"]("npo_retain")
    assert {r["id"] for r in forget} == _ids(NEGATIVE)
    assert {r["id"] for r in retain} == _ids(POSITIVE)
    traj = planted["traj"]
    assert all(traj[r["id"]]["verdict"] == "incorrect" and traj[r["id"]]["reward"] == 0.0 for r in forget)
    assert all(traj[r["id"]]["verdict"] == "correct" and traj[r["id"]]["reward"] == 1.0 for r in retain)
    t = traj["p-quarter/s1"]
    assert next(r for r in forget if r["id"] == "p-quarter/s1") == {
        "id": "p-quarter/s1", "problem_id": "p-quarter", "sample_index": 1, "question": _question("p-quarter"),
        "answer": "Step 1: I add things up.\n\nThe answer is 21 minutes.", "prompt": t["prompt"],
        "verifier": "numeric", "verifier_version": t["verifier_version"]}


def test_grouped_negatives_are_distinct_with_the_correct_ones(planted):
    rows = {r["problem_id"]: r for r in planted["read"]("grouped_negatives")}
    assert sorted(rows) == ["p-half", "p-quarter", "p-zero"]  # p-one and p-none have no negative
    for r in rows.values():
        assert len(set(r["negatives"])) == len(r["negatives"]) and len(set(r["positives"])) == len(r["positives"])
        assert {_label(f"{r['problem_id']}/s{i}") for i in r["negative_sample_indices"]} <= NEGATIVE
        assert {_label(f"{r['problem_id']}/s{i}") for i in r["positive_sample_indices"]} <= POSITIVE
    t = planted["traj"]["p-zero/s0"]
    # p-zero: W(11) W(12) W(11) N U W(11): three distinct negatives, first samples of each
    assert rows["p-zero"] == {
        "id": "p-zero", "problem_id": "p-zero", "prompt": t["prompt"], "answer": "10 minutes",
        "negatives": ["Step 1: I add things up.\n\nThe answer is 11 minutes.",
                      "Step 1: I add things up.\n\nThe answer is 12 minutes.", "Step 1: I am not sure how to go on."],
        "negative_sample_indices": [0, 1, 3], "positives": [], "positive_sample_indices": [],
        "verifier": "numeric", "verifier_version": t["verifier_version"]}
    assert rows["p-half"]["positive_sample_indices"] == [0, 2] and rows["p-half"]["negative_sample_indices"] == [3]


def test_sft_positives_are_distinct_and_capped(planted):
    rows = planted["read"]("sft_positives")
    # p-one: C C D E D -> distinct C(s0) D(s2) E(s3), capped at 2; p-half: C(s0) D(s2); p-quarter: C(s0)
    assert sorted(r["id"] for r in rows) == ["p-half/s0", "p-half/s2", "p-one/s0", "p-one/s2", "p-quarter/s0"]
    t = planted["traj"]["p-one/s2"]
    assert next(r for r in rows if r["id"] == "p-one/s2") == {
        "id": "p-one/s2", "problem_id": "p-one", "sample_index": 2, "prompt": t["prompt"],
        "completion": [{"role": "assistant", "content": "Step 1: I add the parts.\n\nThe answer is 40 minutes."}],
        "verifier": "numeric", "verifier_version": t["verifier_version"]}
    rec = json.loads(Path(DatasetLayout(str(planted["target"])).validation_summary).read_text())["exports"]
    assert rec["sft_positives"]["skipped_by_reason"]["over_max_per_problem"] == 1
    assert rec["sft_positives"]["skipped_by_reason"]["duplicate_positive"] == 2  # p-one s1 (C), s4 (D)


def test_no_unknown_or_truncated_sample_is_a_positive_a_forget_example_or_rewarded(planted):
    never = _ids("TU")
    read = planted["read"]
    used = ({r["id"] for r in read("npo_forget")} | {r["id"] for r in read("npo_retain")}
            | {r["id"] for r in read("sft_positives")})
    for r in read("grouped_negatives"):
        used |= {f"{r['problem_id']}/s{i}" for i in r["negative_sample_indices"] + r["positive_sample_indices"]}
    assert never and not used & never
    assert all(planted["traj"][i]["reward"] is None for i in never)
    texts = ({planted["traj"][i]["completion"] for i in never}
             - {planted["traj"][i]["completion"] for i in _ids("CDEWN")})
    assert texts and not texts & {a for r in read("npo_retain") + read("npo_forget") for a in [r["answer"]]}


def test_streamed_build_equals_the_whole_config_build(planted):
    traj = list(planted["traj"].values())
    stats = DatasetLayout(str(planted["out"])).read_table("problem_stats").to_pylist()
    assert planted["read"]("grpo_prompts") == rl.grpo_prompt_rows(stats).rows
    assert planted["read"]("grouped_negatives") == rl.grouped_negative_rows(traj).rows
    assert planted["read"]("sft_positives") == rl.sft_positive_rows(traj, 2).rows
    assert planted["read"]("npo_forget") == rl.npo_rows(traj)[0].rows
    assert planted["read"]("npo_retain") == rl.npo_rows(traj)[1].rows


def test_each_export_config_loads_with_datasets_and_the_card_declares_the_reward(planted):
    import datasets

    for config in ("grpo_prompts", "grpo_prompts_control", "verl_rl", "verl_rl_control", "npo_forget",
                   "npo_retain", "grouped_negatives", "sft_positives"):
        ds = datasets.load_dataset(str(planted["target"]), config, split="train")
        assert len(ds) == planted["result"].rows[config] > 0, config
    card = (planted["target"] / "README.md").read_text()
    assert "## Exports" in card and "`counterpoint.rewards.trl_reward`" in card
    assert "`counterpoint.rewards.verl_compute_score (verl custom_reward_function)`" in card
    version = planted["traj"]["p-half/s0"]["verifier_version"]
    assert f"`numeric` {version}" in card and "custom_reward_function.name=verl_compute_score" in card


# ---------------------------------------------------------------------------
# Bands, and malformed input: a clear error and nothing written
# ---------------------------------------------------------------------------
def test_a_closed_band_includes_its_ends(planted, tmp_path):
    export_output(DatasetLayout(str(planted["out"])), "grpo-prompts", target=OutputLayout(str(tmp_path / "b")),
                  pass_band="0.5,1")
    assert [r["id"] for r in DatasetLayout(str(tmp_path / "b")).read_table("grpo_prompts").to_pylist()] == \
        ["p-half", "p-one"]


@pytest.mark.parametrize("args,message", [
    (["--format", "grpo-prompts", "--pass-band", "0.9,0.1"], "LO must not exceed HI"),
    (["--format", "grpo-prompts", "--pass-band", "0.1,1.5"], "must lie in [0, 1]"),
    (["--format", "grpo-prompts", "--pass-band", "low,high"], "must be numbers"),
    (["--format", "grpo-prompts", "--pass-band", "0.5"], "give two numbers LO,HI"),
    (["--format", "npo-forget-retain", "--pass-band", "0.1,0.9"], "apply to grpo-prompts and verl-rl only"),
    (["--format", "grpo-prompts", "--max-per-problem", "2"], "applies to sft-positives only"),
])
def test_malformed_options_are_refused_before_anything_is_written(planted, capsys, args, message):
    before = _tree_bytes(planted["out"])
    assert cli_main(["export", str(planted["out"]), *args]) == 2
    assert message in capsys.readouterr().err
    assert _tree_bytes(planted["out"]) == before


def test_a_band_on_a_run_without_problem_stats_names_the_fix(tmp_path):
    from _tiny_model import write_validated_output

    out = tmp_path / "old"
    out.mkdir()
    write_validated_output(out, n_problems=2)
    before = _tree_bytes(out)
    with pytest.raises(ExportError, match="needs rows of the 'problem_stats' config, which is empty.*re-run it"):
        export_output(DatasetLayout(str(out)), "grpo-prompts", pass_band="0.1,0.9")
    assert _tree_bytes(out) == before


def test_an_unvalidated_or_changed_folder_is_refused_with_nothing_written(planted, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(planted["out"], copy)
    live = DatasetLayout(str(copy))
    Path(live.validation_summary).unlink()
    before = _tree_bytes(copy)
    with pytest.raises(NotValidated, match="has not been validated"):
        export_output(DatasetLayout(str(copy)), "npo-forget-retain")
    assert _tree_bytes(copy) == before

    changed = tmp_path / "changed"
    shutil.copytree(planted["out"], changed)
    shard = Path(DatasetLayout(str(changed)).shards("trajectories")[0])
    shard.write_bytes(shard.read_bytes() + b"\0")  # same rows, other bytes: the sha256 differs
    with pytest.raises(VerdictMismatch):
        export_output(DatasetLayout(str(changed)), "sft-positives")


def test_run_config_export_options_are_typed_and_checked(tmp_path):
    from counterpoint.config import from_dict
    from counterpoint.errors import ConfigError

    cfg = from_dict({"exports": ["grpo-prompts", "sft-positives"],
                     "export_options": {"pass_band": [0.25, 0.5], "control": True, "max_per_problem": 3}})
    assert (cfg.export_options.band, cfg.export_options.control, cfg.export_options.max_per_problem) == \
        ((0.25, 0.5), True, 3)
    for bad, message in [({"pass_band": [0.9, 0.1]}, "LO must not exceed HI"),
                         ({"pass_band": "0.1"}, "expected"),
                         ({"control": "yes"}, "expected true or false"),
                         ({"max_per_problem": 0}, "must be an integer >= 1")]:
        with pytest.raises(ConfigError, match=message):
            from_dict({"exports": ["grpo-prompts", "sft-positives"], "export_options": bad})
    with pytest.raises(ConfigError, match="apply to grpo-prompts and verl-rl only"):
        from_dict({"exports": ["npo-forget-retain"], "export_options": {"control": True}})


def test_run_flag_pass_band_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        cli_main(["run", "--source", "chain", "--generator", "scripted", "--output", str(out),
                  "--export", "grpo-prompts", "--pass-band", "0.9,0.1"])
    assert e.value.code == 2 and "LO must not exceed HI" in capsys.readouterr().err
    assert not out.exists()


def test_run_export_makes_the_same_rl_configs_as_the_export_command(planted, tmp_path):
    import dataclasses

    from counterpoint.rl.band import ExportOptions

    cfg = dataclasses.replace(planted["cfg"], output=str(tmp_path / "run"),
                              exports=["grpo-prompts", "npo-forget-retain", "sft-positives"],
                              export_options=ExportOptions(pass_band=[0.25, 0.5], control=True, max_per_problem=2))
    summary = run(IN_PROCESS, config=cfg)
    layout = DatasetLayout(str(tmp_path / "run"))
    ids = lambda c: sorted(r["id"] for r in layout.read_table(c).to_pylist())  # noqa: E731
    assert ids("grpo_prompts") == MIDDLE  # the closed band [0.25, 0.5] keeps both ends
    assert ids("grpo_prompts_control") == [r["id"] for r in planted["read"]("grpo_prompts_control")]
    assert ids("npo_forget") == sorted(_ids(NEGATIVE)) and ids("npo_retain") == sorted(_ids(POSITIVE))
    assert ids("sft_positives") == [r["id"] for r in planted["read"]("sft_positives")]
    assert summary["exports"]["grpo-prompts"]["rows"] == {"grpo_prompts": 2, "grpo_prompts_control": 2}
    verdict = json.loads(Path(layout.validation_summary).read_text())
    assert verdict["success"] is True
    assert verdict["exports"]["grpo_prompts"]["options"] == {"pass_band": [0.25, 0.5], "control": True}
