"""Beam-free corpus building blocks (counterpoint.corpus) and the record specs (schemas.records).

Rows are compared as whole dicts, and every row a helper makes is pushed
through its config's Arrow schema (``rows_to_table``) and read back unchanged.
"""

from __future__ import annotations

import hashlib
import json
from itertools import product

import pyarrow as pa
import pytest

import dataclasses

from counterpoint import corpus, schemas
from counterpoint.state import ProblemState
from counterpoint.generators.base import Completion, GenerationRequest, SamplingParams
from counterpoint.schemas import records
from counterpoint.rl.signed import SIGNED_COLUMNS
from counterpoint.verifiers.base import correct, incorrect, unknown

PROBLEM = {
    "problem_id": "unit-7",
    "source": "unit",
    "question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
    "gold_answer": "5",
    "answer_type": "numeric",
    "difficulty": 2,
    "metadata": None,
}
SYSTEM = "Solve step by step."
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, stop=("\n\n\n",))
SAMPLING_JSON = '{"max_tokens": 64, "stop": ["\\n\\n\\n"], "temperature": 0.7, "top_p": 0.9}'
PROMPT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROBLEM["question"]}]


def _expected_seed(run_seed: int, problem_id: str) -> int:
    blob = json.dumps(["sample", run_seed, problem_id], sort_keys=True, ensure_ascii=False).encode()
    return int(hashlib.sha256(blob).hexdigest()[:8], 16) & 0x7FFFFFFF


def _roundtrip(config, rows):
    table = schemas.rows_to_table(config, rows)
    assert table.schema == schemas.table(config).arrow_schema()
    return table.to_pylist()


# ---------------------------------------------------------------------------
# Problem state (counterpoint.state): typed, and never changed in place
# ---------------------------------------------------------------------------
def test_new_state_is_empty_for_every_config():
    state = corpus.new_state(PROBLEM)
    assert state == ProblemState(problem=PROBLEM)
    assert state.to_json() == {
        "trajectories": [], "preferences": [], "unpaired": [], "step_labels": [], "step_values": [], "corrections": [],
        "critical_tokens": [],
        "rejects": [], "problem": PROBLEM, "failed": False, "resumed": False, "stats": {},
    }
    assert [state.rows(c) for c in corpus.ROW_CONFIGS] == [[]] * 8
    assert state.problem_id == "unit-7"
    # Lists are per state, never shared.
    other = corpus.new_state(PROBLEM)
    assert other.trajectories is not state.trajectories


def test_fail_clears_rows_records_a_problem_reject_and_leaves_the_input_alone():
    earlier = schemas.make_reject(stage="verify", reason="verifier_timeout", problem_id="unit-7", scope="row", key=3)
    state = corpus.new_state(PROBLEM).evolve(
        **{c: [{"id": f"{c}-row"}] for c in corpus.ROW_CONFIGS if c != "rejects"}, rejects=[earlier]
    ).add_stats(generated_tokens=10)
    before = state.to_json()

    out = state.fail(stage="sample", reason="generation_failed", detail="engine said no")
    assert state.to_json() == before  # a new state; the input is untouched
    payload = json.dumps({"question": PROBLEM["question"]}, ensure_ascii=False)
    expected_reject = {
        "id": schemas.content_id("sample", "generation_failed", "unit-7", None, payload),
        "problem_id": "unit-7",
        "stage": "sample",
        "reason": "generation_failed",
        "detail": "engine said no",
        "scope": "problem",
        "payload": payload,
    }
    assert out.to_json() == {
        "trajectories": [], "preferences": [], "unpaired": [], "step_labels": [], "step_values": [], "corrections": [],
        "critical_tokens": [],
        "rejects": [earlier, expected_reject], "problem": PROBLEM, "failed": True, "resumed": False,
        "stats": {"generated_tokens": 10},
    }
    assert expected_reject == schemas.make_reject(
        stage="sample", reason="generation_failed", problem_id="unit-7", scope="problem",
        detail="engine said no", payload={"question": PROBLEM["question"]})
    assert _roundtrip("rejects", out.rejects) == out.rejects


def test_fail_truncates_the_question_in_the_payload():
    long_q = "How much is " + "1 + " * 400 + "1?"
    state = corpus.new_state(PROBLEM | {"question": long_q}).fail(stage="label", reason="labeling_failed", detail="x")
    (reject,) = state.rejects
    assert json.loads(reject["payload"]) == {"question": long_q[:500]}


def test_fail_rejects_an_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'sampling'"):
        corpus.new_state(PROBLEM).fail(stage="sampling", reason="x", detail="y")


