"""cDPO's contrastive estimation: which tokens of an incorrect trajectory are critical, and their DPO weights.

Paper: Lin et al., "Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning
Capability" (cDPO, arXiv 2411.19943, ICML 2025). A *positive* model p (fine-tuned on correct trajectories)
and a *negative* model q (fine-tuned on incorrect ones) score every token y_t of an incorrect trajectory:

    s_t = softmax_v( (1 + β) · log p(v | x, y_<t) − β · log q(v | x, y_<t) )[y_t]
        = p(y_t)^(1+β) · q(y_t)^(−β) / Z_t,     Z_t = Σ_v p(v)^(1+β) · q(v)^(−β)

with **β = 1** — exactly the public code (github.com/chenzhiling9954/Critical-Tokens-Matter,
``src/pipeline.py::calculate_ce_score``: ``cd_logits = (1 + 1) * pos_logits - 1 * neg_logits``,
``cd_probs = cd_logits.softmax(-1)``, the score is the sampled token's entry; softmax of logits equals
softmax of log-probabilities, the per-position constants cancel). A token the negative model likes much
more than the positive one gets a **low** score: it is critical. The token-level DPO weight of a rejected
token is ``w_t = 1 − s_t`` (``src/train/train_cdpo.py``: ``rejected_list = 1 - ce_prob``), so critical
tokens carry the most weight in the rejected log-ratio.

Two forms (recorded in the row's ``score_form``):

* ``full_distribution`` — both models' whole next-token distributions are at hand (local transformers
  models): the formula above, exactly;
* ``log_ratio`` — only the sampled token's log-probabilities exist (vLLM prompt log-probs, an
  OpenAI-compatible server): ``Z_t`` cannot be computed and is taken as 1, i.e.
  ``s_t = min(1, exp((1 + β) log p(y_t) − β log q(y_t)))``. Since ``log Z_t`` is the Rényi divergence
  of order 1 + β between p and q (≥ 0), this is an **upper bound** of the full score: weights of the
  log-ratio form are lower bounds of the full form's, and the token order along the trajectory is kept
  wherever Z_t varies little.

Beam-free and torch-free: plain lists (and numpy for the full form).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

#: The paper's contrast strength (public code: ``(1 + 1) * pos_logits - 1 * neg_logits``).
BETA = 1.0
FULL_DISTRIBUTION = "full_distribution"
LOG_RATIO = "log_ratio"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def scores_from_logits(logits_positive, logits_negative, token_ids: Sequence[int], beta: float = BETA
                       ) -> List[float]:
    """``s_t`` (full form) from both models' next-token logits (or log-probs) at each position.

    ``logits_*``: arrays ``[T, V]`` where row t is the distribution that predicts ``token_ids[t]``.
    """
    lp = _log_softmax(np.asarray(logits_positive, dtype=np.float64))
    lq = _log_softmax(np.asarray(logits_negative, dtype=np.float64))
    if lp.shape != lq.shape or lp.shape[0] != len(token_ids):
        raise ValueError(f"logits {lp.shape} / {lq.shape} do not match {len(token_ids)} tokens")
    contrast = _log_softmax((1.0 + beta) * lp - beta * lq)
    return [float(math.exp(contrast[t, y])) for t, y in enumerate(token_ids)]


def scores_from_logprobs(logp_positive: Sequence[float], logp_negative: Sequence[float],
                         beta: float = BETA) -> List[float]:
    """``s_t`` (log-ratio form) from the sampled tokens' log-probabilities only (Z_t taken as 1)."""
    if len(logp_positive) != len(logp_negative):
        raise ValueError(f"{len(logp_positive)} positive vs {len(logp_negative)} negative log-probs")
    return [math.exp(min(0.0, (1.0 + beta) * p - beta * q)) for p, q in zip(logp_positive, logp_negative)]


def token_weights(scores: Sequence[float]) -> List[float]:
    """cDPO's rejected-token weights ``1 − s_t`` (clipped to [0, 1] against rounding)."""
    return [min(1.0, max(0.0, 1.0 - s)) for s in scores]


def top_positions(scores: Sequence[float], k: int) -> List[int]:
    """The ``k`` most critical positions (lowest score first; ties: the earlier token first)."""
    return sorted(range(len(scores)), key=lambda t: (scores[t], t))[: max(0, k)]


def sampled_logprobs(logits, token_ids: Sequence[int]) -> List[float]:
    """``log softmax(logits)[t, token_ids[t]]``: the sampled tokens' log-probabilities (≤ 0)."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64))
    return [min(0.0, float(lp[t, y])) for t, y in enumerate(token_ids)]
