"""The consensus stage: a judge model names the first wrong step of each labelled negative.

Consensus filtering (Qwen team, "The Lessons of Developing Process Reward Models in
Mathematical Reasoning", 2025) around :mod:`counterpoint.labeling.consensus`: one
ProcessBench-style request per labelled solution of the batch (every solution with
step-label or step-value rows: ``solution_targets``), one engine call;
``keep-agreeing`` keeps a solution's rows (labels, values, step and first-pit pairs)
only where the judge parsed and agreed (row-scope rejects ``consensus_disagreement``,
``consensus_unparsable``, ``consensus_not_judged``), ``annotate`` keeps and flags
them. Input: labelled states. Output: states with ``judge_first_error_index`` /
``judge_agrees`` on their step label rows. When the judge is the run's own model, a labelled run judges
inside its engine stream instead (``SampleAndLabelDoFn``, same :func:`judged_state`).
"""

from __future__ import annotations

from counterpoint.labeling.consensus import (
    ConsensusConfig,
    apply_consensus,
    judge_requests,
    judgements_from,
    solution_targets,
)
from counterpoint.transforms.stages import EngineSpec, ProblemBatchDoFn


class JudgeDoFn(ProblemBatchDoFn):
    stage = "judge"

    def __init__(self, engine: EngineSpec, retry, *, consensus: ConsensusConfig):
        super().__init__(retry, engine)
        self.consensus = consensus

    def process_problems(self, states):
        targets = {s.problem_id: solution_targets(s.step_labels, s.step_values) for s in states}
        rows = [t for s in states for t in targets[s.problem_id]]
        problems = {s.problem_id: s.problem for s in states}
        requests = judge_requests(rows, problems, None, config=self.consensus)
        results = self.generator.generate(requests) if requests else []
        replies = [comps[0].text if comps else None for comps in results]
        tokens = {r.request_id: sum(c.num_tokens for c in comps) for r, comps in zip(requests, results)}
        judgements = judgements_from(rows, replies)
        return [judged_state(s, targets[s.problem_id], judgements, tokens, self.consensus) for s in states]

    def progress_values(self, states):
        return {"rows": sum(s.stats.get("judge_judged", 0) for s in states)}


def judged_state(s, targets, judgements, tokens, consensus: ConsensusConfig):
    """``s`` with the judge's verdicts applied (``apply_consensus``); ``tokens``: judge tokens by request id."""
    kept, rejects, stats = apply_consensus(s.step_labels, s.step_values, s.preferences, judgements,
                                           consensus.mode, tolerance=consensus.tolerance)
    counts = {f"judge_{k}": v for k, v in stats.items() if isinstance(v, int)}
    counts["judge_tokens"] = sum(tokens.get(str(t["id"]), 0) for t in targets)
    return s.evolve(step_labels=kept["step_labels"], step_values=kept["step_values"],
                    preferences=kept["preferences"], rejects=list(s.rejects) + rejects).add_stats(**counts)
