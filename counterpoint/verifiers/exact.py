"""Exact comparison of parsed answers, before any numeric fallback (runs in the math-verify worker).

math-verify decides the equality of two numbers or expressions in ``sympy_numeric_eq`` (a Float
rounded to 6 decimals, or ``(a - b).evalf(15, chop=True) == 0``) and ``sympy_symbolic_eq``
(``simplify(a - b).is_zero``). The numeric path is where it goes wrong on exact answers:
``1/2006!`` and ``1/2004!`` differ by ~1e-5760, which ``evalf(chop=True)`` rounds to 0.

:func:`install` wraps both leaf comparers with :func:`compare`, which decides exactly when it can:

* exact vs exact (no Float): equal only if sympy proves it — identical after ``doit()``, an exact
  Rational difference of 0, ``is_zero``, or ``simplify(a - b) == 0``; unequal if the difference is a
  nonzero Rational or evaluates (``evalf(strict=True)``, guaranteed digits) to a nonzero number;
* a Float (the text wrote a decimal) is an exact decimal; a tolerance applies only if the item's
  text writes a decimal and the rule of :func:`~counterpoint.verifiers.extract.values_agree` holds;
* undecided (expressions sympy cannot settle): defer to math-verify's own leaf, and if that says
  "equal", remember it — the item's verdict becomes ``unknown`` / ``unconfirmed_equivalence``
  instead of ``correct``;
* too big to evaluate (``2^(10^10)``, ``(10^9)!`` that are not identical): math-verify is not asked
  (it would build the integer); the item becomes ``unknown`` / ``too_large_to_compare``.

Structure (sets in any order, tuples in order, intervals, relations, equations ``x = 5``) stays
math-verify's; only its leaf equality is replaced. Everything here runs under the worker's hard
per-item timeout.
"""

from __future__ import annotations

import contextlib
import decimal
import math
from fractions import Fraction
from typing import Callable, List, Optional, Tuple

import sympy
from sympy import Basic, Expr, Float, MatrixBase, Mul, Pow, Rational, UnevaluatedExpr, factorial
from sympy.core.relational import Relational
from sympy.sets.sets import Set

from counterpoint.verifiers.extract import Quantity, values_agree

# Integers beyond this many bits are not built (2^(10^10) would take gigabytes): undecided instead.
MAX_INTEGER_BITS = 4_000_000
_EVALF_DIGITS = 40


class ItemState:
    """Per-item flags: may decimals be approximations, and did an unconfirmed equality decide?"""

    def __init__(self) -> None:
        self.approx_allowed = False
        self.unconfirmed = False
        self.too_large = False  # a leaf was too big to evaluate: a "no" is not to be trusted either
        self.memo = {}  # (a, b) -> compare() outcome: both leaf comparers ask about the same pair


_state = ItemState()


@contextlib.contextmanager
def judging(approx_allowed: bool):
    """Scope of one item: ``approx_allowed`` when its text writes a decimal; yields the state whose
    ``unconfirmed`` says whether a numeric-only equality was used."""
    global _state
    previous, _state = _state, ItemState()
    _state.approx_allowed = approx_allowed
    try:
        yield _state
    finally:
        _state = previous


# --- size guard ---------------------------------------------------------------------------------


def _magnitude(e: Basic) -> Optional[float]:
    """|e| as a float (inf when huge), from a 15-digit evalf that never builds big integers."""
    try:
        v = e.evalf(15)
    except Exception:  # noqa: BLE001
        return None
    if not v.is_Number or not v.is_real:
        return None
    if v.is_infinite:
        return math.inf
    try:
        return abs(float(v))
    except (OverflowError, TypeError, ValueError):
        return math.inf


def _log2_magnitude(e: Basic) -> Optional[float]:
    """log2|e| as a float, also for values beyond float range (2006! is about 2^19000)."""
    try:
        v = e.evalf(15)
        if not v.is_Number or not v.is_real or v == 0 or v.is_infinite:
            return None
        return float(sympy.log(abs(v), 2).evalf(15))
    except Exception:  # noqa: BLE001
        return None