def test_add_stats_accumulates_into_a_new_state():
    state = corpus.new_state(PROBLEM)
    one = state.add_stats(generated_tokens=5, seconds_sample=0.5)
    two = one.add_stats(generated_tokens=7)
    assert state.stats == {} and one.stats == {"generated_tokens": 5, "seconds_sample": 0.5}
    assert two.stats == {"generated_tokens": 12, "seconds_sample": 0.5}


def test_evolve_refuses_unknown_fields_and_states_round_trip_through_json():
    state = corpus.new_state(PROBLEM).evolve(trajectories=[{"id": "t"}], resumed=True)
    with pytest.raises(TypeError, match="no field"):
        state.evolve(trajectory=[])
    assert ProblemState.from_json(json.loads(json.dumps(state.to_json()))) == state
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.failed = True


# ---------------------------------------------------------------------------
# Requests and trajectory rows
# ---------------------------------------------------------------------------
def test_request_seed_is_stable_and_distinct_per_problem():
    assert corpus.request_seed(0, "unit-7") == corpus.request_seed(0, "unit-7") == _expected_seed(0, "unit-7")
    assert corpus.request_seed(0, "p-1") == 1709828892  # pinned: changing it invalidates every cache
    ids = [f"gsm8k-{i}" for i in range(500)]
    seeds = [corpus.request_seed(3, pid) for pid in ids]
    assert len(set(seeds)) == len(ids)
    assert all(0 <= s < 2 ** 31 for s in seeds)
    assert seeds == [_expected_seed(3, pid) for pid in ids]
    # The run seed changes every problem's seed.
    assert all(corpus.request_seed(4, pid) != s for pid, s in zip(ids, seeds))


