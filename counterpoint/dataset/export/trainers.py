"""What a trainer does with an export row, given its tokenizer (no torch, no trainer imports).

* :func:`step_dpo_text` renders a ``step_dpo`` row into TRL's standard (string)
  preference format so that ``DPOTrainer`` trains Step-DPO (Lai et al. 2024)
  exactly: the prompt is the chat template of the question with the correct
  prefix *continued in the same assistant turn* (``continue_final_message``),
  and the completions are only the next steps.

  Why not the conversational row as is: TRL 1.16's ``DPOTrainer`` tokenizes a
  conversational prompt with ``add_generation_prompt=True`` and the prompt plus
  completion as one message list. A prompt ending in a partial assistant message
  therefore becomes a *closed* turn followed by a *new* assistant turn holding the
  step (``...prefix<|im_end|>\\n<|im_start|>assistant\\nstep<|im_end|>`` in ChatML):
  the model would learn each step as a fresh reply to its own finished message.
  Passing ``continue_final_message`` through ``chat_template_kwargs`` does not
  help (transformers refuses it together with ``add_generation_prompt``).

* :func:`openrlhf_label_positions` / :func:`check_openrlhf_prm` tokenize an
  ``openrlhf_prm`` row the way OpenRLHF's ``ProcessRewardDataset`` does
  (``tokenizer(input, add_special_tokens=False)``; the placeholder must encode to
  one token id; the i-th label goes to the i-th position holding that id) and
  report whether every step gets exactly one label position.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence


def _bos_added_by_tokenizer(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    return tokenizer("")["input_ids"][:1] == [bos]


def step_dpo_text(example: Mapping[str, Any], tokenizer) -> Dict[str, str]:
    """``{"prompt", "chosen", "rejected"}`` strings of a ``step_dpo`` row for ``tokenizer``'s chat template.

    Use as ``ds.map(step_dpo_text, fn_kwargs={"tokenizer": tokenizer})``. TRL's DPOTrainer
    then tokenizes ``prompt`` and ``prompt + chosen`` as plain text and appends EOS to each
    completion. The prefix's trailing whitespace (the step separator) starts both
    completions instead of ending the prompt: a separator such as ``"\n\n"`` tokenizes
    differently alone than before the next word, and TRL would otherwise cut the prompt
    where the two tokenizations diverge. A leading BOS that the template writes and the
    tokenizer adds again is dropped from the prompt.
    """
    prompt = [dict(m) for m in example["prompt"]]
    continue_turn = prompt[-1]["role"] == "assistant"
    separator = ""
    if continue_turn:
        content = prompt[-1]["content"]
        kept = content.rstrip()
        separator = content[len(kept):]
        if kept:
            prompt[-1]["content"] = kept
        else:  # a whitespace-only prefix: the completions start the assistant turn
            prompt.pop()
            continue_turn = False
    text = tokenizer.apply_chat_template(
        prompt,
        tokenize=False,
        add_generation_prompt=not continue_turn,
        continue_final_message=continue_turn,
    )
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _bos_added_by_tokenizer(tokenizer):
        text = text[len(bos):]
    return {
        "prompt": text,
        "chosen": separator + example["chosen"][-1]["content"],
        "rejected": separator + example["rejected"][-1]["content"],
    }


def placeholder_token_id(tokenizer, placeholder: str) -> int:
    """The one token id of ``placeholder`` (OpenRLHF's ``convert_token_to_id``); ``ValueError`` otherwise."""
    ids = tokenizer.encode(placeholder, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"placeholder {placeholder!r} encodes to {len(ids)} tokens {ids} with this tokenizer; OpenRLHF needs one. "
            "Export with a placeholder that is a single token of this tokenizer (e.g. a reserved special token) "
            "and pass the same string as --placeholder_token."
        )
    return ids[0]


def openrlhf_label_positions(text: str, tokenizer, placeholder: str, max_length: Optional[int] = None) -> List[int]:
    """Token positions OpenRLHF labels in ``text``: where the tokenized input holds the placeholder id."""
    ph = placeholder_token_id(tokenizer, placeholder)
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
    ids = tokenizer(text, add_special_tokens=False, **kwargs)["input_ids"]
    return [i for i, t in enumerate(ids) if t == ph]


def check_openrlhf_prm(
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    placeholder: Optional[str] = None,
    label_key: str = "label",
    reward_tokens: Sequence[str] = ("+", "-"),
    max_length: Optional[int] = None,
) -> Dict[str, Any]:
    """Checks that every row gets exactly one label position per step under ``tokenizer``.

    Returns ``{"rows", "steps", "label_positions", "mismatches"}``; ``mismatches`` lists
    ``{"id", "steps", "positions"}`` for each row whose placeholder count differs from its
    number of labels (OpenRLHF would then mislabel or fail). Raises ``ValueError`` when the
    placeholder or a reward token is not a single token (OpenRLHF asserts the same).
    """
    for token in reward_tokens:
        placeholder_token_id(tokenizer, token)
    steps = positions = 0
    mismatches = []
    for r in rows:
        ph = placeholder or r["placeholder"]
        got = openrlhf_label_positions(r["input"], tokenizer, ph, max_length)
        n = len(r[label_key])
        steps += n
        positions += len(got)
        if len(got) != n:
            mismatches.append({"id": r["id"], "steps": n, "positions": len(got)})
    return {"rows": len(rows), "steps": steps, "label_positions": positions, "mismatches": mismatches}


def correction_sft_text(example: Mapping[str, Any], tokenizer) -> Dict[str, str]:
    """``{"prompt", "completion"}`` plain-text strings of a ``correction_sft`` row for ``tokenizer``'s template.

    Use as ``ds.map(correction_sft_text, fn_kwargs={"tokenizer": tokenizer}, remove_columns=[...])``.
    TRL 1.16's SFTTrainer would close the prompt's partial assistant turn and train the correction in a
    new turn; as plain text the correction continues the same turn (as the engine wrote it), and
    SFTTrainer's completion mask covers only the correction. Rendered like :func:`step_dpo_text`.
    """
    text = step_dpo_text({"prompt": example["prompt"], "chosen": example["completion"],
                          "rejected": example["completion"]}, tokenizer)
    return {"prompt": text["prompt"], "completion": text["chosen"]}

