"""``counterpoint`` command line: run, validate, report, push.

    counterpoint run [--config FILE.yaml] [--output DIR] [--num-problems N] [--samples N]
                     [--labeler omegaprm|mc] [... any Beam pipeline option, e.g. --runner=DataflowRunner]
    counterpoint validate DIR
    counterpoint report DIR
    counterpoint push DIR --repo-id ORG/NAME [--private] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional


def _summary_table(summary) -> str:
    c = summary["counts"]
    t = summary["timing"]
    rows = [
        ("problems in", c["problems_in"]),
        ("problems with output", c["problems_with_output"]),
        ("problems rejected", c["problems_rejected"]),
        ("problems resumed from checkpoints", c.get("problems_resumed", 0)),
        ("trajectories", c["trajectories"]),
        ("  correct / incorrect / unknown", f"{c['correct']} / {c['incorrect']} / {c['unknown']}"),
        ("  truncated", c["truncated"]),
        ("preference pairs", f"{c['pairs']} {c.get('pairs_by_type', {})}"),
        ("unpaired rows", c.get("rows_unpaired", 0)),
    ]
    if "rows_step_labels" in c:
        rows += [("step_labels rows", c["rows_step_labels"]), ("step_values rows", c["rows_step_values"]),
                 ("rollout tokens (generated)", c["rollout_generated_tokens"])]
    rows += [
        ("rejects (rows)", f"{c['rejects']} {summary.get('rejects_by_reason', {})}"),
        ("generated tokens (samples)", c["generated_tokens"]),
        ("cache hits / tokens saved", f"{c.get('cache_hits', 0)} / {c.get('cache_tokens_saved', 0)}"),
        ("wall time", f"{t.get('total_s', t.get('wall_s', 0)):.1f} s"),
        ("generated tokens/s", t.get("generated_tokens_per_s")),
    ]
    if "validation" in summary:
        rows.append(("validation", "passed" if summary["validation"]["success"] else "FAILED"))
    width = max(len(k) for k, _ in rows)
    lines = ["", "Counterpoint run summary", "-" * (width + 30)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    ok = c["problems_in"] == c["problems_with_output"] + c["problems_rejected"]
    lines.append(f"accounting: {c['problems_in']} in = {c['problems_with_output']} with output + "
                 f"{c['problems_rejected']} rejected  [{'ok' if ok else 'MISMATCH'}]")
    return "\n".join(lines)


def cmd_run(argv: List[str]) -> int:
    from counterpoint.pipelines.finalize import AccountingError, ValidationFailed
    from counterpoint.pipelines.generate_corpus import run

    try:
        summary = run(argv)
    except ValidationFailed as e:
        print(f"validation failed; failing shards were quarantined:\n{e}", file=sys.stderr)
        return 2
    except AccountingError as e:
        print(f"accounting check failed: {e}", file=sys.stderr)
        return 3
    print(_summary_table(summary))
    return 0


def cmd_validate(args) -> int:
    from counterpoint.validation import validate_output

    report = validate_output(args.dir)
    from counterpoint.publish.card import write_dataset_card

    write_dataset_card(args.dir)
    print(report.message())
    return 0 if report.success else 2


def cmd_report(args) -> int:
    from counterpoint.report import build_report

    print(build_report(args.dir))
    return 0


def cmd_push(args) -> int:
    from counterpoint.publish.hub import push_to_hub

    plan = push_to_hub(args.dir, args.repo_id, private=args.private, dry_run=args.dry_run,
                       endpoint=args.endpoint)
    if not args.dry_run:  # a dry run's plan is already printed by push_to_hub
        print(plan.describe() if hasattr(plan, "describe") else plan)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "vllm", "great_expectations", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv and argv[0] == "run":
        # Everything after "run" goes to the pipeline (Counterpoint and Beam options alike).
        return cmd_run(argv[1:])
    parser = argparse.ArgumentParser(prog="counterpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the corpus pipeline (see `counterpoint run --help`)")
    v = sub.add_parser("validate", help="validate an output directory (Great Expectations gate)")
    v.add_argument("dir")
    r = sub.add_parser("report", help="rebuild report.html of an output directory")
    r.add_argument("dir")
    p = sub.add_parser("push", help="publish a validated output directory to the Hugging Face Hub")
    p.add_argument("dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: huggingface.co or HF_ENDPOINT)")
    args = parser.parse_args(argv)
    return {"validate": cmd_validate, "report": cmd_report, "push": cmd_push}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
