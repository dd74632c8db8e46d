"""OmegaPRM (fixed k and adaptive budgets) vs per-step Monte Carlo (Math-Shepherd): first-error accuracy and
rollouts spent.

Scripted chain problems (``chain_problem``: 16 arithmetic steps + an answer
line) are solved by the scripted ``ChainPolicy``, which slips at each step with
probability ``p``; slips only ever overshoot (+1..+3), so a wrong prefix can
never be repaired and MC after the first error is exactly 0. The ground truth
first error of every labelled solution is ``chain_first_error``. Both labellers
see the same sampled trajectories (K_f per problem, same screening) and the same
rollout budget per probe (k).

Labellers: ``mc`` (k rollouts on every step prefix), ``omegaprm`` (fixed k per
binary-search probe) and ``omegaprm_adaptive`` (issue 18: a probe stops at its
first correct rollout or after ``zero_after`` known wrong ones, default
ceil(k/2); ``--strict-zero`` adds ``omegaprm_adaptive_k`` with zero_after = k,
fixed k's false-zero bound).

Metric: exact first-error accuracy over all labelled solutions (and over the
sampled ones only), rollouts generated for labelling (no value pass) per
labelled solution — every rollout generated, wasted speculative ones included.
Targets (issue 18): adaptive OmegaPRM >= 10x fewer rollouts per labelled
solution than per-step MC, first-error accuracy >= 0.95 of MC's, wasted
speculative rollouts <= 10% of its rollouts.

The arithmetic-claim check is off here (``check_arithmetic=False``): the chain
policy's slips are false equations the check would find without a single
rollout, and this benchmark measures the searches. ``benchmarks/label_quality.py``
measures the labels with every rule on.

Run: ``python -m benchmarks.labeling_efficiency`` or ``python benchmarks/labeling_efficiency.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.generators.base import SamplingParams  # noqa: E402
from counterpoint.generators.scripted import (  # noqa: E402
    ChainPolicy,
    ScriptedGenerator,
    chain_problem,
)
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, ProblemForLabeling, label_problems  # noqa: E402
from counterpoint.testing.chain import chain_first_error, chain_verify  # noqa: E402
from counterpoint.testing.worlds import sampled_chain_items  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "labeling_efficiency.json")


def sample_items(policy: ChainPolicy, n_problems: int, n_steps: int, k_f: int, seed: int) -> List[ProblemForLabeling]:
    """The sampling stage: K_f solutions per problem, verified and segmented (trajectory rows)."""
    problems = [chain_problem(seed, i, num_steps=n_steps) for i in range(n_problems)]
    return sampled_chain_items(policy, problems, k_f, seed_of=lambda i: seed * 1_000_003 + i)


def evaluate(items, results, labeler: str, wall: float, calls: int) -> Dict[str, float]:
    questions = {it.problem["problem_id"]: it.problem["question"] for it in items}
    k_f = {it.problem["problem_id"]: len(it.trajectories) for it in items}
    rows = [r for res in results for r in res.step_labels]
    exact = early = late = exact_sampled = n_sampled = sampled_cost = 0
    for r in rows:
        truth = chain_first_error(questions[r["problem_id"]], r["completions"])
        got = r["first_error_index"]
        exact += got == truth
        early += got is not None and truth is not None and got < truth
        late += got is not None and truth is not None and got > truth
        if r["sample_index"] < k_f[r["problem_id"]]:
            n_sampled += 1
            exact_sampled += got == truth
            sampled_cost += r["n_rollouts"]  # rollouts held for the row's prefixes (whoever paid)
    generated = sum(res.stats["rollouts"] for res in results)  # every rollout, wasted speculation included
    wasted = sum(res.stats["prefetch_wasted"] for res in results)
    rollouts = generated - wasted  # less speculative ones that were never used
    screened = {s: sum(res.stats.get(f"screened_{s}", 0) for res in results) for s in ("kept", "all_correct", "all_incorrect", "no_verdict")}
    return {
        "labeler": labeler,
        "problems_kept": screened["kept"],
        "screened": screened,
        "labelled_solutions": len(rows),
        "labelled_sampled": n_sampled,
        "labelled_discovered": len(rows) - n_sampled,
        "accuracy": exact / len(rows) if rows else float("nan"),
        "accuracy_sampled": exact_sampled / n_sampled if n_sampled else float("nan"),
        "predicted_early": early,
        "predicted_late": late,
        "rollouts": rollouts,
        "rollouts_per_solution": rollouts / len(rows) if rows else float("nan"),
        "rollouts_generated": generated,
        "rollouts_generated_per_solution": generated / len(rows) if rows else float("nan"),
        "wasted_share_of_rollouts": wasted / generated if generated else 0.0,
        # Rollouts held for each sampled solution's prefixes (its own probes, and any other search's on them).
        "rollouts_per_sampled_solution": sampled_cost / n_sampled if n_sampled else float("nan"),
        "prefetched": sum(res.stats["prefetched"] for res in results),
        "prefetch_wasted": sum(res.stats["prefetch_wasted"] for res in results),
        "unresolved": sum(res.stats.get("searches_unresolved", 0) for res in results),
        "engine_calls": calls,
        "wall_s": round(wall, 2),
    }


def run(args) -> dict:
    config = {k: v for k, v in vars(args).items() if k != "out"}
    out = {"config": config, "runs": []}
    rates = [float(x) for x in args.rates.split(",")]
    for rate in rates:
        items = sample_items(ChainPolicy(step_error_rate=rate), args.problems, args.steps, args.samples, args.seed)
        entry = {"step_error_rate": rate}
        variants = [("mc", "mc", {}), ("omegaprm", "omegaprm", {}), ("omegaprm_adaptive", "omegaprm", {"adaptive": True})]
        if args.strict_zero:
            variants.append(("omegaprm_adaptive_k", "omegaprm", {"adaptive": True, "zero_after": args.k}))
        for name, labeler, extra in variants:
            gen = ScriptedGenerator(ChainPolicy(step_error_rate=rate))
            cfg = LabelerConfig(
                labeler=labeler,
                omegaprm=OmegaPRMConfig(k=args.k, search_limit=args.search_limit, **extra),
                compute_values=False,
                check_arithmetic=False,
                seed=args.seed,
            )
            t0 = time.perf_counter()
            results = label_problems(items, gen, chain_verify, cfg, sampling=SamplingParams())
            entry[name] = evaluate(items, results, name, time.perf_counter() - t0, gen.calls)
        o, m, a = entry["omegaprm"], entry["mc"], entry["omegaprm_adaptive"]
        entry["rollout_ratio_mc_over_omegaprm"] = m["rollouts_per_solution"] / o["rollouts_per_solution"]
        entry["rollout_ratio_mc_over_adaptive"] = m["rollouts_generated_per_solution"] / a["rollouts_generated_per_solution"]
        entry["accuracy_adaptive_over_mc"] = a["accuracy"] / m["accuracy"]
        entry["target_met"] = bool(entry["rollout_ratio_mc_over_adaptive"] >= 10.0
                                   and entry["accuracy_adaptive_over_mc"] >= 0.95
                                   and a["wasted_share_of_rollouts"] <= 0.10)
        out["runs"].append(entry)
    return out


def print_table(out: dict) -> None:
    head = f"{'p':>5} {'labeler':19} {'kept':>4} {'rows':>5} {'disc':>5} {'acc':>6} {'acc_smp':>7} {'early':>5} {'late':>5} {'rollouts':>8} {'r/sol':>6} {'r/smp':>6} {'waste':>5} {'calls':>5} {'s':>5}"
    print(head)
    print("-" * len(head))
    for e in out["runs"]:
        for lab in [k for k in ("mc", "omegaprm", "omegaprm_adaptive", "omegaprm_adaptive_k") if k in e]:
            r = e[lab]
            print(
                f"{e['step_error_rate']:5.2f} {lab:19} {r['problems_kept']:4d} {r['labelled_solutions']:5d} "
                f"{r['labelled_discovered']:5d} {r['accuracy']:6.3f} {r['accuracy_sampled']:7.3f} {r['predicted_early']:5d} "
                f"{r['predicted_late']:5d} {r['rollouts']:8d} {r['rollouts_per_solution']:6.1f} {r['rollouts_per_sampled_solution']:6.1f} {r['wasted_share_of_rollouts']:5.2f} {r['engine_calls']:5d} {r['wall_s']:5.1f}"
            )
        print(f"{'':6} MC/OmegaPRM rollouts per solution: {e['rollout_ratio_mc_over_omegaprm']:.2f}x; MC/adaptive "
              f"(all generated): {e['rollout_ratio_mc_over_adaptive']:.2f}x, accuracy adaptive/MC "
              f"{e['accuracy_adaptive_over_mc']:.3f}; target met: {e['target_met']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16, help="arithmetic steps per problem (plus an answer line)")
    ap.add_argument("--rates", default="0.03,0.05,0.1", help="comma-separated per-step error rates")
    ap.add_argument("--samples", type=int, default=8, help="K_f sampled solutions per problem")
    ap.add_argument("--k", type=int, default=8, help="rollouts per MC estimate")
    ap.add_argument("--search-limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strict-zero", action="store_true", help="also run adaptive budgets with zero_after = k")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = run(args)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    print_table(out)
    print(f"total {out['wall_s']:.1f}s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
