"""Export scale benchmark (issue 19, item 5): every export format at 1k / 10k / 100k problems.

``python benchmarks/scale.py --exports [--export-sizes 1000,10000,100000]`` (or this file).

Setup (not measured): a synthetic validated output per size, written shard by shard (5,000
problems per shard, the pipeline's default sharding): the rows of ``tests/_tiny_model.corpus_rows``
(4 samples per problem, step labels, step values, step/first-pit/outcome pairs) with per-problem
variations (an unknown verdict, a truncated sample, an all-correct problem) so every RL format has
work, the signed trajectory columns (``counterpoint.rl.signed``) and ``problem_stats``
(``counterpoint.rl.stats``). Its verdict is bound to the shards' sha256 as the gate does
(``verdicts.bind_content``); the source is not re-validated by Great Expectations here.

Measured, per size and format, in a fresh **driver subprocess**: ``stage_exports`` — verified,
streamed reading, bucketing, building and writing of the export shards (the gate that follows
in ``export_output`` is the validation job, measured by ``scale.py``'s own cases):

* ``driver_peak_rss_mb``: ``VmHWM`` of that subprocess (baseline imports included,
  ``baseline_rss_mb`` is the same process before the export);
* ``source_rows`` / ``rows_written`` and ``source_rows_per_s`` / ``rows_written_per_s``;
* ``buckets``: problem buckets the sources were spilled into.

Target: driver peak RSS flat (within 10%) from 1k to 100k problems. What bounds it: one source shard
(its bytes, hashed, and its decoded row group: the pipeline writes one row group per shard of up to
5,000 problems) plus one bucket (4,096 source rows). So it is flat once shards are full (10k -> 100k);
a 1k-problem source has 1k-problem shards and needs less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "export_scale.json")
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)
SIZES = (1000, 10000, 100000)
SHARD_PROBLEMS = 5000
FORMATS = ("trl-stepwise", "openrlhf-prm", "step-dpo", "weighted-pairs", "grpo-prompts", "verl-rl",
           "npo-forget-retain", "grouped-negatives", "sft-positives")


def _vary(rows: Dict[str, List[dict]], chunk: int) -> Dict[str, List[dict]]:
    """Unique ids per chunk; per-problem outcome variations; signed columns; problem_stats."""
    from counterpoint.rl import signed, stats

    tag = f"c{chunk:03d}-"
    for config, config_rows in rows.items():
        for r in config_rows:
            if "problem_id" in r and r["problem_id"]:
                r["problem_id"] = tag + r["problem_id"]
            r["id"] = tag + r["id"]
    by_problem: Dict[str, List[dict]] = {}
    for t in rows["trajectories"]:
        by_problem.setdefault(t["problem_id"], []).append(t)
    traj, pstats = [], []
    for i, (pid, ts) in enumerate(sorted(by_problem.items())):
        if i % 4 == 0:
            ts[3].update(verdict="unknown", verdict_reason="unconfirmed_equivalence")
        elif i % 4 == 1:
            ts[2].update(finish_reason="length", verdict_reason="truncated")
        elif i % 4 == 2:
            for t in ts:
                t.update(verdict="correct", verdict_reason=None)
        ts = signed.with_signed_columns(ts)
        traj += ts
        pstats.append(stats.problem_stats_row({"problem_id": pid}, ts))
    rows["trajectories"], rows["problem_stats"] = traj, pstats
    return rows


def make_source(root: str, n_problems: int) -> Dict[str, int]:
    """A validated output of ``n_problems`` at ``root`` (one shard per 5,000 problems per config)."""
    import pyarrow.parquet as pq

    from _tiny_model import corpus_rows

    from counterpoint import storage
    from counterpoint.dataset.verdicts import bind_content
    from counterpoint.schemas.records import rows_to_table

    layout = storage.DatasetLayout(root, plain=True)
    n_shards = max(1, -(-n_problems // SHARD_PROBLEMS))
    counts: Dict[str, int] = {}
    entries: Dict[str, List[dict]] = {}
    for chunk in range(n_shards):
        rows = _vary(corpus_rows(min(SHARD_PROBLEMS, n_problems - chunk * SHARD_PROBLEMS)), chunk)
        for config, config_rows in rows.items():
            name = f"train-{chunk:05d}-of-{n_shards:05d}.parquet"
            folder = os.path.join(layout.data_dir, config)
            os.makedirs(folder, exist_ok=True)
            pq.write_table(rows_to_table(config, config_rows), os.path.join(folder, name), compression="zstd")
            counts[config] = counts.get(config, 0) + len(config_rows)
            entries.setdefault(config, []).append({"path": f"{config}/{name}", "rows": len(config_rows),
                                                   "success": True})
    verdict = {"success": True, "validated_at": "benchmark",
               "configs": {c: {"success": True, "rows": counts[c], "shards": e} for c, e in entries.items()}}
    storage.write_json(layout.validation_summary, verdict)
    bind_content(layout, None)
    return counts


def _hwm_mb() -> float:
    """Peak RSS of this process image (``VmHWM``; unlike ``ru_maxrss`` it does not carry the parent's
    peak across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(source: str, into: str, fmt: str) -> Dict[str, Any]:
    """Runs in the driver subprocess: stage one format, report RSS and throughput."""
    from counterpoint import storage
    from counterpoint.dataset.export import api, stream
    from counterpoint.dataset.verdicts import Verdict

    base = _hwm_mb()
    src = storage.DatasetLayout(source, plain=True)
    verdict, wanted = api._source_configs(src, [fmt])
    source_rows = sum(verdict.configs[c].rows for c in wanted)
    t0 = time.perf_counter()
    built = api.stage_exports(src, [fmt], storage.DatasetLayout(into, plain=True),
                              placeholder="ки", default_weight=1.0, max_rows_per_shard=api.MAX_ROWS_PER_SHARD,
                              rl_options=api.rl.RLOptions(control=fmt in api.BAND_FORMATS))
    dt = time.perf_counter() - t0
    written = sum(b.rows for b in built.values())
    return {"format": fmt, "source_rows": source_rows, "rows_written": written, "seconds": round(dt, 3),
            "source_rows_per_s": round(source_rows / dt, 1), "rows_written_per_s": round(written / dt, 1),
            "buckets": stream.bucket_count(Verdict.read(src), list(wanted)),
            "baseline_rss_mb": round(base, 1),
            "driver_peak_rss_mb": round(_hwm_mb(), 1)}


def run_case(source: str, fmt: str, work: str) -> Dict[str, Any]:
    into = tempfile.mkdtemp(dir=work, prefix="into-")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", source, into, fmt],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode != 0:
        raise RuntimeError(f"{fmt}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assess(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per format: driver peak RSS spread (max / min) over all sizes, and over the sizes whose source shards
    are full (>= SHARD_PROBLEMS problems: the driver holds one shard, so smaller runs hold less)."""
    out = {}
    for fmt in FORMATS:
        r = [x for x in rows if x["format"] == fmt]
        full = [x["driver_peak_rss_mb"] for x in r if x["problems"] >= SHARD_PROBLEMS]
        if len(r) >= 2:
            rss = [x["driver_peak_rss_mb"] for x in r]
            out[fmt] = {"sizes": sorted(x["problems"] for x in r), "rss_mb": rss,
                        "rss_spread_all_sizes": round(max(rss) / min(rss), 3),
                        "rss_spread_full_shards": round(max(full) / min(full), 3) if len(full) >= 2 else None,
                        "flat_within_10pct_full_shards": len(full) >= 2 and max(full) / min(full) <= 1.10}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--measure", nargs=3, metavar=("SOURCE", "INTO", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="cp-export-scale-") as work:
        for n in (int(x) for x in args.export_sizes.split(",")):
            t0 = time.perf_counter()
            source = os.path.join(work, f"src-{n}")
            make_source(source, n)
            print(f"{n} problems: source written in {time.perf_counter() - t0:.1f}s", flush=True)
            for fmt in args.formats.split(","):
                r = {"problems": n, **run_case(source, fmt, work)}
                rows.append(r)
                print(f"  {fmt:<18} {r['rows_written']:>8} rows in {r['seconds']:>7.2f}s "
                      f"({r['source_rows_per_s']:>9.0f} source rows/s), buckets {r['buckets']:>3}, "
                      f"driver peak RSS {r['driver_peak_rss_mb']:.0f} MB (baseline {r['baseline_rss_mb']:.0f})",
                      flush=True)
    result = {"cases": rows, "assessment": assess(rows), "machine": {"cpus": os.cpu_count()},
              "what": "stage_exports in a fresh driver subprocess (read, bucket, build, write; no gate)"}
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["assessment"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
