"""Scripted worlds for tests and benchmarks: chain problems, sampled and verified, ready to label.

Input: a scripted policy (``counterpoint.generators.scripted``), chain problems, the number of
screening samples and a seed per problem. Output: one :class:`ProblemForLabeling` per problem
whose trajectories carry the fields the labellers read (completion, steps, verdict and reason
from ``chain_verdict``, finish reason, token count) — the same shape the pipeline's verified
trajectory rows have.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

from counterpoint.generators.base import GenerationRequest
from counterpoint.generators.scripted import ScriptedGenerator
from counterpoint.labeling.labeler import ProblemForLabeling
from counterpoint.segmentation import segment
from counterpoint.testing.chain import chain_verdict


def sampled_chain_items(policy, problems: Sequence[dict], k_f: int,
                        seed_of: Callable[[int], int] = lambda i: i) -> List[ProblemForLabeling]:
    """``k_f`` samples of each problem from ``policy`` (request seed ``seed_of(i)``), verified exactly."""
    outs = ScriptedGenerator(policy).generate(
        [GenerationRequest.chat(None, p["question"], n=k_f, seed=seed_of(i)) for i, p in enumerate(problems)])
    items = []
    for p, comps in zip(problems, outs):
        trajectories = []
        for j, c in enumerate(comps):
            v = chain_verdict(c.text, p["gold_answer"], c.truncated)
            trajectories.append({"problem_id": p["problem_id"], "sample_index": j, "completion": c.text,
                                 "steps": segment(c.text), "verdict": v.verdict, "verdict_reason": v.reason,
                                 "finish_reason": c.finish_reason, "num_generated_tokens": c.num_tokens})
        items.append(ProblemForLabeling(p, trajectories))
    return items
