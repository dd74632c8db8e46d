"""WriteConfigs and RunStats: every finished problem fans out into the Parquet configs and one small stats record.

``WriteConfigs`` input: the finished :class:`ProblemState` collection plus the
read-level rejects; output: one ``WriteToParquet`` sink per config under the
run's staging folder (zstd, Hub shard names ``train-SSSSS-of-NNNNN``).

``RunStats`` combines every state into one small dict (counts per verdict, per
pair type, per reject reason, rows per config, screening outcomes, summed stage
stats) written as ``<staging>/counts/run_stats.json``: the driver reads that,
never the rows, so its memory does not grow with the data.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, Sequence

import apache_beam as beam

from counterpoint import corpus, schemas
from counterpoint.rl import signed
from counterpoint.rl.stats import problem_stats_rows
from counterpoint.schemas import records
from counterpoint.state import ProblemState


def _rows(state: ProblemState, config: str):
    """The rows of ``config`` for one problem. ``problem_stats`` and the signed ``trajectories`` columns are
    derived here, where a problem's samples and verdicts are together (resumed checkpoints get them too)."""
    if config == "problem_stats":
        return problem_stats_rows(state.problem, state.trajectories)
    if config == "trajectories":
        return signed.with_signed_columns(list(corpus.rows_for(config, [state])))
    return corpus.rows_for(config, [state])


class WriteConfigs(beam.PTransform):
    """One Parquet sink per config; ``rejects`` also gets the read-level and dedupe rejects."""

    def __init__(self, data_dir: str, configs: Sequence[str], num_shards: int):
        super().__init__()
        self.data_dir = data_dir
        self.configs = list(configs)
        self.num_shards = num_shards

    def expand(self, inputs):
        states, early_rejects = inputs
        for config in self.configs:
            rows = states | f"Rows[{config}]" >> beam.FlatMap(_rows, config)
            if config == "rejects":
                conformed = early_rejects | "ConformEarlyRejects" >> beam.Map(records.REJECTS.conform)
                rows = (rows, conformed) | "AllRejects" >> beam.Flatten()
            _ = rows | f"Write[{config}]" >> beam.io.WriteToParquet(
                self.data_dir.rstrip("/") + f"/{config}/train",
                schema=schemas.table(config).arrow_schema(),
                codec="zstd",
                num_shards=self.num_shards,
                shard_name_template="-SSSSS-of-NNNNN",
                file_name_suffix=".parquet",
            )
        return None


def state_stats(state: ProblemState) -> Dict[str, Any]:
    """What the run summary needs from one problem (small, additive)."""
    c: Counter = Counter()
    c["states"] = 1
    c["resumed"] = int(state.resumed)
    c["failed"] = int(state.failed)
    c["with_output"] = int(not state.failed and bool(state.trajectories))
    for config in corpus.ROW_CONFIGS:
        c[f"rows:{config}"] = len(state.rows(config))
    c["rows:problem_stats"] = int(bool(state.trajectories))  # one row per problem with samples (_rows)
    verdicts = Counter(t["verdict"] for t in state.trajectories)
    for v, n in verdicts.items():
        c[f"verdict:{v}"] = n
    c["truncated"] = sum(t["finish_reason"] == "length" for t in state.trajectories)
    c["generated_tokens"] = sum(t["num_generated_tokens"] for t in state.trajectories)
    correct = any(t["verdict"] == records.VERDICT_CORRECT and t["finish_reason"] != "length" for t in state.trajectories)
    incorrect = verdicts.get(records.VERDICT_INCORRECT, 0) > 0
    if not state.failed:
        c["problems_pairable"] = int(correct and incorrect)
        c["problems_all_correct"] = int(correct and not incorrect)
        c["problems_all_incorrect"] = int(incorrect and not correct)
        c["problems_no_verdict"] = int(not correct and not incorrect)
    for p in state.preferences:
        c[f"pair_type:{p['pair_type']}"] += 1
    for r in state.rejects:
        c[f"reject:{r['reason']}"] += 1
        c[f"reject_scope:{r['scope']}"] += 1
    for k, v in state.stats.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            c[f"stat:{k}"] += v
    return dict(c)


def reject_stats(reject: Dict[str, Any]) -> Dict[str, Any]:
    return {"rows:rejects": 1, f"reject:{reject['reason']}": 1, f"reject_scope:{reject['scope']}": 1}


class _SumDicts(beam.CombineFn):
    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, d):
        acc.update(d)
        return acc

    def merge_accumulators(self, accs):
        out = Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(acc)


class RunStats(beam.PTransform):
    """States + early rejects + the problems-in count -> ``<counts_dir>/run_stats.json`` (one small record)."""

    def __init__(self, counts_dir: str):
        super().__init__()
        self.counts_dir = counts_dir

    def expand(self, inputs):
        states, early_rejects, problems_in = inputs
        per_state = states | "StateStats" >> beam.Map(state_stats)
        per_reject = early_rejects | "RejectStats" >> beam.Map(reject_stats)
        read_count = problems_in | "ProblemsInStats" >> beam.Map(lambda n: {"problems_in": n})
        return (
            (per_state, per_reject, read_count)
            | "AllStats" >> beam.Flatten()
            | "SumStats" >> beam.CombineGlobally(_SumDicts())
            | "StatsJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
            | "WriteStats" >> beam.io.WriteToText(self.counts_dir.rstrip("/") + "/run_stats", file_name_suffix=".json",
                                                 shard_name_template="")
        )
