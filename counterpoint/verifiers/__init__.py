"""Verifiers: judge a completion's final answer against the gold answer.

``verdict`` is ``correct`` / ``incorrect`` / ``unknown`` (``records.VERDICT_*``)
with a snake_case reason from :data:`REASONS`; ``unknown`` is never ``incorrect``,
and never ``correct``: an equality the exact check cannot confirm is ``unknown``.
Numbers (with units) are read and compared by one function for every verifier
(``extract.parse_quantity`` / ``extract.quantities_match``).
"""

from __future__ import annotations

from counterpoint.verifiers.base import (
    FORMAT_FAILURE_REASONS,
    INCORRECT_REASONS,
    REASON_ANSWER_MISMATCH,
    REASON_NO_FINAL_ANSWER,
    REASON_NON_NUMERIC_ANSWER,
    REASON_TOO_LARGE_TO_COMPARE,
    REASON_TRUNCATED,
    REASON_UNCONFIRMED_EQUIVALENCE,
    REASON_UNPARSABLE_ANSWER,
    REASON_UNPARSABLE_GOLD,
    REASON_VERIFIER_CRASH,
    REASON_VERIFIER_ERROR,
    REASON_VERIFIER_TIMEOUT,
    REASONS,
    RULES_VERSION,
    UNKNOWN_REASONS,
    Verdict,
    Verifier,
    is_format_failure,
    is_step_evidence,
    reason_class,
)
from counterpoint.verifiers.extract import (
    Quantity,
    extract_final_answer,
    normalize_answer,
    parse_number,
    parse_quantity,
    quantities_match,
    states_final_answer,
    strip_units,
)
from counterpoint.verifiers.math_verifier import MathVerifier, VerifierStartupError
from counterpoint.verifiers.simple import ExactMatchVerifier, NumericVerifier

_BY_NAME = {"numeric": NumericVerifier, "math": MathVerifier, "exact": ExactMatchVerifier}


def make_verifier(name: str, *, timeout_s: float = 5.0, **kwargs) -> Verifier:
    """``"numeric"`` | ``"math"`` | ``"exact"``. ``timeout_s`` and extra keyword
    arguments (``pool_size``, ``fault_injector``, ...) apply to ``"math"`` only."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown verifier {name!r}; expected one of {sorted(_BY_NAME)}")
    if name == "math":
        return MathVerifier(timeout_s=timeout_s, **kwargs)
    if kwargs:
        raise TypeError(f"verifier {name!r} takes no options {sorted(kwargs)}")
    return _BY_NAME[name]()


def verifier_for_answer_type(answer_type: str, *, timeout_s: float = 5.0, **kwargs) -> Verifier:
    """The verifier for a problem's ``answer_type`` (``records.ANSWER_TYPES``)."""
    return make_verifier(answer_type, timeout_s=timeout_s, **kwargs)


__all__ = [
    "FORMAT_FAILURE_REASONS",
    "Quantity",
    "REASON_TOO_LARGE_TO_COMPARE",
    "REASON_UNCONFIRMED_EQUIVALENCE",
    "RULES_VERSION",
    "is_format_failure",
    "is_step_evidence",
    "states_final_answer",
    "parse_quantity",
    "quantities_match",
    "reason_class",
    "strip_units",
    "Verdict",
    "Verifier",
    "NumericVerifier",
    "ExactMatchVerifier",
    "MathVerifier",
    "VerifierStartupError",
    "extract_final_answer",
    "normalize_answer",
    "parse_number",
    "make_verifier",
    "verifier_for_answer_type",
    "REASONS",
    "INCORRECT_REASONS",
    "UNKNOWN_REASONS",
    "REASON_ANSWER_MISMATCH",
    "REASON_NO_FINAL_ANSWER",
    "REASON_NON_NUMERIC_ANSWER",
    "REASON_TRUNCATED",
    "REASON_UNPARSABLE_ANSWER",
    "REASON_UNPARSABLE_GOLD",
    "REASON_VERIFIER_CRASH",
    "REASON_VERIFIER_ERROR",
    "REASON_VERIFIER_TIMEOUT",
]
