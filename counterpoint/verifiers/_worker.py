"""Body of a math-verify worker process (started by :class:`MathVerifier` with ``spawn``).

Runs ``math_verify`` on the process's main thread with math-verify's own
``signal.alarm`` timeouts disabled; the parent enforces a hard per-item timeout
by killing this process.

Protocol over one duplex ``multiprocessing`` connection:

* worker -> parent: ``("ready", pid)`` once warmed up, or ``("fatal", traceback)``;
  then ``("result", seq, verdict, reason, detail)`` per item.
* parent -> worker: ``(seq, completion, answer, gold)`` per item; ``None`` to stop.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import threading
import time
import traceback
from typing import Callable, Optional

VERDICT_CORRECT = "correct"
VERDICT_INCORRECT = "incorrect"
VERDICT_UNKNOWN = "unknown"


def resolve_callable(path: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {path!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path!r} is not callable")
    return obj


def _watch_parent(parent_pid: int) -> None:
    # Exit if the parent disappears, even while the main thread is stuck in sympy.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _has_math_object(parsed) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _is_ambiguous_pair(parsed) -> bool:
    """``(1, 2)`` parses as an open interval but may be an ordered pair."""
    from sympy import Interval

    obj = next((p for p in parsed if not isinstance(p, str)), None)
    return isinstance(obj, Interval) and obj.left_open and obj.right_open and obj.start.is_finite and obj.end.is_finite


class _Judge:
    """One item: numbers by the shared rule (extract.py), anything else by math-verify with its leaf
    equality replaced by the exact check (exact.py)."""

    def __init__(self):
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        from latex2sympy2_extended.math_normalization import NormalizationConfig
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        from counterpoint.verifiers import exact, extract

        exact.install()
        self._exact = exact
        self._extract = extract
        self._parse = parse
        # math-verify's own unit removal drops any trailing "c", "d", "s", "t", "ab", "more", "less",
        # ... and any trailing \text{...} ("2c" -> 2, "3 \text{ or more}" -> 3): units are removed by
        # extract.strip_units / strip_text_units instead, which know variables from units.
        self._extraction = (
            LatexExtractionConfig(normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False)),
            ExprExtractionConfig(),
        )
        self._verify = verify
        self.parse_gold = functools.lru_cache(maxsize=4096)(self._parse_gold)
        self.gold_quantity = functools.lru_cache(maxsize=4096)(extract.parse_quantity)

    def _symbolic_text(self, text: str) -> str:
        extract = self._extract
        return extract.list_words_to_commas(extract.strip_text_units(extract.strip_units(text)))

    def _parse_one(self, text: str):
        return self._parse(text, extraction_config=self._extraction, parsing_timeout=None, raise_on_error=True)

    def _parse_gold(self, gold: str):
        g = (gold or "").strip()
        if not g:
            return None
        candidates = []
        if "$" in g or "\\boxed" in g or "\\(" in g or "\\[" in g:
            candidates.append(g)
        candidates.append("\\boxed{" + self._symbolic_text(g.replace("\\$", "").replace("$", "")) + "}")
        for cand in candidates:
            parsed = self._parse_one(cand)
            if _has_math_object(parsed):
                return parsed
        return None

    def parse_answer(self, answer: str):
        parsed = self._parse_one("\\boxed{" + self._symbolic_text(answer) + "}")
        return parsed if _has_math_object(parsed) else None

    def __call__(self, answer: str, gold: str):
        extract = self._extract
        gold_q = self.gold_quantity(gold)
        if gold_q is not None:
            answer_q = extract.parse_quantity(answer)
            if answer_q is not None:
                if not extract.quantities_match(answer_q, gold_q):
                    return VERDICT_INCORRECT, "answer_mismatch"
                if extract.units_conflict(answer_q, gold_q):
                    return VERDICT_UNKNOWN, "unconfirmed_equivalence"
                return VERDICT_CORRECT, None
            if extract.is_wordy_answer(answer):
                return VERDICT_INCORRECT, "non_numeric_answer"
        gold_parsed = self.parse_gold(gold)
        if gold_parsed is None:
            return VERDICT_UNKNOWN, "unparsable_gold"
        ans_parsed = self.parse_answer(answer)
        if ans_parsed is None:
            return VERDICT_UNKNOWN, "unparsable_answer"
        approx = extract.has_decimal_literal(answer) or extract.has_decimal_literal(gold)
        with self._exact.judging(approx) as state:
            ok = self._verify(gold_parsed, ans_parsed, timeout_seconds=None, raise_on_error=True)
            if not ok:
                # "(1, 2]" (gold) vs "1 < x <= 2": math-verify compares a relation with a set only when
                # the set is the prediction; the other way round is as equal.
                ok = self._verify(gold_parsed, ans_parsed, timeout_seconds=None, raise_on_error=True,
                                  allow_set_relation_comp=True)
                if ok and _is_ambiguous_pair(gold_parsed):
                    return VERDICT_UNKNOWN, "unconfirmed_equivalence"
        if ok:
            if state.unconfirmed:
                return VERDICT_UNKNOWN, "unconfirmed_equivalence"
            return VERDICT_CORRECT, None
        if state.too_large:
            return VERDICT_UNKNOWN, "too_large_to_compare"
        return VERDICT_INCORRECT, "answer_mismatch"


def worker_main(conn, fault_injector: Optional[str], parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent handles it
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()
    try:
        judge = _Judge()
        hook = resolve_callable(fault_injector) if fault_injector else None
        # warm-up: lazy grammar/sympy imports happen here, not in an item's timeout
        judge("1", "1")
        judge("x + 1", "1 + x")
    except BaseException:
        conn.send(("fatal", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, completion, answer, gold = msg
        detail = None
        try:
            if hook is not None:
                hook(completion, gold)
            verdict, reason = judge(answer, gold)
        except Exception as e:  # noqa: BLE001 - any failure is an undecided item, never "incorrect"
            verdict, reason, detail = VERDICT_UNKNOWN, "verifier_error", f"{type(e).__name__}: {e}"[:500]
        try:
            conn.send(("result", seq, verdict, reason, detail))
        except (EOFError, OSError):
            return
