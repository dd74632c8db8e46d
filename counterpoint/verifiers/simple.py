"""Pure-Python verifiers: numeric (GSM8K-style) and normalized exact match."""

from __future__ import annotations

import re
from typing import Optional

import counterpoint
from counterpoint.verifiers import base
from counterpoint.verifiers.base import Verdict, Verifier
from counterpoint.verifiers.extract import extract_final_answer, normalize_answer, numbers_close, parse_number

_VERSION = f"counterpoint=={counterpoint.__version__}"


def _gold_number(gold: Optional[str]):
    if gold is None:
        return None
    parsed = parse_number(gold)
    if parsed is None:
        # e.g. a raw GSM8K solution "... #### 18"
        parsed = parse_number(extract_final_answer(gold))
    return parsed


def _candidates(value_pct):
    value, pct = value_pct
    # "50%" may be meant as 50 or as 0.5
    return (value, value / 100) if pct else (value,)


class NumericVerifier(Verifier):
    """Final answer and gold compared as numbers (exact fractions, 1e-6 relative tolerance)."""

    name = "numeric"
    version = _VERSION

    def __init__(self, *, fallback_last_number: bool = False):
        self.fallback_last_number = fallback_last_number

    def verify(self, completion: str, gold: str, *, truncated: bool = False) -> Verdict:
        answer = extract_final_answer(completion or "", fallback_last_number=self.fallback_last_number)
        if truncated:
            return base.incorrect(base.REASON_TRUNCATED, answer)
        if answer is None:
            return base.incorrect(base.REASON_NO_FINAL_ANSWER, None)
        gold_num = _gold_number(gold)
        if gold_num is None:
            return base.unknown(base.REASON_UNPARSABLE_GOLD, answer)
        ans_num = parse_number(answer)
        if ans_num is None:
            return base.incorrect(base.REASON_NON_NUMERIC_ANSWER, answer)
        for a in _candidates(ans_num):
            for g in _candidates(gold_num):
                if numbers_close(a, g):
                    return base.correct(answer)
        return base.incorrect(base.REASON_ANSWER_MISMATCH, answer)


_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\s*\{(.*)\}$", re.DOTALL)


def normalize_exact(s: str) -> str:
    """strip, drop ``$``/trailing period/``\\text{}`` wrapper, casefold, collapse whitespace."""
    t = normalize_answer(s)
    m = _TEXT_WRAP_RE.match(t)
    if m:
        t = m.group(1)
    return " ".join(t.casefold().split())


class ExactMatchVerifier(Verifier):
    """Normalized string equality of the final answer and the gold answer."""

    name = "exact"
    version = _VERSION

    def verify(self, completion: str, gold: str, *, truncated: bool = False) -> Verdict:
        answer = extract_final_answer(completion or "")
        if truncated:
            return base.incorrect(base.REASON_TRUNCATED, answer)
        if answer is None:
            return base.incorrect(base.REASON_NO_FINAL_ANSWER, None)
        gold_norm = normalize_exact(gold or "")
        if not gold_norm:
            return base.unknown(base.REASON_UNPARSABLE_GOLD, answer)
        if normalize_exact(answer) == gold_norm:
            return base.correct(answer)
        return base.incorrect(base.REASON_ANSWER_MISMATCH, answer)
