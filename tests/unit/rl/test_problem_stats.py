"""problem_stats and the signed trajectory columns (issue 19), on planted outcomes.

A scripted engine replays planted samples: four problems whose success rates over
known verdicts are exactly 0, 1/4, 1/2 and 1, with unknown verdicts (an answer in
the wrong unit: ``unconfirmed_equivalence``) and truncated samples planted among
them. Expected pass rates, Wilson intervals, rewards and advantages are computed
here from the plan alone (the Wilson bounds as the roots of the score-test
quadratic, not with the module's formula).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from statistics import NormalDist

import pytest

from counterpoint import corpus
from counterpoint.config import from_dict
from counterpoint.dataset.verdicts import Verdict
from counterpoint.pipelines.generate_corpus import run
from counterpoint.rl import signed, stats
from counterpoint.schemas import records
from counterpoint.storage import DatasetLayout
from counterpoint.validation import suites

IN_PROCESS = ["--runner=FnApiRunner"]
Z = NormalDist().inv_cdf(0.975)

# Planted samples: (label, text). Labels: C correct, W wrong answer, N no final answer,
# T truncated (finish_reason "length"), U unknown (right number, wrong unit).
def _plan(gold: int, labels: str):
    wrong = iter([gold + 1, gold + 2, gold + 1, gold + 1, gold + 3])
    out = []
    for lab in labels:
        if lab == "C":
            out.append((lab, f"Step 1: I add things up.\n\nThe answer is {gold} minutes."))
        elif lab == "W":
            out.append((lab, f"Step 1: I add things up.\n\nThe answer is {next(wrong)} minutes."))
        elif lab == "N":
            out.append((lab, "Step 1: I am not sure how to go on."))
        elif lab == "T":  # cut after a right-looking answer: still never a positive
            out.append((lab, f"Step 1: I add things up.\n\nThe answer is {gold} minutes. Then"))
        else:
            out.append((lab, f"Step 1: I add things up.\n\nThe answer is {gold} seconds."))
    return out


PLAN = {  # problem id -> (gold, labels); 6 samples each
    "p-zero": (10, "WWWNUW"),     # 0 of 5 known
    "p-quarter": (20, "CWWTUU"),  # 1 of 4 known (the truncated sample counts as incorrect)
    "p-half": (30, "CUCWTU"),     # 2 of 4 known
    "p-one": (40, "CCCCCU"),      # 5 of 5 known
}
RATES = {"p-zero": 0.0, "p-quarter": 0.25, "p-half": 0.5, "p-one": 1.0}


def _question(pid: str) -> str:
    return f"How many minutes does task {pid} take?"


def _wilson_roots(k: int, n: int):
    """Bounds as the roots p of (k/n - p)^2 = Z^2 p (1 - p) / n."""
    ph, a = k / n, 1 + Z * Z / n
    b = 2 * ph + Z * Z / n
    disc = math.sqrt(b * b - 4 * a * ph * ph)
    return (b - disc) / (2 * a), (b + disc) / (2 * a)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "problems.jsonl").write_text("".join(
        json.dumps({"id": pid, "question": _question(pid), "answer": f"{gold} minutes"}) + "\n"
        for pid, (gold, _) in PLAN.items()))
    script = {}
    for pid, (gold, labels) in PLAN.items():
        script[_question(pid)] = [{"text": text, "finish_reason": "length" if lab == "T" else "stop"}
                                  for lab, text in _plan(gold, labels)]
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "problems.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "replay", "script": script}},
        "sampling": {"temperature": 0.8, "max_tokens": 64},
        "samples_per_problem": 6, "batch_size": 2, "num_shards": 1,
        "output": str(tmp / "out"),
    })
    summary = run(IN_PROCESS, config=cfg)
    return tmp / "out", cfg, summary


def test_problem_stats_pass_rates_and_wilson_intervals_are_exact(planted_run):
    out, _, summary = planted_run
    got = {r["problem_id"]: r for r in DatasetLayout(str(out)).read_table("problem_stats").to_pylist()}
    assert sorted(got) == sorted(PLAN)
    for pid, (_, labels) in PLAN.items():
        c = Counter(labels)
        known = c["C"] + c["W"] + c["N"] + c["T"]
        row = got[pid]
        assert (row["samples"], row["correct"], row["incorrect"], row["unknown"], row["truncated"]) == (
            6, c["C"], c["W"] + c["N"] + c["T"], c["U"], c["T"]), pid
        assert row["pass_rate"] == RATES[pid] == c["C"] / known
        lo, hi = _wilson_roots(c["C"], known)
        assert row["pass_rate_lo"] == pytest.approx(lo, abs=1e-12) and row["pass_rate_hi"] == pytest.approx(hi, abs=1e-12)
        assert row["pass_rate_lo"] <= row["pass_rate"] <= row["pass_rate_hi"]
    assert got["p-zero"]["pass_rate_lo"] == 0.0 and got["p-one"]["pass_rate_hi"] == 1.0
    assert summary["counts"]["rows_problem_stats"] == 4 and "problem_stats" not in summary["empty_configs"]


def test_problem_stats_whole_record_loads_with_datasets(planted_run):
    import datasets

    out, cfg, _ = planted_run
    rows = {r["problem_id"]: r for r in datasets.load_dataset(str(out), "problem_stats", split="train")}
    traj = [t for t in DatasetLayout(str(out)).read_table("trajectories").to_pylist() if t["problem_id"] == "p-quarter"]
    lo, hi = _wilson_roots(1, 4)
    tokens = sorted(t["num_generated_tokens"] for t in traj)
    expected = {
        "id": "p-quarter", "problem_id": "p-quarter", "source": "problems",
        "prompt": corpus.prompt_messages(cfg.system_prompt, _question("p-quarter")),
        "gold_answer": "20 minutes", "verifier": "numeric", "verifier_version": traj[0]["verifier_version"],
        "samples": 6, "correct": 1, "incorrect": 3, "unknown": 2, "truncated": 1,
        "pass_rate": 0.25, "pass_rate_lo": lo, "pass_rate_hi": hi, "mean_generated_tokens": sum(tokens) / 6,
        "verdict_reasons": [{"reason": "answer_mismatch", "count": 2},
                            {"reason": "unconfirmed_equivalence", "count": 2},
                            {"reason": "truncated", "count": 1}],
        # 20 minutes (right, and the truncated sample's), 21 minutes, 22 minutes, 20 seconds
        "distinct_final_answers": 4,
        "most_common_wrong_answer": "21 minutes", "most_common_wrong_answer_count": 1,
    }
    row = rows["p-quarter"]
    assert row.pop("pass_rate_lo") == pytest.approx(expected.pop("pass_rate_lo"), abs=1e-12)
    assert row.pop("pass_rate_hi") == pytest.approx(expected.pop("pass_rate_hi"), abs=1e-12)
    assert row == expected
    assert rows["p-zero"]["most_common_wrong_answer"] == "11 minutes"
    assert rows["p-zero"]["most_common_wrong_answer_count"] == 3
    assert rows["p-zero"]["verdict_reasons"] == [{"reason": "answer_mismatch", "count": 4},
                                                 {"reason": "no_final_answer", "count": 1},
                                                 {"reason": "unconfirmed_equivalence", "count": 1}]
    assert rows["p-one"]["most_common_wrong_answer"] is None and rows["p-one"]["distinct_final_answers"] == 2


def test_signed_columns_follow_the_plan_and_sum_to_zero(planted_run):
    out, _, _ = planted_run
    traj = DatasetLayout(str(out)).read_table("trajectories").to_pylist()
    assert len(traj) == 24
    for pid, (gold, labels) in PLAN.items():
        rows = sorted((t for t in traj if t["problem_id"] == pid), key=lambda t: t["sample_index"])
        want = [{"C": 1.0, "W": 0.0, "N": 0.0}.get(lab) for lab in labels]
        assert [t["reward"] for t in rows] == want, pid
        known = [r for r in want if r is not None]
        mean = sum(known) / len(known)
        std = math.sqrt(sum((r - mean) ** 2 for r in known) / len(known))
        for t, lab, r in zip(rows, labels, want):
            assert t["group_mean_reward"] == pytest.approx(mean)
            if lab in "TU":
                assert (t["reward"], t["grpo_advantage"], t["rloo_advantage"]) == (None, None, None)
                continue
            others = list(known)
            others.remove(r)
            assert t["rloo_advantage"] == pytest.approx(r - sum(others) / len(others))
            assert t["grpo_advantage"] == pytest.approx(0.0 if std == 0 else (r - mean) / std)
        assert sum(t["rloo_advantage"] for t in rows if t["reward"] is not None) == pytest.approx(0.0, abs=1e-12)
        assert sum(t["grpo_advantage"] for t in rows if t["reward"] is not None) == pytest.approx(0.0, abs=1e-12)
    # No unknown or truncated sample is ever rewarded 1.
    assert all(t["reward"] != 1.0 for t in traj if t["verdict"] == "unknown" or t["finish_reason"] == "length")
    quarter = [t for t in traj if t["problem_id"] == "p-quarter" and t["reward"] == 1.0]
    assert [t["grpo_advantage"] for t in quarter] == [pytest.approx(math.sqrt(2))]


def test_validation_passed_with_the_problem_stats_suite(planted_run):
    out, _, _ = planted_run
    verdict = Verdict.read(DatasetLayout(str(out)))
    assert verdict.success is True and verdict.configs["problem_stats"].success is True
    rules = {e.meta["counterpoint"]["rule"] for e in suites.expectations("problem_stats")}
    assert {"ordered", "sums", "range", "not_null"} <= rules
    assert "unique" in {e.meta["counterpoint"]["rule"] for e in suites.expectations("problem_stats", suites.CONFIG)}


# ---------------------------------------------------------------------------
# Beam-free units
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(0, 1), (0, 4), (1, 4), (2, 4), (4, 4), (7, 19), (50, 100)])
def test_wilson_interval_matches_the_score_test_roots(k, n):
    lo, hi = stats.wilson_interval(k, n)
    want_lo, want_hi = _wilson_roots(k, n)
    assert lo == pytest.approx(max(0.0, want_lo), abs=1e-12) and hi == pytest.approx(min(1.0, want_hi), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_edge_cases():
    assert stats.wilson_interval(0, 0) == (None, None)
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)
    # A textbook value: 0 of 10 -> [0, 0.2775] (Brown, Cai & DasGupta 2001).
    assert stats.wilson_interval(0, 10)[1] == pytest.approx(0.27753, abs=1e-5)


def test_group_advantages_by_hand():
    g = signed.group_advantages([1.0, 0.0, None, 0.0, 1.0])
    assert g["group_mean_reward"] == [0.5] * 5
    assert g["grpo_advantage"] == [1.0, -1.0, None, -1.0, 1.0]  # std 0.5
    rloo = g["rloo_advantage"]
    assert rloo[2] is None and [rloo[i] for i in (0, 1, 3, 4)] == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    same = signed.group_advantages([1.0, 1.0, None])
    assert same["grpo_advantage"] == [0.0, 0.0, None] and same["rloo_advantage"] == [0.0, 0.0, None]
    alone = signed.group_advantages([None, 0.0])
    assert alone["rloo_advantage"] == [None, None] and alone["grpo_advantage"] == [None, 0.0]
    assert signed.group_advantages([None, None])["group_mean_reward"] == [None, None]


def _traj(i, verdict, finish="stop"):
    return {"problem_id": "p", "sample_index": i, "verdict": verdict, "finish_reason": finish}


def test_truncated_reward_option_and_refusal():
    rows = [_traj(0, "correct"), _traj(1, "incorrect", "length"), _traj(2, "unknown"), _traj(3, "correct", "length")]
    assert [r["reward"] for r in signed.with_signed_columns(rows)] == [1.0, None, None, None]
    zero = signed.with_signed_columns(rows, truncated_reward=0.0)
    assert [r["reward"] for r in zero] == [1.0, 0.0, None, 0.0]
    assert sum(r["rloo_advantage"] for r in zero if r["reward"] is not None) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="never a positive"):
        signed.with_signed_columns(rows, truncated_reward=1.0)
    with pytest.raises(ValueError, match="per problem"):
        signed.with_signed_columns(rows + [dict(_traj(0, "correct"), problem_id="q")])
    assert rows[0] == _traj(0, "correct")  # inputs untouched


def test_problem_stats_row_without_known_verdicts_has_null_rates():
    t = {"problem_id": "p", "source": "s", "prompt": [], "gold_answer": "1", "verifier": "numeric",
         "verifier_version": "v", "verdict": "unknown", "verdict_reason": "verifier_timeout", "final_answer": "1 s",
         "finish_reason": "stop", "num_generated_tokens": 5}
    row = stats.problem_stats_row({"problem_id": "p"}, [t, t | {"num_generated_tokens": 7}])
    assert (row["pass_rate"], row["pass_rate_lo"], row["pass_rate_hi"]) == (None, None, None)
    assert row["mean_generated_tokens"] == 6.0 and row["verdict_reasons"] == [{"reason": "verifier_timeout", "count": 2}]
    assert stats.problem_stats_rows({"problem_id": "p"}, []) == []


def test_problem_stats_suite_fails_broken_rows():
    """The GX shard suite catches an interval that does not hold its rate and counts that miss samples."""
    good = {"id": "p", "problem_id": "p", "source": "s", "prompt": [{"role": "user", "content": "q"}], "gold_answer": "1",
            "verifier": "numeric", "verifier_version": "v", "samples": 4, "correct": 1, "incorrect": 2,
            "unknown": 1, "truncated": 1, "pass_rate": 1 / 3, "pass_rate_lo": 0.06, "pass_rate_hi": 0.79,
            "mean_generated_tokens": 12.5, "verdict_reasons": [{"reason": "answer_mismatch", "count": 2}],
            "distinct_final_answers": 2, "most_common_wrong_answer": "2", "most_common_wrong_answer_count": 2}
    bad = good | {"id": "q", "problem_id": "q", "pass_rate_lo": 0.5, "unknown": 2, "truncated": 5}
    context, batch_definition, built = suites.make_context(["problem_stats"], levels=(suites.SHARD,))
    suite = built[("problem_stats", suites.SHARD)]

    def failed_rules(row):
        table = records.rows_to_table("problem_stats", [row])
        df = suites.shard_frame(table, records.PROBLEM_STATS)
        result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        return sorted((r.expectation_config.meta["counterpoint"]["rule"],
                       tuple(r.expectation_config.meta["counterpoint"]["columns"]))
                      for r in result.results if not r.success)

    assert failed_rules(good) == []
    assert failed_rules(bad) == [("ordered", ("pass_rate_lo", "pass_rate")), ("ordered", ("truncated", "samples")),
                                 ("sums", ("correct", "incorrect", "unknown", "samples"))]


def test_the_gate_fails_a_run_output_with_a_broken_problem_stats_row(planted_run, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from counterpoint.validation import validate_output

    out = tmp_path / "copy"
    shutil.copytree(planted_run[0], out)
    (shard,) = DatasetLayout(str(out)).shards("problem_stats")
    rows = pq.read_table(shard).to_pylist()
    for r in rows:
        if r["problem_id"] == "p-quarter":
            r["pass_rate_lo"] = 0.3  # above the pass rate 0.25
            r["unknown"] = 3  # correct + incorrect + unknown = 7 of 6 samples
    pq.write_table(records.rows_to_table("problem_stats", rows), shard)
    report = validate_output(str(out), quarantine=False, runner_options=["--runner=FnApiRunner"])
    assert not report.success
    got = sorted((f.config, f.rule, f.column, f.unexpected_count, f.examples[0]["problem_id"])
                 for f in report.failures)
    assert got == [("problem_stats", "ordered", "pass_rate_lo,pass_rate", 1, "p-quarter"),
                   ("problem_stats", "sums", "correct,incorrect,unknown,samples", 1, "p-quarter")]


def test_wilson_bounds_contain_the_rate_exactly_at_zero_and_all():
    # Floating point put the low bound of 0/7 at ~1e-17 > 0 and the high bound of 10/10 just under 1.
    for n in range(1, 300):
        assert stats.wilson_interval(0, n)[0] == 0.0 and stats.wilson_interval(n, n)[1] == 1.0
        for k in (0, n // 3, n):
            lo, hi = stats.wilson_interval(k, n)
            assert lo <= k / n <= hi
