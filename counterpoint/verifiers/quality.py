"""Verifier quality on labelled equivalence cases: precision and recall of ``correct`` verdicts.

A case (one JSON line; the project's cases are ``tests/data/verifier_cases.jsonl``, read by the tests
and ``benchmarks/verifier_quality.py``) is a completion — or a bare answer,
wrapped as ``The final answer is $\\boxed{answer}$.`` — a gold answer, its ``answer_type``, the
verdict (and reason) its own verifier must give, and the truth: ``equivalent`` is true when the
completion states a final answer equal to the gold, false when not (no stated answer counts as
false), null when the pair is ambiguous (e.g. gold ``(1, 2)``: an interval or a pair?).

* precision = correct verdicts on equivalent pairs / all correct verdicts (a correct verdict on an
  ambiguous pair counts against it);
* recall = equivalent pairs judged correct / all equivalent pairs;
* unknown rate = unknown verdicts / cases.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_UNKNOWN
from counterpoint.verifiers.base import Verdict, Verifier

@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    category: str
    completion: str
    gold: str
    answer_type: str
    expected: str
    reason: Optional[str]
    equivalent: Optional[bool]
    truncated: bool = False
    note: str = ""


def wrap_answer(answer: str) -> str:
    return f"The final answer is $\\boxed{{{answer}}}$."


def load_cases(path: Path) -> List[Case]:
    cases = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            raw = json.loads(line)
            if ("completion" in raw) == ("answer" in raw):
                raise ValueError(f"{path}:{line_no}: give exactly one of 'completion' or 'answer'")
            completion = raw["completion"] if "completion" in raw else wrap_answer(raw["answer"])
            cases.append(Case(
                id=raw["id"], category=raw["category"], completion=completion, gold=raw["gold"],
                answer_type=raw["answer_type"], expected=raw["expected"], reason=raw.get("reason"),
                equivalent=raw["equivalent"], truncated=bool(raw.get("truncated", False)), note=raw.get("note", ""),
            ))
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate case ids")
    return cases


def judge_cases(verifier: Verifier, cases: Sequence[Case]) -> List[Verdict]:
    return verifier.verify_batch([(c.completion, c.gold, c.truncated) for c in cases])


def score(cases: Sequence[Case], verdicts: Sequence[Verdict]) -> Dict[str, object]:
    """Precision / recall of ``correct`` verdicts, unknown rate, and the ids behind each miss."""
    said_correct = [c for c, v in zip(cases, verdicts) if v.verdict == VERDICT_CORRECT]
    false_positives = [c.id for c in said_correct if c.equivalent is not True]
    equivalent = [(c, v) for c, v in zip(cases, verdicts) if c.equivalent is True]
    missed = [c.id for c, v in equivalent if v.verdict != VERDICT_CORRECT]
    unknown = sum(1 for v in verdicts if v.verdict == VERDICT_UNKNOWN)
    n_correct = len(said_correct)
    return {
        "cases": len(cases),
        "correct_verdicts": n_correct,
        "equivalent_pairs": len(equivalent),
        "precision": (n_correct - len(false_positives)) / n_correct if n_correct else 1.0,
        "recall": (len(equivalent) - len(missed)) / len(equivalent) if equivalent else 1.0,
        "unknown_rate": unknown / len(cases) if cases else 0.0,
        "false_positives": false_positives,
        "missed_equivalences": missed,
    }


def expectation_failures(cases: Sequence[Case], verdicts: Sequence[Verdict]) -> List[str]:
    """Cases whose verdict (or reason, where the case names one) differs from the expected."""
    out = []
    for c, v in zip(cases, verdicts):
        if v.verdict != c.expected or (c.reason is not None and v.reason != c.reason):
            out.append(f"{c.id}: expected {c.expected}/{c.reason}, got {v.verdict}/{v.reason} "
                       f"(final answer {v.final_answer!r}, gold {c.gold!r})")
    return out
