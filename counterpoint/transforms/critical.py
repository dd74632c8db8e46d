"""The critical-token stage (issue 21): ``critical_tokens`` rows for the incorrect trajectories of labelled states.

A thin Beam wrapper around :func:`counterpoint.critical.rows.critical_rows`. Input: batches of labelled
states (``trajectories`` with verdicts, ``step_labels``). Output: the same states with
``critical_tokens`` rows, ``critical_*`` stats and a row-scope reject (stage ``critical``) for every
incorrect trajectory without a row. One contrast-model pair per worker process, loaded in ``setup``
through ``apache_beam.utils.shared`` (the engine is the run's, through the same ``EngineSpec`` handle).

A failed engine call never fails the problem: its other rows stand and a row-scope reject
(``critical_<why>``) records that its critical tokens are missing.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import apache_beam as beam
from apache_beam.utils import shared

from counterpoint.critical.config import CriticalTokensConfig
from counterpoint.critical.rows import CriticalInput, critical_rows
from counterpoint.critical.scorer import ContrastScorer
from counterpoint.generators import build_generator
from counterpoint.generators.base import SamplingParams
from counterpoint.state import ProblemState
from counterpoint.transforms.corrections import isolate_row_scope
from counterpoint.transforms.stages import EngineSpec, ProblemBatchDoFn, _Holder, acquire_verifier_suite

log = logging.getLogger(__name__)


def policy_tokenizer(cfg) -> Optional[str]:
    """The policy's tokenizer for a run config: ``critical_tokens.tokenizer``, else the run's local model
    (the embedded one's folder for ``embedded``); None for a scripted engine (no tokenizer)."""
    if cfg.critical_tokens.tokenizer:
        return cfg.critical_tokens.tokenizer
    g = cfg.generator
    if g.kind == "scripted":
        return None
    if g.model == "embedded":
        from counterpoint.generators.embedded import embedded_model_dir

        return str(embedded_model_dir())
    return g.model


class CriticalTokensDoFn(ProblemBatchDoFn):
    """Contrastive scores, the rollout search and the ban tests (see :mod:`counterpoint.critical`)."""

    stage = "critical"

    def __init__(self, engine: EngineSpec, verifier, verifier_handle: shared.Shared, retry, *,
                 critical: CriticalTokensConfig, scorer_handle: shared.Shared, tokenizer: Optional[str],
                 sampling: SamplingParams, system_prompt: Optional[str], run_seed: int, segmentation: str):
        needs_engine = critical.search or critical.ban_rollouts > 0
        super().__init__(retry, engine if needs_engine else None)
        self.policy = engine.generator  # its model id is recorded even when no rollout is needed
        self.verifier = verifier
        self._verifier_handle = verifier_handle
        self._scorer_handle = scorer_handle
        self.critical = critical
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.run_seed = run_seed
        self.segmentation = segmentation

    def setup(self):
        super().setup()
        self.suite = acquire_verifier_suite(self._verifier_handle, self.verifier)
        c = self.critical

        def build():
            return _Holder(ContrastScorer(c.contrast_models, self.tokenizer, beta=c.beta, batch_size=c.batch_size,
                                          max_length=c.max_length, score_form=c.score_form).load())

        self.scorer = self._scorer_handle.acquire(build, tag=f"contrast:{c.contrast_models}:{self.tokenizer}:{c.beta}:"
                                                             f"{c.batch_size}:{c.max_length}:{c.score_form}").value

    def process_problems(self, states: List[ProblemState]) -> List[ProblemState]:
        items = [CriticalInput(s.problem, s.trajectories, s.step_labels) for s in states]
        model_id = (self.generator or build_generator(self.policy)).model_id  # built, never loaded
        outs = critical_rows(items, self.scorer, self.generator, self.suite.judge, self.critical,
                             sampling=self.sampling, system_prompt=self.system_prompt, model_id=model_id,
                             seed=self.run_seed, segmentation=self.segmentation)
        return [s.evolve(critical_tokens=o.rows, rejects=list(s.rejects) + o.rejects).add_stats(**o.stats)
                for s, o in zip(states, outs)]

    def _process_isolating(self, states):
        return isolate_row_scope(self, states, "critical_tokens")


class CriticalTokens(beam.PTransform):
    """Batches of labelled states -> the same batches with ``critical_tokens`` rows."""

    def __init__(self, fn: CriticalTokensDoFn):
        super().__init__()
        self.fn = fn

    def expand(self, batches):
        return batches | "ScoreAndSearch" >> beam.ParDo(self.fn)


def critical_stage(cfg, engine: EngineSpec, verifier_handle: shared.Shared) -> CriticalTokens:
    """The stage a run config asks for (it shares the run's engine and verifier suite)."""
    return CriticalTokens(CriticalTokensDoFn(
        engine, cfg.verifier, verifier_handle, cfg.retry, critical=cfg.critical_tokens, scorer_handle=shared.Shared(),
        # the labeller's rollout parameters: a probe at a step boundary is the labeller's own request (cached)
        tokenizer=policy_tokenizer(cfg), sampling=cfg.labeling.omegaprm.effective_rollout_params(cfg.sampling),
        system_prompt=cfg.system_prompt,
        run_seed=cfg.generator.seed, segmentation=cfg.segmentation))


def check(cfg) -> None:
    """In the driver, before any work: the contrast models load and share the policy's tokenizer
    (``UsageError`` naming the fix otherwise)."""
    from counterpoint.critical.scorer import preflight

    if cfg.critical_tokens.enabled:
        preflight(cfg.critical_tokens.contrast_models, policy_tokenizer(cfg))
