"""Exact checking of explicit arithmetic claims ``a op b = c`` in a solution step.

Issue 9, defect 9: a step that writes "20 + 8 = 40" is wrong whatever Monte Carlo
says (one lucky rollout in k must not make it a positive). This module finds the
claims a step states explicitly and checks them with exact rational arithmetic
(:class:`fractions.Fraction`); a false one makes the step an error.

What counts as a claim (deliberately conservative: an unrecognised form is never
flagged, it is simply not a claim):

* ``EXPR = NUMBER`` where ``EXPR`` is the *maximal* run of numbers, ``+ - * / x × ÷ ·``
  (and ``\\times``, ``\\cdot``, ``\\div``) and parentheses directly left of ``=``, with
  at least one binary operator, evaluated with the usual precedence
  ("2 * 3 + 4 = 10" is one true claim, not "3 + 4 = 10");
* numbers may carry ``$``, thousands separators ("1,200") and decimals; a leading
  unary minus is allowed ("-3 * 2 = -6");
* the right side is one number **not followed by another operator**, a percent
  sign, a letter glued to it or a digit list ("= 1,2"); units after a space are fine
  ("= 7 apples");
* skipped: anything preceded by a variable or a single letter ("x + 3 = 5", "2x + 3"),
  by ``%``/"of"/"times"/"per"/... ("20% of 50 = 10"), with units or words between the
  numbers ("5 dollars * 3 = 15"), powers, factorials, LaTeX fractions, and integer
  results of a division that is not whole (a floor or a rounding in context:
  "7 / 2 = 3 boxes");
* a decimal right side is true when the exact value is within half a unit of its
  last stated digit ("10 / 3 = 3.33" is true, "10 / 3 = 3.3" too, "10 / 3 = 3.4" is not).
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\\?\$\s?)?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?)
  | (?P<op>\\times|\\cdot|\\div|[+\-*/×÷·−])
  | (?P<pct>\\%|%)
  | (?P<eq>=)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<word>[A-Za-z_]+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_OP_CANON = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "\\times": "*", "\\cdot": "*",
             "/": "/", "÷": "/", "\\div": "/"}
# Words that make the number after them part of a larger, unparsed expression.
_CONNECTIVES = frozenset({"of", "times", "by", "per", "plus", "minus", "over", "than", "divided",
                          "multiplied", "into", "squared", "cubed", "sqrt", "frac", "dfrac", "tfrac",
                          "cdot", "pm", "mp"})
# Punctuation after which an expression may start.
_OPEN_BOUNDARY = frozenset(":;,.!?([{$")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checked claim: ``lhs`` evaluates to ``value``; the step states ``rhs``."""

    text: str
    value: Fraction
    rhs: Fraction
    holds: bool


@dataclasses.dataclass
class _Tok:
    kind: str
    text: str
    start: int
    end: int
    ws_before: bool


def _tokens(text: str) -> List[_Tok]:
    out: List[_Tok] = []
    ws = True
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            ws = True
            continue
        out.append(_Tok(kind, m.group(0), m.start(), m.end(), ws))
        ws = False
    # "x" between two numbers is multiplication ("3 x 4", "3x4"); anywhere else it is a variable.
    for i, t in enumerate(out):
        if t.kind == "word" and t.text in ("x", "X") and 0 < i < len(out) - 1:
            if out[i - 1].kind in ("num", "rp") and out[i + 1].kind in ("num", "lp"):
                t.kind = "op"
                t.text = "*"
    return out


def _number(tok: _Tok) -> Fraction:
    s = tok.text.replace("\\", "").replace("$", "").replace(",", "").strip()
    return Fraction(s)


def _decimals(tok: _Tok) -> int:
    s = tok.text
    return len(s.split(".", 1)[1]) if "." in s else 0


class _Parser:
    """Recursive descent over number/operator/paren tokens; every token must be consumed."""

    def __init__(self, toks: Sequence[_Tok]):
        self.toks = list(toks)
        self.i = 0
        self.binary_ops = 0
        self.has_division = False

    def peek(self) -> Optional[_Tok]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> Optional[Fraction]:
        try:
            v = self.expr()
        except (ValueError, ZeroDivisionError):
            return None
        return v if v is not None and self.i == len(self.toks) else None

    def expr(self) -> Optional[Fraction]:
        v = self.term()
        while v is not None and (t := self.peek()) is not None and t.kind == "op" and _OP_CANON[t.text] in "+-":
            self.i += 1
            rhs = self.term()
            if rhs is None:
                return None
            self.binary_ops += 1
            v = v + rhs if _OP_CANON[t.text] == "+" else v - rhs
        return v

    def term(self) -> Optional[Fraction]:
        v = self.unary()
        while v is not None and (t := self.peek()) is not None and t.kind == "op" and _OP_CANON[t.text] in "*/":
            self.i += 1
            rhs = self.unary()
            if rhs is None:
                return None
            self.binary_ops += 1
            if _OP_CANON[t.text] == "*":
                v = v * rhs
            else:
                self.has_division = True
                v = v / rhs  # ZeroDivisionError -> not a claim
        return v

    def unary(self) -> Optional[Fraction]:
        t = self.peek()
        if t is not None and t.kind == "op" and _OP_CANON[t.text] == "-":
            self.i += 1
            v = self.unary()
            return None if v is None else -v
        return self.primary()

    def primary(self) -> Optional[Fraction]:
        t = self.peek()
        if t is None:
            return None
        if t.kind == "num":
            self.i += 1
            return _number(t)
        if t.kind == "lp":
            self.i += 1
            v = self.expr()
            close = self.peek()
            if v is None or close is None or close.kind != "rp":
                return None
            self.i += 1
            return v
        return None