# (10^6)! has 1.8e7 bits; factorials of arguments above this are not built
_MAX_FACTORIAL_ARG = 200_000


def too_big(expr: Basic) -> bool:
    """Would evaluating ``expr`` build an integer of more than MAX_INTEGER_BITS bits (``(10^9)!``,
    ``2^(10^10)``, ``(10^9+1)!``)? Such items are not evaluated (undecided) instead of exhausting
    the worker's memory."""
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, factorial) and node.args[0].is_number:
            n = _magnitude(node.args[0])
            if n is not None and n > _MAX_FACTORIAL_ARG:
                return True
        elif isinstance(node, Pow) and node.args[0].is_number and node.args[1].is_number:
            base, exp = node.args
            if base.is_Rational:
                if base in (0, 1, -1):
                    continue
                base_bits = max(math.log2(abs(int(base.p))), math.log2(int(base.q)), 1.0)
            else:
                base_bits = _log2_magnitude(base)
                if base_bits is None:
                    continue
                base_bits = abs(base_bits) + 1.0
            e = _magnitude(exp)
            if e is not None and e * base_bits > MAX_INTEGER_BITS:
                return True
    return False


# --- reading values -----------------------------------------------------------------------------

_PCT = UnevaluatedExpr(Rational(1, 100))


def _readings(expr: Basic) -> List[Tuple[Basic, bool]]:
    """``(value, is_percent)`` readings: latex2sympy writes ``p%`` as ``p * UnevaluatedExpr(1/100)``,
    read as p or p/100 (as math-verify and the numeric verifier do)."""
    if isinstance(expr, Mul) and len(expr.args) == 2 and expr.args[1] == _PCT:
        return [(expr.args[0], True), (expr.args[0] / 100, True)]
    return [(expr, False)]


def _float_to_rational(f: Float) -> Rational:
    return Rational(str(f))


def _decimal_of(expr: Basic) -> Optional[Quantity]:
    """The Quantity of a lone Float (a decimal the text wrote), else None. Trailing zeros are not
    kept by the parse, so "0.500000" counts 1 digit: fewer approximations, never more."""
    if not isinstance(expr, Float):
        return None
    d = decimal.Decimal(str(expr)).normalize()
    _, digits, exponent = d.as_tuple()
    return Quantity(Fraction(d), False, len(digits), Fraction(10) ** exponent)


def _exact(expr: Basic) -> Optional[Basic]:
    """Floats as exact decimals, then ``doit()``; None if too big or sympy fails."""
    if too_big(expr):
        return None
    floats = expr.atoms(Float)
    if floats:
        expr = expr.xreplace({f: _float_to_rational(f) for f in floats})
    try:
        return expr.doit()
    except Exception:  # noqa: BLE001 - an expression sympy cannot evaluate is undecided
        return None


def _as_fraction(expr: Basic) -> Optional[Fraction]:
    """A real number as a Fraction: exact for a Rational, 40 guaranteed digits otherwise."""
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    try:
        v = expr.evalf(_EVALF_DIGITS, strict=True)
    except Exception:  # noqa: BLE001 - PrecisionExhausted, complex, ...
        return None
    if not isinstance(v, Float):
        return None
    return Fraction(str(v))


