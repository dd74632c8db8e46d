"""Exact checking of explicit arithmetic claims ``a op b = c`` in a solution step, as models write them.

Issue 9, defect 9: a step that writes "20 + 8 = 40" is wrong whatever Monte Carlo
says. Issue 15: the check must read the way models write (LaTeX, markdown lists,
money, percentages, rounding) and never flag a right step — it is a precision
tool: where it cannot be sure, it says nothing. A step is first rewritten to plain
notation (:func:`counterpoint.labeling.claim_text.plain`: LaTeX delimiters become
expression boundaries, ``\\frac{a}{b}`` becomes ``(a/b)``, ``1,\\!000`` becomes
``1,000``, ...), then every ``=`` is read:

* ``EXPR = VALUE`` where ``EXPR`` is the maximal run of numbers, ``+ - * / x × ÷ ·``,
  percent signs and parentheses directly left of ``=``, with at least one binary
  operator, evaluated with the usual precedence and exact rationals;
* an expression ends at a newline or a math delimiter; a ``-``/``*``/``+``/``•``
  followed by a space at a line start is a list marker, and a ``-`` followed by a
  space after a word or a colon is a dash — neither is a minus;
* numbers may carry ``$``, thousands separators and decimals; ``20%`` reads as
  ``0.2`` or as ``20`` (a claim holds if either reading does); ``6.666...`` is a
  repeating decimal;
* skipped (never a claim): anything after a variable or a single letter, after
  ``of``/``times``/``per``/..., words or units between numbers, powers, unknown
  LaTeX, clock times and ratios (``10:30``), dates (``12/25/2023``, ``2023-10-05``);
* precision: a right side with ``d`` decimals holds when it is the exact value, or
  — when the exact value has more digits than the writer kept — its rounding or
  truncation to ``d`` places. Operands with two or more decimals may themselves be
  rounded ("12 × 0.33 = 4": ``0.33`` stands for ``[0.325, 0.335]``), so the left
  side is an interval and the claim holds when the interval meets the right side's
  band. A whole-number right side of a non-whole value holds within 0.5 (rounding)
  and is not read within 1 after a division (a floor or a ceiling in context:
  "7 / 2 = 3 boxes", "100 / 7 = 15 buses").

Long: the claim grammar (operands, operators, the writer's precision) is one parser whose cases are audited
together; text normalisation lives in claim_text.py.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

from counterpoint.labeling.claim_text import BOUND, plain

_TOKEN_RE = re.compile(
    r"""
    (?P<nl>\n|""" + BOUND + r""")
  | (?P<ws>[^\S\n]+)
  | (?P<num>(?:\$\s?)?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:\.\.\.|…)?)
  | (?P<op>[+\-*/×÷·−•])
  | (?P<pct>%)
  | (?P<eq>=)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<word>[A-Za-z_]+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_OP_CANON = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "/": "/", "÷": "/", "•": "•"}
# Words that make the number after them part of a larger, unparsed expression.
_CONNECTIVES = frozenset({"of", "times", "by", "per", "plus", "minus", "over", "than", "divided",
                          "multiplied", "into", "squared", "cubed", "sqrt", "frac", "dfrac", "tfrac",
                          "cdot", "pm", "mp"})
# Punctuation after which an expression may start.
_OPEN_BOUNDARY = frozenset(":;,.!?([{$<")
_MARKERS = frozenset("-*+•×·")
_EXPR_KINDS = ("num", "op", "lp", "rp", "pct")


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


@dataclasses.dataclass(frozen=True)
class _Val:
    """A value known to lie in ``[lo, hi]`` (a point unless a rounded operand took part)."""

    v: Fraction
    lo: Fraction
    hi: Fraction

    @staticmethod
    def point(v: Fraction) -> "_Val":
        return _Val(v, v, v)

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def combine(self, other: "_Val", op: str) -> "_Val":
        if op == "+":
            return _Val(self.v + other.v, self.lo + other.lo, self.hi + other.hi)
        if op == "-":
            return _Val(self.v - other.v, self.lo - other.hi, self.hi - other.lo)
        if op == "/":
            if other.lo <= 0 <= other.hi:
                raise ZeroDivisionError
            other = _Val(1 / other.v, 1 / other.hi, 1 / other.lo)
        ends = [a * b for a in (self.lo, self.hi) for b in (other.lo, other.hi)]
        return _Val(self.v * other.v, min(ends), max(ends))


