"""What a rollout costs the engine per generated token, against plain sampling (issue 18's ceiling).

``engine_saturation.py`` replays a labelled job's own requests with a full queue and finds that the work
itself runs below plain sampling (0.854 of plain at 64 problems on an AVX2-only CPU in float32, 0.955 at
128 problems on an AVX-512 one): no schedule can take the job above that. This benchmark asks where the
difference is, one request shape at a time, each with the engine always full (a sliding window keeps
1.5x the capacity queued; the engine's own token count over ``--seconds`` after ``--warmup-s``):

* ``plain``: the default job's sampling (fresh problem prompts, n = 8, the run's max_tokens);
* ``plain_short``: the same prompts, generations cut at ``--short-tokens`` (a rollout's typical
  length): what short requests cost, prefill and per-request work, with a short context;
* ``rollout``: OmegaPRM-shaped requests: a problem's own sampled solution cut after a random number
  of its lines is the assistant prefix, n = 8 continuations (the run's max_tokens): long contexts,
  short generations, each prefix new (its question is cached, as in a job).

Each ``--block-sizes`` value runs in a fresh process (vLLM's KV-cache block size: prefix caching hits
whole blocks, so each of the n samples of a request recomputes the prompt's last partial block).
Writes ``benchmarks/results/rollout_cost.json``. A window counts tokens as the engine reports them, and
a poll returns when a request finishes, so a 60 s window moves by a request's tokens either way.

``--contexts L1,L2,...`` measures step by step instead (no windows): for each prompt length, the seconds
until 128 sequences (16 prompts x 8) have their first token, and the mean decode step after that
(``context_sweep``). On an AVX2-only EPYC in float32 (results/rollout_cost_contexts.json) 32-token blocks
bring the first tokens 2.4-5.9x sooner than vLLM's CPU default of 128 at the same decode step, which is
why ``vllm_local.CPU_BLOCK_SIZE`` is 32.

    python benchmarks/rollout_cost.py [--block-sizes 128,64,32] [--seconds 45] [--warmup-s 15]
    python benchmarks/rollout_cost.py --contexts 100,164,228,356,484 --seconds 12 --solutions 8 \
        --out benchmarks/results/rollout_cost_contexts.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _measure(gen, source, args, label):
    from engine_saturation import _Meter, _plain_window

    meter = _Meter(gen, 0, 15.0)
    tokens, seconds, submitted, _ = _plain_window(gen, source, int(1.5 * gen.capacity), meter, args.warmup_s,
                                                  args.seconds, 15.0, label=label)
    tps = tokens / seconds if seconds else 0.0
    print(f"{label:>12}: {tokens} tokens in {seconds:.1f}s = {tps:.1f} tok/s ({submitted} requests)", flush=True)
    return {"engine_tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tps, 2),
            "requests": submitted}


def context_sweep(gen, filler_ids, lengths, batch: int, seconds: float, n: int = 8) -> list:
    """Step-level cost of rollout-shaped work against context length, on the engine itself.

    For each prompt length L: ``batch // n`` prompts of L tokens (cut from ``filler_ids`` at different
    offsets, so only a prompt's own ``n`` sequences share blocks, as a rollout's k continuations do),
    ``ignore_eos`` so every sequence keeps decoding.
    ``prefill_s``: submission until every child has its first token (the prompt's blocks once, and each
    child's recomputed last partial block: prefix caching hits whole blocks only); ``decode_ms``: the mean
    engine step over ``seconds`` after that, every sequence decoding (one token each per step)."""
    from cpu_dtype import mean_step_seconds
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    engine = gen._llm.llm_engine
    rows = []
    for j, length in enumerate(lengths):
        groups = batch // n
        t0 = time.perf_counter()
        handles = []
        for g in range(groups):
            start = (g * 7919 + j * 104729) % (len(filler_ids) - length)
            prompt = TokensPrompt(prompt_token_ids=filler_ids[start:start + length])
            for c in range(n):  # what vLLM's n-fan-out does: n engine requests on one prompt
                params = VSamplingParams(temperature=0.8, top_p=0.95, ignore_eos=True, seed=1000 * j + 8 * g + c,
                                         max_tokens=min(512, gen.max_model_len - length - 1),
                                         output_kind=RequestOutputKind.DELTA)
                handles.append(f"ctx{length}-{g}-{c}")
                engine.add_request(handles[-1], prompt, params)
        started = set()
        while len(started) < len(handles):  # every sequence has its first token
            started.update(out.request_id for out in engine.step() if out.outputs and out.outputs[0].token_ids)
        prefill_s = time.perf_counter() - t0
        engine.step()
        step_s, steps = mean_step_seconds(engine, seconds)  # ignore_eos: nothing finishes meanwhile
        engine.abort_request(handles)
        while engine.has_unfinished_requests():
            engine.step()
        tokens_per_s = len(handles) / step_s  # every sequence decodes one token a step
        rows.append({"prompt_tokens": length, "sequences": len(handles), "prefill_s": round(prefill_s, 2),
                     "decode_ms": round(1000 * step_s, 1), "decode_tokens_per_s": round(tokens_per_s, 1),
                     "steps": steps})
        print(f"context {length:4d}: prefill {prefill_s:6.2f}s, decode {1000 * step_s:6.1f} ms a step "
              f"= {tokens_per_s:6.1f} tok/s", flush=True)
    return rows


def sweep(block_size: int, args) -> dict:
    """The three shapes on one engine with ``block_size`` (runs in the child process)."""
    from counterpoint.config import RunConfig
    from counterpoint.generators import build_generator
    from counterpoint.generators.base import GenerationRequest
    from counterpoint.sources.procedural import procedural_problem

    cfg = RunConfig(labeler="omegaprm")
    gen = build_generator(dataclasses.replace(
        cfg.generator, engine_kwargs={**cfg.generator.engine_kwargs, "block_size": block_size}))
    gen.load()
    n = cfg.samples_per_problem
    question = lambda i: procedural_problem(77, i)["question"]  # noqa: E731

    # Solutions to cut prefixes from: the model's own, sampled once up front (not timed).
    base = [GenerationRequest.chat(cfg.system_prompt, question(i), n=1, params=cfg.sampling, seed=i)
            for i in range(args.solutions)]
    solutions = [out[0].text for out in gen.generate(base)]
    rng = random.Random(0)

    def rollout(i):
        text = solutions[i % len(solutions)]
        lines = text.split("\n")
        cut = "\n".join(lines[:rng.randint(1, max(1, len(lines) - 1))]) + "\n"
        return GenerationRequest.continuation(cfg.system_prompt, question(i % len(solutions)), cut, n=n,
                                              params=cfg.sampling, seed=10_000 + i), None

    short = dataclasses.replace(cfg.sampling, max_tokens=args.short_tokens)
    offset = args.solutions
    shapes = {
        "plain": lambda i: (GenerationRequest.chat(cfg.system_prompt, question(offset + i), n=n,
                                                   params=cfg.sampling, seed=i), None),
        "plain_short": lambda i: (GenerationRequest.chat(cfg.system_prompt, question(offset + 50_000 + i), n=n,
                                                         params=short, seed=i), None),
        "rollout": rollout,
    }
    out = {"block_size": block_size, "dtype": gen.resolved_dtype, "capacity": gen.capacity}
    if args.contexts:
        tokenizer = gen._llm.get_tokenizer()
        filler = tokenizer.encode("\n\n".join(question(i) + "\n" + solutions[i] for i in range(len(solutions))),
                                  add_special_tokens=False)
        while len(filler) < 4096:
            filler = filler + filler
        lengths = [int(x) for x in args.contexts.split(",")]
        out["contexts"] = context_sweep(gen, filler, lengths, gen.capacity, args.seconds)
        return out
    for label, source in shapes.items():
        out[label] = _measure(gen, source, args, label)
    plain = out["plain"]["tokens_per_s"] or 1.0
    for label in ("plain_short", "rollout"):
        out[label]["of_plain"] = round(out[label]["tokens_per_s"] / plain, 3)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-sizes", default="128,64,32")
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--warmup-s", type=float, default=15.0)
    ap.add_argument("--short-tokens", type=int, default=60, help="plain_short's max_tokens (a rollout's mean length)")
    ap.add_argument("--solutions", type=int, default=64, help="sampled solutions the rollout prefixes are cut from")
    ap.add_argument("--contexts", default="",
                    help="step-level mode: prompt lengths (e.g. 100,164,228,356), the decode and prefill cost of "
                         "rollout-shaped requests at each, instead of the sliding windows")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one block size, JSON here
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_cost.json"))
    args = ap.parse_args(argv)
    if args.child:
        Path(args.child).write_text(json.dumps(sweep(int(args.block_sizes), args)))
        return 0
    from benchmarks.engine_saturation import _cpu_summary

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for bs in args.block_sizes.split(","):
            out = Path(tmp) / f"{bs}.json"
            subprocess.run([sys.executable, __file__, "--block-sizes", bs, "--seconds", str(args.seconds),
                            "--warmup-s", str(args.warmup_s), "--short-tokens", str(args.short_tokens),
                            "--solutions", str(args.solutions), "--contexts", args.contexts, "--child", str(out)],
                           check=True)
            runs.append(json.loads(out.read_text()))
    result = {"cpu": _cpu_summary(), "contexts": args.contexts, "seconds": args.seconds, "warmup_s": args.warmup_s,
              "short_tokens": args.short_tokens, "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps([{k: (v["tokens_per_s"] if isinstance(v, dict) else v) for k, v in r.items()}
                      for r in runs if "contexts" not in r]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
