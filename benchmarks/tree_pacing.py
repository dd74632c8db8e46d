"""How fully OmegaPRM's searches keep an engine busy, on a simulated engine (issue 18).

The tail of a labelled job is one large tree whose searches must keep the engine full on their own.
This benchmark runs OmegaPRM trees (B searches side by side, k rollouts a probe) on
``counterpoint.testing.stream.SteppedStreamGenerator``: a streaming scripted engine whose decode
step costs what vLLM's CPU backend costs (39.6 + 4.67 ms per sequence decoding) and whose rollouts
vary in length around the chain script's (``--length-factors``; ``1`` is the script's own). It
compares three ways of driving the same trees:

* ``lockstep``: every pending search answered before any moves on (each round of the tree waits for
  its longest probe: the design before the searches ran at their own pace);
* ``shipped``: ``OmegaPRMTree.run`` as it is (each search at its own pace, each slot's next search
  selected ahead, the logical clock in tokens; rows independent of the answer order);
* ``no_wait``: a bound, not a rule — every change applies to the tree the moment its answer is back
  and a free slot is refilled at once (its rows depend on the order the engine answers in, so it
  cannot ship): how fast the trees could go if determinism cost nothing.

Per driver: simulated seconds, mean sequences running, useful throughput against a full batch
(``plain``), labelled solutions. What the shipped rule leaves against ``no_wait`` is what the rows'
independence from the engine costs; what ``no_wait`` leaves against capacity is the trees' own lack
of work (a pool with no candidate left).

Run: ``python benchmarks/tree_pacing.py`` (seconds; writes ``benchmarks/results/tree_pacing.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.generators.base import SamplingParams  # noqa: E402
from counterpoint.generators.scripted import ChainPolicy, chain_problem  # noqa: E402
from counterpoint.labeling.common import seed_root  # noqa: E402
from counterpoint.labeling.omegaprm import OmegaPRMConfig, OmegaPRMTree  # noqa: E402
from counterpoint.labeling.scheduler import AskGroups, ProblemContext, RoundScheduler  # noqa: E402
from counterpoint.testing.chain import chain_verify  # noqa: E402
from counterpoint.testing.stream import SteppedStreamGenerator, lockstep  # noqa: E402
from counterpoint.testing.worlds import sampled_chain_items  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tree_pacing.json")


class NoWaitTree(OmegaPRMTree):
    """The ``no_wait`` bound: changes apply at once, a free slot is refilled at every resumption."""

    def run(self):
        runs: list = []
        live: list = []
        while True:
            while len(live) < self.config.selections_per_round and self.pool \
                    and self.selections < self.config.search_limit:
                run = self._select(len(runs), 0)
                runs.append(run)
                if not run.ended:
                    run.begin(0)
                    live.append(run)
            if not live:
                return self._finish(runs)
            answers = yield AskGroups.of((r.number, r.asks) for r in live)
            for number in sorted(answers):
                run = runs[number]
                for fn, args in self._step(run, answers[number]):
                    fn(*args)
                if run.ended:
                    live.remove(run)


def mixed_items(policy: ChainPolicy, trees: int, steps: int, seed: int, samples: int):
    """``trees`` chain problems whose screening samples are mixed (each has a tree to search)."""
    items = []
    for i in range(10_000):
        (item,) = sampled_chain_items(policy, [chain_problem(seed, i, num_steps=steps)], samples,
                                      seed_of=lambda _j: seed * 1_000_003 + i)
        if 1 <= [t["verdict"] for t in item.trajectories].count("correct") < samples:
            items.append(item)
            if len(items) == trees:
                return items
    raise RuntimeError("not enough mixed chain problems")


def drive(driver: str, items, args, factors, seed: int) -> Dict[str, float]:
    policy = ChainPolicy(step_error_rate=args.rate)
    engine = SteppedStreamGenerator(policy, capacity=args.capacity, length_factors=factors, length_seed=seed)
    cfg = OmegaPRMConfig(k=args.k, search_limit=args.search_limit, parallel_searches=1,
                         selections_per_round=args.selections)
    jobs = []
    for item in items:
        p = item.problem
        ctx = ProblemContext(p["problem_id"], p["question"], p["gold_answer"], p["answer_type"],
                             min_known=cfg.min_known)
        seed_root(ctx, item.trajectories)
        tree_class = NoWaitTree if driver == "no_wait" else OmegaPRMTree
        tree = tree_class(ctx, cfg, first_discovered_index=len(item.trajectories))
        jobs.append((ctx, lockstep(tree.run()) if driver == "lockstep" else tree.run()))
    results = RoundScheduler(engine, chain_verify, SamplingParams(), seed=seed).run(jobs)
    return {"seconds": engine.seconds, "tokens": engine.tokens, "running_area": engine.running_area,
            "solutions": sum(len(r) for r in results), "plain_tokens_per_s": engine.plain_tokens_per_s}


def run(args) -> dict:
    out: dict = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "cases": []}
    for factors_text in args.length_factors:
        factors = [float(x) for x in factors_text.split(",")]
        for trees in args.trees:
            case: dict = {"length_factors": factors, "trees": trees, "drivers": {}}
            policy = ChainPolicy(step_error_rate=args.rate)
            problem_sets = [mixed_items(policy, trees, args.steps, s, args.samples) for s in range(args.seeds)]
            for driver in ("lockstep", "shipped", "no_wait"):
                runs = [drive(driver, items, args, factors, s) for s, items in enumerate(problem_sets)]
                seconds = sum(r["seconds"] for r in runs)
                tokens = sum(r["tokens"] for r in runs)
                running = sum(r["running_area"] for r in runs) / seconds
                case["drivers"][driver] = {
                    "simulated_seconds": round(seconds, 1),
                    "tokens": tokens,
                    "mean_running": round(running, 1),
                    "running_share_of_capacity": round(running / args.capacity, 3),
                    "saturation": round(tokens / seconds / runs[0]["plain_tokens_per_s"], 3),
                    "solutions": sum(r["solutions"] for r in runs),
                }
            d = case["drivers"]
            shipped_s = d["shipped"]["simulated_seconds"]
            case["shipped_seconds_vs_lockstep"] = round(shipped_s / d["lockstep"]["simulated_seconds"], 3)
            case["shipped_seconds_vs_no_wait"] = round(shipped_s / d["no_wait"]["simulated_seconds"], 3)
            out["cases"].append(case)
            print(f"lengths x{factors_text:<14} trees {trees}: " + "; ".join(
                f"{name} {v['simulated_seconds']:.0f} s, {v['mean_running']:.1f} running, "
                f"saturation {v['saturation']:.3f}"
                for name, v in d.items()), flush=True)
    return out


def run_to_json(run_fn, args) -> dict:
    """``run_fn(args)``'s results with its wall time, written to ``args.out`` as JSON."""
    started = time.perf_counter()
    out = run_fn(args)
    out["wall_s"] = round(time.perf_counter() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out} ({out['wall_s']} s)")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, nargs="+", default=[1, 3], help="trees searched at once")
    parser.add_argument("--length-factors", nargs="+", default=["1", "0.5,1,1,2,4"],
                        help="rollout length multipliers drawn per sequence (comma-separated), one case each")
    parser.add_argument("--rate", type=float, default=0.1, help="the chain policy's step error rate")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--search-limit", type=int, default=100)
    parser.add_argument("--selections", type=int, default=16, help="selections_per_round (B)")
    parser.add_argument("--capacity", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=4, help="problem sets per case")
    parser.add_argument("--out", default=RESULTS)
    return run_to_json(run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
