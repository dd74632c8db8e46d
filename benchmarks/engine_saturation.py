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

``--defaults`` takes every knob from the CLI defaults (``counterpoint run --labeler omegaprm``):
the default job's problems and sampling, k, search limit, and the throughput knobs
(labelling batch, trees in flight, speculative searches, overlapped values) left on
``auto`` — what a user gets without tuning anything.

    python benchmarks/engine_saturation.py --defaults
    python benchmarks/engine_saturation.py [--problems 48] [--samples 8] [--k 4] [--search-limit 16]
                                           [--parallel-searches auto] [--compile off|on]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defaults", action="store_true",
                        help="every knob at its CLI default (the workload size --problems may still be given)")
    parser.add_argument("--problems", type=int, default=None, help="problems (default: 48; 24 with --defaults)")
    parser.add_argument("--samples", type=int, default=8, help="K_f screening samples per problem")
    parser.add_argument("--k", type=int, default=4, help="rollouts per prefix")
    parser.add_argument("--search-limit", type=int, default=16)
    parser.add_argument("--sequential-values", action="store_true",
                        help="estimate step values after the search instead of alongside it")
    parser.add_argument("--parallel-searches", default="auto",
                        help="speculative binary searches per tree (auto, or 1 = none)")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--min-ops", type=int, default=1)
    parser.add_argument("--max-ops", type=int, default=2)
    parser.add_argument("--compile", default="off", choices=("off", "on"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_saturation.json"))
    args = parser.parse_args(argv)

    import dataclasses

    from counterpoint import corpus
    from counterpoint.config import RunConfig
    from counterpoint.generators import build_generator
    from counterpoint.generators.base import GenerationRequest
    from counterpoint.generators.vllm_local import _on_cpu
    from counterpoint.labeling import OmegaPRMConfig, ProblemForLabeling, label_problems
    from counterpoint.sources.procedural import procedural_problem
    from counterpoint.verifiers.suite import VerifierSuite

    cfg = RunConfig(labeler="omegaprm")
    if args.defaults:
        n_problems, min_ops, max_ops = args.problems or cfg.source.num_problems, cfg.source.min_ops, cfg.source.max_ops
    else:
        n_problems, min_ops, max_ops = args.problems or 48, args.min_ops, args.max_ops
        parallel = args.parallel_searches if args.parallel_searches == "auto" else int(args.parallel_searches)
        cfg = dataclasses.replace(
            cfg, samples_per_problem=args.samples,
            sampling=dataclasses.replace(cfg.sampling, max_tokens=args.max_tokens),
            labeling=dataclasses.replace(cfg.labeling, overlap_values=not args.sequential_values,
                                         omegaprm=dataclasses.replace(OmegaPRMConfig(), k=args.k,
                                                                      search_limit=args.search_limit,
                                                                      parallel_searches=parallel)))
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, compile=args.compile))
    params = cfg.sampling
    labeling = cfg.labeling_config
    t0 = time.perf_counter()
    gen = build_generator(cfg.generator)
    gen.load()
    load_s = time.perf_counter() - t0
    suite = VerifierSuite("auto")

    problems = [procedural_problem(11, i, min_ops, max_ops) for i in range(n_problems)]
    # 1. screening samples
    reqs = [corpus.sample_request(p, system_prompt=cfg.system_prompt, n=cfg.samples_per_problem, params=params,
                                  run_seed=0) for p in problems]
    t = time.perf_counter()
    outs = gen.generate(reqs)
    screen_s = time.perf_counter() - t
    screen_tokens = sum(c.num_tokens for o in outs for c in o)
    items = []
    for p, req, comps in zip(problems, reqs, outs):
        rows = corpus.trajectory_rows(p, comps, request=req, model_id=gen.model_id, segmentation="paragraph")
        judged = suite.verify([(r["completion"], p["gold_answer"], r["finish_reason"] == "length", p["answer_type"])
                               for r in rows])
        rows = corpus.apply_verdicts(rows, [v for v, _ in judged], verifier_name=judged[0][1].name,
                                     verifier_version=judged[0][1].version)
        items.append(ProblemForLabeling(problem=p, trajectories=rows, system_prompt=cfg.system_prompt))

    # 2. labelling stage: every problem in one call, as the pipeline's auto labelling batch does
    rounds = []
    in_engine = {"s": 0.0, "polls": 0}
    real_poll = gen.poll

    def timed_poll():  # time the engine spends stepping vs the scheduler's own work between polls
        t0 = time.perf_counter()
        try:
            return real_poll()
        finally:
            in_engine["s"] += time.perf_counter() - t0
            in_engine["polls"] += 1

    gen.poll = timed_poll
    t = time.perf_counter()
    results = label_problems(items, gen, suite.judge, labeling, sampling=params, on_round=rounds.append)
    label_s = time.perf_counter() - t
    gen.poll = real_poll
    label_tokens = sum(r["generated_tokens"] for r in rounds)
    prompt_tokens = sum(r["prompt_tokens"] for r in rounds)
    cached_tokens = sum(r["cached_prompt_tokens"] for r in rounds)
    screened = {}
    for r in results:
        screened[r.stats.get("screening")] = screened.get(r.stats.get("screening"), 0) + 1
    speculation = {k: sum(int(r.stats.get(k, 0)) for r in results)
                   for k in ("prefetched", "prefetch_used", "prefetch_wasted")}

    # 3. plain batch sampling of a comparable token volume
    plain_tokens, plain_s, i = 0, 0.0, 0
    target = max(label_tokens, screen_tokens)
    while plain_tokens < target:
        batch = [GenerationRequest.chat(cfg.system_prompt, procedural_problem(99, i + j)["question"],
                                        n=cfg.samples_per_problem, params=params, seed=i + j)
                 for j in range(n_problems)]
        i += n_problems
        t = time.perf_counter()
        o = gen.generate(batch)
        plain_s += time.perf_counter() - t
        plain_tokens += sum(c.num_tokens for x in o for c in x)

    label_tps = label_tokens / label_s if label_s else 0.0
    plain_tps = plain_tokens / plain_s if plain_s else 0.0
    o = labeling.omegaprm
    result = {
        "device": "cpu" if _on_cpu() else "gpu",
        "model": gen.model_id,
        "defaults": args.defaults,
        "compile": cfg.generator.compile,
        "engine_load_s": round(load_s, 2),
        "engine_capacity": gen.capacity,
        "problems": n_problems, "samples": cfg.samples_per_problem, "k": o.k, "search_limit": o.search_limit,
        "parallel_searches": o.parallel_searches, "max_trees": o.max_trees,
        "overlap_values": labeling.overlap_values, "max_tokens": params.max_tokens,
        "speculation": speculation,
        "engine_share_of_labelling_time": round(in_engine["s"] / label_s, 3) if label_s else None,
        "screening": {"tokens": screen_tokens, "seconds": round(screen_s, 2),
                      "tokens_per_s": round(screen_tokens / screen_s, 2), "status": screened},
        "labeling": {"polls": len(rounds), "generated_tokens": label_tokens, "seconds": round(label_s, 2),
                     "tokens_per_s": round(label_tps, 2), "prompt_tokens": prompt_tokens,
                     "cached_prompt_tokens": cached_tokens,
                     "mean_inflight_samples": round(sum(r.get("inflight_samples", 0) for r in rounds)
                                                    / max(len(rounds), 1), 2)},
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
          f"{result['prefix_cache_hit_share']} (target 0.60); polls {len(rounds)}; screening {screened}; "
          f"speculation {speculation}; engine busy {result['engine_share_of_labelling_time']} of the labelling time")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
