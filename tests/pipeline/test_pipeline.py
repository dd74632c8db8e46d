"""End-to-end corpus pipeline on the scripted generator.

The outcome run uses the FnApiRunner in multi_processing mode with 2 workers, so
every DoFn, config and generator is pickled into another process as Dataflow
would do it. Rows are read back from Parquet and through
``datasets.load_dataset(out_dir, config)`` and compared as whole records with
rows rebuilt independently from the scripted engine.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from counterpoint import corpus, storage
from counterpoint.config import from_dict
from counterpoint.generators.scripted import AnswerKeyPolicy, ScriptedGenerator, chain_problem
from counterpoint.pipelines.generate_corpus import run
from counterpoint.rl import signed
from counterpoint.schemas import records
from counterpoint.sources.procedural import procedural_problem
from counterpoint.verifiers import NumericVerifier

MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
IN_PROCESS = ["--runner=FnApiRunner"]


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _read(out: Path, config: str):
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def _live(out: Path) -> Path:
    """The live version's folder (the manifest names it)."""
    return Path(storage.DatasetLayout(str(out)).dataset_dir)


def _by_id(rows):
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def outcome_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outcome")
    problems = [procedural_problem(7, i) for i in range(10)]
    records_in = [{"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]} for p in problems]
    # One malformed line and one duplicate id: both must come back as rejects.
    lines = [json.dumps(r) for r in records_in] + ["{not json", json.dumps(records_in[0] | {"question": "dup?"})]
    (tmp / "problems.jsonl").write_text("\n".join(lines) + "\n")
    answer_key = {p["question"]: p["gold_answer"] for p in problems}
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "problems.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 3,
                      "scripted": {"policy": "answer_key", "answer_key": answer_key, "p_correct": 0.5}},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64},
        "samples_per_problem": 4, "batch_size": 3, "num_shards": 2,
        "pairing": {"max_pairs_per_problem": 3},
        "output": str(tmp / "out"),
    })
    summary = run(MULTI_PROCESS, config=cfg)
    return tmp / "out", cfg, problems, answer_key, summary


def _expected_trajectories(cfg, problems, answer_key):
    """Rows rebuilt outside Beam from the same scripted engine and verifier."""
    gen = ScriptedGenerator(AnswerKeyPolicy(answer_key=answer_key, p_correct=0.5))
    verifier = NumericVerifier()
    expected = {}
    for p in problems:
        req = corpus.sample_request(p | {"source": "problems"}, system_prompt=cfg.system_prompt,
                                    n=cfg.samples_per_problem, params=cfg.sampling, run_seed=cfg.generator.seed)
        comps = gen.generate([req])[0]
        rows = corpus.trajectory_rows(p | {"source": "problems"}, comps, request=req, model_id=gen.model_id,
                                      segmentation="paragraph")
        verdicts = [verifier.verify(c.text, p["gold_answer"], truncated=c.truncated) for c in comps]
        rows = corpus.apply_verdicts(rows, verdicts, verifier_name=verifier.name, verifier_version=verifier.version)
        rows, _ = corpus.clean_trajectories(rows, cfg.dedup)  # duplicate_of / process_error (counterpoint.clean)
        expected.update(_by_id(signed.with_signed_columns(rows)))  # reward / advantages per problem
    return expected


def test_outcome_run_writes_every_config_with_whole_records(outcome_run):
    out, cfg, problems, answer_key, summary = outcome_run
    trajectories = _read(out, "trajectories")
    expected = _expected_trajectories(cfg, problems, answer_key)
    got = _by_id(trajectories)
    assert sorted(got) == sorted(expected)
    for rid, row in expected.items():
        assert got[rid] == row, rid
    verdicts = Counter(r["verdict"] for r in trajectories)
    assert verdicts["correct"] > 0 and verdicts["incorrect"] > 0 and verdicts["unknown"] == 0
    # Hub layout: fixed shard count and names.
    assert sorted(p.name for p in Path(storage.DatasetLayout(str(out)).config_dir("trajectories")).iterdir()) == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]


def test_outcome_pairs_and_unpaired_follow_the_verdicts(outcome_run):
    out, cfg, problems, answer_key, _ = outcome_run
    traj = _by_id(_read(out, "trajectories"))
    prefs = _read(out, "preferences")
    per_problem = Counter(p["problem_id"] for p in prefs)
    assert prefs and max(per_problem.values()) <= cfg.pairing.max_pairs_per_problem
    for pair in prefs:
        chosen = traj[records.trajectory_id(pair["problem_id"], pair["chosen_sample_index"])]
        rejected = traj[records.trajectory_id(pair["problem_id"], pair["rejected_sample_index"])]
        assert pair == {
            "id": f"{pair['problem_id']}/outcome/{chosen['sample_index']}-{rejected['sample_index']}",
            "problem_id": chosen["problem_id"],
            "prompt": chosen["prompt"],
            "chosen": [{"role": "assistant", "content": chosen["completion"]}],
            "rejected": [{"role": "assistant", "content": rejected["completion"]}],
            "pair_type": "outcome",
            "chosen_source": "policy",
            "chosen_sample_index": chosen["sample_index"],
            "rejected_sample_index": rejected["sample_index"],
            "step_index": None, "prefix": None, "labeler": None,
            "metadata": records.dumps({"policy": "nearest", "max_pairs_per_problem": 3,
                                       "rejected_verdict_reason": rejected["verdict_reason"]}),
        }
        assert chosen["verdict"] == "correct" and rejected["verdict"] == "incorrect"
        assert chosen["duplicate_of"] is None and rejected["duplicate_of"] is None
    unpaired = _read(out, "unpaired")
    # Every sample but the duplicates (the scripted answer-key policy repeats itself) is one unpaired row.
    kept = [t for t in traj.values() if t["duplicate_of"] is None]
    assert len(kept) < len(traj) and sorted(u["id"] for u in unpaired) == sorted(t["id"] for t in kept)
    for row in unpaired:
        t = traj[row["id"]]
        assert row == {"id": t["id"], "problem_id": t["problem_id"], "sample_index": t["sample_index"],
                       "prompt": t["prompt"], "completion": [{"role": "assistant", "content": t["completion"]}],
                       "label": t["verdict"] == "correct"}


