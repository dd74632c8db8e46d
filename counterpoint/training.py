"""Token-weighted DPO: the loss of cDPO's token-level negatives, which no installed trainer ships (torch, lazily).

cDPO ("Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning
Capability", Lin et al. 2024, arXiv 2411.19943) extends DPO (Rafailov et al. 2023) to the token
level on the rejected side: each token of the incorrect trajectory contributes its log-ratio
weighted by how critical it is, so the gradient pushes down the few tokens that drive the
trajectory to its wrong answer rather than the whole text::

    L = -log σ( β · Σ_t log π_θ(y_w,t | x, y_w,<t) / π_ref(y_w,t | x, y_w,<t)
              - β · Σ_t w_t · log π_θ(y_l,t | x, y_l,<t) / π_ref(y_l,t | x, y_l,<t) )

``w_t`` = the ``rejected_weights`` of the ``token-weighted-pairs`` export (the ``critical_tokens``
config's ``token_weights``, from the contrastive estimate of :mod:`counterpoint.critical`); with
every ``w_t = 1`` this is plain DPO. The weights are aligned to the **policy** tokenizer's ids of
the rejected completion alone (``add_special_tokens=False``): :func:`tokenize_pair` refuses a
weight list of another length (:class:`MisalignedWeights`), since a shifted list would weight the
wrong tokens silently.

* :func:`token_weighted_dpo_loss` — the loss of a batch, from per-token log-probabilities;
* :func:`tokenize_pair` — prompt (chat messages) / chosen / rejected ids with the alignment check;
* :func:`completion_token_logps` — per-token log-probabilities of each row's completion under a model.

Imports nothing from Counterpoint but :mod:`counterpoint.errors`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from counterpoint.errors import UsageError

Messages = Sequence[Mapping[str, str]]


class MisalignedWeights(UsageError):
    """A rejected completion's weight list does not have one weight per policy token (exit 2)."""


def token_weighted_dpo_loss(policy_chosen_logps, ref_chosen_logps, policy_rejected_token_logps,
                            ref_rejected_token_logps, rejected_weights, rejected_mask=None, beta: float = 0.1):
    """Mean token-weighted DPO loss of a batch (formula in the module docstring).

    ``*_chosen_logps``: ``[B]`` sums of the chosen completions' token log-probabilities;
    ``*_rejected_token_logps``, ``rejected_weights``, ``rejected_mask`` (1 = a real token, 0 = padding;
    default all ones): ``[B, T]``. The reference terms are not differentiated.
    """
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if rejected_weights.shape != policy_rejected_token_logps.shape:
        raise MisalignedWeights(f"rejected_weights has shape {tuple(rejected_weights.shape)}, the rejected tokens "
                                f"{tuple(policy_rejected_token_logps.shape)}: pad both to the same length")
    mask = 1.0 if rejected_mask is None else rejected_mask.to(policy_rejected_token_logps.dtype)
    chosen = policy_chosen_logps - ref_chosen_logps.detach()
    rejected = (rejected_weights * mask * (policy_rejected_token_logps - ref_rejected_token_logps.detach())).sum(-1)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()


def _text(completion: Union[str, Messages]) -> str:
    """A completion's text: a string, or the content of one assistant message (the DPO exports' layout)."""
    if isinstance(completion, str):
        return completion
    if len(completion) != 1 or completion[0].get("role") != "assistant":
        raise UsageError("a completion must be a string or one assistant message, got "
                         f"{[m.get('role') for m in completion]}")
    return completion[0]["content"]


def tokenize_pair(tokenizer, prompt: Union[str, Messages], chosen: Union[str, Messages],
                  rejected: Union[str, Messages], rejected_weights: Sequence[float]) -> Dict[str, List[Any]]:
    """``prompt_ids`` (the chat template with the generation prompt, or the plain string), ``chosen_ids``,
    ``rejected_ids`` (each completion alone, no special tokens: how the weights were aligned) and
    ``rejected_weights``; raises :class:`MisalignedWeights` when ``len(weights) != len(rejected_ids)``."""
    if isinstance(prompt, str):
        prompt_text = prompt
    else:
        prompt_text = tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                    add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    chosen_ids = tokenizer(_text(chosen), add_special_tokens=False)["input_ids"]
    rejected_ids = tokenizer(_text(rejected), add_special_tokens=False)["input_ids"]
    check_aligned(rejected_ids, rejected_weights, getattr(tokenizer, "name_or_path", "the policy tokenizer"))
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids,
            "rejected_weights": [float(w) for w in rejected_weights]}


def check_aligned(token_ids: Sequence[int], weights: Sequence[float], tokenizer_name: str = "the policy tokenizer",
                  what: str = "rejected") -> None:
    """Raises :class:`MisalignedWeights` unless there is exactly one weight per token."""
    if len(weights) != len(token_ids):
        raise MisalignedWeights(
            f"{what}: {len(weights)} weight(s) for {len(token_ids)} token(s) of {tokenizer_name}: the weights were "
            "made with another tokenizer; export the pairs with the policy's tokenizer "
            "(`counterpoint export OUT --format token-weighted-pairs --tokenizer MODEL`)")


def completion_token_logps(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                           pad_id: int = 0, weights: Optional[Sequence[Sequence[float]]] = None):
    """``(token_logps, mask[, weights])``, each ``[B, T]`` (T = the longest completion; right-padded):
    log π(y_t | x, y_<t) of every completion token given its prompt, under ``model``."""
    import torch

    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    width, t_max = max(len(r) for r in rows), max(len(c) for c in completion_ids)
    device = next(model.parameters()).device
    input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logps = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention).logits.float(), dim=-1)
    out = torch.zeros(len(rows), t_max, device=device)
    mask = torch.zeros(len(rows), t_max, device=device)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        n, start = len(c), len(p)
        # logits at position j predict token j+1: the completion's tokens start..start+n-1
        targets = input_ids[i, start:start + n]
        out[i, :n] = logps[i, start - 1:start - 1 + n].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask[i, :n] = 1.0
    if weights is None:
        return out, mask
    w = torch.tensor([list(x) + [0.0] * (t_max - len(x)) for x in weights], device=device)
    return out, mask, w
