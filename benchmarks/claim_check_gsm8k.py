"""The arithmetic-claim check on GSM8K's reference solutions: every flag, listed.

GSM8K's reference solutions are right (up to a few typos), so every step the
claim check (``counterpoint.labeling.arithmetic``) flags is either a false alarm or
a typo in the reference. Each solution line is one step; the check reads both the
text and the calculator annotations ``<<a*b=c>>``. Reports the number of steps,
claims read, claims read in annotations vs text, and every flagged step with its
false claims (to be classified by hand: the issue asks for 0 false alarms).

    python benchmarks/claim_check_gsm8k.py --data /path/to/gsm8k/test.jsonl

Writes ``benchmarks/results/claim_check_gsm8k.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.labeling.arithmetic import claims  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "claim_check_gsm8k.json")
_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")


def check(rows):
    out = {"solutions": 0, "steps": 0, "claims": 0, "claims_in_annotations": 0, "claims_in_text": 0,
           "flagged_steps": []}
    for n, row in enumerate(rows):
        out["solutions"] += 1
        for line in row["answer"].split("\n"):
            if not line.strip() or line.startswith("####"):
                continue
            out["steps"] += 1
            # the text with its annotations blanked out, and each annotation on its own
            text = claims(_ANNOTATION_RE.sub(" ", line))
            notes = [c for m in _ANNOTATION_RE.finditer(line) for c in claims(m.group(0)[2:-2])]
            out["claims"] += len(text) + len(notes)
            out["claims_in_text"] += len(text)
            out["claims_in_annotations"] += len(notes)
            bad = [c for c in text + notes if not c.holds]
            if bad:
                out["flagged_steps"].append({"row": n, "step": line,
                                             "false_claims": [f"{c.text} (value {c.value})" for c in bad]})
    out["flags"] = len(out["flagged_steps"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="GSM8K JSONL with question/answer fields (e.g. test.jsonl)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    result = {"data": os.path.basename(args.data), **check(rows)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({k: v for k, v in result.items() if k != "flagged_steps"}))
    for flag in result["flagged_steps"]:
        print(f"row {flag['row']}: {flag['step']!r} -> {flag['false_claims']}")


if __name__ == "__main__":
    main()
