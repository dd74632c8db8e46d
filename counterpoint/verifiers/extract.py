"""Finding the model's final answer in free text, and parsing numbers.

Pure Python, no third-party imports: cheap to call from the parent process.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import List, Optional, Tuple

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")

# Answer markers other than \boxed; the last one in the text wins. The answer
# runs to the end of its line (it may start on the next line after the marker).
_MARKER_RES = (
    re.compile(r"^[ \t]*#{4}[ \t]*(?P<ans>[^\n]*)", re.MULTILINE),
    re.compile(r"final\s+answer\s*(?:is|:)[ \t]*[*_]*\s*:?[ \t]*(?P<ans>[^\n]*)", re.IGNORECASE),
    re.compile(r"\bthe\s+answer\s+is\b[ \t]*:?[*_]*\s*(?P<ans>[^\n]*)", re.IGNORECASE),
    re.compile(r"\banswer[*_]*[ \t]*:[*_]*\s*(?P<ans>[^\n]*)", re.IGNORECASE),
)

_NUMBER_TOKEN_RE = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_THOUSANDS_RE = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def _boxed_contents(text: str) -> List[str]:
    """Contents of every complete ``\\boxed{...}`` (nested braces), in order."""
    out = []
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        n = len(text)
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "{":
            depth = 0
            for j in range(i, n):
                ch = text[j]
                # escaped braces (\{ \}) do not count
                if ch == "{" and (j == 0 or text[j - 1] != "\\"):
                    depth += 1
                elif ch == "}" and (j == 0 or text[j - 1] != "\\"):
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1 : j])
                        break
            # unbalanced (e.g. truncated text): ignored
        elif i < n and i > m.end():  # "\boxed 5"
            tok = re.match(r"[^\s$.,;]+", text[i:])
            if tok:
                out.append(tok.group(0))
    return out


def _overlapping(rx: "re.Pattern[str]", text: str):
    """Like finditer, but a match may start inside the previous one
    ("Final Answer: The final answer is 5" has two markers on one line)."""
    pos = 0
    while True:
        m = rx.search(text, pos)
        if m is None:
            return
        yield m
        pos = m.start() + 1


def _cut_sentence(ans: str) -> str:
    """'18. So we are done' -> '18' (a period followed by space/end ends the answer)."""
    m = _SENTENCE_END_RE.search(ans)
    return ans[: m.start()] if m else ans


def normalize_answer(ans: str) -> str:
    """Cleans an extracted answer: wrappers, ``$`` signs, trailing period, 1,000 -> 1000.

    Units and other text are kept.
    """
    s = ans.strip()
    # markdown emphasis and math delimiters
    s = s.strip("*_ \t\n")
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.replace("\\$", "").replace("$", "")
    s = s.strip()
    # trailing punctuation
    while s and s[-1] in ".;,":
        s = s[:-1].rstrip()
    s = s.strip("*_ \t\n")
    # thousands separators, only in number tokens and not inside tuples/sets/intervals
    if not s.startswith(("(", "[", "\\{", "\\left", "{")):
        s = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), s)
    return s.strip()


def extract_final_answer(text: str, fallback_last_number: bool = False) -> Optional[str]:
    """The model's final answer in ``text``, normalized; None if none is stated.

    Priority: the last complete ``\\boxed{...}``; otherwise the last of
    ``#### X`` / ``final answer is X`` / ``The answer is X`` / ``Answer: X``.
    With ``fallback_last_number`` the last number in the text is used when no
    marker is found.
    """
    if not text:
        return None
    boxed = _boxed_contents(text)
    for cand in reversed(boxed):
        ans = normalize_answer(cand)
        if ans:
            return ans

    best: Optional[Tuple[int, str]] = None
    for rx in _MARKER_RES:
        for m in _overlapping(rx, text):
            raw = _cut_sentence(m.group("ans"))
            ans = normalize_answer(raw)
            if not ans:
                continue
            if best is None or m.start() > best[0]:
                best = (m.start(), ans)
    if best is not None:
        return best[1]

    if fallback_last_number:
        toks = _NUMBER_TOKEN_RE.findall(text)
        for tok in reversed(toks):
            ans = normalize_answer(tok)
            if any(ch.isdigit() for ch in ans):
                return ans
    return None


# --- numbers ----------------------------------------------------------------

_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_VAR_ASSIGN_RE = re.compile(r"^[A-Za-z]\w*\s*=\s*")
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(
    rf"^(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?"
    r"\s*(?P<pct>%|percent\b)?"
    r"\s*(?P<unit>[A-Za-z][A-Za-z .'/]*)?$"
)


def parse_number(s: Optional[str]) -> Optional[Tuple[Fraction, bool]]:
    """Parses ``"1,234"``, ``"$5"``, ``"5.00"``, ``"-3"``, ``"3/4"``, ``"\\frac{3}{4}"``,
    ``"50%"``, ``"18 apples"`` into ``(Fraction, had_percent_sign)``; None if not a number.

    A single number optionally followed by unit words is accepted; anything with a
    second number ("3 or 4", "2x+1") is not.
    """
    if s is None:
        return None
    t = normalize_answer(s)
    t = t.replace("\\%", "%").replace("\\!", "").replace("\\,", "").replace("~", " ")
    t = t.replace("−", "-")  # unicode minus
    t = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", t)
    t = _FRAC_RE.sub(lambda m: f"{m.group(1)}/{m.group(2)}", t)
    t = _VAR_ASSIGN_RE.sub("", t.strip())
    t = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), t)
    t = " ".join(t.split())
    if t.startswith("-") and t[1:2] == " ":
        t = "-" + t[2:]
    m = _NUMBER_RE.match(t)
    if not m:
        return None
    try:
        val = Fraction(m.group("num"))
        if m.group("den") is not None:
            den = Fraction(m.group("den"))
            if den == 0:
                return None
            val = val / den
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return val, m.group("pct") is not None


def numbers_close(a: Fraction, b: Fraction, rel_tol: Fraction = Fraction(1, 10**6)) -> bool:
    if a == b:
        return True
    return abs(a - b) <= rel_tol * max(abs(a), abs(b))
