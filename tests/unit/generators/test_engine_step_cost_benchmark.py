"""``benchmarks/engine_step_cost.py``: the decode-step fit from a saturation result's two windows, on
numbers made from a known engine (step = 60 ms + 2 ms per sequence), so every figure has one right value."""

from __future__ import annotations

import importlib.util
import json

import pytest

from _paths import TESTS

SPEC = importlib.util.spec_from_file_location("engine_step_cost", TESTS.parent / "benchmarks" / "engine_step_cost.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def known_rate(n):  # tokens/s of an engine whose step is 60 ms + 2 ms per running sequence
    return n / (0.060 + 0.002 * n)


def saturation_result(problems=64):
    plain = known_rate(128)
    return {
        "problems": problems, "engine_capacity": 128, "saturation": 0.96,
        "plain": {"tokens_per_s": plain},
        "phases": {
            "sampling_window": {"start_s": 0.0, "end_s": 180.0, "tokens_per_s": known_rate(110),
                                "engine_running_sequences": 110.0},
            "labelling_only_window": {"start_s": 180.0, "end_s": 205.5, "tokens_per_s": known_rate(24),
                                      "engine_running_sequences": 24.0, "saturation": 0.548},
        },
    }


def test_fit_recovers_the_engine_and_bounds_the_tail():
    row, fit = bench.analyse(saturation_result())
    assert fit == pytest.approx({"fixed_s": 0.060, "per_sequence_s": 0.002})
    assert row == {
        "problems": 64, "engine_capacity": 128,
        "fixed_ms_per_step": 60.0, "ms_per_sequence_per_step": 2.0,
        "plain_tokens_per_s": pytest.approx(405.063, abs=1e-3),
        "predicted_plain_tokens_per_s": 405.1, "predicted_plain_error": 0.0,
        "tail_seconds": 25.5, "tail_engine_sequences": 24.0, "tail_saturation": 0.548,
        "target": 0.95,
        # 0.95 * 405.06 = 384.8 tok/s needs n / (0.06 + 0.002 n) >= 384.8: n >= 100.2.
        "sequences_for_target": 101,
        "job_saturation": 0.96,
    }


def test_sequences_for_a_rate_the_engine_never_reaches_is_none():
    fit = {"fixed_s": 0.060, "per_sequence_s": 0.002}
    assert bench.sequences_for(fit, 500.0) is None  # the rate tends to 1 / 0.002 = 500 tok/s
    assert bench.sequences_for(fit, known_rate(64)) == pytest.approx(64.0)


def test_windows_that_cannot_be_fitted_are_a_clear_error():
    with pytest.raises(ValueError, match="n_full > n_tail"):
        bench.fit_step_cost(24.0, 220.0, 24.0, 220.0)


def test_main_writes_what_it_returns_with_the_concurrency_check(tmp_path, capsys):
    result = tmp_path / "sat.json"
    result.write_text(json.dumps(saturation_result(problems=128)))
    concurrency = tmp_path / "conc.json"
    concurrency.write_text(json.dumps({"windows": [{"window": 16, "tokens_per_s": 150.0},
                                                   {"window": 32, "tokens_per_s": 250.0},
                                                   {"window": 128, "tokens_per_s": 400.0}]}))
    out = bench.main([str(result), "--concurrency", str(concurrency), "--out", str(tmp_path / "fit.json")])
    assert json.loads((tmp_path / "fit.json").read_text()) == out
    (row,) = out["results"]
    assert row["result"] == "sat.json" and row["problems"] == 128 and "_fit" not in row
    assert row["concurrency"] == [
        {"sequences": 16, "measured_tokens_per_s": 150.0, "predicted_tokens_per_s": 173.9},
        {"sequences": 32, "measured_tokens_per_s": 250.0, "predicted_tokens_per_s": 258.1},
        {"sequences": 128, "measured_tokens_per_s": 400.0, "predicted_tokens_per_s": 405.1},
    ]
    # The tail's 24 sequences, halfway between the measured 16 and 32: 200 tok/s against 400 at capacity.
    assert row["tail_reachable"] == 0.5
    assert "sat.json: step 60.0 ms + 2.0 ms/sequence" in capsys.readouterr().out


def test_measured_share_needs_windows_around_the_tail_and_at_capacity():
    concurrency = {"windows": [{"window": 32, "tokens_per_s": 250.0}, {"window": 64, "tokens_per_s": 300.0}]}
    assert bench.measured_share(concurrency, 48.0, 64) == round(275.0 / 300.0, 3)
    assert bench.measured_share(concurrency, 24.0, 64) is None  # below the smallest measured window
    assert bench.measured_share(concurrency, 48.0, 128) is None  # capacity not measured
