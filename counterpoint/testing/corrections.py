"""A scripted chain solver that also corrects itself after a cue, at a planted rate and in a planted way.

:class:`ChainCorrectorPolicy` (plug-in path :data:`CHAIN_CORRECTOR`) is :class:`ChainPolicy` for every
request but one whose open assistant turn ends with a correction cue. There, per sample: with
probability ``recover_rate`` it repairs the last stated step and finishes right, as a ``revise``
(retracts it: "That step is a mistake." and restates it with the true value), a ``restart`` ("Let me
start over from the beginning." and every step again) or an ``ignore`` (goes on silently from the
true value), drawn with ``revise_share`` / ``restart_share`` (the rest ignore); otherwise it goes on
from the wrong value without a slip and states a wrong answer (it "agrees" with its error). The
planted class of a sample is :func:`planted_class` of the same draw, so tests can compare.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

from counterpoint.generators.scripted import (
    _OPS,
    _STEP_RE,
    _SYMBOL,
    ANSWER_LINE,
    ChainPolicy,
    ScriptedSample,
    _user_text,
    parse_chain_question,
)
from counterpoint.labeling.corrections import DEFAULT_CUES

CHAIN_CORRECTOR = "counterpoint.testing.corrections:ChainCorrectorPolicy"


def chain_step_is_wrong(question: str, steps: Sequence[str], i: int) -> bool:
    """Ground truth: step ``i`` states a running value other than the true one (or a wrong answer line)."""
    from counterpoint.testing.chain import _FINAL_RE, chain_value_after

    start, ops = parse_chain_question(question)
    if i >= len(ops):
        m = _FINAL_RE.search(steps[i].strip())
        return m is None or int(m.group(1)) != chain_value_after(question, len(ops))
    m = _STEP_RE.search(steps[i])
    return m is None or int(m.group(5)) != chain_value_after(question, i + 1)


@dataclasses.dataclass
class ChainCorrectorPolicy(ChainPolicy):
    recover_rate: float = 0.5
    revise_share: float = 1.0
    restart_share: float = 0.0
    cues: Tuple[str, ...] = DEFAULT_CUES

    def sample(self, request, sample_index, rng):
        prefix = request.messages[-1][1] if request.continue_final_message else ""
        if not any(prefix.rstrip().endswith(c) for c in self.cues):
            return super().sample(request, sample_index, rng)
        start, ops = parse_chain_question(_user_text(request))
        truths = [start]
        for name, operand in ops:
            truths.append(_OPS[name](truths[-1], operand))
        done, stated = 0, start
        for m in _STEP_RE.finditer(prefix):
            done, stated = int(m.group(1)), int(m.group(5))
        recover, planted = self.draw(rng)
        if not recover:
            return ScriptedSample("\n\n" + _lines(ops, done, stated))
        if planted == "restart":
            return ScriptedSample("\n\nLet me start over from the beginning.\n\n" + _lines(ops, 0, start))
        if planted == "revise" and 0 < done <= len(ops):
            name, operand = ops[done - 1]
            fix = (f"That step is a mistake. Step {done}: {truths[done - 1]} {_SYMBOL[name]} {operand} = "
                   f"{truths[done]}.\n\n")
            return ScriptedSample("\n\n" + fix + _lines(ops, done, truths[done]))
        if planted == "revise":  # the wrong step is the answer line itself
            return ScriptedSample("\n\nThat answer is a mistake.\n\n" + ANSWER_LINE.format(value=truths[-1]))
        return ScriptedSample("\n\n" + _lines(ops, done, truths[min(done, len(ops))]))

    def draw(self, rng) -> Tuple[bool, Optional[str]]:
        """(recovers, planted class): the sample's two draws."""
        recover = rng.random() < self.recover_rate
        roll = rng.random()
        planted = "revise" if roll < self.revise_share else (
            "restart" if roll < self.revise_share + self.restart_share else "ignore")
        return recover, planted if recover else None


def _lines(ops, done: int, value: int) -> str:
    """Steps ``done+1 ..`` from ``value``, without a slip, then the answer line."""
    pieces = []
    for i in range(done, len(ops)):
        name, operand = ops[i]
        result = _OPS[name](value, operand)
        pieces.append(f"Step {i + 1}: {value} {_SYMBOL[name]} {operand} = {result}.")
        value = result
    pieces.append(ANSWER_LINE.format(value=value))
    return "\n\n".join(pieces)
