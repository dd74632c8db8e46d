"""Steady-state engine throughput against sequences in flight: where the engine's throughput peaks.

One engine (``max_num_seqs`` = the largest window), the default job's sampling (embedded model,
procedural problems, n = 8 samples per request, the run's max_tokens). For each window C a sliding
window keeps C sequences submitted (a request of 8 joins as soon as one leaves); after
``--warmup-s`` the engine's own token count (every decoded token) is read over ``--seconds``.
Also reports the decode step time (C / tokens per second): how long one token of every sequence
takes, which is what a tree search's round (the longest of its k rollouts) is made of.

On a CPU, decoding is compute-bound: past the peak, more sequences only make every step slower.
The figure sets ``vllm_local.CPU_MAX_NUM_SEQS`` (issue 18). Writes
``benchmarks/results/engine_concurrency.json``.

    python benchmarks/engine_concurrency.py [--windows 32,64,96,128,192,256] [--seconds 60] [--warmup-s 25]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default="32,64,96,128,192,256")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=25.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_concurrency.json"))
    args = ap.parse_args(argv)

    from counterpoint.config import RunConfig
    from counterpoint.generators import build_generator
    from counterpoint.generators.base import GenerationRequest
    from counterpoint.sources.procedural import procedural_problem

    windows = [int(w) for w in args.windows.split(",")]
    cfg = RunConfig()
    gen = build_generator(dataclasses.replace(cfg.generator, max_num_seqs=max(windows), compile="off"))
    gen.load()

    def request(i):
        return GenerationRequest.chat(cfg.system_prompt, procedural_problem(77, i)["question"], n=8,
                                      params=cfg.sampling, seed=i)

    from benchmarks.engine_saturation import _Meter, _plain_window

    rows, index = [], 0
    for w in windows:
        offset = index  # fresh prompts per window: no prefix-cache hits carried over

        def windowed(i, offset=offset):
            return request(offset + i), None

        tokens, seconds, sent, _ = _plain_window(gen, windowed, w, _Meter(gen, 0, 30.0), args.warmup_s,
                                                 args.seconds, 30.0)
        tps, index = tokens / seconds, index + sent
        rows.append({"window": w, "tokens_per_s": round(tps, 1), "step_ms": round(1000.0 * w / tps, 1)})
        print(f"window {w:4d}: {tps:7.1f} tok/s, one decode step of every sequence {1000.0 * w / tps:6.1f} ms",
              flush=True)
    best = max(rows, key=lambda r: r["tokens_per_s"])
    result = {"model": gen.model_id, "max_tokens": cfg.sampling.max_tokens, "samples_per_request": 8,
              "seconds": args.seconds, "warmup_s": args.warmup_s, "windows": rows, "peak": best}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"peak at {best['window']} sequences ({best['tokens_per_s']} tok/s); wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