def _tokens(text: str) -> List[_Tok]:
    out: List[_Tok] = []
    ws = True
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            ws = True
            continue
        out.append(_Tok(kind, m.group(0), m.start(), m.end(), ws))
        ws = kind == "nl"
    # "x" between two numbers is multiplication ("3 x 4", "3x4"); anywhere else it is a variable.
    for i, t in enumerate(out):
        if t.kind == "word" and t.text in ("x", "X") and 0 < i < len(out) - 1:
            if out[i - 1].kind in ("num", "rp") and out[i + 1].kind in ("num", "lp"):
                t.kind, t.text = "op", "*"
    return out


def _number(tok: _Tok) -> Tuple[Fraction, int, bool]:
    """``(value, decimals, repeating)`` of a number token."""
    s = tok.text.replace("$", "").replace(",", "").strip()
    repeating = s.endswith(("...", "…"))
    s = s.rstrip(".…")
    decimals = len(s.split(".", 1)[1]) if "." in s else 0
    return Fraction(s), decimals, repeating and decimals > 0


def _operand(tok: _Tok) -> _Val:
    v, d, repeating = _number(tok)
    if repeating:
        return _Val(v, v, v + Fraction(1, 10 ** d))
    if d >= 2:  # possibly rounded by the writer: 0.33 stands for [0.325, 0.335]
        h = Fraction(1, 2 * 10 ** d)
        return _Val(v, v - h, v + h)
    return _Val.point(v)


class _Parser:
    """Recursive descent over number/operator/paren tokens; every token must be consumed.

    ``pct`` is what a percent sign scales its number by (1/100, or 1 for the "points" reading)."""

    def __init__(self, toks: Sequence[_Tok], pct: Fraction):
        self.toks = list(toks)
        self.pct = pct
        self.i = 0
        self.binary_ops = 0
        self.has_division = False

    def peek(self) -> Optional[_Tok]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _op(self, ops: str) -> Optional[str]:
        t = self.peek()
        if t is not None and t.kind == "op" and _OP_CANON[t.text] in ops:
            self.i += 1
            return _OP_CANON[t.text]
        return None

    def parse(self) -> Optional[_Val]:
        try:
            v = self.expr()
        except (ValueError, ZeroDivisionError):
            return None
        return v if v is not None and self.i == len(self.toks) else None

    def expr(self) -> Optional[_Val]:
        v = self.term()
        while v is not None and (op := self._op("+-")) is not None:
            rhs = self.term()
            if rhs is None:
                return None
            self.binary_ops += 1
            v = v.combine(rhs, op)
        return v

    def term(self) -> Optional[_Val]:
        v = self.unary()
        while v is not None and (op := self._op("*/")) is not None:
            rhs = self.unary()
            if rhs is None:
                return None
            self.binary_ops += 1
            self.has_division |= op == "/"
            v = v.combine(rhs, op)
        return v

    def unary(self) -> Optional[_Val]:
        if self._op("-") is not None:
            v = self.unary()
            return None if v is None else _Val(-v.v, -v.hi, -v.lo)
        return self.primary()

    def primary(self) -> Optional[_Val]:
        t = self.peek()
        if t is None:
            return None
        if t.kind == "num":
            self.i += 1
            v = _operand(t)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "pct":
                self.i += 1
                v = v.combine(_Val.point(self.pct), "*")
            return v
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
    while s > 0 and toks[s - 1].kind in _EXPR_KINDS:
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
    before = toks[s - 1] if s > 0 else None
    first = toks[s]
    if first.kind == "op" and s + 1 < eq and toks[s + 1].ws_before and first.text in _MARKERS:
        # "- 6 + 20 = 26" after a line start, "shirts - 3 * 15", "Total: - 3 + 5": a marker or a dash
        line_start = before is None or before.kind == "nl"
        dash = first.text == "-" and before is not None and (before.kind == "word" or before.text == ":")
        if not (line_start or dash):
            return None
        s += 1
        first = toks[s]
        if first.kind == "op":
            return None
    elif first.kind == "op" and _OP_CANON[first.text] != "-":
        return None  # "x + 3 = 5", "5 dollars * 3 = 15": an operand is not a number
    if _is_date(toks[s:eq]):
        return None
    if before is None or before.kind in ("eq", "lp", "nl"):
        return s  # chained: "x = 3 + 4 = 7"; after an unmatched "(" of the surrounding text
    if before.kind == "word":
        if not first.ws_before or len(before.text) == 1 or before.text.lower() in _CONNECTIVES:
            return None
        return s
    if before.kind == "other" and before.text in _OPEN_BOUNDARY:
        if before.text in ".:" and not first.ws_before:
            return None  # "3.5", "10:30", "3:4": part of a number, a clock time or a ratio
        return s
    return None  # %, ^, \, }, _, ', unknown symbols: part of something we do not parse


