"""Critical tokens (issue 21): banning the contrast-found, the rollout-found and a random token, side by side.

The paper's test ("Critical Tokens Matter", Lin et al. 2024, arXiv 2411.19943): k continuations from
just before a token of an incorrect trajectory with that token banned at the first position; a critical
token's ban raises the success rate far more than a random token's. Steps, each through the command line
a user would type:

1. ``counterpoint run`` with ``--labeler omegaprm`` on the built-in arithmetic word problems (default: a
   135M model solves a few percent of them, and the contrast models need both verdicts) or GSM8K test
   problems (``--source gsm8k --data``, default ``../shared/data/gsm8k/test.jsonl``) with ``--model``
   (default: the embedded SmolLM2-135M);
2. ``counterpoint contrast-models OUT --base MODEL --output DIR`` (skipped when ``--contrast-models DIR``
   already holds a ``contrast.json``);
3. ``counterpoint critical-tokens OUT --contrast-models DIR`` (contrastive scores, rollout search inside
   OmegaPRM's first wrong step, the three ban tests);
4. :func:`aggregate` over the ``critical_tokens`` rows: success after each ban, agreement of the two
   methods (same token / same step) and with OmegaPRM's first wrong step, rollouts and seconds per
   critical token.

    python benchmarks/critical_tokens.py --problems 8 --samples 8
    python benchmarks/critical_tokens.py --model /models/qwen2.5-math-1.5b --source gsm8k --problems 200 --contrast-models /tmp/cm

Writes ``benchmarks/results/critical_tokens.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.dataset.critical_tokens import critical_figures  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "gsm8k", "test.jsonl")


def aggregate(rows: Sequence[Mapping[str, Any]], critical_seconds: float,
              contrast_seconds: Optional[float] = None) -> Dict[str, Any]:
    """The benchmark's figures from ``critical_tokens`` rows (:func:`critical_figures`) plus timing:
    ``seconds_per_critical_token`` = the critical-tokens command's wall time over the rollout-found tokens."""
    f = critical_figures(rows)
    f["critical_tokens_seconds"] = round(critical_seconds, 2)
    f["contrast_models_seconds"] = None if contrast_seconds is None else round(contrast_seconds, 2)
    f["seconds_per_critical_token"] = round(critical_seconds / f["found"], 3) if f["found"] else None
    lift = [(r["banned_success_rate"] - r["random_ban_success_rate"]) for r in rows
            if r.get("banned_success_rate") is not None and r.get("random_ban_success_rate") is not None]
    f["rollout_minus_random"], f["n_rollout_minus_random"] = (sum(lift) / len(lift) if lift else None), len(lift)
    return f


def table(f: Mapping[str, Any]) -> str:
    """The README table: success after each ban, then agreement and cost."""
    def cell(v):
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| token banned | success after the ban | trajectories |", "|---|---|---|"]
    for label, key in (("rollout-found (critical)", "rollout_ban_success"),
                       ("contrast-found (top score)", "contrast_ban_success"),
                       ("random position", "random_ban_success")):
        lines.append(f"| {label} | {cell(f[key])} | {f['n_' + key]} |")
    lines += ["", "| figure | value |", "|---|---|"]
    for label, key in (("scored incorrect trajectories", "rows"), ("rollout-found critical tokens", "found"),
                       ("contrast = rollout, same token", "agree_token"),
                       ("contrast = rollout, same step", "agree_step"),
                       ("rollout-found in OmegaPRM's first wrong step", "rollout_in_first_wrong_step"),
                       ("contrast-found in OmegaPRM's first wrong step", "contrast_in_first_wrong_step"),
                       ("search rollouts per critical token", "search_rollouts_per_critical_token"),
                       ("rollouts per critical token (search + ban tests)", "rollouts_per_critical_token"),
                       ("seconds per critical token", "seconds_per_critical_token")):
        lines.append(f"| {label} | {cell(f[key])} |")
    return "\n".join(lines)


