"""Beam wiring of counterpoint.clean (issue 20): the evaluation-set index, problem and Step-DPO prompt
decontamination, and per-problem trajectory cleaning (dedup + process-error flags).

The algorithms are Beam-free (``counterpoint.clean``); here they are only applied:

* :class:`ReadEvalIndex`: evaluation files are matched and read by the workers (one element per file),
  and their items combined into one :class:`counterpoint.clean.decontam.EvalIndex`, a singleton side input
  (why a side input and not a ``CoGroupByKey`` on n-grams: see counterpoint.clean.decontam).
* :class:`DecontaminateProblems`: ``(order_key, problem)`` -> clean problems + ``contaminated`` rejects.
* :class:`GuardStepPrompts`: finished states -> states without the step pairs whose prompt (question +
  prefix) is contaminated, each dropped pair a ``contaminated_step_prompt`` row reject.
* :class:`CleanTrajectoriesDoFn`: batches of verified states -> ``duplicate_of`` / ``process_error`` set.
"""

from __future__ import annotations

from typing import Any, Dict, List

import apache_beam as beam
from apache_beam.metrics import Metrics

from counterpoint import corpus, progress
from counterpoint.clean.decontam import DecontaminationConfig, EvalIndex, EvalItem, contaminated_step_pairs
from counterpoint.schemas import records

NAMESPACE = progress.NAMESPACE


class _ReadEvalFile(beam.DoFn):
    """``(path_index, pattern)`` -> every :class:`EvalItem` of every matching file (read on a worker)."""

    def __init__(self, config: DecontaminationConfig):
        self.config = config

    def process(self, element):
        from counterpoint.clean.decontam import read_eval_file
        from counterpoint.sources.files import expand_paths

        index, pattern = element
        for path in expand_paths(pattern):
            name = self.config.name_of(index, path)
            for item in read_eval_file(path, name):
                Metrics.counter(NAMESPACE, "eval_items").inc()
                yield item


class _BuildIndex(beam.CombineFn):
    """Eval items -> one :class:`EvalIndex` (items are few; the index is built once, on a worker)."""

    def __init__(self, n: int, threshold: float):
        self.n, self.threshold = n, threshold

    def create_accumulator(self):
        return []

    def add_input(self, acc, item):
        acc.append(item)
        return acc

    def merge_accumulators(self, accs):
        return [item for acc in accs for item in acc]

    def extract_output(self, acc):
        return EvalIndex(acc, self.n, self.threshold)


class ReadEvalIndex(beam.PTransform):
    """Pipeline begin -> a one-element PCollection holding the evaluation sets' :class:`EvalIndex`."""

    def __init__(self, config: DecontaminationConfig):
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "EvalPatterns" >> beam.Create(list(enumerate(self.config.paths)))
            | "ReadEvalFiles" >> beam.ParDo(_ReadEvalFile(self.config))
            | "BuildEvalIndex" >> beam.CombineGlobally(_BuildIndex(self.config.n, self.config.threshold))
        )


class _Decontaminate(beam.DoFn):
    def __init__(self, n: int):
        self.n = n

    def process(self, item, index: EvalIndex):
        key, row = item
        match = index.check(row["question"])
        if match is None:
            yield item
            return
        Metrics.counter(NAMESPACE, "reject_contaminated").inc()
        yield beam.pvalue.TaggedOutput("rejects", records.make_reject(
            stage="decontaminate", reason="contaminated", problem_id=row["problem_id"], scope="problem",
            detail=match.detail(self.n), key=list(key),
            payload={"question": row["question"][:500], "benchmark": match.benchmark, "item_id": match.item_id,
                     "match": match.kind, "overlap": round(match.overlap, 4)}))


class DecontaminateProblems(beam.PTransform):
    """``(order_key, problem)`` + the index -> ``{"problems": clean ones, "rejects": contaminated rejects}``."""

    def __init__(self, config: DecontaminationConfig):
        super().__init__()
        self.config = config

    def expand(self, problems):
        index = problems.pipeline | "ReadEvalIndex" >> ReadEvalIndex(self.config)
        split = problems | "CheckProblems" >> beam.ParDo(
            _Decontaminate(self.config.n), index=beam.pvalue.AsSingleton(index)).with_outputs("rejects", main="problems")
        return {"problems": split.problems, "rejects": split.rejects, "index": index}


class GuardStepPrompts(beam.DoFn):
    """A state -> the state without its contaminated step / first-pit pairs (``contaminated_step_prompt``)."""

    def __init__(self, n: int):
        self.n = n

    def process(self, state, index: EvalIndex):
        hits = [] if state.failed else contaminated_step_pairs(state.preferences, state.problem["question"], index)
        if not hits:
            yield state
            return
        dropped = {p["id"] for p, _ in hits}
        rejects = [records.make_reject(
            stage="decontaminate", reason="contaminated_step_prompt", problem_id=state.problem_id, scope="row",
            detail=f"pair {p['id']}: {m.detail(self.n)}", key=p["id"],
            payload={"pair_id": p["id"], "benchmark": m.benchmark, "item_id": m.item_id}) for p, m in hits]
        Metrics.counter(NAMESPACE, "reject_contaminated_step_prompt").inc(len(hits))
        yield state.evolve(preferences=[p for p in state.preferences if p["id"] not in dropped],
                           rejects=list(state.rejects) + rejects)


class CleanTrajectoriesDoFn(beam.DoFn):
    """A batch of verified states -> the same with ``process_error`` and ``duplicate_of`` set (per problem)."""

    def __init__(self, dedup):
        self.dedup = dedup

    def process(self, batch: List[Any]):
        out = []
        for s in batch:
            if s.failed:
                out.append(s)
                continue
            rows, stats = corpus.clean_trajectories(s.trajectories, self.dedup)
            out.append(s.evolve(trajectories=rows).add_stats(**stats))
        yield out


def reject_benchmark(reject: Dict[str, Any]) -> Dict[str, int]:
    """Summary keys of one early reject: ``contaminated_by:<benchmark>`` for a contaminated problem."""
    if reject.get("reason") != "contaminated" or not reject.get("payload"):
        return {}
    import json

    return {f"contaminated_by:{json.loads(reject['payload']).get('benchmark')}": 1}
