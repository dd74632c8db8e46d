"""Rows never depend on throughput (issue 18): one labelled job, run with the engine stream's capacity at
1, 8 and 256, and with adaptive rollout budgets off and on in a world where no probe can be decided
differently — whole tables compared, read through ``DatasetLayout(out).read_table(config)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from counterpoint import storage
from counterpoint.config import from_dict
from counterpoint.generators.scripted import chain_problem
from counterpoint.pipelines.generate_corpus import run
from counterpoint.testing.chain import chain_first_error
from counterpoint.testing.stream import SAMPLING_SLIPS

IN_PROCESS = ["--runner=FnApiRunner"]
CONFIGS = ("trajectories", "problem_stats", "preferences", "unpaired", "rejects", "step_labels", "step_values")
# What an adaptive budget records differently when it decides the same: how many rollouts were held
# (per step, in all, and in a step pair's metadata), the labeller parameters naming the rule, and which
# steps were measured (its cost-aware split probes other prefixes; where both measured a step, the
# values must agree); every other column and metadata field must be equal.
BUDGET_COLUMNS = ("n_rollouts_per_step", "n_rollouts", "labeler_params", "mc_values", "mc_measured")
BUDGET_METADATA = ("n_rollouts", "prefix_rollouts")


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_in")
    problems = [chain_problem(11, i, num_steps=7) for i in range(6)]
    path = tmp / "chain.jsonl"
    path.write_text("".join(json.dumps({"id": p["problem_id"], "question": p["question"],
                                        "answer": p["gold_answer"]}) + "\n" for p in problems))
    return path, {p["problem_id"]: p["question"] for p in problems}


def _job(path: Path, out: Path, *, capacity: int, adaptive: bool = False, policy: str = "chain",
         values: bool = True) -> dict:
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(path)],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 2,
                      "scripted": {"policy": policy, "step_error_rate": 0.15, "capacity": capacity}},
        "samples_per_problem": 6, "labeler": "omegaprm", "labeling_batch_size": 4,
        "labeling": {"omegaprm": {"k": 4, "search_limit": 6, "adaptive": adaptive}, "check_arithmetic": False,
                     "compute_values": values},
        "validate": False, "report": False, "output": str(out),
    })
    summary = run(IN_PROCESS, config=cfg)
    layout = storage.DatasetLayout(str(out))
    tables = {c: sorted(layout.read_table(c).to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))
              for c in CONFIGS}
    return {"summary": summary, "tables": tables}


def _without(tables: dict, columns) -> dict:
    def strip(row):
        out = {k: v for k, v in row.items() if k not in columns}
        if out.get("metadata"):
            out["metadata"] = {k: v for k, v in json.loads(out["metadata"]).items() if k not in BUDGET_METADATA}
        return out

    return {c: [strip(r) for r in rows] for c, rows in tables.items()}


def test_capacity_1_8_256_give_the_same_tables(tmp_path, problems_file):
    path, questions = problems_file
    runs = {cap: _job(path, tmp_path / f"cap{cap}", capacity=cap) for cap in (1, 8, 256)}
    base = runs[256]["tables"]
    assert base["step_labels"] and base["step_values"] and base["trajectories"]
    assert any(p["pair_type"] == "step" for p in base["preferences"])
    for cap in (1, 8):
        assert runs[cap]["tables"] == base, f"capacity {cap} changed the rows"
    # The stream really labelled (the chain policy's planted first errors), and nothing was lost.
    for row in base["step_labels"]:
        assert row["first_error_index"] == chain_first_error(questions[row["problem_id"]], row["completions"])
    c = runs[1]["summary"]["counts"]
    assert c["problems_in"] == c["problems_with_output"] + c["problems_rejected"] == len(questions)


def test_adaptive_budgets_decide_like_fixed_k_where_decisions_cannot_differ(tmp_path, problems_file):
    path, _ = problems_file
    # Without the value pass (fixed k on every prefix of the sampled negatives) the probes' own budgets show.
    fixed = _job(path, tmp_path / "fixed", capacity=8, policy=SAMPLING_SLIPS, values=False)
    adaptive = _job(path, tmp_path / "adaptive", capacity=8, adaptive=True, policy=SAMPLING_SLIPS, values=False)
    assert fixed["tables"]["step_labels"]
    assert _without(adaptive["tables"], BUDGET_COLUMNS) == _without(fixed["tables"], BUDGET_COLUMNS)
    # ... and the adaptive run paid fewer rollouts for the same labels, recorded on its rows.
    f_rows = {r["id"]: r for r in fixed["tables"]["step_labels"]}
    a_rows = {r["id"]: r for r in adaptive["tables"]["step_labels"]}
    assert sum(map(sum, (r["n_rollouts_per_step"] for r in a_rows.values()))) < \
        sum(map(sum, (r["n_rollouts_per_step"] for r in f_rows.values())))
    assert all(json.loads(r["labeler_params"])["adaptive"]["zero_after"] == 2 for r in a_rows.values())
    both = [(fv, av) for k in f_rows
            for fv, av, fm, am in zip(f_rows[k]["mc_values"], a_rows[k]["mc_values"], f_rows[k]["mc_measured"],
                                      a_rows[k]["mc_measured"]) if fm and am]
    assert both and all(fv == av for fv, av in both)
    assert all("adaptive" not in json.loads(r["labeler_params"]) for r in f_rows.values())


def test_a_poison_problem_in_a_streamed_bundle_is_a_sample_reject_and_the_others_keep_their_rows(
        tmp_path, problems_file):
    path, questions = problems_file
    clean = _job(path, tmp_path / "clean", capacity=8)
    (tmp_path / "in").mkdir()
    poisoned = tmp_path / "in" / path.name  # the same file name: the same ``source`` on every row
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    lines.insert(2, json.dumps({"id": "poison-1", "question": "POISON " + bad["question"], "answer": bad["answer"]}))
    poisoned.write_text("\n".join(lines) + "\n")
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(poisoned)],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 2,
                      "scripted": {"policy": "chain", "step_error_rate": 0.15, "capacity": 8,
                                   "fail_on_substring": "POISON"}},
        "samples_per_problem": 6, "labeler": "omegaprm", "labeling_batch_size": 4,
        "retry": {"max_attempts": 2, "backoff_s": 0.01},
        "labeling": {"omegaprm": {"k": 4, "search_limit": 6}, "check_arithmetic": False},
        "validate": False, "report": False, "output": str(tmp_path / "out"),
    })
    summary = run(IN_PROCESS, config=cfg)
    c = summary["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (len(questions) + 1, len(questions), 1)
    layout = storage.DatasetLayout(str(tmp_path / "out"))
    rejects = layout.read_table("rejects").to_pylist()
    assert [(r["problem_id"], r["stage"], r["reason"], r["scope"]) for r in rejects if r["problem_id"] == "poison-1"] \
        == [("poison-1", "sample", "poison_request", "problem")]
    # The other problems' rejects (e.g. a duplicate step pair) are the clean run's, whole rows.
    others = [r for r in rejects if r["problem_id"] != "poison-1"]
    assert sorted(others, key=lambda r: json.dumps(r, sort_keys=True, default=str)) == clean["tables"]["rejects"]
    for config in ("trajectories", "step_labels", "step_values", "preferences"):
        got = sorted(layout.read_table(config).to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))
        assert got == clean["tables"][config], config


def test_consensus_on_the_runs_own_model_judges_inside_the_stream(tmp_path, problems_file):
    """The judge is the run's model: its requests join the stream; every labelled solution is judged and the
    rows are the unjudged run's plus the judge's columns (the chain policy is no judge: all unparsable)."""
    path, _ = problems_file
    plain = _job(path, tmp_path / "plain", capacity=8)
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(path)],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 2,
                      "scripted": {"policy": "chain", "step_error_rate": 0.15, "capacity": 8}},
        "samples_per_problem": 6, "labeler": "omegaprm", "labeling_batch_size": 4,
        "labeling": {"omegaprm": {"k": 4, "search_limit": 6}, "check_arithmetic": False},
        "consensus": {"mode": "annotate"},
        "validate": False, "report": False, "output": str(tmp_path / "judged"),
    })
    summary = run(IN_PROCESS, config=cfg)
    labels = storage.DatasetLayout(str(tmp_path / "judged")).read_table("step_labels").to_pylist()
    c = summary["consensus"]
    assert c["judged"] >= len(labels) > 0 and c["not_judged"] == 0
    assert c["agreed"] + c["disagreed"] + c["unparsable"] == c["judged"]
    by_id = {r["id"]: r for r in plain["tables"]["step_labels"]}
    for row in labels:
        base = by_id[row["id"]]
        assert {k: v for k, v in row.items() if not k.startswith("judge_")} == \
            {k: v for k, v in base.items() if not k.startswith("judge_")}
        assert row["judge_agrees"] in (True, False, None)
