"""The chain world's ground truth, for tests and benchmarks: first errors, verdicts, a scripted judge.

The chain problems and their solver (``chain_problem``, ``ChainPolicy``) are the scripted engine's
own (``counterpoint.generators.scripted``: the ``chain`` source and default policy). What only tests
and benchmarks need lives here: the planted first error of a solution (:func:`chain_first_error`),
a verifier with the three outcomes of a real one (:func:`chain_verdict`, :func:`chain_verify`) and a
scripted consensus judge (:class:`ChainJudgePolicy`), which a run config selects by its plug-in path
:data:`CHAIN_JUDGE` (``generator.scripted.policy``; importable on every worker, so any runner works).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

from counterpoint.generators.scripted import _OPS, _STEP_RE, Policy, ScriptedSample, _user_text, parse_chain_question

#: ``generator.scripted.policy`` of the scripted consensus judge.
CHAIN_JUDGE = "counterpoint.testing.chain:ChainJudgePolicy"

_FINAL_RE = re.compile(r"(-?\d+)(?: \(I think\))?\.?\s*$")


def chain_first_error(question: str, steps: Sequence[str]) -> Optional[int]:
    """Ground truth: index of the first wrong step (None if all right).

    A step is wrong when its stated result is not the true running value (an
    arithmetic slip or a misread operand). The line after the last operation is
    the answer line: right when it states the true final value, wrong otherwise.
    """
    value, ops = parse_chain_question(question)
    for i, step in enumerate(steps):
        if i == len(ops):
            m = _FINAL_RE.search(step.strip())
            return None if m is not None and int(m.group(1)) == value else i
        m = _STEP_RE.search(step)
        if m is None or i > len(ops):
            return i
        value = _OPS[ops[i][0]](value, ops[i][1])
        if int(m.group(5)) != value:
            return i
    return None


def chain_value_after(question: str, done: int) -> int:
    """The true running value after the first ``done`` operations."""
    value, ops = parse_chain_question(question)
    for name, operand in ops[:done]:
        value = _OPS[name](value, operand)
    return value


_ANSWER_LINE_RE = re.compile(r"The answer is (-?\d+)(?P<hedge> \(I think\))?\.")


def chain_verdict(text: str, gold: str, truncated: bool = False):
    """A verifier for chain solutions with the three outcomes of a real one (a ``Verdict``).

    The last "The answer is N." decides; a hedged "The answer is N (I think)." is
    ``unknown`` (an answer the verifier cannot read as a number, like math-verify's
    ``unparsable_answer``); no answer line at all is ``incorrect`` / ``no_final_answer``
    (a format failure); truncated text is ``incorrect`` / ``truncated``.
    """
    from counterpoint.verifiers import base

    found = list(_ANSWER_LINE_RE.finditer(text))
    answer = found[-1].group(1) if found else None
    if truncated:
        return base.incorrect(base.REASON_TRUNCATED, answer)
    if not found:
        return base.incorrect(base.REASON_NO_FINAL_ANSWER, None)
    if found[-1].group("hedge"):
        return base.unknown(base.REASON_UNPARSABLE_ANSWER, answer)
    if answer == str(gold).strip():
        return base.correct(answer)
    return base.incorrect(base.REASON_ANSWER_MISMATCH, answer)


def chain_verify(items):
    """``verify`` callback for ``label_problems`` over chain problems (see :func:`chain_verdict`)."""
    return [chain_verdict(text, gold, truncated) for text, gold, truncated, _answer_type in items]


@dataclasses.dataclass
class ChainJudgePolicy(Policy):
    """Consensus judge for chain solutions: the earliest wrong step from :func:`chain_first_error`
    (``-1`` when all are right), replaced by another index with probability ``error_rate`` and by
    an unparsable reply with probability ``unparsable_rate``; deterministic per request seed."""

    error_rate: float = 0.1
    unparsable_rate: float = 0.0

    def sample(self, request, sample_index, rng):
        from counterpoint.prompts import read_judge_prompt

        question, steps = read_judge_prompt(_user_text(request))
        truth = chain_first_error(question, steps)
        index = -1 if truth is None else truth
        roll = rng.random()
        if roll < self.unparsable_rate:
            return ScriptedSample("I cannot tell which paragraph is wrong.")
        if roll < self.unparsable_rate + self.error_rate:
            others = [j for j in range(-1, len(steps)) if j != index]
            index = rng.choice(others) if others else index
        return ScriptedSample(f"Reviewing the paragraphs one by one.\n\nThe earliest error: \\boxed{{{index}}}")