def test_sample_request():
    req = corpus.sample_request(PROBLEM, system_prompt=SYSTEM, n=4, params=PARAMS, run_seed=11)
    assert req == GenerationRequest(
        messages=(("system", SYSTEM), ("user", PROBLEM["question"])), n=4, params=PARAMS,
        seed=_expected_seed(11, "unit-7"), continue_final_message=False, request_id="unit-7")
    for no_system in (None, ""):
        bare = corpus.sample_request(PROBLEM, system_prompt=no_system, n=1, params=PARAMS, run_seed=11)
        assert bare.messages == (("user", PROBLEM["question"]),)
        assert bare.seed == req.seed
    assert corpus.prompt_messages(SYSTEM, "q?") == [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": "q?"}]
    assert corpus.prompt_messages(None, "q?") == [{"role": "user", "content": "q?"}]


COMPLETIONS = [
    Completion("Step 1: 2 + 3 = 5.\n\nThe answer is 5.", num_tokens=14, finish_reason="stop",
               cumulative_logprob=-3.5, num_prompt_tokens=31),
    Completion("Step 1: 2 + 3 = 6.\n\nThe answer is 6.", num_tokens=14, finish_reason="stop",
               cumulative_logprob=-7.25, num_prompt_tokens=31),
    Completion("Step 1: 2 + 3", num_tokens=6, finish_reason="length", cumulative_logprob=None,
               num_prompt_tokens=31),
    Completion("", num_tokens=0, finish_reason="cancelled", num_prompt_tokens=31),
]


def _base_row(i, completion, steps, finish_reason, tokens, logprob, seed):
    return {
        "id": f"unit-7/s{i}", "problem_id": "unit-7", "sample_index": i, "source": "unit",
        "question": PROBLEM["question"], "prompt": PROMPT, "completion": completion, "steps": steps,
        "num_steps": len(steps), "final_answer": None, "gold_answer": "5", "verdict": "unknown",
        "verdict_reason": "not_verified", "verifier": "", "verifier_version": "",
        "finish_reason": finish_reason, "num_prompt_tokens": 31, "num_generated_tokens": tokens,
        "cumulative_logprob": logprob, "model_id": "scripted/test", "sampling": SAMPLING_JSON, "seed": seed,
        "duplicate_of": None, "process_error": False,
    }


def _trajectories(segmentation="paragraph"):
    req = corpus.sample_request(PROBLEM, system_prompt=SYSTEM, n=len(COMPLETIONS), params=PARAMS, run_seed=5)
    return req, corpus.trajectory_rows(PROBLEM, COMPLETIONS, request=req, model_id="scripted/test",
                                       segmentation=segmentation)


def test_trajectory_rows_whole_records():
    req, rows = _trajectories()
    seed = _expected_seed(5, "unit-7")
    assert req.seed == seed
    assert rows == [
        _base_row(0, COMPLETIONS[0].text, ["Step 1: 2 + 3 = 5.\n\n", "The answer is 5."], "stop", 14, -3.5, seed),
        _base_row(1, COMPLETIONS[1].text, ["Step 1: 2 + 3 = 6.\n\n", "The answer is 6."], "stop", 14, -7.25, seed),
        _base_row(2, "Step 1: 2 + 3", ["Step 1: 2 + 3"], "length", 6, None, seed),
        # An engine finish reason outside the vocabulary is recorded as "abort".
        _base_row(3, "", [], "abort", 0, None, seed),
    ]
    spec = schemas.table("trajectories")
    # The signed columns (reward, advantages) are per problem: the write stage adds them (rl.signed).
    unsigned = [c for c in spec.column_names if c not in SIGNED_COLUMNS]
    for row in rows:
        assert sorted(row) == sorted(unsigned)
        assert spec.conform(row) == row | dict.fromkeys(SIGNED_COLUMNS)
    assert _roundtrip("trajectories", rows) == [r | dict.fromkeys(SIGNED_COLUMNS) for r in rows]


def test_trajectory_rows_use_the_segmentation_mode():
    _, rows = _trajectories("line")
    assert rows[0]["steps"] == ["Step 1: 2 + 3 = 5.\n\n", "The answer is 5."]
    _, rows = _trajectories("step")
    assert rows[0]["steps"] == ["Step 1: 2 + 3 = 5.\n\nThe answer is 5."] and rows[0]["num_steps"] == 1
    for row in rows:
        assert "".join(row["steps"]) == row["completion"]


def test_apply_verdicts_fills_only_the_verdict_fields():
    _, rows = _trajectories()
    before = [dict(r) for r in rows]
    verdicts = [correct("5"), incorrect("answer_mismatch", "6"), incorrect("truncated", None),
                unknown("verifier_timeout", None)]
    new = corpus.apply_verdicts(rows, verdicts, verifier_name="numeric", verifier_version="1.2")
    assert rows == before  # the input rows are left as they were
    rows = new
    expected_fields = [("5", "correct", None), ("6", "incorrect", "answer_mismatch"),
                       (None, "incorrect", "truncated"), (None, "unknown", "verifier_timeout")]
    for row, old, (final, verdict, reason) in zip(rows, before, expected_fields):
        assert row == old | {"final_answer": final, "verdict": verdict, "verdict_reason": reason,
                             "verifier": "numeric", "verifier_version": "1.2"}
    assert _roundtrip("trajectories", rows) == [r | dict.fromkeys(SIGNED_COLUMNS) for r in rows]


# ---------------------------------------------------------------------------
# Outcome pairs and unpaired rows
# ---------------------------------------------------------------------------
def _traj(i, verdict, tokens, *, finish="stop", text=None, reason="auto"):
    if reason == "auto":
        reason = {"correct": None, "incorrect": "answer_mismatch", "unknown": "verifier_timeout"}[verdict]
    text = f"Solution {i}.\n\nThe answer is {i}." if text is None else text
    return _base_row(i, text, [text], finish, tokens, None, 99) | {
        "verdict": verdict, "verdict_reason": reason, "final_answer": str(i),
        "verifier": "numeric", "verifier_version": "1"}


def _state(trajectories):
    return corpus.new_state(PROBLEM).evolve(trajectories=trajectories)


def _pairs(state):
    return [(p["chosen_sample_index"], p["rejected_sample_index"]) for p in state.preferences]


def _grid_state():
    # correct: s0 (30 tokens), s2 (10), s5 (10); incorrect: s1, s3, s4.
    return _state([
        _traj(0, "correct", 30), _traj(1, "incorrect", 20), _traj(2, "correct", 10),
        _traj(3, "incorrect", 20), _traj(4, "incorrect", 25, reason="no_final_answer"), _traj(5, "correct", 10),
    ])


def test_outcome_pairs_round_robin_with_cap_and_whole_records():
    state = _grid_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=4, strategy="round-robin")
    # Correct ordered shortest first (ties by sample index): s2, s5, s0; incorrect s1, s3, s4.
    # Diagonals: (2,1) (5,3) (0,4), then (2,3) ... — every chosen and rejected once before any repeats.
    assert _pairs(state) == [(2, 1), (5, 3), (0, 4), (2, 3)]
    t = {r["sample_index"]: r for r in state.trajectories}
    first = state.preferences[0]
    assert first == {
        "id": "unit-7/outcome/2-1",
        "problem_id": "unit-7",
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": t[2]["completion"]}],
        "rejected": [{"role": "assistant", "content": t[1]["completion"]}],
        "pair_type": "outcome",
        "chosen_source": "policy",
        "chosen_sample_index": 2,
        "rejected_sample_index": 1,
        "step_index": None,
        "prefix": None,
        "labeler": None,
        "metadata": '{"max_pairs_per_problem": 4, "policy": "round_robin", "rejected_verdict_reason": "answer_mismatch"}',
    }
    assert json.loads(state.preferences[2]["metadata"])["rejected_verdict_reason"] == "no_final_answer"
    assert _roundtrip("preferences", state.preferences) == state.preferences


