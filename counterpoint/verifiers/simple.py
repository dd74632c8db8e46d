"""Pure-Python verifiers: numeric (GSM8K-style) and normalized exact match."""

from __future__ import annotations

import re
from typing import Optional

import counterpoint
from counterpoint.verifiers import base
from counterpoint.verifiers.base import Verdict, Verifier
from counterpoint.verifiers.extract import (
    Quantity,
    extract_final_answer,
    normalize_answer,
    parse_quantity,
    quantities_match,
    units_conflict,
)

_VERSION = f"counterpoint=={counterpoint.__version__} {base.RULES_VERSION}"


def _gold_quantity(gold: Optional[str]) -> Optional[Quantity]:
    if gold is None:
        return None
    parsed = parse_quantity(gold)
    if parsed is None:
        # e.g. a raw GSM8K solution "... #### 18"
        parsed = parse_quantity(extract_final_answer(gold))
    return parsed


class NumericVerifier(Verifier):
    """Final answer and gold compared as numbers (GSM8K-style).

    Both sides are read by :func:`~counterpoint.verifiers.extract.parse_quantity` (units after a
    number dropped, ``50%`` read as 50 or 0.5) and compared by
    :func:`~counterpoint.verifiers.extract.quantities_match`: exactly, unless a side is a decimal
    approximation (>= 6 significant digits), which must round to the other value at its last digit —
    the same rule the math verifier applies to numbers. Equal numbers with different stated units
    ("90 seconds" for "90 minutes") are ``unknown``/``unconfirmed_equivalence``.
    """

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
        gold_q = _gold_quantity(gold)
        if gold_q is None:
            return base.unknown(base.REASON_UNPARSABLE_GOLD, answer)
        answer_q = parse_quantity(answer)
        if answer_q is None:
            return base.incorrect(base.REASON_NON_NUMERIC_ANSWER, answer)
        if not quantities_match(answer_q, gold_q):
            return base.incorrect(base.REASON_ANSWER_MISMATCH, answer)
        if units_conflict(answer_q, gold_q):  # "90 seconds" for "90 minutes"
            return base.unknown(base.REASON_UNCONFIRMED_EQUIVALENCE, answer)
        return base.correct(answer)


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
