"""Beam-free step labelling: OmegaPRM trees, per-step MC baseline, per-step values/advantages.

Everything here is plain Python driven by :class:`RoundScheduler` (one engine
call per round across all trees); the Beam wrapper calls :func:`label_problems`.
"""

from counterpoint.labeling.advantages import StepValue, best_of_k_value, step_values, within_noise
from counterpoint.labeling.common import LabeledSolution, fill_mc_values
from counterpoint.labeling.labeler import (
    LABELERS,
    LabelerConfig,
    LabelingResult,
    ProblemForLabeling,
    label_problems,
)
from counterpoint.labeling.omegaprm import OmegaPRMConfig, OmegaPRMTree
from counterpoint.labeling.scheduler import (
    Estimate,
    ProblemContext,
    Rollout,
    RolloutAsk,
    RoundScheduler,
    VerifyFn,
)

__all__ = [
    "Estimate",
    "LABELERS",
    "LabeledSolution",
    "LabelerConfig",
    "LabelingResult",
    "OmegaPRMConfig",
    "OmegaPRMTree",
    "ProblemContext",
    "ProblemForLabeling",
    "Rollout",
    "RolloutAsk",
    "RoundScheduler",
    "StepValue",
    "VerifyFn",
    "best_of_k_value",
    "fill_mc_values",
    "label_problems",
    "step_values",
    "within_noise",
]