def test_accounting_and_rejects(outcome_run):
    out, _, problems, _, summary = outcome_run
    rejects = _read(out, "rejects")
    assert sorted((r["stage"], r["reason"], r["scope"], r["problem_id"]) for r in rejects) == sorted([
        ("read", "malformed_json", "problem", None),
        ("dedupe", "duplicate_problem_id", "problem", problems[0]["problem_id"]),
    ])
    c = summary["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (12, 10, 2)
    assert json.loads((_live(out) / "run_summary.json").read_text())["counts"] == c
    # The kept duplicate is the first one read: its question is the original.
    traj = _read(out, "trajectories")
    assert {t["question"] for t in traj if t["problem_id"] == problems[0]["problem_id"]} == {problems[0]["question"]}


def test_every_config_loads_with_datasets(outcome_run):
    import datasets

    out, *_ = outcome_run
    for config in records.OUTCOME_CONFIGS:
        rows = _read(out, config)
        ds = datasets.load_dataset(str(out), config, split="train")
        assert sorted(ds.to_list(), key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"]), config


def test_card_validation_and_report_exist(outcome_run):
    out, *_ = outcome_run
    card = (out / "README.md").read_text()
    assert "config_name: trajectories" in card and "config_name: preferences" in card
    summary = json.loads((_live(out) / "validation" / "summary.json").read_text())
    assert summary["success"] is True
    assert (_live(out) / "report.html").stat().st_size > 10_000
    assert not list((out / "_work" / "staging").glob("*")), "staging must be cleaned after publishing"


def test_omegaprm_run_on_chain_problems(tmp_path):
    """Step configs: OmegaPRM labels agree with the planted first errors of the chain policy."""
    from counterpoint.testing.chain import chain_first_error

    problems = [chain_problem(5, i, num_steps=6) for i in range(4)]
    _write_jsonl(tmp_path / "chain.jsonl",
                 [{"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]} for p in problems])
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp_path / "chain.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "chain", "step_error_rate": 0.12}},
        "samples_per_problem": 8, "labeler": "omegaprm",
        "labeling": {"omegaprm": {"k": 8, "search_limit": 20}},
        "validate": False, "report": False,
        "output": str(tmp_path / "out"),
    })
    summary = run(IN_PROCESS, config=cfg)
    out = tmp_path / "out"
    labels = _read(out, "step_labels")
    assert labels, summary
    questions = {p["problem_id"]: p["question"] for p in problems}
    for row in labels:
        truth = chain_first_error(questions[row["problem_id"]], row["completions"])
        assert row["first_error_index"] == truth, row
        assert row["labels"] == [i < truth for i in range(len(row["completions"]))]
        assert len(row["mc_values"]) == len(row["completions"])
        assert all(v == 0.0 for v in row["mc_values"][truth:]) and all(v > 0 for v in row["mc_values"][:truth])
    values = _read(out, "step_values")
    assert values and all(-1 <= v["advantage"] <= 1 and 0 <= v["q_value"] <= 1 for v in values)
    prefs = _read(out, "preferences")
    step_pairs = [p for p in prefs if p["pair_type"] == "step"]
    assert step_pairs
    for pair in step_pairs:
        assert pair["chosen"][0]["content"].startswith(pair["prefix"])
        assert pair["rejected"][0]["content"].startswith(pair["prefix"])
        chosen_step = pair["chosen"][0]["content"][len(pair["prefix"]):]
        rejected_step = pair["rejected"][0]["content"][len(pair["prefix"]):]
        q = questions[pair["problem_id"]]
        # The rejected step is the planted error; the chosen step is a correct next step.
        n_prev = len([s for s in pair["prefix"].split("\n\n") if s.strip()])
        assert chain_first_error(q, [s for s in pair["prefix"].split("\n\n") if s.strip()] + [rejected_step.strip()]) == n_prev
        assert chain_first_error(q, [s for s in pair["prefix"].split("\n\n") if s.strip()] + [chosen_step.strip()]) is None
    c = summary["counts"]
    assert c["problems_in"] == c["problems_with_output"] + c["problems_rejected"] == 4
