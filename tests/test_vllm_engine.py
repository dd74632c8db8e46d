"""The real engine: vLLM on the embedded SmolLM2-135M-Instruct, through the whole pipeline.

One engine per test session (CI time): a single session-scoped run samples,
verifies, labels with OmegaPRM (small search) and writes every config; the
tests below read what it wrote. Set COUNTERPOINT_SKIP_VLLM=1 to skip locally.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from counterpoint.config import from_dict
from counterpoint.pipelines.generate_corpus import run
from counterpoint.verifiers import NumericVerifier

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(os.environ.get("COUNTERPOINT_SKIP_VLLM") == "1", reason="COUNTERPOINT_SKIP_VLLM=1"),
]

MAX_TOKENS = 128
# Easy one- and two-step problems: the 135M model solves some and fails others.
PROBLEMS = [
    ("easy-1", "Tom has 3 apples. He buys 5 more apples. How many apples does Tom have now?", "8"),
    ("easy-2", "A box has 4 pens. Sara puts 2 more pens in the box. How many pens are in the box?", "6"),
    ("easy-3", "Lily has 10 stickers. She gives 3 stickers to her friend. How many stickers does Lily have left?", "7"),
    ("easy-4", "There are 2 bags with 5 marbles in each bag. How many marbles are there in total?", "10"),
]


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    (tmp / "easy.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in PROBLEMS))
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "easy.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "vllm", "model": "embedded", "seed": 0},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": MAX_TOKENS},
        "samples_per_problem": 6,
        "labeler": "omegaprm",
        "labeling": {"omegaprm": {"k": 4, "search_limit": 2,
                                  "rollout_params": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 96}}},
        "report": False,
        "output": str(tmp / "out"),
    })
    summary = run(["--runner=FnApiRunner"], config=cfg)
    return tmp / "out", summary


def _read(out, config):
    return pq.read_table(out / "data" / config).to_pylist()


def test_real_engine_produces_positives_and_negatives(real_run):
    out, summary = real_run
    rows = _read(out, "trajectories")
    assert len(rows) == 24
    verdicts = Counter(r["verdict"] for r in rows)
    assert verdicts["correct"] >= 1 and verdicts["incorrect"] >= 1, verdicts
    verifier = NumericVerifier()
    gold = {i: a for i, _, a in PROBLEMS}
    prompt_tokens = {}
    for r in rows:
        assert r["model_id"] == "embedded:smollm2-135m-instruct"
        assert "".join(r["steps"]) == r["completion"] and r["num_steps"] == len(r["steps"])
        assert 0 < r["num_generated_tokens"] <= MAX_TOKENS
        assert r["finish_reason"] in ("stop", "length")
        if r["finish_reason"] == "length":
            assert r["num_generated_tokens"] == MAX_TOKENS and r["verdict"] != "correct"
        assert r["cumulative_logprob"] is not None and r["cumulative_logprob"] < 0
        # The chat template wraps system + user: more tokens than the question alone.
        assert r["num_prompt_tokens"] > 30
        prompt_tokens.setdefault(r["problem_id"], set()).add(r["num_prompt_tokens"])
        v = verifier.verify(r["completion"], gold[r["problem_id"]], truncated=r["finish_reason"] == "length")
        assert (r["verdict"], r["verdict_reason"], r["final_answer"]) == (v.verdict, v.reason, v.final_answer)
    assert all(len(s) == 1 for s in prompt_tokens.values())
    c = summary["counts"]
    assert c["generated_tokens"] == sum(r["num_generated_tokens"] for r in rows)
    assert c["problems_in"] == c["problems_with_output"] + c["problems_rejected"] == 4


def test_real_engine_pairs_and_step_labels(real_run):
    out, summary = real_run
    prefs = _read(out, "preferences")
    assert any(p["pair_type"] == "outcome" for p in prefs)
    traj = {r["id"]: r for r in _read(out, "trajectories")}
    for p in prefs:
        if p["pair_type"] == "outcome":
            assert traj[f"{p['problem_id']}/s{p['chosen_sample_index']}"]["verdict"] == "correct"
            assert traj[f"{p['problem_id']}/s{p['rejected_sample_index']}"]["verdict"] == "incorrect"
    labels = _read(out, "step_labels")
    assert labels, summary["screening"]
    for row in labels:
        assert len(row["completions"]) == len(row["labels"]) == len(row["mc_values"])
        assert row["n_rollouts"] > 0 and row["labeler"] == "omegaprm"
        fe = row["first_error_index"]
        assert fe is not None and row["labels"] == [i < fe for i in range(len(row["labels"]))]
    # Rollouts continue a shared prefix: vLLM's prefix cache serves part of their prompts.
    assert summary["counts"]["rollout_generated_tokens"] > 0
    assert summary["counts"]["rollout_cached_prompt_tokens"] > 0


def test_real_run_validates_and_loads_with_datasets(real_run):
    import datasets

    out, summary = real_run
    assert summary["validation"]["success"] is True
    for config in ("trajectories", "preferences", "unpaired", "step_labels", "step_values"):
        rows = _read(out, config)
        if rows:
            ds = datasets.load_dataset(str(out), config, split="train")
            assert ds.num_rows == len(rows)
