"""The corrections stage (issue 22): mistake -> correction traces from labelled negatives.

A thin Beam wrapper around :func:`counterpoint.labeling.corrections.correct_problems`. Input:
batches of labelled states (``trajectories`` with verdicts, ``step_labels``). Output: the same
states with ``corrections`` rows (and ``corrections_*`` stats). The engine is the run's (the same
``EngineSpec`` handle, so one engine per worker) or the ``--corrector-model``'s.

A failed engine call never fails the problem: its other rows stand, and a row-scope reject
(stage ``correct``, reason ``corrections_<why>``) records that it got no corrections.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import apache_beam as beam
from apache_beam.utils import shared

from counterpoint.generators.base import SamplingParams
from counterpoint.labeling.corrections import CorrectionItem, CorrectionsConfig, correct_problems
from counterpoint.schemas import records
from counterpoint.state import ProblemState
from counterpoint.transforms.stages import EngineSpec, ProblemBatchDoFn, acquire_verifier_suite

log = logging.getLogger(__name__)


class CorrectionsDoFn(ProblemBatchDoFn):
    """Verified corrections after each located first wrong step (see :mod:`counterpoint.labeling.corrections`)."""

    stage = "correct"

    def __init__(self, engine: EngineSpec, verifier, verifier_handle: shared.Shared, retry, *,
                 corrections: CorrectionsConfig, sampling: SamplingParams, system_prompt: Optional[str],
                 run_seed: int, corrector: str = "engine"):
        super().__init__(retry, engine)
        self.verifier = verifier
        self._verifier_handle = verifier_handle
        self.corrections = corrections
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.run_seed = run_seed
        self.corrector = corrector

    def setup(self):
        super().setup()
        self.suite = acquire_verifier_suite(self._verifier_handle, self.verifier)

    def process_problems(self, states: List[ProblemState]) -> List[ProblemState]:
        items = [CorrectionItem(s.problem, s.trajectories, s.step_labels) for s in states]
        results = correct_problems(items, self.generator, self.suite.judge, self.corrections,
                                   sampling=self.sampling, system_prompt=self.system_prompt,
                                   run_seed=self.run_seed, corrector=self.corrector)
        if hasattr(self.generator, "flush"):
            self.generator.flush()
        out = []
        for s, r in zip(states, results):
            stats = {f"corrections_skipped_{k}": v for k, v in r.skipped.items()}
            stats.update(corrections_attempted=len(r.rows), corrections_kept=sum(x["kept"] for x in r.rows),
                         corrections_generated_tokens=r.generated_tokens)
            for x in r.rows:
                if x["flip_class"]:
                    stats[f"corrections_flip_{x['flip_class']}"] = stats.get(f"corrections_flip_{x['flip_class']}", 0) + 1
            out.append(s.evolve(corrections=r.rows).add_stats(**stats))
        return out

    def _process_isolating(self, states):
        return isolate_row_scope(self, states, "corrections")


def isolate_row_scope(fn: ProblemBatchDoFn, states: List[ProblemState], config: str) -> List[ProblemState]:
    """A batch whose engine call failed is split until the failing problem is alone; that problem keeps
    its rows, and a row-scope reject (stage ``fn.stage``, reason ``<config-prefix>_<why>``) records that
    its ``config`` rows are missing (the stages that add a config to labelled states share it)."""
    out, error = fn._run_with_retries(states)
    if error is None:
        return out
    if len(states) > 1:
        return [s for one in states for s in isolate_row_scope(fn, [one], config)]
    s = states[0]
    prefix = config.split("_")[0]
    reject = records.make_reject(stage=fn.stage, reason=f"{prefix}_{error.reason}", problem_id=s.problem_id,
                                 scope="row", detail=str(error), key=config)
    return [s.evolve(rejects=list(s.rejects) + [reject])]


class Corrections(beam.PTransform):
    """Batches of labelled states -> the same batches with ``corrections`` rows."""

    def __init__(self, fn: CorrectionsDoFn):
        super().__init__()
        self.fn = fn

    def expand(self, batches):
        return batches | "Correct" >> beam.ParDo(self.fn)
