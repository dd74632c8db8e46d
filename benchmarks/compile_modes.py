"""Eager vs torch.compile for vLLM on this machine: start-up cost and decoding throughput.

For each mode, in a fresh process (one engine each):

* ``eager``            ``enforce_eager=True`` (no compilation, no CUDA/CPU graphs);
* ``compiled-cold``    torch.compile with an empty vLLM compile cache (``VLLM_CACHE_ROOT`` in a new folder);
* ``compiled-warm``    torch.compile again with the cache the cold run left.

Each process loads the embedded model, then samples ``--problems`` x ``--samples``
solutions of procedural problems in one batch (192 sequences by default, the default
job's shape) and reports engine start seconds, generated tokens and tokens/s. The
figures set ``generator.compile=auto`` (``counterpoint.generators.vllm_local``: compile
when the job's expected tokens repay the start-up cost). Writes
``benchmarks/results/compile_modes.json``.

    python benchmarks/compile_modes.py [--problems 24] [--samples 8] [--max-tokens 256] [--modes eager,compiled-cold,compiled-warm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _case(mode: str, problems: int, samples: int, max_tokens: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from counterpoint import corpus
    from counterpoint.config import DEFAULT_SYSTEM_PROMPT
    from counterpoint.generators import GeneratorConfig, build_generator
    from counterpoint.generators.base import SamplingParams
    from counterpoint.sources.procedural import procedural_problem

    t0 = time.perf_counter()
    gen = build_generator(GeneratorConfig(compile="off" if mode == "eager" else "on"))
    gen.load()
    load_s = time.perf_counter() - t0
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens)
    reqs = [corpus.sample_request(procedural_problem(5, i, 1, 2), system_prompt=DEFAULT_SYSTEM_PROMPT, n=samples,
                                  params=params, run_seed=0) for i in range(problems)]
    gen.generate(reqs[:1])  # first call pays lazy initialisation in both modes
    t = time.perf_counter()
    outs = gen.generate(reqs)
    gen_s = time.perf_counter() - t
    tokens = sum(c.num_tokens for o in outs for c in o)
    return {"mode": mode, "engine_start_s": round(load_s, 2), "sequences": problems * samples,
            "generated_tokens": tokens, "generate_s": round(gen_s, 2), "tokens_per_s": round(tokens / gen_s, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--modes", default="eager,compiled-cold,compiled-warm")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile_modes.json"))
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_case(args.case, args.problems, args.samples, args.max_tokens)))
        return None

    cache_root = tempfile.mkdtemp(prefix="vllm-compile-cache-")
    results = []
    for mode in args.modes.split(","):
        env = dict(os.environ, VLLM_CACHE_ROOT=cache_root, PYTHONWARNINGS="ignore")
        cmd = [sys.executable, __file__, "--case", mode, "--problems", str(args.problems), "--samples",
               str(args.samples), "--max-tokens", str(args.max_tokens)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_s"] = round(time.perf_counter() - t, 2)
        results.append(row)
        print(f"{row['mode']:<15} start {row['engine_start_s']:>7.1f}s  {row['generated_tokens']:>7} tokens in "
              f"{row['generate_s']:>7.1f}s = {row['tokens_per_s']:>7.1f} tok/s", flush=True)
    by = {r["mode"]: r for r in results}
    summary = {"runs": results, "problems": args.problems, "samples": args.samples, "max_tokens": args.max_tokens}
    if "eager" in by and "compiled-cold" in by:
        e, c = by["eager"], by["compiled-cold"]
        extra = c["engine_start_s"] - e["engine_start_s"]
        gain = 1 / e["tokens_per_s"] - 1 / c["tokens_per_s"]
        summary["break_even_tokens_cold"] = round(extra / gain) if gain > 0 else None
        if "compiled-warm" in by:
            w = by["compiled-warm"]
            extra_w = w["engine_start_s"] - e["engine_start_s"]
            summary["break_even_tokens_warm"] = round(extra_w / gain) if gain > 0 and extra_w > 0 else 0
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
