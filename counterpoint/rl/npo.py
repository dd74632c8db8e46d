"""Losses of training methods on negatives that no installed trainer ships (torch; imported lazily).

* :func:`npo_loss` — Negative Preference Optimization (Zhang, Lin, Bai & Mei 2024, "Negative
  Preference Optimization: From Catastrophic Collapse to Effective Unlearning", eq. 3):
  ``L = -(2/β) · mean log σ(-β · (log π_θ(y|x) − log π_ref(y|x)))`` over the forget set
  (``npo_forget``: verified-incorrect solutions). As β → 0 it tends to gradient ascent on the
  forget log-likelihood; unlike that, it is bounded below, so training does not collapse.
* :func:`sequence_logps` — log π(y|x) of each row's completion tokens (prompt tokens masked),
  the inputs of :func:`npo_loss`.

Imports nothing from Counterpoint (in `counterpoint.rl`, floor 6 of the layer order; torch only when called).
"""

from __future__ import annotations


def npo_loss(policy_logps, ref_logps, beta: float = 0.1):
    """NPO loss of a batch: ``policy_logps`` / ``ref_logps`` are sequence log-probabilities (1-D tensors)."""
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    log_ratio = policy_logps - ref_logps.detach()
    return (-2.0 / beta * F.logsigmoid(-beta * log_ratio)).mean()


def sequence_logps(model, input_ids, attention_mask, prompt_lengths):
    """Sum of the log-probabilities of each row's tokens after its first ``prompt_lengths[i]`` tokens."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    positions = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0)
    starts = torch.as_tensor(prompt_lengths, device=targets.device).unsqueeze(1) - 1
    mask = (positions >= starts) & attention_mask[:, 1:].bool()
    return (token_logps * mask).sum(-1)
