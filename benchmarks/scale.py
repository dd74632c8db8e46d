"""Scale benchmark: the corpus pipeline from 1k to 100k problems (issue 8, item 7).

What runs: ``counterpoint run --source chain --generator scripted`` (the scripted
``ChainPolicy`` solves arithmetic chain problems, no model), with and without the
OmegaPRM labeller, on Beam's multi-process FnApiRunner
(``--direct_running_mode=multi_processing --direct_num_workers=2``) and on the
PortableRunner against a job service (``local_job_service_main``, which runs one SDK
worker) and an external SDK worker pool (``worker_pool_main``) that this script starts
in their own processes and stops at the end (the topology of Flink/Spark with a Python
worker-pool sidecar).

Each case runs the real CLI entry point in its own **driver subprocess**, which
reports, after the run:

* ``problems_per_s``: problems / pipeline seconds (the Beam job, from submission to
  finish) and ``problems_per_s_end_to_end`` (problems / the whole command: config
  checks, job, accounting, validation gate, card);
* ``ms_per_problem``: pipeline seconds / problems; the figures across sizes are also
  fitted as ``t = fixed + marginal * n`` (``fit`` in the JSON);
* ``driver_peak_rss_mb``: ``getrusage(RUSAGE_SELF).ru_maxrss`` of the driver process
  only. Its child processes are not included (``driver_children_peak_rss_mb``, from
  ``RUSAGE_CHILDREN``: the largest child, i.e. an SDK worker on the FnApiRunner). On the
  FnApiRunner the driver *is* the runner: it holds the data crossing stage boundaries
  (shuffles, side inputs), so its memory grows with the data by design. On the portable
  runner that state lives in the job service (``job_service_peak_rss_mb``, its ``VmHWM``)
  and the driver only submits, finalises and runs the validation gate;
* ``graph_bytes``: ``pipeline.to_runner_api().SerializeToString()`` of the job the
  driver built (same options, same config);
* ``cache_objects`` / ``checkpoint_objects``: files under ``<out>/_work/cache`` and
  ``<out>/_work/problems`` (objects an object store would hold), and the *requests*
  an object store would bill: ``writes`` / ``reads`` / ``lists`` of
  ``counterpoint.storage`` per area, counted in every process (driver, SDK workers,
  worker pool) by a ``sitecustomize`` hook this script puts on ``PYTHONPATH``
  (``--no-count-requests`` turns it off).

Targets (issue 8): driver RSS and graph bytes flat (within 10%) from 1k to 100k
problems; throughput within 20% of linear (problems/s at 100k >= 0.8 x problems/s
at 10k, where the fixed start-up cost no longer dominates; 1k is shown too).

Workload (chosen so the whole matrix fits in well under 45 minutes on a 2-core machine:
17 minutes measured): 2 samples per problem, 4-step chains, per-step slip rate 0.05 of
the "misread" kind (a wrong operand with true arithmetic, so the arithmetic-claim check
cannot see it and the labeller must find the first error with rollouts); about 30% of
the problems have both a correct and an incorrect sample and are labelled. The labelled
runs use k=2 rollouts per probe and a search limit of 4 (binary search for the first
error, then the per-step values), ``--no-report``. The validation gate (Great
Expectations, a Beam job of its own, run by the driver) is on, except in the portable
series that isolates the driver (see :func:`make_plan`).

Exports (issue 19): ``python benchmarks/scale.py --exports [--export-sizes 1000,10000,100000]`` runs
:mod:`benchmarks.export_scale` (every export format; results in ``benchmarks/results/export_scale.json``).

Run: ``python benchmarks/scale.py`` (the full matrix, see :func:`make_plan`), or a part, e.g.
``python benchmarks/scale.py --sizes 1000,10000 --labeler none --runner fnapi --validate both``.
Results are merged into ``benchmarks/results/scale.json`` keyed by case, so partial
reruns update their cases and keep the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "scale.json")
if ROOT not in sys.path:  # run as a script: this checkout's package
    sys.path.insert(0, ROOT)
DEFAULT_SIZES = (1000, 10000, 100000)
PORTABLE_SIZES = (10000,)
SAMPLES = 2
CHAIN_STEPS = 4
STEP_ERROR_RATE = 0.05
# "misread": a wrong operand with true arithmetic, so the arithmetic-claim check cannot spot it and the
# labeller has to find the first error with rollouts (binary search), as it would on a real model.
SLIP = "misread"
ROLLOUTS = 2
SEARCH_LIMIT = 4
WORKERS = 2

# Put on PYTHONPATH of every process of a case (driver, SDK workers, worker pool): counts the
# object-store requests counterpoint.storage makes, per area of the output folder, one line per call
# appended to a per-process file (O_APPEND: safe across threads, survives a killed worker).
SITECUSTOMIZE = r'''
import importlib.abc, importlib.machinery, os, sys

_DIR = os.environ.get("CP_COUNT_DIR")


def _area(path):
    path = str(path)
    for marker, name in (("/_work/cache/", "cache"), ("/_work/problems/", "checkpoints"),
                         ("/_work/staging/", "staging")):
        if marker in path:
            return name
    return "other"


def _log(op, path):
    fd = os.open(os.path.join(_DIR, f"{os.getpid()}.tsv"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{op}\t{_area(path)}\n".encode())
    finally:
        os.close(fd)


def _patch(storage):
    write_bytes, read_bytes, match = storage.write_bytes, storage.read_bytes, storage.match

    def counted_write(path, data, *a, **k):
        _log("write", path)
        return write_bytes(path, data, *a, **k)

    def counted_read(path):
        _log("read", path)
        return read_bytes(path)

    def counted_match(pattern):
        _log("list", pattern)
        return match(pattern)

    storage.write_bytes, storage.read_bytes, storage.match = counted_write, counted_read, counted_match


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "counterpoint.storage":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if _DIR:
    import importlib.util
    sys.meta_path.insert(0, _Finder())
'''


# ---------------------------------------------------------------------------
# One case, in its own driver process
# ---------------------------------------------------------------------------
def write_config(path: str, labeler: Optional[str]) -> None:
    """The run config of a case (what has no command-line flag: chain length, slip rate, labelling knobs)."""
    lines = [
        f"source: {{kind: chain, seed: 0, min_ops: {CHAIN_STEPS}, max_ops: {CHAIN_STEPS}}}",
        f"generator: {{kind: scripted, seed: 0, scripted: {{policy: chain, step_error_rate: {STEP_ERROR_RATE}, slip: {SLIP}}}}}",
        "sampling: {temperature: 0.8, top_p: 0.95, max_tokens: 256}",
        f"samples_per_problem: {SAMPLES}",
    ]
    if labeler:
        lines += [f"labeler: {labeler}",
                  f"labeling: {{omegaprm: {{k: {ROLLOUTS}, search_limit: {SEARCH_LIMIT}}}}}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root)) if os.path.isdir(root) else 0


def graph_bytes(argv: Sequence[str]) -> int:
    """Serialized pipeline proto of the job ``argv`` describes (built, not run)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint import storage
    from counterpoint.pipelines.generate_corpus import build_pipeline, check_config, resolve_config

    options = PipelineOptions(list(argv))
    cfg = check_config(resolve_config(options))
    layout = storage.OutputLayout(cfg.output)
    p = beam.Pipeline(options=options)
    build_pipeline(p, cfg, layout, layout.staging("graph-size"))
    return len(p.to_runner_api().SerializeToString())


