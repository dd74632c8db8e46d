"""Mistake -> correction traces (issue 22): recovery rate, genuine-flip share, engine tokens per kept correction.

Scripted worlds (default): chain problems whose solver slips with a false arithmetic claim
(``false_claim``), a misread operand (``misread``) or slips that the next step sometimes repairs
(``rescued``); the scripted corrector (``counterpoint.testing.corrections``) repairs the proved
wrong step after a cue with a planted rate and a planted mix of flip classes. Each world is
labelled with OmegaPRM and then corrected by ``counterpoint.labeling.corrections``; the measured
recovery rate (with its 95% Wilson interval) and genuine-flip share are set against the planted
ones.

Real engine (``--model embedded`` or a model folder): a whole ``counterpoint run`` with
``--labeler omegaprm --corrections`` on procedural word problems, read back from its
``corrections`` config.

    python benchmarks/corrections.py                       # scripted worlds
    python benchmarks/corrections.py --model embedded --problems 8

Writes ``benchmarks/results/corrections.json`` (``corrections_embedded.json`` with ``--model``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.generators.base import SamplingParams  # noqa: E402
from counterpoint.generators.scripted import ScriptedGenerator, chain_problem  # noqa: E402
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems  # noqa: E402
from counterpoint.labeling import corrections as C  # noqa: E402
from counterpoint.testing.chain import chain_verify  # noqa: E402
from counterpoint.testing.corrections import ChainCorrectorPolicy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORLDS = {
    "false_claim": dict(step_error_rate=0.12, slip="overshoot"),
    "misread": dict(step_error_rate=0.12, slip="misread"),
    "rescued": dict(step_error_rate=0.12, slip="overshoot", repair_rate=0.5, no_answer_rate=0.15),
}
PLANTED = dict(recover_rate=0.35, revise_share=0.5, restart_share=0.2)


def run_world(name: str, problems: int, seed: int) -> Dict[str, Any]:
    policy = ChainCorrectorPolicy(**WORLDS[name], **PLANTED)
    sampling = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=256)
    from counterpoint.testing.worlds import sampled_chain_items

    items = sampled_chain_items(policy, [chain_problem(seed, i, num_steps=8) for i in range(problems)], 8,
                                seed_of=lambda i: seed * 1000 + i)
    labelled = label_problems(items, ScriptedGenerator(policy), chain_verify,
                              LabelerConfig(omegaprm=OmegaPRMConfig(k=4)), sampling=sampling)
    by_id = {r.problem_id: r.step_labels for r in labelled}
    t0 = time.perf_counter()
    results = C.correct_problems([C.CorrectionItem(it.problem, it.trajectories, by_id[it.problem["problem_id"]])
                                  for it in items], ScriptedGenerator(policy), chain_verify,
                                 C.CorrectionsConfig(enabled=True, samples_per_cue=4), sampling=sampling,
                                 system_prompt=None, run_seed=seed)
    rows = [r for res in results for r in res.rows]
    figures = C.summarize(rows, sum(res.generated_tokens for res in results))
    skipped: Dict[str, int] = {}
    for res in results:
        for k, v in res.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    return {"planted_recovery_rate": PLANTED["recover_rate"], "planted_genuine_flip_share": PLANTED["revise_share"],
            **figures, "skipped_negatives": skipped, "seconds": round(time.perf_counter() - t0, 3),
            "recovery_within_interval": figures["recovery_lo"] <= PLANTED["recover_rate"] <= figures["recovery_hi"]}


def run_real(model: str, problems: int, samples: int, max_tokens: int) -> Dict[str, Any]:
    from counterpoint import storage
    from counterpoint.config import from_dict
    from counterpoint.pipelines.generate_corpus import run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = from_dict({
            "source": {"kind": "procedural", "num_problems": problems, "min_ops": 1, "max_ops": 2},
            "generator": {"kind": "vllm", "model": model, "seed": 0, "seed_mode": "request", "compile": "off"},
            "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens},
            "samples_per_problem": samples, "labeler": "omegaprm",
            "labeling": {"omegaprm": {"k": 4, "search_limit": 4}},
            "corrections": {"enabled": True, "samples_per_cue": 4, "max_negatives_per_problem": 4},
            "report": False, "quiet": True, "output": os.path.join(tmp, "out"),
        })
        t0 = time.perf_counter()
        summary = run(["--runner=FnApiRunner"], config=cfg)
        rows = storage.DatasetLayout(os.path.join(tmp, "out")).read_table("corrections").to_pylist()
    figures = C.summarize(rows, sum(r["num_generated_tokens"] for r in rows))
    c = summary["counts"]
    return {"model": model, "problems": problems, "samples_per_problem": samples, "max_tokens": max_tokens,
            "step_labels_rows": c.get("rows_step_labels"), "incorrect_samples": c.get("incorrect"),
            **figures, "empty_reason": (summary.get("empty_configs") or {}).get("corrections"),
            "run_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a real engine: 'embedded' or a model folder (default: scripted)")
    ap.add_argument("--problems", type=int, default=None, help="problems per world (scripted 40, real 8)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.model:
        result = {"real": run_real(args.model, args.problems or 8, args.samples, args.max_tokens)}
        path = args.out or os.path.join(HERE, "results", "corrections_embedded.json")
    else:
        result = {"worlds": {w: run_world(w, args.problems or 40, args.seed) for w in WORLDS}, "planted": PLANTED}
        path = args.out or os.path.join(HERE, "results", "corrections.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
