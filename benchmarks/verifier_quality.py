"""Verifier quality: precision and recall of ``correct`` verdicts on the project's verifier cases.

Every verifier (math, numeric, exact) judges every case of ``tests/data/verifier_cases.jsonl``
(adversarial equivalence pairs: factorials and huge numbers, units after numbers, intervals vs
inequalities, ``\\pm``, sets vs tuples, fractions vs decimals, percentages, separators, LaTeX
wrappers, equations, multiple answers, trailing prose, format failures). For each verifier:

* precision = correct verdicts on truly equivalent pairs / all correct verdicts;
* recall    = truly equivalent pairs judged correct / all truly equivalent pairs;
* unknown rate = unknown verdicts / cases;

over all cases and over the cases of the verifier's own ``answer_type``. ``--baseline`` adds
math-verify 0.9 alone (``parse`` + ``verify`` with its defaults, in this process, on the same
extracted answers) for comparison. Target (issue 9): math verifier precision 1.0, recall >= 0.97.

Run: ``python -m benchmarks.verifier_quality [--baseline]`` (about 10 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.verifiers import base, make_verifier  # noqa: E402
from counterpoint.verifiers.base import Verdict, Verifier  # noqa: E402
from counterpoint.verifiers.extract import extract_final_answer  # noqa: E402
from counterpoint.verifiers.quality import Case, judge_cases, load_cases, score  # noqa: E402

CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                     "verifier_cases.jsonl")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "verifier_quality.json")


class MathVerifyAlone(Verifier):
    """math-verify's ``parse``/``verify`` with their defaults (signal timeouts: main thread only)."""

    name = "math-verify-alone"

    def __init__(self):
        from math_verify import parse, verify

        self._parse, self._verify = parse, verify
        import importlib.metadata

        self.version = f"math-verify=={importlib.metadata.version('math-verify')}"

    def verify(self, completion: str, gold: str, *, truncated: bool = False) -> Verdict:
        answer = extract_final_answer(completion or "")
        if truncated:
            return base.incorrect(base.REASON_TRUNCATED, answer)
        if answer is None:
            return base.incorrect(base.REASON_NO_FINAL_ANSWER, None)
        g = self._parse("\\boxed{" + gold + "}")
        a = self._parse("\\boxed{" + answer + "}")
        if not g:
            return base.unknown(base.REASON_UNPARSABLE_GOLD, answer)
        if not a:
            return base.unknown(base.REASON_UNPARSABLE_ANSWER, answer)
        return base.correct(answer) if self._verify(g, a) else base.incorrect(base.REASON_ANSWER_MISMATCH, answer)


def _scores(cases: Sequence[Case], verdicts: Sequence[Verdict], answer_type: str) -> Dict[str, object]:
    own = [(c, v) for c, v in zip(cases, verdicts) if c.answer_type == answer_type]
    return {
        "all_cases": score(cases, verdicts),
        "own_answer_type": score([c for c, _ in own], [v for _, v in own]) if own else None,
    }


def run(verifiers: List[str], baseline: bool, pool_size: int) -> Dict[str, object]:
    cases = load_cases(CASES)
    out: Dict[str, object] = {
        "cases": len(cases),
        "equivalent_pairs": sum(1 for c in cases if c.equivalent is True),
        "ambiguous_pairs": sum(1 for c in cases if c.equivalent is None),
        "by_category": {},
        "verifiers": {},
    }
    for c in cases:
        out["by_category"][c.category] = out["by_category"].get(c.category, 0) + 1
    runs = [(name, make_verifier(name, pool_size=pool_size) if name == "math" else make_verifier(name)) for name in verifiers]
    if baseline:
        runs.append(("math-verify-alone", MathVerifyAlone()))
    for name, verifier in runs:
        with verifier:
            if name == "math":
                verifier.verify(r"\boxed{1}", "1")  # start the pool outside the timing
            t0 = time.perf_counter()
            verdicts = judge_cases(verifier, cases)
            wall = time.perf_counter() - t0
        entry = _scores(cases, verdicts, "math" if name == "math-verify-alone" else name)
        entry["version"] = verifier.version
        entry["wall_s"] = round(wall, 3)
        entry["items_per_s"] = round(len(cases) / wall, 1) if wall > 0 else None
        out["verifiers"][name] = entry
    return out


def _table(result: Dict[str, object]) -> str:
    lines = [
        "| verifier | precision | recall | unknown rate | precision (own type) | recall (own type) | correct verdicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["verifiers"].items():
        a, o = entry["all_cases"], entry["own_answer_type"]
        own_p = f"{o['precision']:.3f}" if o else "-"
        own_r = f"{o['recall']:.3f}" if o else "-"
        lines.append(f"| {name} | {a['precision']:.3f} | {a['recall']:.3f} | {a['unknown_rate']:.3f} | {own_p} | {own_r} "
                     f"| {a['correct_verdicts']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verifiers", default="math,numeric,exact")
    ap.add_argument("--baseline", action="store_true", help="also run math-verify alone (its defaults)")
    ap.add_argument("--pool-size", type=int, default=2)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    result = run([v for v in args.verifiers.split(",") if v], args.baseline, args.pool_size)
    print(f"{result['cases']} cases, {result['equivalent_pairs']} truly equivalent, {result['ambiguous_pairs']} ambiguous")
    print(_table(result))
    for name, entry in result["verifiers"].items():
        a = entry["all_cases"]
        if a["false_positives"]:
            print(f"{name}: false positives {a['false_positives']}")
        print(f"{name}: missed equivalences {a['missed_equivalences']}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, sort_keys=True)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
