"""The labelling stage: OmegaPRM (or per-step MC) step labels, values and step pairs for a batch of problems.

A thin Beam wrapper around :func:`counterpoint.labeling.label_problems`: all trees of
the batch share the engine (the labelling scheduler keeps it busy), rows come back
per problem. Input: verified states. Output: states with ``step_labels``,
``step_values``, step / first-pit ``preferences`` and row-level rejects.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import apache_beam as beam
from apache_beam.utils import shared

from counterpoint import progress
from counterpoint.generators.base import SamplingParams
from counterpoint.transforms.stages import EngineSpec, ProblemBatchDoFn, acquire_verifier_suite

log = logging.getLogger(__name__)


class LabelDoFn(ProblemBatchDoFn):
    """Step labels, per-step values and step/first-pit pairs (OmegaPRM, Luo et al. 2024, or Math-Shepherd MC)."""

    stage = "label"

    def __init__(self, engine: EngineSpec, verifier, verifier_handle: shared.Shared, retry, *, labeling,
                 sampling: SamplingParams, system_prompt: Optional[str], segmentation: str):
        super().__init__(retry, engine)
        self.verifier = verifier
        self._verifier_handle = verifier_handle
        self.labeling = labeling
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.segmentation = segmentation

    def setup(self):
        super().setup()
        self.suite = acquire_verifier_suite(self._verifier_handle, self.verifier)

    def process_problems(self, states):
        from counterpoint.labeling import ProblemForLabeling, label_problems

        items = [ProblemForLabeling(problem=s.problem, trajectories=s.trajectories,
                                    system_prompt=self.system_prompt, segmentation_mode=self.segmentation)
                 for s in states]
        tokens: Dict[str, float] = {"generated": 0, "prompt": 0, "cached": 0}

        def on_round(stats):
            tokens["generated"] += stats.get("generated_tokens", 0)
            tokens["prompt"] += stats.get("prompt_tokens", 0)
            tokens["cached"] += stats.get("cached_prompt_tokens", 0)
            progress.report("label", rollouts=stats.get("samples", 0), tokens=stats.get("generated_tokens", 0))

        def on_problem_done(result):
            self.report_problem(result.problem_id)

        results = label_problems(items, self.generator, self.suite.judge, self.labeling, sampling=self.sampling,
                                 on_round=on_round, on_problem_done=on_problem_done)
        if hasattr(self.generator, "flush"):
            self.generator.flush()
        by_id = {r.problem_id: r for r in results}
        out = []
        for s in states:
            r = by_id[s.problem_id]
            numeric = {k: v for k, v in r.stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            extra = {f"label_{k}": v for k, v in numeric.items()}
            if "screening" in r.stats:
                extra[f"screened_{r.stats['screening']}"] = 1
            # Engine-level token counts belong to the batch; spread evenly for the summary.
            n = len(states)
            extra.update(rollout_generated_tokens=tokens["generated"] / n, rollout_prompt_tokens=tokens["prompt"] / n,
                         rollout_cached_prompt_tokens=tokens["cached"] / n)
            out.append(s.evolve(
                step_labels=list(r.step_labels), step_values=list(r.step_values),
                preferences=list(s.preferences) + list(r.preferences),
                rejects=list(s.rejects) + list(r.rejects),
            ).add_stats(**extra))
        return out


class Label(beam.PTransform):
    """Batches of verified states -> rebatched for labelling -> labelled (-> judged, with consensus on)."""

    def __init__(self, label: LabelDoFn, batch_size: int, judge=None):
        super().__init__()
        self.label_fn = label  # (not ``self.label``: that is the transform's name in Beam)
        self.batch_size = batch_size
        self.judge = judge

    def expand(self, batches):
        labelled = (
            batches
            | "Unbatch" >> beam.FlatMap(lambda batch: batch)
            | "BatchForLabeling" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "Label" >> beam.ParDo(self.label_fn)
        )
        if self.judge is not None:
            labelled = labelled | "Judge" >> beam.ParDo(self.judge)
        return labelled