def test_outcome_pairs_are_distinct_and_cover_the_grid_without_a_cap():
    state = _grid_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=100, strategy="round-robin")
    pairs = _pairs(state)
    assert len(pairs) == len(set(pairs)) == 9
    assert set(pairs) == set(product([0, 2, 5], [1, 3, 4]))
    assert pairs[:3] == [(2, 1), (5, 3), (0, 4)]
    assert len({p["id"] for p in state.preferences}) == 9


@pytest.mark.parametrize("cap", [0, -1])
def test_outcome_cap_zero_means_no_pairs_but_unpaired_rows(cap):
    state = _grid_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=cap)
    assert state.preferences == []
    assert len(state.unpaired) == 6


def test_shortest_correct_is_chosen_first():
    state = _state([_traj(0, "correct", 50), _traj(1, "correct", 12), _traj(2, "incorrect", 5),
                    _traj(3, "correct", 12)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=1)
    assert _pairs(state) == [(1, 2)]
    state = _state([_traj(0, "correct", 50), _traj(1, "correct", 12), _traj(2, "incorrect", 5),
                    _traj(3, "correct", 12)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=3)
    assert _pairs(state) == [(1, 2), (3, 2), (0, 2)]


def _truncation_state():
    return _state([
        # A "correct" verdict on a truncated sample must never be a positive.
        _traj(0, "correct", 3, finish="length"),
        _traj(1, "correct", 40),
        _traj(2, "incorrect", 64, finish="length", reason="truncated"),
        _traj(3, "incorrect", 30),
    ])


def test_truncated_is_never_chosen_and_rejected_only_when_allowed():
    state = _truncation_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=10, truncated_as_rejected=True)
    assert _pairs(state) == [(1, 2), (1, 3)]
    assert json.loads(state.preferences[0]["metadata"])["rejected_verdict_reason"] == "truncated"

    state = _truncation_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=10, truncated_as_rejected=False)
    assert _pairs(state) == [(1, 3)]
    # Unpaired keeps every verified sample; truncated ones are labelled False.
    assert [(u["sample_index"], u["label"]) for u in state.unpaired] == [(0, False), (1, True), (2, False), (3, False)]


def test_truncated_as_rejected_is_the_default():
    state = _truncation_state()
    state = corpus.outcome_rows(state, max_pairs_per_problem=10)
    assert _pairs(state) == [(1, 2), (1, 3)]