def _is_date(toks: Sequence[_Tok]) -> bool:
    """"12/25/2023", "2023-10-05": day, month and year glued by two slashes or dashes."""
    for i in range(len(toks) - 4):
        a, op1, b, op2, c = toks[i:i + 5]
        if not (a.kind == b.kind == c.kind == "num" and op1.kind == op2.kind == "op" and op1.text == op2.text
                and not (op1.ws_before or b.ws_before or op2.ws_before or c.ws_before)):
            continue
        la, lb, lc = (len(t.text) for t in (a, b, c))
        if op1.text == "/" and la <= 2 and lb <= 2 and lc in (2, 4):
            return True
        if op1.text == "-" and la == 4 and lb <= 2 and lc <= 2:
            return True
    return False


def _rhs(toks: Sequence[_Tok], eq: int) -> Optional[Tuple[Fraction, int, bool, bool, int]]:
    """``(value, decimals, approximate, percent, index after it)`` of the value right of ``toks[eq]``
    (``decimals = -1``: an exact fraction); None if it is not a plain number, a fraction ``(a/b)`` /
    ``a/b`` or a percentage."""
    j = eq + 1
    sign = 1
    if j < len(toks) and toks[j].kind == "op" and _OP_CANON[toks[j].text] == "-" and j + 1 < len(toks) \
            and not toks[j + 1].ws_before:
        sign, j = -1, j + 1
    kinds = [t.kind for t in toks[j:j + 5]]
    texts = [t.text for t in toks[j:j + 5]]
    if kinds[:5] == ["lp", "num", "op", "num", "rp"] and texts[2] == "/":  # "(3/4)" from \frac{3}{4}
        num, den = _number(toks[j + 1])[0], _number(toks[j + 3])[0]
        value, decimals, approx, end = (num / den if den else None), -1, False, j + 5
    elif kinds[:3] == ["num", "op", "num"] and texts[1] == "/" and not toks[j + 1].ws_before \
            and not toks[j + 2].ws_before:  # "3/4"
        num, den = _number(toks[j])[0], _number(toks[j + 2])[0]
        value, decimals, approx, end = (num / den if den else None), -1, False, j + 3
    elif kinds[:1] == ["num"]:
        value, decimals, approx = _number(toks[j])
        end = j + 1
    else:
        return None
    if value is None:
        return None
    pct = end < len(toks) and toks[end].kind == "pct" and not toks[end].ws_before
    end += int(pct)
    nxt = toks[end] if end < len(toks) else None
    if nxt is not None:
        if nxt.kind in ("op", "lp", "pct"):
            return None
        if not nxt.ws_before and nxt.kind in ("word", "num"):
            return None  # "= 5x", "= 12cm"? glued text: not a plain number
        if nxt.kind == "word" and nxt.text.lower() in _CONNECTIVES | {"x"}:
            return None
        if nxt.kind == "other" and nxt.text in "^!_\\/" or (nxt.kind == "other" and nxt.text in ":."
                                                            and _glued_digit(toks, end)):
            return None  # "= 2^3", "= 12:30", "= 3.5.1"
        if nxt.kind == "other" and nxt.text == "," and _glued_digit(toks, end):
            return None  # "= 1,2,3"
    return sign * value, decimals, approx, pct, end


