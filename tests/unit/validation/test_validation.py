"""Validation gate: GX suites derived from the TableSpecs, run as a Beam pipeline over shards.

``make_output`` (also used by test_report_publish.py) writes a realistic, complete
output directory: every config, sharded like the pipeline writes it, plus
run_summary.json.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from counterpoint.rl import signed
from counterpoint.rl.stats import problem_stats_row
from counterpoint.schemas import records
from counterpoint.schemas.records import content_id, dumps, make_reject, messages, rows_to_table, trajectory_id

N_SHARDS = 4
# The configs a pipeline run writes (records.OUTPUT_TABLES also holds the export configs).
PIPELINE_CONFIGS = (*records.OUTCOME_CONFIGS, *records.STEP_CONFIGS)
SYSTEM = "Solve the problem step by step. Put the final answer in \\boxed{}."
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 1024, "n": 8}


# ---------------------------------------------------------------------------
# Realistic rows for every config
# ---------------------------------------------------------------------------
def make_rows(n_problems: int = 6, samples: int = 4) -> Dict[str, List[dict]]:
    rows: Dict[str, List[dict]] = {c: [] for c in PIPELINE_CONFIGS}
    for p in range(n_problems):
        pid = f"gsm8k-{p:05d}"
        a, b = 3 + p, 4 + 2 * p
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        gold = str(a + b)
        prompt = messages(("system", SYSTEM), ("user", question))
        trajs = []
        for s in range(samples):
            correct = (s + p) % 3 != 0
            answer = gold if correct else str(a + b + 1 + s)
            steps = [
                f"Tom starts with {a} apples.\n",
                f"He buys {b} more apples.\n",
                f"So he has {a} + {b} = {answer} apples.\n",
                f"The answer is \\boxed{{{answer}}}.",
            ]
            completion = "".join(steps)
            t = {
                "id": trajectory_id(pid, s),
                "problem_id": pid,
                "sample_index": s,
                "source": "gsm8k",
                "question": question,
                "prompt": prompt,
                "completion": completion,
                "steps": steps,
                "num_steps": len(steps),
                "final_answer": answer,
                "gold_answer": gold,
                "verdict": records.VERDICT_CORRECT if correct else records.VERDICT_INCORRECT,
                "verdict_reason": None if correct else "answer_mismatch",
                "verifier": "math_verify",
                "verifier_version": "0.9.0",
                "finish_reason": "stop",
                "num_prompt_tokens": 40 + p,
                "num_generated_tokens": 50 + 3 * s + p,
                "cumulative_logprob": -10.5 - s,
                "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "sampling": dumps(SAMPLING),
                "seed": 1234 + 100 * p + s,
                "duplicate_of": None,
                "process_error": False,
            }
            trajs.append(t)
            rows["unpaired"].append({
                "id": t["id"],
                "problem_id": pid,
                "sample_index": s,
                "prompt": prompt,
                "completion": messages(("assistant", completion)),
                "label": correct,
            })
        rows["trajectories"].extend(signed.with_signed_columns(trajs))
        rows["problem_stats"].append(problem_stats_row({"problem_id": pid}, trajs))
        good = [t for t in trajs if t["verdict"] == records.VERDICT_CORRECT]
        bad = [t for t in trajs if t["verdict"] == records.VERDICT_INCORRECT]
        for g in good[:1]:
            for r in bad[:2]:
                rows["preferences"].append({
                    "id": content_id("outcome", g["id"], r["id"]),
                    "problem_id": pid,
                    "prompt": prompt,
                    "chosen": messages(("assistant", g["completion"])),
                    "rejected": messages(("assistant", r["completion"])),
                    "pair_type": records.PAIR_OUTCOME,
                    "chosen_sample_index": g["sample_index"],
                    "rejected_sample_index": r["sample_index"],
                    "step_index": None,
                    "prefix": None,
                    "labeler": None,
                    "metadata": dumps({"policy": "all_pairs"}),
                })
        for r in bad:
            rows["preferences"].append({
                "id": content_id("first_pit", r["id"]),
                "problem_id": pid,
                "prompt": prompt,
                "chosen": messages(("assistant", "".join(r["steps"][:2]) + f"So he has {a} + {b} = {gold} apples.\n")),
                "rejected": messages(("assistant", "".join(r["steps"][:3]))),
                "pair_type": records.PAIR_FIRST_PIT,
                "chosen_sample_index": None,
                "rejected_sample_index": r["sample_index"],
                "step_index": 2,
                "prefix": "".join(r["steps"][:2]),
                "labeler": "omegaprm",
                "metadata": dumps({"q_before": 0.75, "q_after": 0.0, "rollouts": 16}),
            })
        for t in trajs:
            correct = t["verdict"] == records.VERDICT_CORRECT
            mc = [0.875, 0.75, 1.0 if correct else 0.0, 1.0 if correct else 0.0]
            labels = [v > 0 for v in mc]
            rows["step_labels"].append({
                "id": t["id"],
                "problem_id": pid,
                "sample_index": t["sample_index"],
                "prompt": question,
                "completions": t["steps"],
                "labels": labels,
                "mc_values": mc,
                "mc_measured": [True, True, True, True],
                "n_rollouts_per_step": [8, 8, 0, 0],
                "first_error_index": None if correct else 2,
                "first_error_source": None if correct else "search",
                "n_rollouts": 16,
                "labeler": "omegaprm",
                "labeler_params": dumps({"c_puct": 0.125, "alpha": 0.5, "beta": 0.9, "rollouts": 16}),
            })
            if correct:
                continue
            prev = 0.9
            for k, (step, q) in enumerate(zip(t["steps"], mc)):
                rows["step_values"].append({
                    "id": f"{t['id']}/k{k}",
                    "problem_id": pid,
                    "sample_index": t["sample_index"],
                    "step_index": k,
                    "step": step,
                    "q_value": q,
                    "advantage": q - prev,
                    "n_rollouts": 16,
                    "n_correct": int(round(q * 16)),
                    "is_first_pit": k == 2,
                    "within_noise": abs(q - prev) < 0.2,
                    "best_of_k_value": min(1.0, q + 0.1),
                    "labeler": "omegaprm",
                    "measured": True,
                })
                prev = q
        if p % 3 == 0:
            rows["rejects"].append(make_reject(
                stage="verify", reason="unparseable_answer", problem_id=pid, scope="row",
                detail="no \\boxed{} in completion", payload={"sample_index": samples}, key=samples))
    rows["rejects"].append(make_reject(
        stage="validate_problem", reason="empty_question", problem_id="gsm8k-99999", scope="problem",
        payload={"question": ""}))
    return rows


def shard_path(out: Path, config: str, i: int, n: int) -> Path:
    return out / "data" / config / f"train-{i:05d}-of-{n:05d}.parquet"


def write_config(out: Path, config: str, rows: List[dict], n_shards: int = N_SHARDS,
                 schema: Optional[pa.Schema] = None) -> List[Path]:
    """Writes ``rows`` as ``n_shards`` contiguous zstd shards (a single 0-row shard when empty)."""
    d = out / "data" / config
    d.mkdir(parents=True, exist_ok=True)
    if not rows:
        n_shards = 1
    per = -(-len(rows) // n_shards) if rows else 0
    paths = []
    for i in range(n_shards):
        chunk = rows[i * per:(i + 1) * per]
        if schema is None:
            table = rows_to_table(config, chunk)
        else:
            spec = records.table(config)
            table = pa.Table.from_pylist([spec.conform(r) for r in chunk], schema=schema)
        p = shard_path(out, config, i, n_shards)
        pq.write_table(table, p, compression="zstd")
        paths.append(p)
    return paths


def run_summary(rows: Dict[str, List[dict]], configs: List[str]) -> dict:
    trajs = rows.get("trajectories", [])
    verdicts = [t["verdict"] for t in trajs]
    reasons: Dict[str, int] = {}
    for r in rows.get("rejects", []):
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {
        "counts": {
            "problems_in": len({t["problem_id"] for t in trajs}) + 1,
            "problems_with_output": len({t["problem_id"] for t in trajs}),
            "problems_rejected": 1,
            "trajectories": len(trajs),
            "correct": verdicts.count("correct"),
            "incorrect": verdicts.count("incorrect"),
            "unknown": verdicts.count("unknown"),
            "pairs": len(rows.get("preferences", [])),
            "rejects": len(rows.get("rejects", [])),
            "generated_tokens": sum(t["num_generated_tokens"] for t in trajs),
        },
        "provenance": {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "sampling": SAMPLING,
            "verifier": {"name": "math_verify", "version": "0.9.0", "timeout_s": 5},
            "labeler": {"name": "omegaprm", "version": "0.1.0", "params": {"c_puct": 0.125, "rollouts": 16}},
            "counterpoint_version": "0.1.0",
        },
        "configs": configs,
        "timing": {
            "wall_s": 812.5,
            "stages": {
                "read": {"wall_s": 1.2},
                "sample": {"wall_s": 600.0, "generated_tokens": sum(t["num_generated_tokens"] for t in trajs)},
                "verify": {"wall_s": 30.0},
                "label": {"wall_s": 170.0, "generated_tokens": 5000},
                "write": 11.3,
            },
        },
        "rejects_by_reason": reasons,
    }


def make_output(out: Path, *, n_problems: int = 6, samples: int = 4, n_shards: int = N_SHARDS,
                configs=PIPELINE_CONFIGS, rows=None) -> Dict[str, List[dict]]:
    rows = rows if rows is not None else make_rows(n_problems, samples)
    for c in configs:
        write_config(out, c, rows[c], n_shards)
    (out / "run_summary.json").write_text(json.dumps(run_summary(rows, list(configs)), indent=2))
    return rows


def read_config(out: Path, config: str) -> List[dict]:
    got = []
    for p in sorted((out / "data" / config).glob("*.parquet")):
        got.extend(pq.read_table(p).to_pylist())
    return got


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gate():
    from counterpoint import validation

    return validation


def test_suites_are_derived_from_the_table_specs(gate):
    from counterpoint.validation import suites

    for name, spec in records.OUTPUT_TABLES.items():
        shard = gate.build_suite(name)
        cross = gate.build_suite(name, "config")
        types = {(e.expectation_type, tuple(e.meta["counterpoint"]["columns"])) for e in shard.expectations}
        for c in spec.columns:
            assert (("expect_column_values_to_not_be_null", (c.name,)) in types) == (not c.nullable)
            assert (("expect_column_values_to_be_in_set", (c.name,)) in types) == (c.value_set is not None)
        for a, b in spec.must_differ:
            assert ("expect_column_pair_values_to_differ", (a, b)) in types
        for a, b in spec.equal_length:
            assert ("expect_column_pair_values_to_be_equal", (a, b)) in types
        for low, high in spec.ordered:
            assert ("expect_column_pair_values_a_to_be_greater_than_b", (low, high)) in types
        for parts, total in spec.sums:
            assert ("expect_column_pair_values_to_be_equal", (*parts, total)) in types
        cross_types = {(e.expectation_type, tuple(e.meta["counterpoint"]["columns"])) for e in cross.expectations}
        for c in spec.columns:
            assert (("expect_column_values_to_be_unique", (c.name,)) in cross_types) == c.unique
        for g in spec.unique_together:
            assert ("expect_compound_columns_to_be_unique", tuple(g)) in cross_types
        # No row-count floor unless the run sets one: an empty config is thin, not defective.
        assert not any(t == "expect_table_row_count_to_be_between" for t, _ in cross_types)
        floored = gate.build_suite(name, "config", min_rows=3).expectations
        (floor,) = [e for e in floored if e.expectation_type == "expect_table_row_count_to_be_between"]
        assert (floor.min_value, floor.meta["counterpoint"]["rule"]) == (3, "min_rows")
        assert set(suites.derived_columns(spec)) <= {
            *(suites.len_column(c) for pair in spec.equal_length for c in pair),
            *(suites.json_column(c) for pair in spec.must_differ for c in pair),
            *(suites.sum_column(total) for _, total in spec.sums),
        }
    lists = {e.column: (e.min_value, e.max_value) for e in gate.build_suite("step_labels").expectations
             if e.expectation_type == "expect_column_list_elements_to_be_between"}
    assert lists == {"mc_values": (0.0, 1.0), "n_rollouts_per_step": (0, None)}
    assert records.PROBLEM_STATS.ordered and records.PROBLEM_STATS.sums  # the rules above are exercised


def test_clean_output_passes(tmp_path, gate):
    out = tmp_path / "out"
    rows = make_rows(n_problems=60, samples=8)
    rows["rejects"] = []  # a config that may be empty: one 0-row shard
    make_output(out, rows=rows)
    n_rows = sum(len(v) for v in rows.values())
    t0 = time.monotonic()
    report = gate.validate_output(str(out))
    elapsed = time.monotonic() - t0
    print(f"\n[validation] {n_rows} rows, {len(rows)} configs x {N_SHARDS} shards: "
          f"validate_output took {elapsed:.2f}s (report.elapsed_s={report.elapsed_s:.2f}s, "
          f"runner={report.runner_options})")
    timing = json.loads((out / "validation" / "summary.json").read_text())["timing"]
    print(f"[validation]   beam pipeline {timing['pipeline_s']:.2f}s, data docs {timing['data_docs_s']:.2f}s")
    for c, s in report.configs.items():
        print(f"[validation]   {c}: rows={s['rows']} shards={s['n_shards']} worker_s={s['elapsed_s']:.2f}")
    assert report.success, report.message()
    assert report.failures == [] and report.quarantined == []
    assert not (out / "quarantine").exists()
    summary = json.loads((out / "validation" / "summary.json").read_text())
    assert summary["success"] is True
    assert set(summary["configs"]) == set(PIPELINE_CONFIGS)
    assert summary["configs"]["trajectories"]["rows"] == 480
    assert summary["configs"]["trajectories"]["n_shards"] == N_SHARDS
    assert summary["configs"]["rejects"]["rows"] == 0
    assert (out / "validation" / "data_docs" / "index.html").exists()
    assert not (out / "validation" / ".parts").exists()
    assert "passed" in report.message()


def _rewrite(out: Path, config: str) -> None:
    for p in (out / "data" / config).glob("*.parquet"):
        p.unlink()


def _plant_defects(out: Path) -> Dict[str, str]:
    rows = make_output(out, n_problems=8, samples=4)

    # trajectories: a null prompt in shard 1 (written with a relaxed schema, as a buggy writer
    # would: pyarrow refuses nulls in a non-nullable field), and shard 3 truncated.
    traj = copy.deepcopy(rows["trajectories"])
    per = len(traj) // N_SHARDS
    null_prompt_id = traj[per + 2]["id"]
    traj[per + 2]["prompt"] = None
    relaxed = pa.schema([f.with_nullable(True) for f in records.TRAJECTORIES.arrow_schema()],
                        metadata=records.TRAJECTORIES.arrow_schema().metadata)
    _rewrite(out, "trajectories")
    paths = write_config(out, "trajectories", traj, schema=relaxed)
    raw = paths[3].read_bytes()
    paths[3].write_bytes(raw[: len(raw) // 2])

    # unpaired: the first row of shard 0 duplicated into shard 2 (same id, other sample_index,
    # so only id uniqueness is violated, and only across shards).
    unp = rows["unpaired"]
    per = len(unp) // N_SHARDS
    dup = dict(unp[0], sample_index=99)
    chunks = [unp[:per], unp[per:2 * per], unp[2 * per:3 * per] + [dup], unp[3 * per:]]
    _rewrite(out, "unpaired")
    for i, chunk in enumerate(chunks):
        pq.write_table(rows_to_table("unpaired", chunk), shard_path(out, "unpaired", i, N_SHARDS),
                       compression="zstd")

    # step_values: required, but the run produced a single 0-row shard.
    _rewrite(out, "step_values")
    write_config(out, "step_values", [])

    # preferences: chosen == rejected in shard 2 (message lists compared whole).
    prefs = copy.deepcopy(rows["preferences"])
    per = -(-len(prefs) // N_SHARDS)
    same_id = prefs[2 * per]["id"]
    prefs[2 * per]["chosen"] = copy.deepcopy(prefs[2 * per]["rejected"])
    # step_labels: an MC value of 1.5 (shard 0) and labels shorter than completions (shard 3).
    sl = copy.deepcopy(rows["step_labels"])
    per_sl = -(-len(sl) // N_SHARDS)
    mc_id = sl[1]["id"]
    sl[1]["mc_values"] = [0.5, 1.5, 1.0, 1.0]
    len_id = sl[3 * per_sl]["id"]
    sl[3 * per_sl]["labels"] = sl[3 * per_sl]["labels"][:-1]
    for c, data in (("preferences", prefs), ("step_labels", sl)):
        _rewrite(out, c)
        write_config(out, c, data)
    return {"null_prompt_id": null_prompt_id, "dup_id": dup["id"], "same_id": same_id, "mc_id": mc_id,
            "len_id": len_id}


def test_planted_defects_each_caught_by_the_right_expectation(tmp_path, gate):
    out = tmp_path / "out"
    ids = _plant_defects(out)
    report = gate.validate_output(str(out), min_rows={"step_values": 1})
    msg = report.message()
    print("\n" + msg)
    assert not report.success

    got = {(f.config, f.reason, f.expectation_type, f.column, f.shard) for f in report.failures}
    sp = lambda c, i: f"data/{c}/train-{i:05d}-of-{N_SHARDS:05d}.parquet"  # noqa: E731
    expected = {
        ("preferences", "expectation_failed", "expect_column_pair_values_to_differ", "chosen,rejected",
         sp("preferences", 2)),
        ("step_labels", "expectation_failed", "expect_column_list_elements_to_be_between", "mc_values",
         sp("step_labels", 0)),
        ("step_labels", "expectation_failed", "expect_column_pair_values_to_be_equal", "completions,labels",
         sp("step_labels", 3)),
        ("trajectories", "expectation_failed", "expect_column_values_to_not_be_null", "prompt",
         sp("trajectories", 1)),
        ("trajectories", "corrupt_shard", None, None, sp("trajectories", 3)),
        ("unpaired", "expectation_failed", "expect_column_values_to_be_unique", "id", None),
        ("step_values", "expectation_failed", "expect_table_row_count_to_be_between", None, None),
    }
    assert got == expected, msg

    def one(**kw):
        (f,) = [f for f in report.failures if all(getattr(f, k) == v for k, v in kw.items())]
        return f

    f = one(expectation_type="expect_column_pair_values_to_differ")
    assert f.rule == "must_differ" and f.unexpected_count == 1
    assert f.examples[0]["id"] == ids["same_id"] and f.examples[0]["chosen"] == f.examples[0]["rejected"]
    f = one(expectation_type="expect_column_list_elements_to_be_between")
    assert f.unexpected_count == 1 and f.examples[0]["id"] == ids["mc_id"] and 1.5 in f.examples[0]["mc_values"]
    f = one(expectation_type="expect_column_pair_values_to_be_equal")
    assert f.rule == "equal_length" and f.examples[0]["id"] == ids["len_id"]
    f = one(expectation_type="expect_column_values_to_not_be_null")
    assert f.examples[0]["id"] == ids["null_prompt_id"] and f.examples[0]["prompt"] is None
    f = one(reason="corrupt_shard")
    assert "Arrow" in f.detail or "Parquet" in f.detail or "parquet" in f.detail, f.detail
    f = one(expectation_type="expect_column_values_to_be_unique")
    assert f.level == "config" and f.unexpected_count == 2
    assert {e["id"] for e in f.examples} == {ids["dup_id"]}
    assert {e["__shard"] for e in f.examples} == {sp("unpaired", 0), sp("unpaired", 2)}
    f = one(expectation_type="expect_table_row_count_to_be_between")
    assert f.config == "step_values" and f.rule == "min_rows"

    # the message names config, expectation and example rows
    for needle in ("preferences", "expect_column_pair_values_to_differ", ids["same_id"], "corrupt_shard",
                   "expect_column_values_to_be_unique", ids["dup_id"]):
        assert needle in msg

    # failing shards moved out of data/ (both holders of the duplicated id), the rest stay
    moved = {q["from"] for q in report.quarantined}
    assert moved == {sp("preferences", 2), sp("step_labels", 0), sp("step_labels", 3), sp("trajectories", 1),
                     sp("trajectories", 3), sp("unpaired", 0), sp("unpaired", 2)}
    for rel in moved:
        assert not (out / rel).exists()
        q = out / "quarantine" / rel.split("/")[1] / Path(rel).name
        assert q.exists() and Path(str(q) + ".failures.json").exists()
    assert (out / sp("trajectories", 0)).exists() and (out / sp("unpaired", 1)).exists()

    summary = json.loads((out / "validation" / "summary.json").read_text())
    assert summary["success"] is False
    assert summary["configs"]["rejects"]["success"] is True
    assert summary["configs"]["trajectories"]["success"] is False
    fe = summary["configs"]["preferences"]["failed_expectations"]
    assert fe[0]["expectation_type"] == "expect_column_pair_values_to_differ" and len(fe[0]["examples"]) <= 5
    assert {s["shard"]: s["quarantined_to"] for s in summary["configs"]["trajectories"]["shards"]}[
        sp("trajectories", 3)] == f"quarantine/trajectories/train-00003-of-{N_SHARDS:05d}.parquet"
    docs = out / "validation" / "data_docs"
    assert (docs / "index.html").exists()
    html = "".join(p.read_text(errors="ignore") for p in docs.glob("validations/**/*.html"))
    assert "counterpoint.preferences.shard" in (docs / "index.html").read_text()
    assert "differ" in html


def test_missing_config_counts_as_zero_rows(tmp_path, gate):
    out = tmp_path / "out"
    rows = make_rows(n_problems=2, samples=2)
    # the run says it wrote preferences and rejects, but neither has a file
    make_output(out, rows=rows, configs=["trajectories", "unpaired"])
    summ = json.loads((out / "run_summary.json").read_text())
    summ["configs"] = ["trajectories", "preferences", "unpaired", "rejects"]
    (out / "run_summary.json").write_text(json.dumps(summ))
    runner = ["--runner=FnApiRunner", "--direct_num_workers=1"]
    # Without a floor, a config without rows (here: without files) is a thin run and passes.
    thin = gate.validate_output(str(out), quarantine=False, runner_options=runner)
    assert thin.success, thin.message()
    assert thin.configs["preferences"]["rows"] == 0 and thin.configs["preferences"]["n_shards"] == 0
    report = gate.validate_output(str(out), quarantine=False, runner_options=runner, min_rows={"preferences": 1})
    assert [(f.config, f.expectation_type, f.rule) for f in report.failures] == [
        ("preferences", "expect_table_row_count_to_be_between", "min_rows")]
    assert report.configs["preferences"]["min_rows"] == 1
    assert report.configs["rejects"]["success"] and report.configs["rejects"]["n_shards"] == 0
    assert report.quarantined == []
    assert "preferences" in report.message() and "expect_table_row_count_to_be_between" in report.message()


def test_on_a_cluster_the_gate_is_a_job_of_the_runs_runner_and_options():
    """A Dataflow run validates on Dataflow with the run's options (a disabling flag included), under its own
    job name, without Counterpoint's own options; a local run validates in-process."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint.pipelines.generate_corpus import resolve_config  # noqa: F401  (registers CounterpointOptions)
    from counterpoint.validation import gate

    run_options = PipelineOptions([
        "--runner=DataflowRunner", "--project=cp-test", "--region=us-central1", "--job_name=corpus",
        "--temp_location=gs://bucket/tmp", "--no_use_public_ips", "--experiments=a", "--experiments=b",
        "--cp_num_problems=100"])
    options = gate._gate_options(None, run_options, on_job_runner=True).get_all_options(drop_default=True)
    assert {k: options.get(k) for k in ("runner", "project", "region", "job_name", "temp_location",
                                        "use_public_ips", "experiments")} == {
        "runner": "DataflowRunner", "project": "cp-test", "region": "us-central1", "job_name": "corpus-validate",
        "temp_location": "gs://bucket/tmp", "use_public_ips": False, "experiments": ["a", "b"]}
    assert not [k for k in options if k.startswith("cp_")]
    local = gate._gate_options(None, run_options).get_all_options(drop_default=True)
    assert local["runner"] == "FnApiRunner" and local["project"] == "cp-test"


