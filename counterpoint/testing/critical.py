"""A scripted "poison token" world for the critical-token search (issue 21).

:class:`PoisonChainPolicy` (plug-in path :data:`POISON_CHAIN`) solves chain problems without slips
(``Step i: a op b = c.`` paragraphs, then ``The answer is N.``), except that at one planted point per
question — just before `` =`` in step ``poison_step(question)`` (never the first) — it may write the
**poison** word (default `` wrongly``, one token of the SmolLM2 tokenizer), and from there on every value
is one too high: the answer is wrong.

* Every sample (fresh, or a continuation of a prefix that does not hold the poison yet and ends at or
  before the planted point) writes the poison with probability ``poison_rate``: before the poison,
  some continuations succeed (MC = 1 − poison_rate);
* after the poison every continuation goes on from the wrong value: all fail (MC = 0);
* a request whose first generated token is banned (``GenerationRequest.ban_first_tokens``) containing
  ``poison_token_id`` from a prefix that ends exactly at the planted point cannot write the poison
  there: it succeeds. Other bans are ignored (the scripted engine has no tokenizer: "another token
  with the same meaning").

So the rollout search must find the poison token exactly, and the ban test shows the planted gap:
banned success 1.0 against ``1 − poison_rate`` (random position before the poison) or 0 (after it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import List, Optional, Sequence

from counterpoint.generators.scripted import (
    _OPS,
    _SYMBOL,
    ANSWER_LINE,
    Policy,
    ScriptedSample,
    _user_text,
    parse_chain_question,
)

POISON_CHAIN = "counterpoint.testing.critical:PoisonChainPolicy"
POISON = " wrongly"


def poison_step(question: str) -> int:
    """0-based index of the step that may hold the poison (never the first; a chain needs >= 2 ops)."""
    _, ops = parse_chain_question(question)
    h = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:4], "big")
    return 1 + h % max(1, len(ops) - 1)


def chain_texts(question: str, poison: str = POISON) -> tuple:
    """``(clean, poisoned, insertion point)``: the two whole solutions and where the poison goes."""
    start, ops = parse_chain_question(question)
    at = poison_step(question)
    clean: List[str] = []
    bad: List[str] = []
    value, wrong = start, start
    insertion = None
    for i, (name, operand) in enumerate(ops):
        result = _OPS[name](value, operand)
        clean.append(f"Step {i + 1}: {value} {_SYMBOL[name]} {operand} = {result}.")
        if i < at:
            bad.append(clean[-1])
            wrong = result
        else:
            w = _OPS[name](wrong, operand) + (1 if i == at else 0)
            head = f"Step {i + 1}: {wrong} {_SYMBOL[name]} {operand}"
            if i == at:
                insertion = len("\n\n".join(bad + [head])) if bad else len(head)
                head += poison
            bad.append(f"{head} = {w}.")
            wrong = w
        value = result
    clean.append(ANSWER_LINE.format(value=value))
    bad.append(ANSWER_LINE.format(value=wrong))
    return "\n\n".join(clean), "\n\n".join(bad), insertion


def poison_token_position(token_ids: Sequence[int], poison_token_id: int) -> Optional[int]:
    """Where the poison token sits in a tokenized completion (None: not planted)."""
    return next((i for i, t in enumerate(token_ids) if t == poison_token_id), None)


@dataclasses.dataclass
class PoisonChainPolicy(Policy):
    poison_rate: float = 0.4
    poison: str = POISON
    poison_token_id: int = -1  # the poison's id in the policy's tokenizer (39806 for SmolLM2's " wrongly")

    def sample(self, request, sample_index, rng):
        question = _user_text(request)
        clean, bad, at = chain_texts(question, self.poison)
        prefix = request.messages[-1][1] if request.continue_final_message else ""
        if self.poison in prefix:
            tail = bad[len(prefix):] if bad.startswith(prefix) else "\n\n" + bad.rsplit("\n\n", 1)[-1]
            return ScriptedSample(tail)
        if not clean.startswith(prefix):  # not a prefix of this world's solution: answer from scratch
            return ScriptedSample("\n\n" + clean)
        banned = len(prefix) == at and self.poison_token_id in request.ban_first_tokens
        poisoned = len(prefix) <= at and not banned and rng.random() < self.poison_rate
        return ScriptedSample((bad if poisoned else clean)[len(prefix):])
