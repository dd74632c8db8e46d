"""Plain text for the claim check: LaTeX and markdown rewritten to the grammar ``arithmetic`` reads.

Issue 15: models write arithmetic inside ``\\( \\)``, ``\\[ \\]``, ``$…$`` and
``$$…$$``, with ``\\times``/``\\cdot``/``\\div``, ``\\frac{a}{b}``, ``1,\\!000`` and
``1\\,000`` separators, ``**bold**`` and ``- `` bullets. :func:`plain` maps a step to
text where

* math delimiters become the boundary character :data:`BOUND` (an expression
  never crosses one), aligned-environment row breaks ``\\\\`` become newlines and
  ``&=`` becomes ``=``;
* ``\\frac{a}{b}`` with plain numeric arguments becomes ``(a/b)``; any other
  fraction is left as LaTeX, which the tokenizer never reads as arithmetic;
* ``\\times``, ``\\cdot``, ``\\div`` become ``×``, ``·``, ``÷``; ``\\cdots``,
  ``\\ldots``, ``\\dots`` become an ellipsis (never multiplication);
* LaTeX thousands separators (``,\\!``, ``{,}``, ``\\,``) between digit groups are
  dropped, ``\\$`` / ``\\%`` lose their backslash, ``\\text{…}`` keeps its words,
  ``\\left(`` / ``\\right)`` lose the sizing command, degree marks are dropped;
* markdown emphasis ``**`` / ``__`` becomes a space.

Nothing here decides what a claim is; it only removes notation. Imports nothing
from counterpoint.
"""

from __future__ import annotations

import re

#: Stands where a math delimiter stood: the start or end of an expression.
BOUND = "\u2016"

_NUMERIC_ARG = r"\s*(-?\d+(?:\.\d+)?)\s*"
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{" + _NUMERIC_ARG + r"\}\s*\{" + _NUMERIC_ARG + r"\}")
_FRAC_DIGITS_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)(?!\d)")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mbox|mathbf|operatorname)\s*\{([^{}]*)\}")
_SUBSTITUTIONS = (
    (re.compile(r"\$\$|\\\[|\\\]|\\\(|\\\)"), f" {BOUND} "),
    (re.compile(r"\\begin\{[a-z*]+\}|\\end\{[a-z*]+\}"), f" {BOUND} "),
    (re.compile(r"\\\\"), "\n"),
    (re.compile(r"&\s*="), "="),
    (re.compile(r"(?<=\d)(?:,\\!|\{,\}|\\,|\\!)(?=\d{3}(?!\d))"), ","),
    (re.compile(r"\\(?:cdots|ldots|dots|cdotp)(?![A-Za-z])"), "…"),
    (re.compile(r"\\times(?![A-Za-z])"), "×"),
    (re.compile(r"\\cdot(?![A-Za-z])"), "·"),
    (re.compile(r"\\div(?![A-Za-z])"), "÷"),
    (re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?=[()\[\]])"), ""),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°"), ""),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\[,;:! ]|\\q?quad(?![A-Za-z])|~"), " "),
    (re.compile(r"\*\*|__"), " "),
    (re.compile(r"&"), " "),
)


def plain(step: str) -> str:
    """``step`` with LaTeX/markdown notation rewritten (see the module docstring)."""
    s = _TEXT_RE.sub(lambda m: f" {m.group(1)} ", step)
    s = _FRAC_RE.sub(lambda m: f"({m.group(1)}/{m.group(2)})", s)
    s = _FRAC_DIGITS_RE.sub(lambda m: f"({m.group(1)}/{m.group(2)})", s)
    for rx, repl in _SUBSTITUTIONS:
        s = rx.sub(repl, s)
    return s
