"""``critical_tokens`` rows and rejects (counterpoint.critical.rows) without an engine: scores only."""

import pytest

from counterpoint.critical.config import CriticalTokensConfig
from counterpoint.critical.rows import CriticalInput, critical_rows, step_of, step_token_starts
from counterpoint.critical.scorer import ContrastScorer
from counterpoint.generators.base import SamplingParams

from _critical import make_contrast_dir


def test_step_token_starts_keep_a_straddling_token_with_the_earlier_step():
    offsets = [(0, 4), (4, 6), (6, 9), (9, 12)]  # token 1 spans chars 4-6 and step 2 starts at char 5
    assert step_token_starts(offsets, ["abcd", "e", "fghijkl"]) == [0, 1, 2]
    assert step_token_starts(offsets, ["abcdef", "ghi", "jkl"]) == [0, 2, 3]
    assert [step_of([0, 2, 3], p) for p in range(4)] == [0, 0, 1, 2]


def _traj(i, completion, verdict="incorrect", duplicate_of=None):
    from counterpoint.segmentation import segment

    return {"problem_id": "p", "sample_index": i, "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
            "completion": completion, "steps": segment(completion), "verdict": verdict, "duplicate_of": duplicate_of}


def test_scores_only_rows_and_every_dropped_trajectory_is_a_reject(tmp_path):
    scorer = ContrastScorer(str(make_contrast_dir(tmp_path / "cm")), None, max_length=60).load()
    cfg = CriticalTokensConfig(enabled=True, contrast_models="cm", search=False, ban_rollouts=0, top_k=2)
    trajs = [_traj(0, "2 + 3 = 6.\n\nThe answer is 6."), _traj(1, "The answer is 5.", "correct"),
             _traj(2, "2 + 3 = 6.\n\nThe answer is 6.", duplicate_of="p/s0"), _traj(3, "  "),
             _traj(4, "word " * 80)]
    problem = {"problem_id": "p", "question": "What is 2 + 3?", "gold_answer": "5"}
    labels = [{"problem_id": "p", "sample_index": 0, "first_error_index": 0}]
    (out,) = critical_rows([CriticalInput(problem, trajs, labels)], scorer, None, None, cfg,
                           sampling=SamplingParams(), system_prompt=None, model_id="m")
    assert sorted(r["reason"] for r in out.rejects) == ["critical_duplicate", "critical_empty_completion",
                                                       "critical_too_long"]
    assert {r["stage"] for r in out.rejects} == {"critical"} and {r["scope"] for r in out.rejects} == {"row"}
    (row,) = out.rows
    ids = scorer.tokenizer("2 + 3 = 6.\n\nThe answer is 6.", add_special_tokens=False)["input_ids"]
    assert row["token_ids"] == ids and row["first_wrong_step"] == 0 and row["step_token_starts"][0] == 0
    assert row["search_rollouts"] == 0 and row["rollout_critical_position"] is None
    assert row["banned_success_rate"] is row["random_ban_success_rate"] is row["contrast_ban_success_rate"] is None
    assert 0 <= row["random_ban_position"] < len(ids) and row["ban_rollouts"] == 0 and row["model_id"] == "m"
    lo, hi = row["step_token_starts"][0], row["step_token_starts"][1]
    assert row["contrast_in_first_wrong_step"] == (lo <= row["top_critical_positions"][0] < hi)
    assert len(row["top_critical_positions"]) == 2
    assert out.stats == {"critical_duplicate": 1, "critical_empty_completion": 1, "critical_too_long": 1,
                         "critical_rows": 1, "critical_search_rollouts": 0, "critical_found": 0}
    from counterpoint.schemas import records

    assert records.rows_to_table("critical_tokens", out.rows).num_rows == 1  # the schema takes the row
    assert records.rows_to_table("rejects", out.rejects).num_rows == 3
    with pytest.raises(ValueError, match="contrast models"):
        CriticalTokensConfig(enabled=True)
