"""``critical_tokens`` + ``trajectories`` -> ``token_weighted_pairs``: cDPO's token-level preference pairs (issue 21).

Input: the ``critical_tokens`` rows of whole problems (one per scored incorrect trajectory, with
``token_ids`` / ``token_weights`` of the policy tokenizer) and the same problems' ``trajectories``
rows. Output (:data:`counterpoint.schemas.exports.TOKEN_WEIGHTED_PAIRS`): per ``critical_tokens``
row, the pair ``chosen`` = a verified-correct, finished trajectory of the problem (the problem's
distinct positives taken in turn, lowest sample index first) and ``rejected`` = the incorrect
trajectory, with ``rejected_weights`` = its token weights. The loss it is for is token-weighted DPO
("Critical Tokens Matter", Lin et al. 2024, arXiv 2411.19943;
:func:`counterpoint.training.token_weighted_dpo_loss`).

The weights are only meaningful on the tokens they were computed for, so every row is checked
against the policy tokenizer (``tokenizer`` option, else the row's ``model_id``): the rejected text
re-tokenized alone (``add_special_tokens=False``) must give exactly ``token_ids``, one weight each;
a row that does not is rejected (``export_token_weights_misaligned``), never shifted. Rows of a
problem without a verified-correct trajectory are skipped (``no_verified_correct``).
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from counterpoint.dataset.export.formats import ExportRows, _reject
from counterpoint.dataset.export.rl import POSITIVE, _by_problem, _distinct
from counterpoint.errors import UsageError
from counterpoint.schemas import exports

Row = Dict[str, Any]
Tokenize = Callable[[str], List[int]]


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The tokenizer of a model folder, Hub id or ``embedded`` (the embedded SmolLM2), loaded once."""
    from counterpoint.generators.embedded import resolve_model

    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (OSError, ValueError, ImportError) as e:
        raise UsageError(f"cannot load the policy tokenizer {name!r} ({type(e).__name__}: {str(e)[:200]}): pass "
                         "--tokenizer with the policy's model folder or Hub id") from None


def tokenize_with(name: str) -> Tokenize:
    tok = load_tokenizer(name)
    return lambda text: list(tok(text, add_special_tokens=False)["input_ids"])


def token_weighted_pair_rows(critical_tokens: Iterable[Mapping[str, Any]],
                             trajectories: Iterable[Mapping[str, Any]],
                             tokenizer: Optional[str] = None,
                             tokenize: Optional[Tokenize] = None) -> ExportRows:
    """The ``token_weighted_pairs`` rows of whole problems (see the module docstring).

    ``tokenizer``: the policy's model (folder / Hub id / ``embedded``); None = each row's ``model_id``.
    ``tokenize``: a ``text -> ids`` function to use instead (tests).
    """
    # Positives as everywhere: verified correct, finished, distinct; never a duplicate or a right-answer-wrong-process.
    clean = (t for t in trajectories if not t.get("duplicate_of") and not t.get("process_error"))
    positives = {pid: _distinct(samples, POSITIVE, Counter()) for pid, samples in _by_problem(clean).items()}
    rows, rejects, skipped = [], [], Counter()
    for pid, group in sorted(_by_problem(critical_tokens).items()):
        pos = positives.get(pid) or []
        for i, r in enumerate(group):
            if not pos:
                skipped["no_verified_correct"] += 1
                continue
            name = tokenizer or r["model_id"]
            ids = (tokenize or tokenize_with(name))(r["completion"])
            if ids != list(r["token_ids"]) or len(r["token_weights"]) != len(ids):
                rejects.append(_reject("export_token_weights_misaligned", r,
                                       f"{len(r['token_weights'])} weight(s), {len(r['token_ids'])} stored id(s), "
                                       f"{len(ids)} token(s) of {name}: the weights were made with another tokenizer"))
                continue
            chosen = pos[i % len(pos)]
            rows.append(_pair(r, chosen, name))
    return ExportRows(exports.TOKEN_WEIGHTED_PAIRS.name,
                      sorted((exports.TOKEN_WEIGHTED_PAIRS.conform(r) for r in rows), key=lambda r: r["id"]),
                      rejects, skipped=dict(skipped))


def _pair(r: Mapping[str, Any], chosen: Mapping[str, Any], tokenizer: str) -> Row:
    return {
        "id": r["id"], "problem_id": r["problem_id"], "prompt": [dict(m) for m in r["prompt"]],
        "chosen": [{"role": "assistant", "content": chosen["completion"]}],
        "rejected": [{"role": "assistant", "content": r["completion"]}],
        "rejected_token_ids": list(r["token_ids"]), "rejected_weights": [float(w) for w in r["token_weights"]],
        "chosen_sample_index": chosen["sample_index"], "rejected_sample_index": r["sample_index"],
        "score_form": r["score_form"], "top_critical_positions": list(r["top_critical_positions"]),
        "rollout_critical_position": r["rollout_critical_position"], "first_wrong_step": r["first_wrong_step"],
        "contrast_models": r["contrast_models"], "model_id": r["model_id"], "tokenizer": tokenizer,
    }
