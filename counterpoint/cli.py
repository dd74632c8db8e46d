"""``counterpoint`` command line: run, validate, report, push, export.

    counterpoint run [--config FILE.yaml] [--output DIR] [options] [any Beam pipeline option]
    counterpoint validate DIR [--min-rows CONFIG=N]
    counterpoint report DIR
    counterpoint push DIR --repo-id ORG/NAME [--private] [--dry-run]
    counterpoint export DIR --format FORMAT [--output DIR]
    counterpoint corrections DIR [--corrector-model M] [--cue TEXT ...] [--samples-per-cue N]
    counterpoint contrast-models DIR --base MODEL --output MODELS_DIR [--lora] [--max-steps N]
    counterpoint critical-tokens DIR --contrast-models CDIR [--no-search] [--k N] [--ban-rollouts N] [--top-k N]

Errors are one line, ``counterpoint <command>: <cause and fix>``; exit code 2 for a usage or
configuration error, 1 for a run or check that failed, 130 on Ctrl-C. ``--debug`` (before or after
the command) adds the traceback. Every command takes Beam's filesystem options for remote folders
(e.g. ``--s3_endpoint_url http://127.0.0.1:9000``, ``--project P`` for gs://).
``counterpoint run --help`` lists every run option with its default.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import traceback
from typing import List, Optional, Sequence

from counterpoint.errors import EXIT_FAILED, EXIT_INTERRUPTED, ConfigError, CounterpointError, UsageError

RUN_EPILOG = """\
Beam pipeline options pass through unchanged: any other --flag is handed to Apache Beam, e.g.
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --sdk_container_image=IMAGE
  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=EXTERNAL --environment_config=localhost:50000
  --direct_running_mode=multi_processing --direct_num_workers=4        (local, several processes)
  --s3_endpoint_url=http://127.0.0.1:9000                             (S3-compatible stores)
