"""Engine saturation of the labelling stage on the embedded vLLM model.

How close does OmegaPRM labelling (many trees interleaved, one engine call per
round) come to the throughput the engine gives plain batch sampling? On one
engine in one process:

1. sample K_f solutions per problem (the screening samples);
2. label the problems with OmegaPRM through the round scheduler, timing the whole
   stage (engine calls, verification and tree bookkeeping);
3. plain batch sampling of a comparable generated-token volume (same engine,
   same sampling parameters, fresh prompts).

Reports saturation = labelling tokens/s ÷ plain tokens/s (target ≥ 0.85) and the
prefix-cache hit share of rollout prompt tokens from vLLM's reported cached
tokens (target ≥ 60%). Writes ``benchmarks/results/engine_saturation.json``.

    python benchmarks/engine_saturation.py [--problems 48] [--samples 8] [--k 4] [--search-limit 16]
                                           [--parallel-searches 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--samples", type=int, default=8, help="K_f screening samples per problem")
    parser.add_argument("--k", type=int, default=4, help="rollouts per prefix")
    parser.add_argument("--search-limit", type=int, default=16)
    parser.add_argument("--sequential-values", action="store_true",
                        help="estimate step values after the search instead of alongside it")
    parser.add_argument("--parallel-searches", type=int, default=8,
                        help="binary searches in flight per tree (1 = the paper's sequential loop)")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--min-ops", type=int, default=1)
    parser.add_argument("--max-ops", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_saturation.json"))
    args = parser.parse_args(argv)

    from counterpoint import corpus
    from counterpoint.config import DEFAULT_SYSTEM_PROMPT, GeneratorConfig
    from counterpoint.generators import build_generator
    from counterpoint.generators.base import GenerationRequest, SamplingParams
    from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, ProblemForLabeling, label_problems
    from counterpoint.sources.procedural import procedural_problem
    from counterpoint.verifiers.suite import VerifierSuite

    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)
    t0 = time.perf_counter()
    gen = build_generator(GeneratorConfig())
    gen.load()
    load_s = time.perf_counter() - t0
    suite = VerifierSuite("auto")

    problems = [procedural_problem(11, i, args.min_ops, args.max_ops) for i in range(args.problems)]
    # 1. screening samples
    reqs = [corpus.sample_request(p, system_prompt=DEFAULT_SYSTEM_PROMPT, n=args.samples, params=params, run_seed=0)
            for p in problems]
    t = time.perf_counter()
    outs = gen.generate(reqs)
    screen_s = time.perf_counter() - t
    screen_tokens = sum(c.num_tokens for o in outs for c in o)
    items = []
    for p, req, comps in zip(problems, reqs, outs):
        rows = corpus.trajectory_rows(p, comps, request=req, model_id=gen.model_id, segmentation="paragraph")
        verdicts = [v for v, _ in suite.verify([(r["completion"], p["gold_answer"], r["finish_reason"] == "length",
                                                  p["answer_type"]) for r in rows])]
        corpus.apply_verdicts(rows, verdicts, verifier_name="numeric", verifier_version="")
        items.append(ProblemForLabeling(problem=p, trajectories=rows, system_prompt=DEFAULT_SYSTEM_PROMPT))

    # 2. labelling stage
    rounds = []
    cfg = LabelerConfig(labeler="omegaprm", overlap_values=not args.sequential_values, omegaprm=OmegaPRMConfig(k=args.k, search_limit=args.search_limit,
                                                                    parallel_searches=args.parallel_searches,
                                                                    rollout_params=params))
    t = time.perf_counter()
    results = label_problems(items, gen, suite.verdicts, cfg, on_round=rounds.append)
    label_s = time.perf_counter() - t
    label_tokens = sum(r["generated_tokens"] for r in rounds)
    prompt_tokens = sum(r["prompt_tokens"] for r in rounds)
    cached_tokens = sum(r["cached_prompt_tokens"] for r in rounds)
    screened = {}
    for r in results:
        screened[r.stats.get("screening")] = screened.get(r.stats.get("screening"), 0) + 1

    # 3. plain batch sampling of a comparable token volume
    plain_tokens, plain_s, i = 0, 0.0, 0
    target = max(label_tokens, screen_tokens)
    while plain_tokens < target:
        batch = [GenerationRequest.chat(DEFAULT_SYSTEM_PROMPT, procedural_problem(99, i + j)["question"],
                                        n=args.samples, params=params, seed=i + j) for j in range(args.problems)]
        i += args.problems
        t = time.perf_counter()
        o = gen.generate(batch)
        plain_s += time.perf_counter() - t
        plain_tokens += sum(c.num_tokens for x in o for c in x)

    label_tps = label_tokens / label_s if label_s else 0.0
    plain_tps = plain_tokens / plain_s if plain_s else 0.0
    result = {
        "device": "cpu" if gen.effective_seed_mode == "engine" else "gpu",
        "model": gen.model_id,
        "engine_load_s": round(load_s, 2),
        "problems": args.problems, "samples": args.samples, "k": args.k, "search_limit": args.search_limit,
        "parallel_searches": args.parallel_searches, "overlap_values": not args.sequential_values,
        "max_tokens": args.max_tokens,
        "screening": {"tokens": screen_tokens, "seconds": round(screen_s, 2),
                      "tokens_per_s": round(screen_tokens / screen_s, 2), "status": screened},
        "labeling": {"rounds": len(rounds), "generated_tokens": label_tokens, "seconds": round(label_s, 2),
                     "tokens_per_s": round(label_tps, 2), "prompt_tokens": prompt_tokens,
                     "cached_prompt_tokens": cached_tokens,
                     "mean_requests_per_round": round(sum(r["requests"] for r in rounds) / max(len(rounds), 1), 2),
                     "mean_samples_per_round": round(sum(r["samples"] for r in rounds) / max(len(rounds), 1), 2)},
        "plain": {"generated_tokens": plain_tokens, "seconds": round(plain_s, 2), "tokens_per_s": round(plain_tps, 2)},
        "saturation": round(label_tps / plain_tps, 3) if plain_tps else None,
        "prefix_cache_hit_share": round(cached_tokens / prompt_tokens, 3) if prompt_tokens else None,
        "targets": {"saturation": 0.85, "prefix_cache_hit_share": 0.60},
    }
    suite.close()
    print(f"{'stage':<22}{'tokens':>10}{'seconds':>10}{'tok/s':>10}")
    print(f"{'screening sampling':<22}{screen_tokens:>10}{screen_s:>10.1f}{screen_tokens / screen_s:>10.1f}")
    print(f"{'OmegaPRM labelling':<22}{label_tokens:>10}{label_s:>10.1f}{label_tps:>10.1f}")
    print(f"{'plain batch sampling':<22}{plain_tokens:>10}{plain_s:>10.1f}{plain_tps:>10.1f}")
    print(f"saturation {result['saturation']}  (target 0.85); prefix-cache hit share of rollout prompt tokens "
          f"{result['prefix_cache_hit_share']} (target 0.60); rounds {len(rounds)}; screening {screened}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