def run_case(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Runs ``counterpoint run`` in this process (the driver) and measures it; see the module docstring."""
    from counterpoint import cli

    argv = spec["argv"]
    start = time.perf_counter()
    rc = cli.main(["run", *argv])
    wall = time.perf_counter() - start
    driver_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # this process only (Linux: KiB)
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = spec["output"]
    from counterpoint import storage

    summary = storage.read_json(storage.DatasetLayout(out).summary_path)  # the live version's
    import counterpoint

    return {
        "rc": rc,
        "command_s": round(wall, 3),
        "driver_peak_rss_mb": round(driver_kb / 1024, 1),
        "driver_children_peak_rss_mb": round(children_kb / 1024, 1),
        "summary": {"counts": summary["counts"], "timing": summary["timing"],
                    "screening": summary.get("screening", {}),
                    "validation": (summary.get("validation") or {}).get("success")},
        "cache_objects": count_files(os.path.join(out, "_work", "cache")),
        "checkpoint_objects": count_files(os.path.join(out, "_work", "problems")),
        "graph_bytes": graph_bytes(argv),
        "counterpoint_path": os.path.dirname(counterpoint.__file__),
    }


# ---------------------------------------------------------------------------
# Peak memory of the portable services (counterpoint.testing.local_services starts and stops them)
# ---------------------------------------------------------------------------
def peak_rss_mb(pid: int) -> Optional[float]:
    """``VmHWM`` (peak resident set) of a live process, in MiB (Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------
def case_name(runner: str, labeler: Optional[str], n: int, validate: bool) -> str:
    return f"{runner}/{labeler or 'none'}/{n}" + ("" if validate else "/no-validate")


def read_request_counts(count_dir: str) -> Dict[str, Dict[str, int]]:
    counts: Dict[str, Dict[str, int]] = {}
    for name in os.listdir(count_dir):
        with open(os.path.join(count_dir, name)) as f:
            for line in f:
                op, area = line.rstrip("\n").split("\t")
                counts.setdefault(area, {}).setdefault(op, 0)
                counts[area][op] += 1
    return counts


def measure(runner: str, labeler: Optional[str], n: int, validate: bool, work: str,
            count_requests: bool, keep: bool) -> Dict[str, Any]:
    name = case_name(runner, labeler, n, validate)
    # Same-length folder names for every size: paths are part of the job graph (sinks, cache, checkpoints).
    case_dir = os.path.join(work, f"{runner}-{labeler or 'none'}-{n:07d}" + ("" if validate else "-nv"))
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    out = os.path.join(case_dir, "out")
    config = os.path.join(case_dir, "run.yaml")
    write_config(config, labeler)
    count_dir = os.path.join(case_dir, "requests")
    os.makedirs(count_dir)
    hook_dir = os.path.join(case_dir, "hook")
    os.makedirs(hook_dir)
    with open(os.path.join(hook_dir, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE)
    venv_bin = os.path.dirname(sys.executable)
    env = dict(os.environ)
    # The worker pool starts SDK workers with a bare `python -c ...`: the venv's python must come first.
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    # This checkout's package in every process, plus the request counter.
    env["PYTHONPATH"] = os.pathsep.join(([hook_dir] if count_requests else []) + [ROOT])
    env["CP_COUNT_DIR"] = count_dir if count_requests else ""
    env.setdefault("COUNTERPOINT_SKIP_VLLM", "1")
    argv = ["--config", config, "--num-problems", str(n), "--output", out, "--no-report", "--quiet"]
    if not validate:
        argv.append("--no-validate")
    spec = {"argv": argv, "output": out}
    load_before = os.getloadavg()[0]
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load {load_before:.2f}) ...", flush=True)
    service_peaks: Dict[str, Optional[float]] = {}
    with contextlib.ExitStack() as stack:
        if runner == "portable":
            from counterpoint.testing import local_services

            def keep_peak(service: str, proc) -> None:
                service_peaks[f"{service}_peak_rss_mb"] = peak_rss_mb(proc.pid)

            services = stack.enter_context(local_services.portable_services(case_dir, env=env, cwd=ROOT,
                                                                            before_stop=keep_peak))
            spec["argv"] = argv + services.options
        else:
            spec["argv"] = argv + ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                                   f"--direct_num_workers={WORKERS}"]
        spec_path = os.path.join(case_dir, "spec.json")
        result_path = os.path.join(case_dir, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        log_path = os.path.join(case_dir, "driver.log")
        with open(log_path, "wb") as log:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "_case", spec_path, result_path],
                                  env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not os.path.exists(result_path):
        with open(log_path, "rb") as f:
            tail = f.read()[-4000:].decode("utf-8", "replace")
        raise RuntimeError(f"{name}: driver exited with {proc.returncode}; log tail:\n{tail}")
    with open(result_path) as f:
        r = json.load(f)
    counts, timing = r["summary"]["counts"], r["summary"]["timing"]
    if counts["problems_in"] != n or counts["problems_in"] != counts["problems_with_output"] + counts["problems_rejected"]:
        raise RuntimeError(f"{name}: accounting does not hold: {counts}")
    pipeline_s = timing["pipeline_s"]
    requests = read_request_counts(count_dir) if count_requests else {}
    row = {
        "case": name, "runner": runner, "labeler": labeler or "none", "problems": n, "validate": validate,
        "workers": 1 if runner == "portable" else WORKERS,
        "pipeline_s": round(pipeline_s, 2),
        "validate_s": round(timing.get("validate_s", 0.0), 2),
        "command_s": r["command_s"],
        "problems_per_s": round(n / pipeline_s, 1),
        "problems_per_s_end_to_end": round(n / r["command_s"], 1),
        "ms_per_problem": round(1000 * pipeline_s / n, 3),
        "driver_peak_rss_mb": r["driver_peak_rss_mb"],
        "driver_children_peak_rss_mb": r["driver_children_peak_rss_mb"],
        **service_peaks,
        "graph_bytes": r["graph_bytes"],
        "cache_objects": r["cache_objects"],
        "checkpoint_objects": r["checkpoint_objects"],
        "cache_objects_per_problem": round(r["cache_objects"] / n, 3),
        "checkpoint_objects_per_problem": round(r["checkpoint_objects"] / n, 4),
        "requests": requests,
        "requests_per_problem": {area: {op: round(c / n, 3) for op, c in ops.items()}
                                 for area, ops in requests.items()},
        "trajectories": counts["trajectories"],
        "step_labels": counts.get("rows_step_labels"),
        "labelled_problems": r["summary"]["screening"].get("kept"),
        "rollout_tokens": counts.get("rollout_generated_tokens"),
        "validation_passed": r["summary"]["validation"],
        "stage_seconds": timing.get("stages", {}),
        # The machine is shared: the 1-minute load average before and after the case.
        "load_avg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "counterpoint_path": r["counterpoint_path"],
    }
    if not keep:
        shutil.rmtree(case_dir, ignore_errors=True)
    return row


def fit_line(points: Sequence[tuple]) -> Optional[Dict[str, float]]:
    """Least squares ``seconds = fixed_s + marginal_ms * n / 1000``."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return {"fixed_s": round(my - slope * mx, 2), "marginal_ms_per_problem": round(1000 * slope, 3)}


def assess(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per (runner, labeller, validate) series: flatness of RSS and graph bytes, throughput vs linear."""
    series: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['runner']}/{r['labeler']}" + ("" if r["validate"] else "/no-validate"), []).append(r)
    verdicts = {}
    for key, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["problems"])
        if len(rs) < 2:
            continue
        lo, hi = rs[0], rs[-1]
        v: Dict[str, Any] = {"sizes": [r["problems"] for r in rs]}
        # What the driver process holds besides submitting and finalising the job. The validation gate is a
        # Beam job on the run's runner: in the driver only where the runner itself is (FnApiRunner).
        v["driver_holds"] = ("the runner (FnApiRunner: data crossing stages"
                             + (", the validation gate's job)" if lo["validate"] else ")")
                             if lo["runner"] == "fnapi" else "nothing else")
        v["driver_rss_growth"] = round(hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"] - 1, 3)
        v["graph_bytes_growth"] = round(hi["graph_bytes"] / lo["graph_bytes"] - 1, 4)
        v["rss_flat"] = abs(v["driver_rss_growth"]) <= 0.10
        v["graph_flat"] = abs(v["graph_bytes_growth"]) <= 0.10
        # Throughput vs linear: the largest size against the one before it (start-up amortised),
        # and against the smallest.
        prev = rs[-2]
        v["throughput_ratio_vs_prev"] = round(hi["problems_per_s"] / prev["problems_per_s"], 3)
        v["throughput_ratio_vs_smallest"] = round(hi["problems_per_s"] / lo["problems_per_s"], 3)
        v["throughput_linear"] = v["throughput_ratio_vs_prev"] >= 0.8
        v["fit_pipeline"] = fit_line([(r["problems"], r["pipeline_s"]) for r in rs])
        verdicts[key] = v
    return verdicts


def print_table(rows: List[Dict[str, Any]]) -> None:
    head = ("case", "pipe s", "valid s", "prob/s", "ms/prob", "drv RSS MB", "graph B", "cache/pb", "ckpt/pb",
            "cache PUT/pb", "ckpt PUT/pb")
    fmt = "{:<34} {:>8} {:>7} {:>7} {:>8} {:>10} {:>8} {:>8} {:>8} {:>12} {:>11}"
    print(fmt.format(*head))
    for r in rows:
        req = r.get("requests_per_problem", {})
        print(fmt.format(r["case"], r["pipeline_s"], r["validate_s"], r["problems_per_s"], r["ms_per_problem"],
                         r["driver_peak_rss_mb"], r["graph_bytes"], r["cache_objects_per_problem"],
                         r["checkpoint_objects_per_problem"], req.get("cache", {}).get("write", "-"),
                         req.get("checkpoints", {}).get("write", "-")))


def make_plan(args) -> List[tuple]:
    """``(runner, labeler, n, validate)`` cases.

    Without any selection flag, the full matrix (about 30 minutes on 2 cores): the FnApiRunner with and
    without OmegaPRM at every size; the PortableRunner without a labeller at every size, with and without
    the validation gate (its driver holds no runner state, so it shows the driver's own memory, and the
    gate's); the PortableRunner with OmegaPRM at 10k. With any selection flag, the cross product of the
    flags given (defaults for the others).
    """
    sizes = [int(s) for s in (args.sizes or ",".join(map(str, DEFAULT_SIZES))).split(",") if s]
    if not any((args.sizes, args.portable_sizes, args.labeler, args.runner, args.validate)):
        plan = [("fnapi", labeler, n, True) for labeler in (None, "omegaprm") for n in sizes]
        plan += [("portable", None, n, v) for v in (True, False) for n in sizes]
        plan += [("portable", "omegaprm", n, True) for n in PORTABLE_SIZES]
        return plan
    portable_sizes = [int(s) for s in (args.portable_sizes or ",".join(map(str, sizes))).split(",") if s]
    labelers = [None if x == "none" else x for x in (args.labeler or "none,omegaprm").split(",") if x]
    runners = [x for x in (args.runner or "fnapi,portable").split(",") if x]
    unknown = [r for r in runners if r not in ("fnapi", "portable")] + [x for x in labelers if x not in (None, "omegaprm")]
    if unknown:
        raise SystemExit(f"unknown --runner/--labeler value(s): {unknown}")
    validates = {"on": [True], "off": [False], "both": [True, False]}[args.validate or "on"]
    return [(runner, labeler, n, v)
            for runner in runners
            for labeler in labelers
            for n in (sizes if runner == "fnapi" else portable_sizes)
            for v in validates]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None,
                        help="problem counts for the FnApiRunner cases, comma-separated (default 1000,10000,100000)")
    parser.add_argument("--portable-sizes", default=None,
                        help="problem counts for the PortableRunner cases (default: --sizes)")
    parser.add_argument("--labeler", default=None, help="none and/or omegaprm, comma-separated (default: both)")
    parser.add_argument("--runner", default=None, help="fnapi and/or portable, comma-separated (default: both)")
    parser.add_argument("--validate", choices=("on", "off", "both"), default=None,
                        help="the validation gate in each run (both: every case twice)")
    parser.add_argument("--no-count-requests", dest="count_requests", action="store_false",
                        help="do not count object-store requests (no sitecustomize hook)")
    parser.add_argument("--work-dir", default=None, help="where the runs write (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep each case's output folder and logs")
    parser.add_argument("--results", default=RESULTS, help="results JSON (cases are merged into it)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: recompute the assessment of the results file and print the table")
    parser.add_argument("--exports", action="store_true",
                        help="benchmark every export format instead (benchmarks/export_scale.py; its own flags follow)")
    args, rest = parser.parse_known_args(argv)
    if args.exports:
        from benchmarks import export_scale

        return export_scale.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    plan = [] if args.report_only else make_plan(args)
    work = args.work_dir or tempfile.mkdtemp(prefix="cp-scale-")
    os.makedirs(work, exist_ok=True)
    print(f"{len(plan)} case(s): " + ", ".join(case_name(*c) for c in plan), flush=True)

    rows = []
    started = time.perf_counter()
    for runner, labeler, n, v in plan:
        row = measure(runner, labeler, n, v, work, args.count_requests, args.keep)
        rows.append(row)
        print(f"    {row['pipeline_s']} s pipeline, {row['problems_per_s']} problems/s, "
              f"driver {row['driver_peak_rss_mb']} MB, graph {row['graph_bytes']} B, "
              f"{row['cache_objects_per_problem']} cache + {row['checkpoint_objects_per_problem']} checkpoint "
              f"objects/problem", flush=True)
    if not args.work_dir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    previous: Dict[str, Any] = {}
    if os.path.exists(args.results):
        with open(args.results) as f:
            previous = json.load(f)
    merged = {r["case"]: r for r in previous.get("cases", [])}
    merged.update({r["case"]: r for r in rows})
    all_rows = sorted(merged.values(), key=lambda r: (r["runner"], r["labeler"], not r["validate"], r["problems"]))
    result = {
        "benchmark": "scale",
        "workload": {"source": "chain", "generator": "scripted (ChainPolicy)", "samples_per_problem": SAMPLES,
                     "chain_steps": CHAIN_STEPS, "step_error_rate": STEP_ERROR_RATE, "slip": SLIP,
                     "omegaprm": {"k": ROLLOUTS, "search_limit": SEARCH_LIMIT},
                     "fnapi": f"multi_processing, {WORKERS} workers",
                     "portable": "local_job_service_main + worker_pool_main (EXTERNAL), 1 SDK worker",
                     "report": False},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "targets": {"driver_rss_growth_max": 0.10, "graph_bytes_growth_max": 0.10,
                    "throughput_ratio_min": 0.80},
        "cases": all_rows,
        "assessment": assess(all_rows),
        "last_run": previous.get("last_run") if not rows else {
            "cases": [r["case"] for r in rows], "seconds": round(time.perf_counter() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    print()
    print_table(all_rows)
    print()
    for key, v in result["assessment"].items():
        print(f"{key}: sizes {v['sizes']}: driver RSS {v['driver_rss_growth']:+.1%} "
              f"[{'flat' if v['rss_flat'] else 'GROWS'}], graph {v['graph_bytes_growth']:+.2%} "
              f"[{'flat' if v['graph_flat'] else 'GROWS'}], problems/s largest/previous "
              f"{v['throughput_ratio_vs_prev']} [{'linear' if v['throughput_linear'] else 'SUB-LINEAR'}], "
              f"fit {v['fit_pipeline']}; the driver also holds: {v['driver_holds']}")
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_case":
        sys.path.insert(0, ROOT)
        with open(sys.argv[2]) as f:
            case_spec = json.load(f)
        case_result = run_case(case_spec)
        with open(sys.argv[3], "w") as f:
            json.dump(case_result, f)
        sys.exit(0)
    sys.exit(main())