def _lhs_start(toks: Sequence[_Tok], eq: int) -> Optional[int]:
    """Index of the first token of the maximal expression ending before ``toks[eq]``; None if unusable."""
    s = eq
    while s > 0 and toks[s - 1].kind in ("num", "op", "lp", "rp"):
        s -= 1
    if s == eq:
        return None
    # Unmatched opening parentheses at the left belong to the surrounding text: "(so 3 + 4 = 7)".
    depth = sum(1 if t.kind == "lp" else -1 if t.kind == "rp" else 0 for t in toks[s:eq])
    while depth > 0 and toks[s].kind == "lp":
        s += 1
        depth -= 1
    if depth != 0 or s >= eq:
        return None
    first = toks[s]
    if first.kind == "op" and _OP_CANON[first.text] != "-":
        return None  # "x + 3 = 5", "5 dollars * 3 = 15": an operand is not a number
    if s == 0:
        return s
    before = toks[s - 1]
    if before.kind in ("eq", "lp"):
        return s  # chained: "x = 3 + 4 = 7"; after an unmatched "(" of the surrounding text
    if before.kind == "word":
        if not first.ws_before or len(before.text) == 1 or before.text.lower() in _CONNECTIVES:
            return None
        return s
    if before.kind == "other" and before.text in _OPEN_BOUNDARY:
        if before.text == "." and not first.ws_before:
            return None
        return s
    return None  # %, ^, \, }, _, ', unknown symbols: part of something we do not parse


def _rhs(toks: Sequence[_Tok], eq: int) -> Optional[Tuple[Fraction, int, int]]:
    """``(value, decimals, index after it)`` of the number right of ``toks[eq]``; None if not a plain number."""
    j = eq + 1
    sign = 1
    if j < len(toks) and toks[j].kind == "op" and _OP_CANON[toks[j].text] == "-":
        sign, j = -1, j + 1
    if j >= len(toks) or toks[j].kind != "num":
        return None
    num = toks[j]
    nxt = toks[j + 1] if j + 1 < len(toks) else None
    if nxt is not None:
        if nxt.kind in ("op", "lp", "pct"):
            return None
        if not nxt.ws_before and nxt.kind in ("word", "num"):
            return None  # "= 5x", "= 12cm"? glued text: not a plain number
        if nxt.kind == "word" and nxt.text.lower() in _CONNECTIVES | {"x"}:
            return None
        if nxt.kind == "other" and nxt.text in "^!_\\/":
            if not (nxt.text == "\\" and j + 2 < len(toks) and toks[j + 2].kind == "word"
                    and toks[j + 2].text in ("text", "mathrm", "quad", "qquad")):
                return None
        if nxt.kind == "other" and nxt.text == "," and j + 2 < len(toks) and not toks[j + 2].ws_before \
                and toks[j + 2].kind == "num":
            return None  # "= 1,2,3"
    return sign * _number(num), _decimals(num), j + 1


def claims(step: str) -> List[Claim]:
    """Every explicit arithmetic claim of ``step`` that this module can read, checked exactly."""
    toks = _tokens(step)
    out: List[Claim] = []
    for q, t in enumerate(toks):
        if t.kind != "eq":
            continue
        s = _lhs_start(toks, q)
        if s is None:
            continue
        rhs = _rhs(toks, q)
        if rhs is None:
            continue
        parser = _Parser(toks[s:q])
        value = parser.parse()
        if value is None or parser.binary_ops == 0:
            continue
        stated, decimals, end = rhs
        if decimals > 0:
            holds = abs(value - stated) <= Fraction(1, 2 * 10 ** decimals)
        elif value.denominator != 1 and parser.has_division and abs(value - stated) < 1:
            continue  # a whole-number result of an inexact division: floor or rounding in context
        else:
            holds = value == stated
        out.append(Claim(step[toks[s].start:toks[end - 1].end], value, stated, holds))
    return out


def false_claims(step: str) -> List[Claim]:
    return [c for c in claims(step) if not c.holds]


def first_false_claim_step(steps: Sequence[str]) -> Optional[int]:
    """Index of the first step stating a false arithmetic claim; None if every readable claim holds."""
    for i, s in enumerate(steps):
        if false_claims(s):
            return i
    return None
