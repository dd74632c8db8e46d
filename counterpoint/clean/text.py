"""Text normalisation shared by decontamination, dedup and near-miss pairing (Beam-free).

``normalize`` is what "exact after normalisation" means everywhere in counterpoint.clean: NFKC,
lowercase, number formats canonical (``1,000`` -> ``1000``, ``2.50`` -> ``2.5``, ``07`` -> ``7``),
punctuation dropped, whitespace collapsed. Numbers stay tokens of their own, so the number-aware
checks (dedup, the numbers-reordered key) can compare them as a separate exact signature.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import List, Optional, Tuple

# A number as written in problems and solutions: sign, thousands separators, decimals.
_NUMBER = re.compile(r"(?<![\w.])[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−]?\d+(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+|\S", re.UNICODE)
NUM = "<num>"


def canonical_number(text: str) -> str:
    """``"1,000.50"`` -> ``"1000.5"``; ``"-07"`` -> ``"-7"`` (one spelling per value)."""
    t = text.replace(",", "").replace("−", "-")
    neg = t.startswith("-")
    t = t.lstrip("-")
    if "." in t:
        whole, frac = t.split(".", 1)
        frac = frac.rstrip("0")
        t = (whole.lstrip("0") or "0") + ("." + frac if frac else "")
    else:
        t = t.lstrip("0") or "0"
    return ("-" if neg and t != "0" else "") + t


def tokens(text: str) -> List[str]:
    """Normalised word tokens: numbers canonical (one token each), words lowercased, punctuation gone."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    out: List[str] = []
    pos = 0
    for m in _NUMBER.finditer(text):
        out.extend(_words(text[pos:m.start()]))
        out.append(canonical_number(m.group()))
        pos = m.end()
    out.extend(_words(text[pos:]))
    return out


def _words(chunk: str) -> List[str]:
    return [w for w in _WORD.findall(chunk) if w[0].isalnum()]


def is_number(token: str) -> bool:
    return bool(token) and (token[0].isdigit() or (token[0] == "-" and token[1:2].isdigit()))


def normalize(text: str) -> str:
    """The exact-match key: normalised tokens joined by one space."""
    return " ".join(tokens(text))


def numbers(toks: List[str]) -> Tuple[str, ...]:
    """The numbers of a token list, in order (the number-aware signature)."""
    return tuple(t for t in toks if is_number(t))


def masked(toks: List[str]) -> str:
    """Tokens with every number replaced by ``<num>`` (the template of a text)."""
    return " ".join(NUM if is_number(t) else t for t in toks)


def word_ngrams(toks: List[str], n: int) -> List[str]:
    """Word n-grams as strings; a text shorter than ``n`` words is one n-gram of itself (as lm-eval does)."""
    if len(toks) < n:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def answer_value(answer: Optional[str]) -> Optional[Fraction]:
    """A final answer's numeric value after normalisation (``$1,200.00`` -> 1200, ``3/4``, ``75%`` -> 75), or None."""
    if answer is None:
        return None
    t = unicodedata.normalize("NFKC", str(answer)).strip().lower()
    t = re.sub(r"^\\boxed\{(.*)\}$", r"\1", t)
    t = re.sub(r"[$€£\s]|\\[,!; ]|\\%|%|\\text\{[^}]*\}|[a-z]+\.?$", "", t).replace(",", "").rstrip(".")
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:/(-?\d+(?:\.\d+)?))?", t) or \
        re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(-?\d+)\}", t)
    if not m:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            value /= Fraction(m.group(2))
    except (ValueError, ZeroDivisionError):
        return None
    return value


def equivalent_answers(a: Optional[str], b: Optional[str]) -> bool:
    """The false-negative guard's second check: equal after normalisation, or equal numeric values."""
    if a is None or b is None:
        return False
    if normalize(a) and normalize(a) == normalize(b):
        return True
    va, vb = answer_value(a), answer_value(b)
    return va is not None and va == vb