Without --runner, Beam's FnApiRunner runs the job in this process. Run `python -m
apache_beam.examples.wordcount --help` for the full list of Beam's options.
"""


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
    for config, why in (summary.get("empty_configs") or {}).items():
        lines.append(f"{('empty ' + config).ljust(width)}  {why}")
    ok = c["problems_in"] == c["problems_with_output"] + c["problems_rejected"]
    lines.append(f"accounting: {c['problems_in']} in = {c['problems_with_output']} with output + "
                 f"{c['problems_rejected']} rejected  [{'ok' if ok else 'MISMATCH'}]")
    return "\n".join(lines)


def run_parser():
    from counterpoint.config import RunConfig, add_flags

    parser = argparse.ArgumentParser(
        prog="counterpoint run", description="Run the corpus pipeline: sample, verify, label, pair, validate, write.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_flags(parser, with_defaults=True, cfg=RunConfig())
    return parser


def _beam_option_names() -> set:
    """Every ``--flag`` some Beam ``PipelineOptions`` class (or ours) understands."""
    from apache_beam.options.pipeline_options import PipelineOptions

    import counterpoint.pipelines.generate_corpus  # noqa: F401  (registers CounterpointOptions)

    names = set()

    class Collect:
        def add_argument(self, *flags, **kwargs):
            names.update(f for f in flags if f.startswith("--"))

        def add_argument_group(self, *a, **k):
            return self

        def __getattr__(self, _):
            return lambda *a, **k: self

    seen, todo = set(), [PipelineOptions]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
                try:
                    sub._add_argparse_args(Collect())
                except Exception:  # noqa: BLE001 - a plugin's options must not break the check
                    pass
    return names


def check_unknown(unknown: Sequence[str], known_extra: Sequence[str] = ()) -> None:
    """Fails at the door on a flag neither Counterpoint nor Beam knows (a typo would be dropped silently)."""
    flags = [a.split("=", 1)[0] for a in unknown if a.startswith("--")]
    if not flags:
        return
    beam_names = _beam_option_names() | set(known_extra)
    bad = [f for f in flags if f not in beam_names]
    if bad:
        from counterpoint.config import FLAGS

        ours = [n for f in FLAGS for n in f.names]
        hints = []
        for f in bad:
            close = difflib.get_close_matches(f, ours + sorted(beam_names), n=1)
            hints.append(f"{f}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise UsageError(f"unknown option(s): {', '.join(hints)}. "
                         "See `counterpoint run --help` (Beam options pass through).")


def check_output(output: str) -> None:
    """Driver-side: a local ``--output`` must be a folder (or not exist yet) that this user can write."""
    import os

    from counterpoint import storage
    from counterpoint.config import LOCAL_PATH_PREFIX

    if output.startswith(LOCAL_PATH_PREFIX):
        raise ConfigError(f"--output {output} is a folder name shortened in a stored run_config.json (published "
                          "files name no local folders): give the folder with --output DIR")
    if not output or not storage.is_local(output):
        return  # gs:// / s3://: the store answers for itself (and its errors are one line too)
    path = os.path.abspath(os.path.expanduser(output[len("file://"):] if output.startswith("file://") else output))
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is a file" if probe == path else f"is inside {probe}, which is a file"
        raise ConfigError(f"--output {output} {what}, not a folder: choose a folder (a new one, or a "
                          "Counterpoint output to update)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: {probe} is not writable (permission denied): choose a writable "
                          "folder or change its permissions")


def cmd_run(argv: List[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint.pipelines.generate_corpus import resolve_config, run

    parser = run_parser()
    _, unknown = parser.parse_known_args(argv)  # --help, types and choices are checked here
    check_unknown(unknown)
    try:
        check_output(resolve_config(PipelineOptions(argv)).output)
        summary = run(argv)
    except CounterpointError:
        raise
    except (ValueError, FileNotFoundError) as e:  # the driver's checks at the door (check_config)
        raise UsageError(str(e)) from e
    print(_summary_table(summary))
    return 0


def _configure_storage(extra: Sequence[str]) -> None:
    """Beam filesystem options (``--s3_endpoint_url``, ...) for commands that read remote folders."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint import storage

    check_unknown(extra)
    storage.configure(PipelineOptions(list(extra)))


def cmd_validate(args, extra) -> int:
    from counterpoint import storage
    from counterpoint.config import _min_rows
    from counterpoint.dataset.publish import GateOptions, revalidate

    _configure_storage(extra)
    floors = dict(_min_rows(x) for x in (args.min_rows or []))
    report, verdict = revalidate(storage.OutputLayout(args.dir), GateOptions(min_rows=floors),
                                 accept_current=args.accept_current)
    print(report.message())
    for c in verdict.configs.values():
        for f in verdict.raw["configs"][c.name].get("failed_expectations", []):
            if f.get("reason") == "changed_since_written" or f.get("rule") in ("written_shards", "written_rows"):
                print(f"  {c.name}: {f.get('rule') or f['reason']}: {f.get('details') or f.get('detail', '')}")
    if not verdict.success:
        failed = ", ".join(f"{c.name} ({', '.join(c.failed) or 'failed'})" for c in verdict.configs.values()
                           if not c.success)
        print(f"validation failed for {failed}: redo the run, or accept the data as it is now with "
              f"`counterpoint validate {args.dir} --accept-current`", file=sys.stderr)
    return 0 if verdict.success else 1


def cmd_report(args, extra) -> int:
    from counterpoint import storage
    from counterpoint.dataset.publish import claim
    from counterpoint.dataset.report import build_report

    _configure_storage(extra)
    output = storage.OutputLayout(args.dir)
    with claim(output, "report", create=False):
        print(build_report(output))
    return 0


def cmd_push(args, extra) -> int:
    from counterpoint import storage
    from counterpoint.dataset.hub import push_to_hub
    from counterpoint.dataset.publish import require_owned

    _configure_storage(extra)
    output = storage.OutputLayout(args.dir)
    require_owned(output, create=False)  # a plain folder is never pushed
    plan = push_to_hub(output, args.repo_id, private=args.private, dry_run=args.dry_run, endpoint=args.endpoint)
    if not args.dry_run:  # a dry run's plan is already printed by push_to_hub
        print(plan.describe())
    return 0


def cmd_export(args, extra) -> int:
    from counterpoint.dataset.export.command import cmd_export as export

    _configure_storage(extra)
    return export(args)


def cmd_corrections(args, extra) -> int:
    from counterpoint.pipelines.corrections import add_corrections

    _configure_storage(extra)
    figures = add_corrections(args.dir, corrector_model=args.corrector_model, cues=args.cue or (),
                              samples_per_cue=args.samples_per_cue, runner_options=extra or None)
    rate = figures["recovery_rate"]
    share = figures["genuine_flip_share"]
    print(f"corrections: {figures['recovered']}/{figures['attempted']} continuations verified correct "
          f"(recovery {'-' if rate is None else f'{rate:.3f}'}), genuine flips "
          f"{'-' if share is None else f'{share:.3f}'} {figures['flip_classes']}; published into {args.dir}")
    return 0


def cmd_critical_tokens(args, extra) -> int:
    from counterpoint.pipelines.critical import command

    _configure_storage(extra)
    return command(args, extra)


def cmd_contrast_models(args, extra) -> int:
    from counterpoint.critical.train import command

    _configure_storage(extra)
    return command(args)


def _command_of(argv: Sequence[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Optional[List[str]] = None) -> int:
    """The console script: dispatches, and turns every user-facing error into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = _command_of(argv)
    name = f"counterpoint {command}".rstrip()
    interrupts: List[int] = []
    restore = _note_interrupts(interrupts, debug)
    try:
        try:
            return _dispatch(argv)
        except Exception as e:
            # Beam re-raises a Ctrl-C inside a DoFn as RuntimeError("KeyboardInterrupt [while running ...]").
            if interrupts and not isinstance(e, CounterpointError):
                raise KeyboardInterrupt from e
            raise
    except CounterpointError as e:
        if debug:
            traceback.print_exc()
        lines = str(e).splitlines() or [type(e).__name__]
        print("\n".join([f"{name}: {lines[0]}"] + lines[1:]), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return _interrupted(name, debug)
    except OSError as e:  # a folder that cannot be written, a disk that is full: the person can fix it
        if debug:
            traceback.print_exc()
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"{name}: {e.strerror or e}{where} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        restore()


def _interrupted(name: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{name}: interrupted (Ctrl-C); nothing new was published, rerun the same command to resume",
          file=sys.stderr)
    return EXIT_INTERRUPTED


def _note_interrupts(seen: List[int], debug: bool = False):
    """Records each SIGINT in ``seen`` (then raises KeyboardInterrupt as usual); returns the undo.

    After a Ctrl-C, Beam's own error log of the interrupted bundle is a consequence, not news: it
    is silenced unless ``--debug``."""
    import signal

    def handler(signum, frame):
        seen.append(signum)
        if not debug:
            logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
        signal.default_int_handler(signum, frame)

    beam_log = logging.getLogger("apache_beam")
    level = beam_log.level
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None

    def restore():
        signal.signal(signal.SIGINT, previous)
        beam_log.setLevel(level)
    return restore


def _dispatch(argv: List[str]) -> int:
    # Beam logs file listings etc. on the root logger at INFO: the root stays at WARNING and
    # Counterpoint's own loggers say what happens.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("counterpoint").setLevel(logging.INFO)
    if argv and argv[0] == "run":
        # Everything after "run" goes to the pipeline (Counterpoint and Beam options alike).
        return cmd_run(argv[1:])
    parser = argparse.ArgumentParser(prog="counterpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (any position)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the corpus pipeline (see `counterpoint run --help`)")
    v = sub.add_parser("validate", help="validate an output folder (Great Expectations gate)")
    v.add_argument("dir")
    v.add_argument("--min-rows", action="append", metavar="CONFIG=N",
                   help="fail when CONFIG has fewer than N rows (repeatable; none by default)")
    v.add_argument("--accept-current", action="store_true",
                   help="accept the shards and rows there now as expected (after shards were lost or quarantined); "
                        "recorded in the verdict")
    r = sub.add_parser("report", help="rebuild report.html of an output folder")
    r.add_argument("dir")
    p = sub.add_parser("push", help="publish a validated output folder to the Hugging Face Hub")
    p.add_argument("dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--endpoint", default=None, help="Hub endpoint (default: huggingface.co or HF_ENDPOINT)")
    from counterpoint.dataset.export.command import add_export_parser

    add_export_parser(sub)
    c = sub.add_parser("corrections", help="add verified mistake -> correction traces to a labelled output")
    c.add_argument("dir")
    c.add_argument("--corrector-model", default=None, help="model that writes the corrections (default: the run's)")
    c.add_argument("--cue", action="append", metavar="TEXT", help="cue after the wrong step (repeatable)")
    c.add_argument("--samples-per-cue", type=int, default=None, metavar="N")
    from counterpoint.critical.train import add_parser as add_contrast_models_parser
    from counterpoint.pipelines.critical import add_parser as add_critical_parser

    add_contrast_models_parser(sub)
    add_critical_parser(sub)
    args, extra = parser.parse_known_args(argv)
    handlers = {"validate": cmd_validate, "report": cmd_report, "push": cmd_push, "export": cmd_export,
                "corrections": cmd_corrections, "contrast-models": cmd_contrast_models,
                "critical-tokens": cmd_critical_tokens}
    return handlers[args.command](args, extra)


if __name__ == "__main__":
    sys.exit(main())