def test_unknown_verdicts_are_never_paired_nor_unpaired():
    state = _state([_traj(0, "unknown", 5), _traj(1, "correct", 20), _traj(2, "unknown", 7, reason="verifier_crash"),
                    _traj(3, "incorrect", 9), _traj(4, "unknown", 1, reason="unparsable_answer")])
    state = corpus.outcome_rows(state, max_pairs_per_problem=10)
    assert _pairs(state) == [(1, 3)]
    assert [u["sample_index"] for u in state.unpaired] == [1, 3]
    # Only unknowns: nothing at all.
    state = _state([_traj(0, "unknown", 5), _traj(1, "unknown", 6)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=10)
    assert state.preferences == [] and state.unpaired == []


def test_identical_chosen_and_rejected_text_is_skipped_without_using_the_cap():
    same = "Step 1: 2 + 3 = 5.\n\nThe answer is 5."
    rows = [_traj(0, "correct", 10, text=same),
            _traj(1, "incorrect", 10, text=same, finish="length", reason="truncated"),
            _traj(2, "incorrect", 12, text="Step 1: 2 + 3 = 6.\n\nThe answer is 6.")]
    state = _state([dict(r) for r in rows])
    state = corpus.outcome_rows(state, max_pairs_per_problem=1)
    assert _pairs(state) == [(0, 2)]
    state = _state([dict(r) for r in rows])
    state = corpus.outcome_rows(state, max_pairs_per_problem=10)
    assert _pairs(state) == [(0, 2)]
    for pair in state.preferences:
        assert pair["chosen"] != pair["rejected"]
    # Only identical pairs: none at all.
    state = _state([dict(r) for r in rows[:2]])
    state = corpus.outcome_rows(state, max_pairs_per_problem=10)
    assert state.preferences == []


def test_no_pairs_without_both_sides():
    state = _state([_traj(0, "correct", 5), _traj(1, "correct", 6)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=4)
    assert state.preferences == [] and [u["label"] for u in state.unpaired] == [True, True]
    state = _state([_traj(0, "incorrect", 5), _traj(1, "incorrect", 6)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=4)
    assert state.preferences == [] and [u["label"] for u in state.unpaired] == [False, False]


def test_unpaired_rows_whole_records():
    state = _state([_traj(0, "correct", 5), _traj(1, "incorrect", 6), _traj(2, "unknown", 7)])
    state = corpus.outcome_rows(state, max_pairs_per_problem=4)
    assert state.unpaired == [
        {"id": "unit-7/s0", "problem_id": "unit-7", "sample_index": 0, "prompt": PROMPT,
         "completion": [{"role": "assistant", "content": "Solution 0.\n\nThe answer is 0."}], "label": True},
        {"id": "unit-7/s1", "problem_id": "unit-7", "sample_index": 1, "prompt": PROMPT,
         "completion": [{"role": "assistant", "content": "Solution 1.\n\nThe answer is 1."}], "label": False},
    ]
    assert _roundtrip("unpaired", state.unpaired) == state.unpaired


def test_outcome_rows_append_to_existing_step_pairs_in_a_new_state():
    step_pair = {"id": "unit-7/step/0-1", "pair_type": "step"}
    before = _grid_state().evolve(preferences=[step_pair])
    state = corpus.outcome_rows(before, max_pairs_per_problem=2)
    assert before.preferences == [step_pair] and before.unpaired == []
    assert state.preferences[0] is step_pair
    assert [p["id"] for p in state.preferences[1:]] == ["unit-7/outcome/2-1", "unit-7/outcome/5-3"]


def test_rows_for_conforms_every_state_row():
    a, b = _grid_state(), _grid_state()
    a = corpus.outcome_rows(a, max_pairs_per_problem=1)
    b = b.evolve(trajectories=[b.trajectories[0] | {"extra_debug_field": 1}] + b.trajectories[1:])
    rows = list(corpus.rows_for("trajectories", [a, b]))
    assert len(rows) == 12 and all("extra_debug_field" not in r for r in rows)
    assert list(corpus.rows_for("preferences", [a, b])) == a.preferences
    bad = _grid_state()
    del bad.trajectories[0]["seed"]
    with pytest.raises(KeyError, match="'seed'"):
        list(corpus.rows_for("trajectories", [bad]))


# ---------------------------------------------------------------------------
# schemas.records
# ---------------------------------------------------------------------------
def test_conform_raises_key_error_naming_the_missing_column():
    spec = schemas.table("preferences")
    row = {"id": "p/outcome/0-1", "problem_id": "p", "prompt": PROMPT, "chosen": [], "rejected": [],
           "pair_type": "outcome", "rejected_sample_index": 1}
    # Missing nullable columns become None, unknown keys are dropped.
    assert spec.conform(row | {"debug": 1}) == row | {
        "chosen_source": None, "chosen_sample_index": None, "step_index": None, "prefix": None, "labeler": None, "metadata": None}
    for required in ("id", "prompt", "rejected_sample_index"):
        broken = {k: v for k, v in row.items() if k != required}
        with pytest.raises(KeyError) as excinfo:
            spec.conform(broken)
        message = excinfo.value.args[0]
        assert f"preferences row lacks required column {required!r}" in message


def test_table_lookup():
    assert schemas.table("problems") is records.PROBLEMS
    assert schemas.table("trajectories") is records.TRAJECTORIES
    with pytest.raises(KeyError) as excinfo:
        schemas.table("pairs")
    assert "'pairs'" in excinfo.value.args[0] and "'preferences'" in excinfo.value.args[0]
    with pytest.raises(KeyError, match="no column 'nope'"):
        records.TRAJECTORIES.column("nope")
    assert records.TRAJECTORIES.column("seed").type == pa.int64()
    assert list(schemas.OUTPUT_TABLES) == ["trajectories", "problem_stats", "preferences", "unpaired", "step_labels",
                                           "step_values", "rejects", "trl_stepwise", "openrlhf_prm", "step_dpo",
                                           "weighted_pairs", "correction_sft", "correction_dpo", "grpo_prompts",
                                           "grpo_prompts_control", "verl_rl", "verl_rl_control", "npo_forget",
                                           "npo_retain", "grouped_negatives", "sft_positives",
                                           "token_weighted_pairs", "corrections", "critical_tokens"]
    assert set(records.OUTCOME_CONFIGS) | set(records.STEP_CONFIGS) | set(schemas.exports.EXPORT_CONFIGS) | set(
        records.CORRECTION_CONFIGS) | {"critical_tokens"} == set(schemas.OUTPUT_TABLES)


REALISTIC_ROWS = {
    "problems": {
        "problem_id": "gsm8k-12", "source": "gsm8k", "question": "Ann has 3 pens and buys 4. How many?",
        "gold_answer": "7", "answer_type": "numeric", "difficulty": 2, "metadata": '{"extra": {}}',
    },
    "trajectories": _base_row(1, "Step 1: 3 + 4 = 7.\n\nThe answer is 7.",
                              ["Step 1: 3 + 4 = 7.\n\n", "The answer is 7."], "stop", 14, -2.5, 2 ** 40) | {
        "final_answer": "7", "verdict": "correct", "verdict_reason": None, "verifier": "numeric",
        "verifier_version": "1", "reward": 1.0, "group_mean_reward": 0.75, "grpo_advantage": 0.5773502691896258,
        "rloo_advantage": 0.33333333333333337, "duplicate_of": "gsm8k-12/s0", "process_error": False},
    "problem_stats": {
        "id": "gsm8k-12", "problem_id": "gsm8k-12", "source": "gsm8k", "prompt": PROMPT, "gold_answer": "7", "verifier": "numeric",
        "verifier_version": "1", "samples": 5, "correct": 3, "incorrect": 1, "unknown": 1, "truncated": 0,
        "pass_rate": 0.75, "pass_rate_lo": 0.3006418, "pass_rate_hi": 0.9544127, "mean_generated_tokens": 41.2,
        "verdict_reasons": [{"reason": "answer_mismatch", "count": 1}, {"reason": "verifier_timeout", "count": 1}],
        "distinct_final_answers": 3, "most_common_wrong_answer": "6", "most_common_wrong_answer_count": 1,
    },
    "preferences": {
        "id": "gsm8k-12/step/1-3", "problem_id": "gsm8k-12", "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "Step 1: 3 + 4 = 7.\n\nStep 2: done."}],
        "rejected": [{"role": "assistant", "content": "Step 1: 3 + 4 = 7.\n\nStep 2: 7 - 1 = 6."}],
        "pair_type": "step", "chosen_source": "policy", "chosen_sample_index": None, "rejected_sample_index": 3,
        "step_index": 1, "prefix": "Step 1: 3 + 4 = 7.\n\n", "labeler": "omegaprm",
        "metadata": '{"q_values": [0.75, 0.0]}',
    },
    "unpaired": {
        "id": "gsm8k-12/s3", "problem_id": "gsm8k-12", "sample_index": 3, "prompt": PROMPT,
        "completion": [{"role": "assistant", "content": "The answer is 6."}], "label": False,
    },
    "step_labels": {
        "id": "gsm8k-12/s3", "problem_id": "gsm8k-12", "sample_index": 3, "prompt": "Ann has 3 pens...",
        "completions": ["Step 1: 3 + 4 = 7.", "Step 2: 7 - 1 = 6.", "The answer is 6."],
        "labels": [True, False, False], "mc_values": [0.75, 0.0, 0.0], "mc_measured": [True, True, True],
        "n_rollouts_per_step": [8, 8, 0], "first_error_index": 1, "first_error_source": "search",
        "n_rollouts": 16, "labeler": "omegaprm", "labeler_params": '{"k": 8}',
        "judge_first_error_index": 1, "judge_agrees": True, "claim_overruled": False,
        "n_format_failure_rollouts": 3, "n_truncated_rollouts": 1,
    },
    "step_values": {
        "id": "gsm8k-12/s3/1", "problem_id": "gsm8k-12", "sample_index": 3, "step_index": 1,
        "step": "Step 2: 7 - 1 = 6.\n\n", "q_value": 0.0, "advantage": -0.75, "n_rollouts": 8, "n_correct": 0,
        "is_first_pit": True, "within_noise": False, "best_of_k_value": None, "labeler": "mc", "measured": True,
        "n_format_failure_rollouts": 2, "n_truncated_rollouts": 0,
    },
    "rejects": schemas.make_reject(stage="read", reason="malformed_json", problem_id=None, scope="problem",
                                   detail="line 3: Expecting value", payload={"line": 3}, key="f.jsonl:3"),
    "trl_stepwise": {
        "id": "gsm8k-12/s3", "prompt": "Ann has 3 pens...", "completions": ["Step 1: 3 + 4 = 7.", "The answer is 6."],
        "labels": [True, False],
    },
    "openrlhf_prm": {
        "id": "gsm8k-12/s3", "problem_id": "gsm8k-12", "sample_index": 3,
        "input": "Ann has 3 pens...\nStep 1: 3 + 4 = 7. ки\nThe answer is 6. ки", "label": ["+", "-"],
        "soft_label": [0.75, 0.0], "placeholder": "ки",
    },
    "step_dpo": {
        "id": "gsm8k-12/step/1-3", "problem_id": "gsm8k-12",
        "prompt": PROMPT + [{"role": "assistant", "content": "Step 1: 3 + 4 = 7.\n\n"}],
        "chosen": [{"role": "assistant", "content": "Step 2: done."}],
        "rejected": [{"role": "assistant", "content": "Step 2: 7 - 1 = 6."}],
        "prefix": "Step 1: 3 + 4 = 7.\n\n", "step_index": 1, "chosen_sample_index": None,
        "rejected_sample_index": 3, "labeler": "omegaprm", "metadata": '{"q_values": [0.75, 0.0]}',
    },
    "weighted_pairs": {
        "id": "gsm8k-12/step/1-3", "problem_id": "gsm8k-12", "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "Step 1: 3 + 4 = 7.\n\nStep 2: done."}],
        "rejected": [{"role": "assistant", "content": "Step 1: 3 + 4 = 7.\n\nStep 2: 7 - 1 = 6."}],
        "pair_type": "step", "chosen_source": "policy", "chosen_sample_index": None, "rejected_sample_index": 3,
        "step_index": 1, "prefix": "Step 1: 3 + 4 = 7.\n\n", "labeler": "omegaprm",
        "metadata": '{"q_values": [0.75, 0.0]}', "weight": 0.75, "weight_source": "advantage",
    },
}
_WRONG_TURN = [{"role": "assistant", "content": "Step 1: 3 + 4 = 8.\n\nWait, that step is wrong."}]
REALISTIC_ROWS.update({  # issue 22
    "corrections": {
        "id": "c0ffee", "problem_id": "gsm8k-12", "negative_sample_index": 3, "prompt": PROMPT,
        "prefix": "Step 1: 3 + 4 = 8.", "wrong_step_index": 0, "wrong_step_source": "claim",
        "wrong_step": "Step 1: 3 + 4 = 8.\n\n", "cue": "Wait, that step is wrong.",
        "correction": "\n\n3 + 4 = 7. The answer is 7.", "final_answer": "7", "verdict": "correct",
        "verdict_reason": None, "kept": True, "flip_class": "revise", "sample_index": 1, "seed": 77,
        "finish_reason": "stop", "num_generated_tokens": 12, "model_id": "m", "corrector": "engine",
        "problem_attempted": 4, "problem_recovered": 1, "problem_recovery_rate": 0.25,
        "problem_recovery_lo": 0.05, "problem_recovery_hi": 0.7,
    },
    "correction_sft": {
        "id": "c0ffee", "problem_id": "gsm8k-12", "prompt": PROMPT + _WRONG_TURN,
        "completion": [{"role": "assistant", "content": "\n\n3 + 4 = 7. The answer is 7."}],
        "wrong_step_index": 0, "wrong_step_source": "claim", "flip_class": "revise",
        "cue": "Wait, that step is wrong.",
    },
    "correction_dpo": {
        "id": "d00d", "problem_id": "gsm8k-12", "prompt": PROMPT + _WRONG_TURN,
        "chosen": [{"role": "assistant", "content": "\n\n3 + 4 = 7. The answer is 7."}],
        "rejected": [{"role": "assistant", "content": "\n\nSo 8 - 1 = 7... The answer is 8."}],
        "wrong_step_index": 0, "wrong_step_source": "claim", "flip_class": "revise",
        "cue": "Wait, that step is wrong.",
    },
})
REALISTIC_ROWS["token_weighted_pairs"] = {  # issue 21
    "id": "gsm8k-12/s2/critical", "problem_id": "gsm8k-12", "prompt": PROMPT,
    "chosen": [{"role": "assistant", "content": "3 + 4 = 7. The answer is 7."}],
    "rejected": [{"role": "assistant", "content": "3 + 4 = 8. The answer is 8."}],
    "rejected_token_ids": [33, 1232, 216, 34, 1789], "rejected_weights": [0.1, 0.1, 0.2, 1.0, 0.3],
    "chosen_sample_index": 0, "rejected_sample_index": 2, "score_form": "log_ratio", "top_critical_positions": [3, 4],
    "rollout_critical_position": 3, "first_wrong_step": 0, "contrast_models": '{"base": "m"}', "model_id": "m",
    "tokenizer": "m",
}
# critical_tokens is issue 21 part A's config: a row of its own there wins (setdefault).
REALISTIC_ROWS.setdefault("critical_tokens", {
    "id": "gsm8k-12/s2/critical", "problem_id": "gsm8k-12", "sample_index": 2, "prompt": PROMPT,
    "completion": "3 + 4 = 8.", "token_ids": [33, 1232, 216, 34], "tokens": ["3", " +", " 4", " ="],
    "logp_positive": [-0.1, -0.2, -0.3, -2.5], "logp_negative": [-0.1, -0.2, -0.3, -0.4],
    "contrastive_score": [0.0, 0.0, 0.0, -2.1], "token_weights": [0.1, 0.1, 0.1, 1.0], "score_form": "log_ratio",
    "top_critical_positions": [3], "first_wrong_step": 0, "step_token_starts": [0],
    "rollout_critical_position": 3, "rollout_critical_step": 0, "contrast_in_first_wrong_step": True,
    "search_rollouts": 8, "banned_success_rate": 0.75, "contrast_ban_success_rate": 0.75, "random_ban_position": 1,
    "random_ban_success_rate": 0.0, "ban_rollouts": 4, "contrast_models": '{"base": "m"}', "model_id": "m",
})


def test_realistic_rows_cover_every_config():
    # The RL exports' rows are asserted whole, built from a planted run, in tests/unit/dataset/test_rl_exports.py.
    rl_exports = {"grpo_prompts", "grpo_prompts_control", "verl_rl", "verl_rl_control", "npo_forget", "npo_retain",
                  "grouped_negatives", "sft_positives"}
    assert set(REALISTIC_ROWS) == (set(schemas.OUTPUT_TABLES) - rl_exports) | {"problems"}
    for config, row in REALISTIC_ROWS.items():
        assert sorted(row) == sorted(schemas.table(config).column_names), config


@pytest.mark.parametrize("config", sorted(REALISTIC_ROWS))
def test_rows_to_table_round_trip(config):
    row = REALISTIC_ROWS[config]
    spec = schemas.table(config)
    table = schemas.rows_to_table(config, [row, row | {"id": row.get("id", "") + "b"}] if "id" in row else [row])
    assert table.schema == spec.arrow_schema()
    assert table.schema.metadata == {b"counterpoint.config": config.encode()}
    assert table.to_pylist()[0] == row
    assert table.num_rows == (2 if "id" in row else 1)
    # Nullable columns may be left out: they come back as None.
    nullable = [c.name for c in spec.columns if c.nullable]
    slim = {k: v for k, v in row.items() if k not in nullable}
    assert schemas.rows_to_table(config, [slim]).to_pylist() == [slim | {k: None for k in nullable}]


def test_rows_to_table_rejects_wrong_types_and_empty_is_typed():
    with pytest.raises(pa.ArrowInvalid):
        schemas.rows_to_table("trajectories", [REALISTIC_ROWS["trajectories"] | {"sample_index": "one"}])
    empty = schemas.rows_to_table("rejects", [])
    assert empty.num_rows == 0 and empty.schema == records.REJECTS.arrow_schema()


def test_make_reject_whole_record_and_id_stability():
    kw = dict(stage="verify", reason="verifier_crash", problem_id="p-1", scope="row",
              detail=RuntimeError("worker died"), payload={"sample_index": 2}, key=2)
    r = schemas.make_reject(**kw)
    payload = '{"sample_index": 2}'
    blob = json.dumps(["verify", "verifier_crash", "p-1", 2, payload], sort_keys=True, ensure_ascii=False)
    assert r == {
        "id": hashlib.sha256(blob.encode()).hexdigest()[:16],
        "problem_id": "p-1", "stage": "verify", "reason": "verifier_crash",
        "detail": "worker died", "scope": "row", "payload": payload,
    }
    assert schemas.make_reject(**kw) == r
    # The id is a function of (stage, reason, problem, key, payload), not of the free-text detail.
    assert schemas.make_reject(**kw | {"detail": "other words"})["id"] == r["id"]
    variants = [kw | {"stage": "label"}, kw | {"reason": "verifier_timeout"}, kw | {"problem_id": "p-2"},
                kw | {"key": 3}, kw | {"payload": {"sample_index": 3}}, kw | {"problem_id": None}]
    ids = {schemas.make_reject(**v)["id"] for v in variants}
    assert len(ids) == len(variants) and r["id"] not in ids


def test_make_reject_truncates_and_handles_none():
    r = schemas.make_reject(stage="read", reason="too_long", problem_id=None, scope="problem",
                            detail="d" * 5000, payload={"question": "q" * 9000})
    assert r["detail"] == "d" * 2000
    assert len(r["payload"]) == 4000 and r["payload"].startswith('{"question": "qqq')
    bare = schemas.make_reject(stage="write", reason="x", problem_id=None, scope="row")
    assert bare["detail"] is None and bare["payload"] is None and bare["problem_id"] is None


def test_make_reject_validates_the_stage():
    for stage in records.STAGES:
        assert schemas.make_reject(stage=stage, reason="r", problem_id="p", scope="row")["stage"] == stage
    with pytest.raises(ValueError, match="unknown stage 'verifying'"):
        schemas.make_reject(stage="verifying", reason="r", problem_id="p", scope="row")
    with pytest.raises(ValueError, match="unknown stage 'Read'"):
        schemas.make_reject(stage="Read", reason="r", problem_id="p", scope="row")