# ---------------------------------------------------------------------------
# Verdicts bound to content: shard fingerprints and the run's written counts
# ---------------------------------------------------------------------------
FAST = ["--runner=FnApiRunner", "--direct_num_workers=1"]
SMALL = ("trajectories", "preferences", "unpaired")


def disk_shards(out: Path, config: str) -> List[dict]:
    """What the gate must record for ``config``: each shard's path under data/, size, sha256 and rows."""
    import hashlib

    from counterpoint import storage

    layout = storage.DatasetLayout(str(out))
    got = []
    for uri in layout.shards(config):
        data = Path(uri).read_bytes()
        got.append({"path": storage.relpath(uri, layout.data_dir), "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "rows": pq.read_metadata(uri).num_rows})
    return got


def recorded_shards(out: Path, config: str) -> List[dict]:
    summary = json.loads((out / "validation" / "summary.json").read_text())
    return [{k: s[k] for k in ("path", "size", "sha256", "rows")} for s in summary["configs"][config]["shards"]]


def written_counts(out: Path, configs=SMALL) -> Dict[str, Dict[str, int]]:
    from counterpoint import storage

    layout = storage.DatasetLayout(str(out))
    return {c: {"shards": len(layout.shards(c)), "rows": layout.read_table(c).num_rows} for c in configs}


def expected_failures(report) -> set:
    return {(f.config, f.expectation_type, f.rule, f.kwargs.get("min_value"), f.detail.split(":")[0])
            for f in report.failures if f.expectation_type in ("expect_written_shards_present",
                                                               "expect_written_rows_present")}


def test_shard_fingerprint_is_size_and_sha256():
    import hashlib

    from counterpoint.validation import shard_fingerprint

    assert shard_fingerprint(b"") == (0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    data = b"PAR1 some bytes PAR1"
    assert shard_fingerprint(data) == (len(data), hashlib.sha256(data).hexdigest())


def test_gate_records_each_shards_size_hash_and_rows(tmp_path, gate):
    from counterpoint import storage

    out = tmp_path / "out"
    rows = make_output(out, n_problems=3, samples=4, n_shards=2, configs=SMALL)
    report = gate.validate_output(storage.DatasetLayout(str(out)), runner_options=FAST)
    assert report.success, report.message()
    for c in SMALL:
        on_disk = disk_shards(out, c)
        assert recorded_shards(out, c) == on_disk and len(on_disk) == 2
        assert sum(s["rows"] for s in on_disk) == len(rows[c])
    assert recorded_shards(out, "preferences")[0]["path"] == "preferences/train-00000-of-00002.parquet"
    summary = json.loads((out / "validation" / "summary.json").read_text())
    # the shard's path relative to the output folder (push compares it) is kept alongside
    assert [s["shard"] for s in summary["configs"]["unpaired"]["shards"]] == [
        f"data/unpaired/train-0000{i}-of-00002.parquet" for i in range(2)]
    assert summary["configs"]["unpaired"]["expected"] is None and summary["expected"] == {}


def test_same_row_count_tampering_changes_only_that_shards_hash(tmp_path, gate):
    out = tmp_path / "out"
    make_output(out, n_problems=3, samples=4, n_shards=2, configs=SMALL)
    assert gate.validate_output(str(out), runner_options=FAST).success
    before = {c: recorded_shards(out, c) for c in SMALL}
    # chosen and rejected swapped in shard 0: same rows, same schema, still valid -- other content
    target = shard_path(out, "preferences", 0, 2)
    table = pq.read_table(target).to_pylist()
    for r in table:
        r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    pq.write_table(rows_to_table("preferences", table), target, compression="zstd")
    report = gate.validate_output(str(out), runner_options=FAST)
    assert report.success, report.message()
    after = {c: recorded_shards(out, c) for c in SMALL}
    assert after["trajectories"] == before["trajectories"] and after["unpaired"] == before["unpaired"]
    assert after["preferences"][1] == before["preferences"][1]
    old, new = before["preferences"][0], after["preferences"][0]
    assert (new["path"], new["rows"]) == (old["path"], old["rows"]) and new["sha256"] != old["sha256"]
    assert after["preferences"] == disk_shards(out, "preferences")


def test_written_counts_pass_when_everything_the_run_wrote_is_there(tmp_path, gate):
    out = tmp_path / "out"
    make_output(out, n_problems=3, samples=4, n_shards=2, configs=SMALL)
    counts = written_counts(out)
    report = gate.validate_output(str(out), runner_options=FAST, expected=counts)
    assert report.success, report.message()
    summary = json.loads((out / "validation" / "summary.json").read_text())
    assert {c: summary["configs"][c]["expected"] for c in SMALL} == counts
    assert summary["expected"] == counts


def test_a_deleted_shard_or_missing_rows_fail_against_the_written_counts(tmp_path, gate):
    out = tmp_path / "out"
    rows = make_output(out, n_problems=3, samples=4, n_shards=2, configs=SMALL)
    counts = written_counts(out)
    shard_path(out, "trajectories", 1, 2).unlink()  # a deleted shard
    for p in (out / "data" / "unpaired").glob("*.parquet"):  # a config with no shard left
        p.unlink()
    prefs = pq.read_table(shard_path(out, "preferences", 0, 2)).to_pylist()
    pq.write_table(rows_to_table("preferences", prefs[:-1]), shard_path(out, "preferences", 0, 2),
                   compression="zstd")  # one row fewer, same shards
    report = gate.validate_output(str(out), runner_options=FAST, quarantine=False, expected=counts)
    assert not report.success
    traj_left = pq.read_metadata(shard_path(out, "trajectories", 0, 2)).num_rows
    assert 0 < traj_left < len(rows["trajectories"])
    assert expected_failures(report) == {
        ("trajectories", "expect_written_shards_present", "written_shards", 2, "observed_value=1"),
        ("trajectories", "expect_written_rows_present", "written_rows", len(rows["trajectories"]),
         f"observed_value={traj_left}"),
        ("unpaired", "expect_written_shards_present", "written_shards", 2, "observed_value=0"),
        ("unpaired", "expect_written_rows_present", "written_rows", len(rows["unpaired"]), "observed_value=0"),
        ("preferences", "expect_written_rows_present", "written_rows", len(rows["preferences"]),
         f"observed_value={len(rows['preferences']) - 1}"),
    }
    assert len(report.failures) == 5 and all(f.level == "config" and f.shard is None for f in report.failures)
    assert "expect_written_shards_present" in report.message()
    # without the run's counts the same folder passes: the counts are what bind the verdict to the run
    assert gate.validate_output(str(out), runner_options=FAST, quarantine=False).success


def test_a_quarantined_shard_fails_the_next_validation_with_the_same_counts(tmp_path, gate):
    out = tmp_path / "out"
    rows = make_output(out, n_problems=3, samples=4, n_shards=2, configs=SMALL)
    counts = written_counts(out)
    bad = shard_path(out, "preferences", 1, 2)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    first = gate.validate_output(str(out), runner_options=FAST, expected=counts)
    assert {(f.config, f.reason, f.expectation_type) for f in first.failures} == {
        ("preferences", "corrupt_shard", None),
        ("preferences", "expectation_failed", "expect_written_rows_present")}
    assert [q["from"] for q in first.quarantined] == ["data/preferences/train-00001-of-00002.parquet"]
    assert not bad.exists()
    second = gate.validate_output(str(out), runner_options=FAST, expected=counts)
    kept = pq.read_metadata(shard_path(out, "preferences", 0, 2)).num_rows
    assert expected_failures(second) == {
        ("preferences", "expect_written_shards_present", "written_shards", 2, "observed_value=1"),
        ("preferences", "expect_written_rows_present", "written_rows", len(rows["preferences"]),
         f"observed_value={kept}")}
    assert len(second.failures) == 2 and second.quarantined == []
    assert second.configs["trajectories"]["success"] and second.configs["unpaired"]["success"]


def test_count_failures_is_a_pure_rule():
    from counterpoint.validation.cross_shard import count_failures

    assert count_failures("preferences", 2, 10, None, {"shards": 2, "rows": 10}) == []
    assert count_failures("preferences", 3, 12, None, {"shards": 2, "rows": 10}) == []  # more is not "lost"
    assert count_failures("rejects", 0, 0, None, {"shards": 0, "rows": 0}) == []
    assert count_failures("rejects", 1, 0, None, {"shards": 1, "rows": 0}) == []
    (f,) = count_failures("preferences", 0, 0, None, {"shards": 0, "rows": 4})[:1]
    assert {k: f[k] for k in ("config", "shard", "expectation_type", "rule", "level", "kwargs")} == {
        "config": "preferences", "shard": None, "expectation_type": "expect_written_shards_present",
        "rule": "written_shards", "level": "config", "kwargs": {"min_value": 1}}
    assert [f["expectation_type"] for f in count_failures("preferences", 1, 3, 5, {"shards": 2, "rows": 4})] == [
        "expect_table_row_count_to_be_between", "expect_written_shards_present", "expect_written_rows_present"]


def test_validate_dataset_composite_in_a_pipeline(tmp_path):
    """``ValidateDataset`` alone, asserted in-pipeline: shard fingerprints, a cross-shard duplicate,
    and a config the run wrote that has no shard."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from counterpoint import storage
    from counterpoint.validation.cross_shard import ValidateDataset
    from counterpoint.validation.shard import shard_task

    out = tmp_path / "out"
    rows = make_rows(n_problems=3, samples=4)
    unp = rows["unpaired"]
    write_config(out, "unpaired", unp + [dict(unp[0], sample_index=99)], n_shards=2)  # id in both shards
    write_config(out, "preferences", rows["preferences"], n_shards=2)
    layout = storage.DatasetLayout(str(out))
    configs = ["unpaired", "preferences", "trajectories"]
    tasks = [shard_task(c, uri, layout) for c in configs for uri in layout.shards(c)]
    expected = {"trajectories": {"shards": 1, "rows": len(rows["trajectories"])}}

    def fingerprints(c):
        return tuple((s["path"], s["size"], s["sha256"], s["rows"]) for s in disk_shards(out, c))

    def project(result):
        return (result["config"],
                tuple((s["path"], s["size"], s["sha256"], s["rows"]) for s in result["shards"]),
                tuple(sorted((f["expectation_type"], f["detail"]) for f in result["failures"])),
                tuple(result["offending_shards"]))

    with TestPipeline(runner="FnApiRunner") as p:
        results = (p | "ListShards" >> beam.Create(tasks)
                   | "ValidateDataset" >> ValidateDataset(configs, expected=expected)
                   | "Project" >> beam.Map(project))
        assert_that(results, equal_to([
            ("unpaired", fingerprints("unpaired"),
             (("expect_column_values_to_be_unique", "1 value(s) held by more than one row"),),
             ("data/unpaired/train-00000-of-00002.parquet", "data/unpaired/train-00001-of-00002.parquet")),
            ("preferences", fingerprints("preferences"), (), ()),
            ("trajectories", (),
             (("expect_written_rows_present",
               f"observed_value=0: the run wrote {len(rows['trajectories'])} row(s); rerun it or restore the "
               "missing shard(s)"),
              ("expect_written_shards_present",
               "observed_value=0: the run wrote 1 shard(s); rerun it or restore the missing shard(s)")),
             ()),
        ]))
