"""bfloat16 against float32 on this CPU: the figure behind ``generator.dtype: auto`` (``vllm_local.resolve_dtype``).

vLLM's CPU backend runs bfloat16 on any x86 CPU, but only CPUs with AVX512_BF16 or AMX (Arm: BF16) have
bf16 arithmetic; elsewhere it is emulated. For each dtype, in a process of its own (one engine per
process): the embedded model, the default job's sampling (n = 8 per request, max_tokens 256), and for each
batch B of sequences decoding at once, the mean time of one engine step (one token of every sequence)
over ``--seconds`` after a few warm steps; tokens per second = B / step time. A step-level figure, not a
sliding window: with emulated bf16 a window's first request takes minutes to finish.
Writes ``benchmarks/results/cpu_dtype.json``.

    python benchmarks/cpu_dtype.py [--batches 8,32,64,128] [--seconds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mean_step_seconds(engine, seconds: float):
    """``(mean seconds of one engine step, steps)`` over ``seconds`` of stepping (or until it runs dry)."""
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds and engine.has_unfinished_requests():
        engine.step()
        steps += 1
    return (time.perf_counter() - start) / max(1, steps), steps


def sweep(dtype: str, batches, seconds: float) -> dict:
    """Step times of one engine in ``dtype`` (runs in the child process)."""
    from counterpoint.config import RunConfig
    from counterpoint.generators import build_generator
    from counterpoint.generators.base import GenerationRequest
    from counterpoint.sources.procedural import procedural_problem

    cfg = RunConfig()
    gen = build_generator(dataclasses.replace(cfg.generator, dtype=dtype, compile="off", max_num_seqs=max(batches)))
    t0 = time.perf_counter()
    gen.load()
    load_s = time.perf_counter() - t0
    engine = gen._llm.llm_engine  # step-level timing needs the engine itself
    rows, offset = [], 0
    for b in batches:
        requests = [GenerationRequest.chat(cfg.system_prompt, procedural_problem(78, offset + i)["question"], n=8,
                                           params=cfg.sampling, seed=offset + i) for i in range(b // 8)]
        offset += len(requests)
        handles = gen.submit(requests)
        for _ in range(4):  # prefill and the first decode steps
            engine.step()
        step_s, steps = mean_step_seconds(engine, seconds)
        gen.abort(handles)
        while engine.has_unfinished_requests():
            engine.step()
        rows.append({"batch": b, "step_ms": round(1000 * step_s, 1), "tokens_per_s": round(b / step_s, 1),
                     "steps": steps})
        print(f"{dtype:>9} batch {b:4d}: {1000 * step_s:7.1f} ms a step = {b / step_s:6.1f} tok/s", flush=True)
    return {"dtype": gen.resolved_dtype, "load_s": round(load_s, 1), "batches": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="8,32,64,128")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one dtype, JSON to this file
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_dtype.json"))
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        Path(args.child).write_text(json.dumps(sweep(args.dtypes, batches, args.seconds)))
        return None

    from counterpoint.generators.vllm_local import CPU_NATIVE_BF16_FLAGS, _cpu_flags, resolve_dtype

    sweeps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            out = Path(tmp) / f"{dtype}.json"
            subprocess.run([sys.executable, __file__, "--dtypes", dtype, "--batches", args.batches,
                            "--seconds", str(args.seconds), "--child", str(out)], check=True)
            sweeps[dtype] = json.loads(out.read_text())
    table = []
    for i, b in enumerate(batches):
        row = {"batch": b, **{f"{d}_tokens_per_s": s["batches"][i]["tokens_per_s"] for d, s in sweeps.items()}}
        if {"bfloat16", "float32"} <= set(sweeps):
            row["float32_over_bfloat16"] = round(row["float32_tokens_per_s"] / row["bfloat16_tokens_per_s"], 2)
        table.append(row)
    flags = _cpu_flags()
    result = {"cpu_native_bf16": sorted(flags & CPU_NATIVE_BF16_FLAGS), "cpu_avx512f": "avx512f" in flags,
              "auto_resolves_to": resolve_dtype("auto"), "seconds": args.seconds, "table": table, "sweeps": sweeps}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for row in table:
        print(row)
    print(f"auto -> {result['auto_resolves_to']}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