def _cli(argv: List[str]) -> float:
    """Runs ``counterpoint ARGV`` in its own process (the engine of the run and the training never share a
    device's memory); returns its wall time, raises on a non-zero exit."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE),
                                                                    os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "counterpoint.cli", *argv], env=env).returncode
    if rc != 0:
        raise SystemExit(f"`counterpoint {' '.join(argv)}` exited {rc}")
    return time.perf_counter() - t0


def run_config(args, out: str) -> Dict[str, Any]:
    """The labelled GSM8K run (OmegaPRM locates each negative's first wrong step)."""
    if args.source == "procedural":
        source = {"kind": "procedural", "num_problems": args.problems, "seed": 0,
                  "min_ops": getattr(args, "min_ops", 1), "max_ops": getattr(args, "max_ops", 2)}
    else:
        source = {"kind": "file", "paths": [os.path.abspath(args.data)], "preset": "gsm8k",
                  "num_problems": args.problems}
    return {
        "source": source,
        "generator": {"kind": "vllm", "model": args.model, "seed": 0, "seed_mode": "request", "compile": "off"},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": args.max_tokens},
        "samples_per_problem": args.samples, "labeler": "omegaprm",
        "labeling": {"omegaprm": {"k": args.k, "search_limit": 4}},
        "report": False, "quiet": True, "output": out,
    }


def run(args) -> Dict[str, Any]:
    from counterpoint import storage
    from counterpoint.config import from_dict
    from counterpoint.pipelines.generate_corpus import run as run_pipeline

    work = args.work or tempfile.mkdtemp(prefix="cp-critical-")
    out = os.path.join(work, "out")
    cfg = from_dict(run_config(args, out))
    t0 = time.perf_counter()
    summary = run_pipeline(["--runner=FnApiRunner"], config=cfg)
    run_seconds = time.perf_counter() - t0
    models = args.contrast_models or os.path.join(work, "contrast-models")
    contrast_seconds = None
    if not os.path.isfile(os.path.join(models, "contrast.json")):
        contrast_seconds = _cli(["contrast-models", out, "--base", args.model, "--output", models,
                                 "--max-steps", str(args.contrast_steps)])
    critical_seconds = _cli(["critical-tokens", out, "--contrast-models", models, *args.critical_args])
    rows = storage.DatasetLayout(out).read_table("critical_tokens").to_pylist()
    c = summary["counts"]
    return {"model": args.model, "source": args.source,
            "data": os.path.basename(args.data) if args.source == "gsm8k" else None, "problems": args.problems,
            "samples_per_problem": args.samples, "max_tokens": args.max_tokens, "k": args.k,
            "trajectories": c["trajectories"], "incorrect": c["incorrect"], "run_seconds": round(run_seconds, 1),
            "contrast_models": _read_json(os.path.join(models, "contrast.json")),
            **aggregate(rows, critical_seconds, contrast_seconds)}


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded", help="policy and contrast base: 'embedded', a folder or a Hub id")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8, help="samples per problem")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, default=4, help="OmegaPRM rollouts per prefix")
    ap.add_argument("--source", choices=("procedural", "gsm8k"), default="procedural",
                    help="problems: the built-in arithmetic word problems (a 135M model solves a few percent: the "
                         "contrast models need both verdicts, the search a first wrong step) or GSM8K (--data)")
    ap.add_argument("--min-ops", type=int, default=1, help="procedural problems: fewest operations")
    ap.add_argument("--max-ops", type=int, default=2, help="procedural problems: most operations (easy by default: "
                                                           "the 135M model must solve some)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="GSM8K test JSONL (--source gsm8k)")
    ap.add_argument("--contrast-models", default=None, help="reuse (or write) the contrast models here")
    ap.add_argument("--contrast-steps", type=int, default=20, help="contrast-models --max-steps")
    ap.add_argument("--critical-args", nargs=argparse.REMAINDER, default=[],
                    help="further options of `counterpoint critical-tokens` (last on the line)")
    ap.add_argument("--work", default=None, help="keep the output and models here (default: a temporary folder)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "critical_tokens.json"))
    args = ap.parse_args(argv)
    result = run(args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
