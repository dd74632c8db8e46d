"""``critical_tokens``: the settings of the critical-token stage (a section of the run config)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from counterpoint.critical.contrast import BETA, FULL_DISTRIBUTION, LOG_RATIO


@dataclasses.dataclass
class CriticalTokensConfig:
    """``critical_tokens`` (issue 21): contrastive scores of every incorrect trajectory, and the rollout search.

    ``contrast_models``: a ``counterpoint contrast-models`` directory (positive/, negative/, contrast.json).
    ``tokenizer``: the policy's tokenizer (default: the run's model; a scripted engine has none, and the
    contrast models' is used). ``search``: the rollout search inside OmegaPRM's first wrong step, ``k``
    rollouts per probe. ``score_form``: see :mod:`counterpoint.critical.contrast`. ``ban_rollouts``: continuations per ban test (0: no ban test). ``top_k``: top
    contrastive positions kept. ``beta``: the contrast strength (the paper's 1.0).
    """

    enabled: bool = False
    contrast_models: Optional[str] = None
    tokenizer: Optional[str] = None
    search: bool = True
    k: int = 4
    ban_rollouts: int = 4
    top_k: int = 5
    beta: float = BETA
    # full_distribution (the paper's estimator) or log_ratio (the sampled tokens' log-probs only, Z taken as 1)
    score_form: str = FULL_DISTRIBUTION
    batch_size: int = 4  # completions per contrast-model forward pass
    max_length: int = 4096  # prompt + completion tokens scored; longer trajectories are rejected

    def __post_init__(self):
        if self.enabled and not self.contrast_models:
            raise ValueError("critical_tokens needs contrast models: --critical-contrast-models DIR (made by "
                             "`counterpoint contrast-models OUT --base MODEL --output DIR`)")
        for name in ("k", "top_k", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"critical_tokens.{name} must be >= 1, got {getattr(self, name)}")
        if self.ban_rollouts < 0:
            raise ValueError(f"critical_tokens.ban_rollouts must be >= 0, got {self.ban_rollouts}")
        if self.score_form not in (FULL_DISTRIBUTION, LOG_RATIO):
            raise ValueError(f"critical_tokens.score_form must be {FULL_DISTRIBUTION} or {LOG_RATIO}, "
                             f"got {self.score_form!r}")
        if self.beta <= 0:
            raise ValueError(f"critical_tokens.beta must be > 0, got {self.beta}")
