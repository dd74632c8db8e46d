"""``benchmarks/tree_pacing.py`` on one small case: its three drivers, on the simulated engine
(loaded by file path: ``benchmarks`` is not an installed package)."""

from __future__ import annotations

import importlib.util
import json

from _paths import TESTS

SPEC = importlib.util.spec_from_file_location("tree_pacing_benchmark", TESTS.parent / "benchmarks" / "tree_pacing.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_tree_pacing_compares_three_drivers_of_the_same_trees(tmp_path):
    out = bench.main(["--trees", "2", "--length-factors", "0.5,1,2", "--seeds", "1", "--search-limit", "40",
                      "--out", str(tmp_path / "pacing.json")])
    assert json.loads((tmp_path / "pacing.json").read_text())["cases"] == out["cases"]
    (case,) = out["cases"]
    drivers = case["drivers"]
    assert set(drivers) == {"lockstep", "shipped", "no_wait"}
    # The same trees: every driver labels the same number of solutions (all candidates, limit 40 per tree).
    assert len({d["solutions"] for d in drivers.values()}) == 1 and drivers["shipped"]["solutions"] > 2
    # Waiting for every round's longest probe costs time and running sequences; the shipped rule waits less.
    lock, shipped, bound = drivers["lockstep"], drivers["shipped"], drivers["no_wait"]
    assert shipped["simulated_seconds"] < lock["simulated_seconds"]
    assert shipped["mean_running"] > lock["mean_running"]
    for d in drivers.values():
        assert 0 < d["mean_running"] <= 128 and 0 < d["saturation"] <= 1.0
        assert abs(d["running_share_of_capacity"] - d["mean_running"] / 128) < 1e-3  # both rounded
    assert case["shipped_seconds_vs_lockstep"] == round(shipped["simulated_seconds"] / lock["simulated_seconds"], 3)
    assert bound["simulated_seconds"] > 0
