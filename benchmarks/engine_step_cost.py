"""What the end of a labelled job can reach: the engine's decode step cost, fitted from a job's own windows.

A CPU engine's decode step costs a fixed part (weights read, scheduling, sampling) plus a part per
running sequence: ``step = a + b * n``, so its rate at ``n`` sequences is ``n / (a + b * n)``. An
``engine_saturation.py`` result has two windows with different occupancy measured on the same engine
in the same run: the sampling window (the engine full) and the labelling-only window (the last trees'
probes after the last sample came back). Their ``engine_running_sequences`` (the engine's own count)
and tokens/s fix ``a`` and ``b``. The fit is checked against a figure it never saw: plain sampling's
measured tokens/s (the engine held at its capacity, before and after the job).

The fit passes through the tail's point, so it cannot bound the tail by itself: what it gives is the
step cost, checked, and how many sequences the tail would need to reach a target share of plain
(``sequences_for_target``). The bound comes from a measurement the job never touched: an
``engine_concurrency.py`` result from the same machine (steady-state tokens/s with a fixed number of
sequences in flight). From it, ``tail_reachable`` is the engine's measured rate at the tail's
occupancy (interpolated between the measured windows) over its rate at capacity; a tail that
reaches it leaves nothing for the schedule to win: the work holds too few sequences. The fit's
prediction for each measured window is reported beside it.

    python benchmarks/engine_step_cost.py RESULT.json [RESULT.json ...] [--concurrency engine_concurrency.json]
        [--target 0.95] [--out step_cost.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def fit_step_cost(n_full: float, rate_full: float, n_tail: float, rate_tail: float) -> Dict[str, float]:
    """``step = a + b * n`` through two (sequences, tokens/s) points; seconds per step, per sequence."""
    if not (n_full > n_tail > 0 and rate_full > 0 and rate_tail > 0):
        raise ValueError(f"need two windows with n_full > n_tail > 0 and positive rates, got "
                         f"({n_full}, {rate_full}) and ({n_tail}, {rate_tail})")
    step_full, step_tail = n_full / rate_full, n_tail / rate_tail
    per_sequence = (step_full - step_tail) / (n_full - n_tail)
    fixed = step_tail - per_sequence * n_tail
    return {"fixed_s": fixed, "per_sequence_s": per_sequence}


def rate_at(fit: Dict[str, float], sequences: float) -> float:
    return sequences / (fit["fixed_s"] + fit["per_sequence_s"] * sequences)


def sequences_for(fit: Dict[str, float], rate: float) -> Optional[float]:
    """Fewest sequences at which the fitted engine reaches ``rate`` tokens/s (None: never)."""
    room = 1.0 - rate * fit["per_sequence_s"]
    return rate * fit["fixed_s"] / room if room > 0 else None


def analyse(result: Dict, target: float = 0.95) -> Tuple[Dict, Dict[str, float]]:
    """The step-cost fit of one ``engine_saturation.py`` result (its report row, and the fit itself) and
    the sequences its tail would need."""
    sampling = result["phases"]["sampling_window"]
    tail = result["phases"]["labelling_only_window"]
    plain = result["plain"]["tokens_per_s"]
    capacity = result["engine_capacity"]
    fit = fit_step_cost(sampling["engine_running_sequences"], sampling["tokens_per_s"],
                        tail["engine_running_sequences"], tail["tokens_per_s"])
    predicted_plain = rate_at(fit, capacity)
    needed = sequences_for(fit, target * plain)
    row = {
        "problems": result["problems"],
        "engine_capacity": capacity,
        "fixed_ms_per_step": round(1e3 * fit["fixed_s"], 1),
        "ms_per_sequence_per_step": round(1e3 * fit["per_sequence_s"], 2),
        "plain_tokens_per_s": plain,
        "predicted_plain_tokens_per_s": round(predicted_plain, 1),
        "predicted_plain_error": round(predicted_plain / plain - 1.0, 3),
        "tail_seconds": round(tail["end_s"] - tail["start_s"], 1),
        "tail_engine_sequences": tail["engine_running_sequences"],
        "tail_saturation": tail["saturation"],
        "target": target,
        "sequences_for_target": None if needed is None else math.ceil(needed),
        "job_saturation": result["saturation"],
    }
    return row, fit


def measured_share(concurrency: Dict, sequences: float, capacity: int) -> Optional[float]:
    """The engine's measured tokens/s at ``sequences`` (linear between measured windows) over its rate at
    ``capacity``; None when the windows do not cover both."""
    rows = sorted((row["window"], row["tokens_per_s"]) for row in concurrency["windows"])
    full = dict(rows).get(capacity)
    if not full:
        return None
    for (n0, r0), (n1, r1) in zip(rows, rows[1:]):
        if n0 <= sequences <= n1:
            return round((r0 + (r1 - r0) * (sequences - n0) / (n1 - n0)) / full, 3)
    return None


def compare_concurrency(fit: Dict[str, float], concurrency: Dict) -> List[Dict]:
    """Measured steady-state tokens/s per window beside the fit's prediction (a check the fit never saw)."""
    return [{"sequences": row["window"], "measured_tokens_per_s": row["tokens_per_s"],
             "predicted_tokens_per_s": round(rate_at(fit, row["window"]), 1)}
            for row in concurrency["windows"]]


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="engine_saturation.py result JSON files")
    ap.add_argument("--concurrency", help="an engine_concurrency.py result from the same machine")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--out", help="write the analysis as JSON here")
    args = ap.parse_args(argv)

    concurrency = json.loads(Path(args.concurrency).read_text()) if args.concurrency else None
    rows = []
    for path in args.results:
        row, fit = analyse(json.loads(Path(path).read_text()), args.target)
        row["result"] = Path(path).name
        if concurrency is not None:
            row["tail_reachable"] = measured_share(concurrency, row["tail_engine_sequences"], row["engine_capacity"])
            row["concurrency"] = compare_concurrency(fit, concurrency)
        rows.append(row)
        needed = row["sequences_for_target"]
        print(f"{row['result']}: step {row['fixed_ms_per_step']} ms + {row['ms_per_sequence_per_step']} ms/sequence; "
              f"plain predicted {row['predicted_plain_tokens_per_s']} vs measured {row['plain_tokens_per_s']} tok/s; "
              f"tail {row['tail_seconds']} s at {row['tail_engine_sequences']} sequences: "
              f"{row['tail_saturation']} of plain (engine alone at that occupancy: {row.get('tail_reachable')}); "
              f"{args.target} needs {needed if needed is not None else 'more than the engine holds'} sequences")
        for c in row.get("concurrency", []):
            print(f"  {c['sequences']:>4} sequences: measured {c['measured_tokens_per_s']} tok/s, "
                  f"fit {c['predicted_tokens_per_s']}")
    out = {"target": args.target, "results": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
