"""Which problems the engine stream admits, and when, on a simulated CPU engine (issue 18).

A labelled job's tail is the trees still running after the last problem is sampled: the fewer they
are, the emptier the engine. This benchmark runs whole jobs — every problem sampled, verified and
labelled through one :func:`counterpoint.labeling.stream.sample_and_label` run, the CLI's labelling
defaults — on ``counterpoint.testing.stream.SteppedStreamGenerator`` (a decode step costs what vLLM's
CPU backend costs: 39.6 + 4.67 ms per sequence; rollout lengths drawn around the chain script's) with
two admission rules:

* ``requests_window``: new problems are admitted while the real samples of requests in flight
  (sampling and rollouts) are under the budget — the rule on engines without priorities until
  2026-12-05 (a request holds its ``n`` places until its longest sample ends);
* ``budget_window``: the same, counted by the engine's own unfinished sequences
  (``generator.unfinished_sequences``) — the rule now on engines without priorities;
* ``sampling_first`` (what vLLM gets): the engine takes priorities; problems' own sampling is kept
  queued (up to twice the budget) ahead of the searches' rollouts.

Per rule: simulated seconds, the moment the last problem's samples are back, mean sequences running
of the capacity, throughput against a full batch, and the labelled rows (the same under both: a
request's seed decides its samples, never its priority).

Run: ``python benchmarks/stream_admission.py`` (seconds; writes ``benchmarks/results/stream_admission.json``).
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.config import RunConfig  # noqa: E402
from counterpoint.generators.base import GenerationRequest  # noqa: E402
from counterpoint.generators.scripted import ChainPolicy, chain_problem  # noqa: E402
from counterpoint.labeling import ProblemForLabeling  # noqa: E402
from counterpoint.labeling.stream import sample_and_label  # noqa: E402
from counterpoint.segmentation import segment  # noqa: E402
from counterpoint.testing.chain import chain_verify  # noqa: E402
from counterpoint.testing.stream import RequestCountedStreamGenerator, SteppedStreamGenerator  # noqa: E402
from benchmarks.tree_pacing import run_to_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "stream_admission.json")
RULES = ("requests_window", "budget_window", "sampling_first")


def job(rule: str, n: int, args, seed: int) -> dict:
    """One whole job on the simulated engine under ``rule``."""
    cfg = RunConfig(labeler="omegaprm")
    make = RequestCountedStreamGenerator if rule == "requests_window" else SteppedStreamGenerator
    engine = make(ChainPolicy(step_error_rate=args.rate), capacity=args.capacity,
                  length_factors=[float(x) for x in args.length_factors.split(",")], length_seed=seed)
    engine.priorities = rule == "sampling_first"
    problems = [chain_problem(11 + seed, i, num_steps=args.steps) for i in range(n)]
    requests = [GenerationRequest.chat(None, p["question"], n=cfg.samples_per_problem, seed=1000 * seed + i)
                for i, p in enumerate(problems)]
    last_sample = [0.0]

    def on_sampled(i, sampled):
        p = problems[i]
        rows = [{"problem_id": p["problem_id"], "sample_index": j, "completion": c.text, "steps": segment(c.text),
                 "verdict": v.verdict, "verdict_reason": v.reason, "finish_reason": c.finish_reason,
                 "num_generated_tokens": c.num_tokens}
                for j, (c, v) in enumerate(zip(sampled.completions, sampled.verdicts))]
        last_sample[0] = engine.seconds
        return ProblemForLabeling(p, rows)

    results = sample_and_label(problems, requests, engine, chain_verify, cfg.labeling_config,
                               sampling=cfg.sampling, on_sampled=on_sampled)
    return {"seconds": engine.seconds, "tokens": engine.tokens, "running_area": engine.running_area,
            "last_sample_s": last_sample[0], "plain_tokens_per_s": engine.plain_tokens_per_s,
            "kept": sum(1 for _, r, _ in results if r.step_labels),
            "rows": [(r.problem_id, r.step_labels) for _, r, _ in results]}


def run(args) -> dict:
    out: dict = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "cases": []}
    for n in args.problems:
        case: dict = {"problems": n, "rules": {}}
        runs = {rule: [job(rule, n, args, s) for s in range(args.seeds)] for rule in RULES}
        for rule, rs in runs.items():
            seconds = sum(r["seconds"] for r in rs)
            case["rules"][rule] = {
                "simulated_seconds": round(seconds, 1),
                "last_sample_back_share": round(sum(r["last_sample_s"] for r in rs) / seconds, 3),
                "mean_running": round(sum(r["running_area"] for r in rs) / seconds, 1),
                "saturation": round(sum(r["tokens"] for r in rs) / seconds / rs[0]["plain_tokens_per_s"], 3),
                "kept_trees": sum(r["kept"] for r in rs),
            }
        case["same_rows"] = all(a["rows"] == b["rows"] == c["rows"] for a, b, c in zip(*runs.values()))
        out["cases"].append(case)
        print(f"{n} problems: " + "; ".join(
            f"{rule} {v['simulated_seconds']:.0f} s, last sample at {v['last_sample_back_share']:.2f} of it, "
            f"{v['mean_running']:.1f} running, saturation {v['saturation']:.3f}" for rule, v in case["rules"].items())
            + f"; same rows: {case['same_rows']}", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--rate", type=float, default=0.4,
                        help="the chain policy's step error rate (0.4 with 8 steps: about 1 problem in 10 is kept)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--length-factors", default="0.5,1,1,2,3",
                        help="rollout length multipliers drawn per sequence (comma-separated)")
    parser.add_argument("--capacity", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2, help="problem sets per case")
    parser.add_argument("--out", default=RESULTS)
    return run_to_json(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