def _glued_digit(toks: Sequence[_Tok], i: int) -> bool:
    return i + 1 < len(toks) and toks[i + 1].kind == "num" and not toks[i + 1].ws_before


def _matches(lhs: _Val, stated: Fraction, decimals: int, approx: bool) -> bool:
    """The stated value is the exact value, or the writer's rounding/truncation of it (module docstring)."""
    if decimals < 0:
        return lhs.lo <= stated <= lhs.hi  # a stated fraction is exact
    unit = Fraction(1, 10 ** decimals)
    if lhs.exact and not approx and (lhs.v / unit).denominator == 1:
        return lhs.v == stated  # the exact value fits the stated precision: nothing to round
    h = unit / 2
    if decimals == 0 and not approx:
        lo, hi = stated - h, stated + h
    elif stated >= 0:
        lo, hi = stated - h, stated + unit  # rounded, or truncated ("20/3 = 6.66", "6.666...")
    else:
        lo, hi = stated - unit, stated + h
    return lhs.lo <= hi and lo <= lhs.hi


def _check(toks: Sequence[_Tok], s: int, q: int, rhs) -> Optional[Claim]:
    stated, decimals, approx, pct, end = rhs
    has_pct = pct or any(t.kind == "pct" for t in toks[s:q])
    scales = (Fraction(1, 100), Fraction(1)) if has_pct else (Fraction(1, 100),)
    readings = (stated, stated / 100) if pct else (stated,)
    nominal = None
    floor_like = False
    for scale in scales:
        parser = _Parser(toks[s:q], scale)
        value = parser.parse()
        if value is None or parser.binary_ops == 0:
            return None
        nominal = nominal or value
        for r in readings:
            if _matches(value, r, decimals, approx):
                return Claim("", value.v, r, True)
            if decimals == 0 and parser.has_division and value.lo - 1 < r < value.hi + 1:
                floor_like = True  # a whole number near an inexact quotient: floor or ceiling in context
    if floor_like:
        return None
    return Claim("", nominal.v, readings[0], False)


def claims(step: str) -> List[Claim]:
    """Every explicit arithmetic claim of ``step`` that this module can read, checked exactly.

    ``Claim.text`` is the claim as read, in plain notation (``claim_text.plain``)."""
    text = plain(step)
    toks = _tokens(text)
    out: List[Claim] = []
    for q, t in enumerate(toks):
        if t.kind != "eq":
            continue
        s = _lhs_start(toks, q)
        rhs = None if s is None else _rhs(toks, q)
        if rhs is None:
            continue
        claim = _check(toks, s, q, rhs)
        if claim is not None and not claim.holds and s > 0 and toks[s - 1].text == "-" and toks[s - 1].kind == "op":
            # a dropped dash or list marker that could have been a minus: unsure, say nothing
            alt = _check(toks, s - 1, q, rhs)
            if alt is None or alt.holds:
                continue
        if claim is not None:
            out.append(dataclasses.replace(claim, text=text[toks[s].start:toks[rhs[-1] - 1].end]))
    return out


def false_claims(step: str) -> List[Claim]:
    return [c for c in claims(step) if not c.holds]


def first_false_claim_step(steps: Sequence[str]) -> Optional[int]:
    """Index of the first step stating a false arithmetic claim; None if every readable claim holds."""
    for i, s in enumerate(steps):
        if false_claims(s):
            return i
    return None