def _compare_values(a: Basic, b: Basic, a_dec: Optional[Quantity], b_dec: Optional[Quantity]) -> Optional[bool]:
    ae, be = _exact(a), _exact(b)
    if ae is None or be is None:
        return None
    if ae.has(sympy.nan, sympy.zoo) or be.has(sympy.nan, sympy.zoo):
        return None
    if ae == be:
        return True
    if not _state.approx_allowed:
        a_dec = b_dec = None
    try:
        diff = ae - be
        if diff.is_Number:
            if diff == 0:
                return True
            if a_dec is None and b_dec is None:
                return False
        elif diff.free_symbols:
            return True if sympy.simplify(diff) == 0 else None
        else:
            if diff.is_zero is True or sympy.simplify(diff) == 0:
                return True
        if a_dec is not None or b_dec is not None:
            if not (ae.is_real and be.is_real):
                return None
            av = a_dec if a_dec is not None else _as_quantity(ae)
            bv = b_dec if b_dec is not None else _as_quantity(be)
            if av is None or bv is None:
                return None
            return values_agree(av, bv)
        if diff.is_zero is False:
            return False
        v = diff.evalf(_EVALF_DIGITS, strict=True)
        if v.is_Number and v != 0:
            return False
        re_, im_ = v.as_real_imag()
        if (re_.is_Number and re_ != 0) or (im_.is_Number and im_ != 0):
            return False
    except Exception:  # noqa: BLE001 - undecided, never a verdict
        return None
    return None


def _as_quantity(expr: Basic) -> Optional[Quantity]:
    f = _as_fraction(expr)
    return None if f is None else Quantity(f)


def compare(a: Basic, b: Basic) -> Optional[bool]:
    """Exact equality of two math-verify leaves: True (proved equal), False (proved different,
    or a decimal that is not an approximation of the other side), None (undecided)."""
    if not isinstance(a, Expr) or not isinstance(b, Expr):
        return None
    if isinstance(a, (MatrixBase, Set, Relational)) or isinstance(b, (MatrixBase, Set, Relational)):
        return None
    outcomes = []
    a_readings, b_readings = _readings(a), _readings(b)
    if len(a_readings) == 2 and len(b_readings) == 2:  # two percents compare as written: 50% is not 0.5%
        a_readings, b_readings = a_readings[:1], b_readings[:1]
    for av, a_pct in a_readings:
        for bv, b_pct in b_readings:
            a_dec = _decimal_of(av) if not a_pct else _pct_decimal(a, av)
            b_dec = _decimal_of(bv) if not b_pct else _pct_decimal(b, bv)
            outcome = _compare_values(av, bv, a_dec, b_dec)
            if outcome is True:
                return True
            outcomes.append(outcome)
    return False if all(o is False for o in outcomes) else None


def _pct_decimal(original: Basic, reading: Basic) -> Optional[Quantity]:
    q = _decimal_of(original.args[0])
    if q is None or reading == original.args[0]:
        return q
    return Quantity(q.value / 100, False, q.sig_digits, q.ulp / 100)


# --- wiring into math-verify ---------------------------------------------------------------------

_installed: Optional[Tuple[Callable, Callable]] = None


def _leaf(original: Callable) -> Callable:
    def leaf(a, b, *args, **kwargs):
        try:
            key = (a, b)
            decided = _state.memo[key] if key in _state.memo else _state.memo.setdefault(key, compare(a, b))
        except TypeError:  # unhashable (mutable matrices)
            decided = compare(a, b)
        if decided is not None:
            return decided
        if isinstance(a, Basic) and isinstance(b, Basic) and (too_big(a) or too_big(b)):
            # math-verify would doit()/evalf() it: 2^(10^10) is a 1.25 GB integer. Undecided.
            _state.too_large = True
            return False
        result = original(a, b, *args, **kwargs)
        if result:
            _state.unconfirmed = True
        return result

    leaf.__wrapped__ = original
    leaf.__name__ = getattr(original, "__name__", "leaf")
    return leaf


def install() -> None:
    """Replace math-verify's two leaf comparers (process-wide: call in the worker only)."""
    global _installed
    if _installed is not None:
        return
    from math_verify import grader

    for name in ("sympy_numeric_eq", "sympy_symbolic_eq"):
        if not callable(getattr(grader, name, None)):
            raise RuntimeError(
                f"math_verify.grader.{name} not found: this math-verify version is not supported by "
                "counterpoint's exact check; pin math-verify==0.9.*"
            )
    _installed = (grader.sympy_numeric_eq, grader.sympy_symbolic_eq)
    grader.sympy_numeric_eq = _leaf(_installed[0])
    grader.sympy_symbolic_eq = _leaf(_installed[1])
