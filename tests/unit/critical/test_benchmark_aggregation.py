"""``benchmarks/critical_tokens.py``: its aggregation and table on planted ``critical_tokens`` rows.

The end-to-end benchmark needs the real engine and ``counterpoint critical-tokens``; what it computes from
the rows is checked here (loaded by file path: ``benchmarks`` is not an installed package).
"""

from __future__ import annotations

import importlib.util

from _paths import TESTS

SPEC = importlib.util.spec_from_file_location("critical_tokens_benchmark",
                                              TESTS.parent / "benchmarks" / "critical_tokens.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def _row(i, **kw):
    base = {"id": f"p/s{i}", "score_form": "full_distribution", "top_critical_positions": [0],
            "step_token_starts": [0, 4],
            "rollout_critical_position": None, "rollout_critical_step": None, "first_wrong_step": None,
            "contrast_in_first_wrong_step": None, "search_rollouts": 0, "banned_success_rate": None,
            "contrast_ban_success_rate": None, "random_ban_success_rate": None, "ban_rollouts": 8}
    return {**base, **kw}


ROWS = [
    _row(0, top_critical_positions=[5], rollout_critical_position=5, rollout_critical_step=1, first_wrong_step=1,
         contrast_in_first_wrong_step=True, search_rollouts=16, banned_success_rate=0.625,
         contrast_ban_success_rate=0.625, random_ban_success_rate=0.125),
    _row(1, top_critical_positions=[1], rollout_critical_position=6, rollout_critical_step=1, first_wrong_step=0,
         contrast_in_first_wrong_step=True, search_rollouts=24, banned_success_rate=0.375,
         contrast_ban_success_rate=0.0, random_ban_success_rate=0.125),
    _row(2, contrast_ban_success_rate=0.25, random_ban_success_rate=0.0),
]


def test_aggregate_planted_rows():
    f = bench.aggregate(ROWS, critical_seconds=30.0, contrast_seconds=100.04)
    assert (f["rows"], f["found"], f["searched"]) == (3, 2, 2)
    assert (f["rollout_ban_success"], f["n_rollout_ban_success"]) == (0.5, 2)
    assert (f["contrast_ban_success"], f["n_contrast_ban_success"]) == (0.875 / 3, 3)
    assert (f["random_ban_success"], f["n_random_ban_success"]) == (0.25 / 3, 3)
    # row 0: same token (5), same step; row 1: contrast top 1 is in step 0, the rollout token 6 in step 1
    assert (f["agree_token"], f["agree_step"]) == (0.5, 0.5)
    # row 0's rollout step is its first wrong step, row 1's is not
    assert (f["rollout_in_first_wrong_step"], f["contrast_in_first_wrong_step"]) == (0.5, 1.0)
    # search 16 + 24, ban tests 3 + 3 + 2 of 8 rollouts each = 104 rollouts over 2 critical tokens
    assert (f["rollouts"], f["rollouts_per_critical_token"]) == (104, 52.0)
    assert (f["critical_tokens_seconds"], f["contrast_models_seconds"], f["seconds_per_critical_token"]) == \
        (30.0, 100.04, 15.0)
    assert (f["rollout_minus_random"], f["n_rollout_minus_random"]) == ((0.5 + 0.25) / 2, 2)


def test_table_puts_the_three_bans_side_by_side():
    text = bench.table(bench.aggregate(ROWS, critical_seconds=30.0))
    lines = text.splitlines()
    assert lines[:5] == ["| token banned | success after the ban | trajectories |", "|---|---|---|",
                         "| rollout-found (critical) | 0.500 | 2 |", "| contrast-found (top score) | 0.292 | 3 |",
                         "| random position | 0.083 | 3 |"]
    assert "| seconds per critical token | 15.000 |" in lines and "| contrast = rollout, same step | 0.500 |" in lines


def test_no_critical_token_found():
    f = bench.aggregate([ROWS[2]], critical_seconds=3.0)
    assert f["found"] == 0 and f["seconds_per_critical_token"] is None and f["rollouts_per_critical_token"] is None
    assert "| rollout-found (critical) | n/a | 0 |" in bench.table(f)


def test_the_run_config_of_the_benchmark_is_valid(tmp_path):
    from counterpoint.config import from_dict

    data = tmp_path / "test.jsonl"
    data.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    args = bench.argparse.Namespace(data=str(data), problems=1, model="embedded", max_tokens=64, samples=2, k=2,
                                    work=str(tmp_path), source="gsm8k")
    cfg = from_dict(bench.run_config(args, str(tmp_path / "out")))
    assert cfg.labeler == "omegaprm" and cfg.samples_per_problem == 2 and cfg.source.preset == "gsm8k"
    assert cfg.source.paths == [str(data)]
    cfg = from_dict(bench.run_config(bench.argparse.Namespace(**{**vars(args), "source": "procedural"}),
                                     str(tmp_path / "out")))
    assert cfg.source.kind == "procedural" and cfg.source.num_problems == 1 and cfg.labeler == "omegaprm"


def test_commands_run_through_the_cli_entry_point_and_fail_loudly(tmp_path):
    import pytest

    assert bench._cli(["contrast-models", "--help"]) >= 0
    with pytest.raises(SystemExit, match="`counterpoint contrast-models .* exited 2"):
        bench._cli(["contrast-models", str(tmp_path), "--base", "embedded", "--output", str(tmp_path / "cm")])
