"""``counterpoint export OUT_DIR --format FORMAT [--format ...] [--output DIR]``: argparse glue for ``export_output``.

``counterpoint/cli.py`` wires it with ``add_export_parser(sub)`` and dispatches
``"export"`` to :func:`cmd_export`.
"""

from __future__ import annotations

import argparse
import sys

from counterpoint.dataset.export.api import FORMATS, ExportError, export_output
from counterpoint.schemas.exports import DEFAULT_PLACEHOLDER


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    e = subparsers.add_parser(
        "export", help="write trainer-ready configs (TRL stepwise, OpenRLHF PRM, Step-DPO, weighted pairs, GRPO "
                       "prompts, verl RL, NPO forget/retain, grouped negatives, SFT positives, token-weighted pairs) from a validated "
                       "output directory")
    e.add_argument("dir", help="a validated Counterpoint output directory")
    e.add_argument("--format", dest="formats", action="append", required=True, choices=FORMATS,
                   help="export format (repeatable)")
    e.add_argument("--output", default=None,
                   help="write a separate Hub-layout dataset here (default: add the configs to DIR)")
    e.add_argument("--placeholder", default=DEFAULT_PLACEHOLDER,
                   help="openrlhf-prm step tag; must be one token of the trainer's tokenizer "
                        f"(default {DEFAULT_PLACEHOLDER!r}, Math-Shepherd's)")
    e.add_argument("--default-weight", type=float, default=1.0,
                   help="weighted-pairs weight of outcome pairs and unmeasured step pairs (default 1.0)")
    e.add_argument("--pass-band", default=None, metavar="LO,HI",
                   help="grpo-prompts/verl-rl: keep problems with LO <= pass rate <= HI (closed); default: "
                        "0 < pass rate < 1 (drop problems solved always or never)")
    e.add_argument("--control", action="store_true",
                   help="grpo-prompts/verl-rl: add an equal-size unfiltered control config (<config>_control)")
    e.add_argument("--max-per-problem", type=int, default=None, metavar="N",
                   help="sft-positives: at most N distinct verified-correct completions per problem (default: all)")
    e.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help="token-weighted-pairs: the policy model (folder, Hub id or 'embedded') whose tokenizer the "
                        "token weights are checked against (default: the critical_tokens rows' model_id)")
    return e


def cmd_export(args: argparse.Namespace) -> int:
    """Exports from the live version of ``args.dir`` (a Counterpoint output) into a new version of the target."""
    from counterpoint import storage
    from counterpoint.dataset.publish import require_owned

    source = storage.OutputLayout(args.dir)
    require_owned(source, create=False)
    target = storage.OutputLayout(args.output) if args.output else None
    try:
        result = export_output(source, args.formats, target=target, placeholder=args.placeholder,
                               default_weight=args.default_weight, pass_band=args.pass_band, control=args.control,
                               max_per_problem=args.max_per_problem, tokenizer=args.tokenizer)
    except ExportError as e:
        print(f"counterpoint export: {e}", file=sys.stderr)
        return e.exit_code
    print(result.message())
    return 0
