"""The verifier contract: a :class:`Verdict` per (completion, gold) pair.

Three outcomes, never collapsed (see ``records.VERDICTS``):

* ``correct``   — the completion's final answer matches the gold answer;
* ``incorrect`` — it clearly does not: a clean mismatch, no final answer at all,
  or a truncated generation (a truncated sample is never a positive);
* ``unknown``   — the verifier could not decide (hang, crash, unparsable gold or
  answer, or an equality found only by numeric closeness that the exact check could not
  confirm). ``unknown`` is never counted as a wrong solution, and never as a right one.

Every non-correct verdict carries a snake_case ``reason`` from :data:`REASONS`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import List, Optional, Sequence, Tuple

from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN, VERDICTS

# --- reasons vocabulary ------------------------------------------------------
# incorrect
REASON_TRUNCATED = "truncated"  # generation hit max_tokens
REASON_NO_FINAL_ANSWER = "no_final_answer"  # no final answer could be found in the text
REASON_ANSWER_MISMATCH = "answer_mismatch"  # clean comparison, not equal
REASON_NON_NUMERIC_ANSWER = "non_numeric_answer"  # gold is a number, the stated answer is not one ("seven" is)
# unknown
REASON_UNPARSABLE_GOLD = "unparsable_gold"
REASON_UNPARSABLE_ANSWER = "unparsable_answer"  # math verifier: answer found but not parsable
REASON_VERIFIER_TIMEOUT = "verifier_timeout"  # item exceeded the hard per-item timeout
REASON_VERIFIER_CRASH = "verifier_crash"  # the worker process died on the item
REASON_VERIFIER_ERROR = "verifier_error"  # an exception was raised while verifying the item
# math-verify found the answers equal, but the exact check (sympy, no floats) could not confirm it —
# e.g. a numeric comparison that underflows, or "(1, 2)" (a pair or an interval?) vs "1 < x < 2".
REASON_UNCONFIRMED_EQUIVALENCE = "unconfirmed_equivalence"
# an exact comparison would build an integer too large to hold (2^(10^10), (10^9)!): not decided
REASON_TOO_LARGE_TO_COMPARE = "too_large_to_compare"

# Version of the comparison rules in this package (units, exact-before-numeric, decimal tolerance);
# part of every verifier's ``version`` so rows record which rules judged them.
RULES_VERSION = "rules-2"

INCORRECT_REASONS = (
    REASON_TRUNCATED,
    REASON_NO_FINAL_ANSWER,
    REASON_ANSWER_MISMATCH,
    REASON_NON_NUMERIC_ANSWER,
)
UNKNOWN_REASONS = (
    REASON_UNPARSABLE_GOLD,
    REASON_UNPARSABLE_ANSWER,
    REASON_VERIFIER_TIMEOUT,
    REASON_VERIFIER_CRASH,
    REASON_VERIFIER_ERROR,
    REASON_UNCONFIRMED_EQUIVALENCE,
    REASON_TOO_LARGE_TO_COMPARE,
)
REASONS = INCORRECT_REASONS + UNKNOWN_REASONS

# Reason classes. A "format" failure says nothing about the reasoning: the text never states a
# final answer the verifier can read as a value. Such a sample is a fair outcome-level negative, but
# it is no step-level evidence (no step label row, no Step-DPO "rejected" step is built from it).
# ``non_numeric_answer`` is a format failure: "The answer is seven dozen." / "3 or 4" / "Tuesday"
# for a number gold says that no single number was stated, not that the reasoning reached a wrong
# one — it may be sound work written in words, so it must not mark a step False. Only a clean
# value that differs from the gold (``answer_mismatch``) is an answer failure.
REASON_CLASS_FORMAT = "format"
REASON_CLASS_ANSWER = "answer"  # a stated final answer that is wrong
REASON_CLASS_TRUNCATED = "truncated"
REASON_CLASS_UNDECIDED = "undecided"  # unknown verdicts
FORMAT_FAILURE_REASONS = frozenset({REASON_NO_FINAL_ANSWER, REASON_NON_NUMERIC_ANSWER})


def reason_class(reason: Optional[str]) -> Optional[str]:
    """The class of a verdict reason (None for a correct verdict, whose reason is None)."""
    if reason is None:
        return None
    if reason in FORMAT_FAILURE_REASONS:
        return REASON_CLASS_FORMAT
    if reason == REASON_TRUNCATED:
        return REASON_CLASS_TRUNCATED
    if reason in UNKNOWN_REASONS:
        return REASON_CLASS_UNDECIDED
    return REASON_CLASS_ANSWER


def is_format_failure(reason: Optional[str]) -> bool:
    """True for the format-class reasons (:data:`FORMAT_FAILURE_REASONS`: ``no_final_answer``,
    ``non_numeric_answer``) — THE one place that says which verdict reasons are format-class.

    Where the distinction matters (issue 15):

    * a sampled solution with a format failure is an outcome negative, never step-level evidence;
    * a prefix that states a final answer and is judged with a format-class or an unknown verdict is
      no evidence either (:func:`is_step_evidence`): it is rolled out like any other prefix;
    * a rollout with a format failure counts as "did not reach the gold answer" (0, Math-Shepherd's
      and OmegaPRM's semantics) under ``labeling.rollout_format_failures: zero``, and as unknown
      under ``unknown``; rows count such rollouts either way.
    """
    return reason_class(reason) == REASON_CLASS_FORMAT


def is_step_evidence(verdict: str, reason: Optional[str]) -> bool:
    """Whether the verdict of a text that states a final answer says something about its steps:
    correct, or incorrect because the stated answer is wrong (not a format failure, not unknown)."""
    if verdict == VERDICT_CORRECT:
        return True
    return verdict == VERDICT_INCORRECT and reason_class(reason) in (REASON_CLASS_ANSWER, REASON_CLASS_TRUNCATED)


@dataclasses.dataclass(frozen=True)
class Verdict:
    verdict: str  # one of records.VERDICTS
    reason: Optional[str]  # None iff verdict == "correct"
    final_answer: Optional[str]  # extracted final answer of the completion, None if not found

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == VERDICT_CORRECT:
            if self.reason is not None:
                raise ValueError(f"a correct verdict has no reason, got {self.reason!r}")
        elif not self.reason:
            raise ValueError(f"a {self.verdict} verdict needs a reason")

    @property
    def is_correct(self) -> bool:
        return self.verdict == VERDICT_CORRECT


def correct(final_answer: Optional[str]) -> Verdict:
    return Verdict(VERDICT_CORRECT, None, final_answer)


def incorrect(reason: str, final_answer: Optional[str]) -> Verdict:
    return Verdict(VERDICT_INCORRECT, reason, final_answer)


def unknown(reason: str, final_answer: Optional[str]) -> Verdict:
    return Verdict(VERDICT_UNKNOWN, reason, final_answer)


class Verifier(abc.ABC):
    """Judges completions against gold answers.

    Construction is cheap and the object is picklable (Beam pickles DoFns);
    heavy resources, if any, are created lazily on first use and released by
    :meth:`close`.
    """

    name: str = ""
    version: str = ""

    @abc.abstractmethod
    def verify(self, completion: str, gold: str, *, truncated: bool = False) -> Verdict:
        ...

    def verify_batch(self, items: Sequence[Tuple[str, str, bool]]) -> List[Verdict]:
        """``items`` are ``(completion, gold, truncated)``; verdicts come back in order."""
        return [self.verify(c, g, truncated=t) for c, g, t in items]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"
