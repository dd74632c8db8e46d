"""Finding the model's final answer in free text, and reading numbers with units.

Pure Python, no third-party imports: cheap to call from the parent process, and the
one place where every verifier reads numbers. :func:`parse_quantity` reads
``"18 dollars"``, ``"12 cm^2"``, ``"60 km/h"``, ``"30^\\circ"``, ``"\\$1,234.50"``,
``"\\frac{3}{4} cup"``, ``"seven"`` as a number (units dropped, a percent sign kept),
and :func:`quantities_match` compares two of them: exactly, unless a side is a decimal
approximation written with at least :data:`MIN_APPROX_SIG_DIGITS` significant digits.

Long: the answer grammar (markers, LaTeX, units, numbers) is one extractor whose precedence rules must be read
together.
"""

from __future__ import annotations

import dataclasses
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
# An explanation after a marker answer: "18, since ...", "18 because ...", "5 dollars, which is ...".
_PROSE_TAIL_RE = re.compile(
    r"(?:,\s*|\s+)(?:because|since|which|so|thus|hence|therefore|as|given|where|when|meaning|after|before)\b",
    re.IGNORECASE,
)


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
    """'18. So we are done' -> '18' (a period followed by space/end ends the answer);
    '18, since 6 * 3 = 18' -> '18' (a clause that explains the answer is not part of it)."""
    m = _SENTENCE_END_RE.search(ans)
    ans = ans[: m.start()] if m else ans
    m = _PROSE_TAIL_RE.search(ans)
    return ans[: m.start()] if m and m.start() > 0 else ans


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


# A word answer after "the answer is" that is prose about the answer, not an answer.
_PROSE_WORDS = frozenset(
    """reasonable correct wrong right incorrect not that this the a an how what which why when where clear
    simple obvious below above following as given unknown yes no likely plausible consistent same different
    found here there in to be final answer solution step steps summary conclusion verification check""".split()
)
_WORD_RE = re.compile(r"[A-Za-z]{3,}")


def _answer_like(ans: str) -> bool:
    """Whether a marker's text reads as a final answer: a number, some math, or one or two words
    ("Tuesday", "(B)"), at most six tokens, never a question or prose ("reasonable", "how many ...")."""
    words = ans.split()
    if not words or len(words) > 6 or "?" in ans or ":" in ans:
        return False
    if words[0].lower().strip("*_.,;()") in _PROSE_WORDS:
        return False
    if any(ch.isdigit() for ch in ans) or "\\" in ans:
        return True
    return len(words) <= 2


def states_final_answer(step: str) -> bool:
    """True when ``step`` itself states a final answer in the marker grammar of
    :func:`extract_final_answer`: a complete ``\\boxed{...}``, or a ``#### X`` / "final answer: X" /
    "the answer is X" / "Answer: X" line whose ``X`` reads as an answer.

    Issue 15: a prefix is terminal only when its LAST step states an answer, so markdown headings
    ("#### Step 1: Cost of the apples") and prose ("the answer is reasonable", "find the answer: how
    many ...") never make a prefix terminal.
    """
    if not step or not step.strip():
        return False
    if any(normalize_answer(c) for c in _boxed_contents(step)):
        return True
    for rx in _MARKER_RES:
        for m in _overlapping(rx, step):
            ans = normalize_answer(_cut_sentence(m.group("ans")))
            if ans and _answer_like(ans):
                return True
    return False


# --- numbers with units ---------------------------------------------------------

# A decimal is read as an approximation (compared with a tolerance) only if it states at least this
# many significant digits: 0.333333 may stand for 1/3, 0.33 may not.
MIN_APPROX_SIG_DIGITS = 6
# Two decimals that both qualify must also agree to this many decimal places (math-verify's own
# rounding), so 12345.63 and 12345.6 stay different.
DECIMAL_PLACES_AGREE = 6
# Digits beyond ~15 significant ones come from binary floating point (1.4142135623730951 is the
# double nearest sqrt(2), not sqrt(2) rounded): an approximation may be off by this relative amount.
FLOAT_NOISE_REL = Fraction(1, 10**15)

_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_FRAC_DIGITS_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")  # \frac12
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mbox|mathbf|operatorname)\s*\{([^{}]*)\}")
_VAR_ASSIGN_RE = re.compile(r"^[A-Za-z]\w*\s*=\s*")
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(
    rf"^(?P<num>{_NUM})"
    r"(?:\s*(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{?\s*(?P<exp10>[+-]?\d+)\s*\}?)?"
    rf"(?:\s*/\s*(?P<den>{_NUM}))?"
    r"(?:\s*(?P<pct>%|percent\b|per\s+cent\b))?"
    r"(?P<tail>.*)$",
    re.DOTALL,
)

_SMALL_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split()
    )
}
_TENS_WORDS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_NUMBER_WORD_RE = re.compile(
    r"^(?P<words>(?:%s)(?:[\s-]+(?:%s))?)\b(?P<tail>.*)$"
    % ("|".join(sorted(list(_SMALL_NUMBER_WORDS) + list(_TENS_WORDS), key=len, reverse=True)),
       "|".join(sorted(_SMALL_NUMBER_WORDS, key=len, reverse=True))),
    re.IGNORECASE | re.DOTALL,
)

# Unit abbreviations (compared case-insensitively, except the one-letter ones). Words of three or more
# letters are units too unless listed in _NOT_UNIT_WORDS; other one- and two-letter words are not
# (they are likely variables: "5 x", "2 ab").
_UNIT_ABBREVIATIONS = frozenset(
    """cm mm km nm um dm kg mg ug hr hrs min mins sec secs ms ns ft in yd yds mi mph kph kmh kmph fps lb lbs oz
    ml cl dl kl gal qt pt cal kcal kj kw kwh hz khz mhz ghz kb mb gb tb sq cu deg rad usd eur gbp cents ct pc pcs
    mps""".split()
)
_ONE_LETTER_UNITS = frozenset("m g s h L".split())
_NOT_UNIT_WORDS = frozenset(
    """zero one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty sixty seventy
    eighty ninety hundred hundreds thousand thousands million millions billion billions trillion trillions dozen
    dozens score half halves third thirds quarter quarters fourth fourths fifth fifths sixth sixths seventh
    sevenths eighth eighths ninth ninths tenth tenths hundredth hundredths thousandth thousandths millionth
    percent pct squared cubed plus minus over divided and nor not than more less fewer greater smaller larger
    bigger higher lower off with without the then else but yes true false inf infinity infinite undefined none
    nan sin cos tan cot csc sinh cosh tanh arcsin arccos arctan log exp mod sqrt root roots power powers pi
    choose factorial approx approximately about around exactly nearly almost roughly least most only sum
    product difference quotient ratio""".split()
)
_TAIL_ONLY_WORDS = frozenset({"times"})  # "3 times" is 3; "3 times the radius" is not
_MAX_UNIT_WORDS = 4
_TAIL_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<deg>(?:(?:\^\s*)?\{?\s*\\circ\s*\}?|°)(?:\s*[CF]\b)?)
      | (?P<pow>\^\s*\{?\s*[-−]?\d\s*\}?|[²³])
      | (?P<per>/|\bper\b)
      | (?P<join>\\cdot|·|-)
      | (?P<word>[A-Za-z]+)\.?
    )""",
    re.VERBOSE,
)


def _is_unit_word(word: str) -> bool:
    if len(word) == 1:
        return word in _ONE_LETTER_UNITS
    low = word.lower()
    if low in _UNIT_ABBREVIATIONS:
        return True
    return len(word) >= 3 and low not in _NOT_UNIT_WORDS


def is_unit_tail(tail: str) -> bool:
    """True if ``tail`` (what follows a number) is only units: ``" cm^2"``, ``"km/h"``, ``" dollars"``,
    ``"^\\circ"``, ``" square feet"``, ``" m²"``; empty counts as units. Not: ``" x"``, ``" 2"``,
    ``" thousand"``, ``" more than x"``. A word unit must be set off by a space unless it is a
    known abbreviation (``"12cm"``): ``"2abc"`` and ``"2m^2"`` are products of variables."""
    pos, n = 0, len(tail)
    words = 0
    prev = "start"  # start | unit | per | join
    spaced = tail[:1].isspace()  # "5 m" is a length, "5m" and "2abc" are products
    while pos < n:
        if tail[pos:].strip() == "":
            break
        m = _TAIL_TOKEN_RE.match(tail, pos)
        if not m or m.end() == pos:
            return False
        pos = m.end()
        kind = m.lastgroup
        if kind == "deg":
            prev = "unit"
        elif kind == "pow":
            if prev != "unit":
                return False
        elif kind in ("per", "join"):
            if prev != "unit":
                return False
            prev = kind
        else:  # word
            word = m.group("word")
            if word.lower() in _TAIL_ONLY_WORDS:
                if words or tail[pos:].strip():
                    return False
            elif not _is_unit_word(word):
                return False
            if prev == "start" and not spaced and not (len(word) > 1 and word.lower() in _UNIT_ABBREVIATIONS):
                return False
            words += 1
            if words > _MAX_UNIT_WORDS:
                return False
            prev = "unit"
    return prev in ("start", "unit")


_UNIT_SYNONYMS = {
    "s": "s", "sec": "s", "secs": "s", "second": "s",
    "min": "min", "mins": "min", "minute": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h",
    "day": "day", "week": "week", "wk": "week", "month": "month", "yr": "year", "year": "year",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm",
    "cm": "cm", "centimeter": "cm", "centimetre": "cm",
    "m": "m", "meter": "m", "metre": "m",
    "km": "km", "kilometer": "km", "kilometre": "km",
    "in": "in", "inch": "in", "inche": "in",
    "ft": "ft", "foot": "ft", "feet": "ft",
    "yd": "yd", "yds": "yd", "yard": "yd",
    "mi": "mi", "mile": "mi",
    "mph": "mi/h", "kph": "km/h", "kmh": "km/h", "kmph": "km/h", "mps": "m/s", "fps": "ft/s",
    "g": "g", "gram": "g", "kg": "kg", "kilogram": "kg", "mg": "mg", "milligram": "mg",
    "lb": "lb", "lbs": "lb", "pound": "lb", "oz": "oz", "ounce": "oz",
    "L": "L", "liter": "L", "litre": "L", "ml": "mL", "milliliter": "mL", "millilitre": "mL",
    "gal": "gal", "gallon": "gal",
    "dollar": "usd", "usd": "usd", "buck": "usd", "cent": "cent", "ct": "cent",
    "deg": "deg", "degree": "deg", "rad": "rad", "radian": "rad",
}
_POWER_WORDS = {"square": 2, "sq": 2, "squared": 2, "cubic": 3, "cu": 3, "cubed": 3}


def canonical_unit(tail: str) -> str:
    """A unit tail in one spelling, to tell "90 seconds" from "90 minutes": synonyms and plurals
    merged ("sec"/"seconds" -> "s", "feet" -> "ft"), powers as ^n ("square feet", "ft²" -> "ft^2"),
    "per" as "/" ("miles per hour" -> "mi/h"). Other words: lowercased, plural "s" dropped. "" if none."""
    parts: List[str] = []
    pending_power = None
    for m in _TAIL_TOKEN_RE.finditer(tail):
        kind = m.lastgroup
        if kind == "deg":
            scale = m.group("deg").rstrip()[-1]
            parts.append("deg" + scale if scale in "CF" else "deg")
        elif kind == "pow" and parts:
            digits = "".join(ch for ch in m.group("pow").replace("²", "2").replace("³", "3") if ch.isdigit() or ch in "-−")
            parts[-1] += "^" + digits.replace("−", "-")
        elif kind == "per":
            parts.append("/")
        elif kind == "word":
            word = m.group("word")
            low = word if len(word) == 1 else word.lower()
            if low.lower() in _POWER_WORDS:
                if parts and low.lower() in ("squared", "cubed"):  # "5 feet squared"
                    parts[-1] += f"^{_POWER_WORDS[low.lower()]}"
                else:
                    pending_power = _POWER_WORDS[low.lower()]
                continue
            if low not in _UNIT_SYNONYMS and low.endswith("s") and len(low) > 3:
                low = low[:-1]
            unit = _UNIT_SYNONYMS.get(low, low)
            if pending_power:
                unit, pending_power = f"{unit}^{pending_power}", None
            parts.append(unit)
    return " ".join(parts).replace(" / ", "/").replace("/ ", "/").replace(" /", "/")


def units_conflict(a: "Quantity", b: "Quantity") -> bool:
    """Both sides name a unit, and not the same one ("90 seconds" vs "90 \\text{ minutes}"): equal
    numbers then do not make equal answers."""
    return bool(a.unit) and bool(b.unit) and a.unit != b.unit


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A number read from an answer. ``sig_digits``/``ulp`` describe a decimal as written
    (``"0.3330"`` -> 4 digits, ulp 1/10000); both are None for exact text (``"18"``, ``"3/4"``)."""

    value: Fraction
    percent: bool = False
    sig_digits: Optional[int] = None
    ulp: Optional[Fraction] = None
    unit: str = ""  # canonical unit written after the number (canonical_unit), "" if none

    @property
    def is_approximation(self) -> bool:
        return self.sig_digits is not None and self.sig_digits >= MIN_APPROX_SIG_DIGITS

    def readings(self) -> Tuple["Quantity", ...]:
        """``50%`` may be meant as 50 or as 0.5; any other number has one reading."""
        if not self.percent:
            return (self,)
        scaled = dataclasses.replace(self, value=self.value / 100, percent=False,
                                     ulp=self.ulp / 100 if self.ulp is not None else None)
        return (dataclasses.replace(self, percent=False), scaled)


def decimal_quantity(value: Fraction, mantissa: str, exponent: int = 0) -> Quantity:
    """The Quantity of a decimal literal ``mantissa`` (e.g. ``"0.3330"``) times 10**exponent."""
    digits = mantissa.lstrip("+-")
    if "." not in digits:
        return Quantity(value)
    places = len(digits.split(".", 1)[1])
    sig = len(digits.replace(".", "").lstrip("0"))
    return Quantity(value, False, max(sig, 1), Fraction(10) ** (exponent - places))


_MAGNITUDES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
_MAGNITUDE_RE = re.compile(r"^\s*(?P<mag>%s)\b(?P<tail>.*)$" % "|".join(_MAGNITUDES), re.IGNORECASE | re.DOTALL)


def _scaled(q: Quantity, factor: int) -> Quantity:
    return dataclasses.replace(q, value=q.value * factor, ulp=q.ulp * factor if q.ulp is not None else None)


def _read_number_text(t: str) -> Optional[Quantity]:
    """A number (digits or words), an optional magnitude word ("2.5 million", "seven dozen"),
    an optional percent sign, then units only."""
    q = _read_number_head(t)
    if q is None:
        return None
    q, tail = q
    mag = _MAGNITUDE_RE.match(tail)
    if mag:
        q, tail = _scaled(q, _MAGNITUDES[mag.group("mag").lower()]), mag.group("tail")
    if not is_unit_tail(tail):
        return None
    return dataclasses.replace(q, unit=canonical_unit(tail))


_MIXED_RE = re.compile(r"^(?P<sign>[+-]?)(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)(?P<tail>(?:\s.*)?)$", re.DOTALL)


def _read_number_head(t: str) -> Optional[Tuple[Quantity, str]]:
    m = _MIXED_RE.match(t)
    if m and 0 < int(m.group("num")) < int(m.group("den")):
        # "2 1/2" and "2\frac{1}{2}" are mixed numbers (latex2sympy reads the latter so too)
        value = int(m.group("whole")) + Fraction(int(m.group("num")), int(m.group("den")))
        return Quantity(-value if m.group("sign") == "-" else value), m.group("tail")
    m = _NUMBER_RE.match(t)
    if m:
        tail = m.group("tail")
        if m.group("pct") is not None and _MAGNITUDE_RE.match(tail):
            return None  # "5% million"
        num, den, exp10 = m.group("num"), m.group("den"), m.group("exp10")
        try:
            value = Fraction(num)
            mantissa, e = num, 0
            if "e" in num.lower():
                mantissa, e_str = re.split("[eE]", num)
                e = int(e_str)
            if exp10 is not None:
                e10 = int(exp10)
                if abs(e10) > 10000:
                    return None
                value *= Fraction(10) ** e10
                e += e10
            if den is not None:
                d = Fraction(den)
                if d == 0:
                    return None
                q = Quantity(value / d)  # a ratio is exact text
            else:
                q = decimal_quantity(value, mantissa, e)
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
        return dataclasses.replace(q, percent=m.group("pct") is not None), tail
    m = _NUMBER_WORD_RE.match(t)
    if m:
        total = 0
        for w in re.split(r"[\s-]+", m.group("words").lower()):
            total += _SMALL_NUMBER_WORDS.get(w, _TENS_WORDS.get(w, 0))
        return Quantity(Fraction(total)), m.group("tail")
    return None


def _number_text(s: str) -> str:
    t = normalize_answer(s)
    t = t.replace("\\%", "%").replace("\\!", "").replace("\\,", "").replace("\\ ", " ").replace("~", " ")
    t = t.replace("{,}", ",").replace("−", "-").replace("\\left", "").replace("\\right", "")
    t = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", t)
    # spaced, so that "2\frac{1}{2}" (a mixed number, or 2 * 1/2?) and "\frac{1}{2}3" stay two numbers
    t = _FRAC_RE.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", t)
    t = _FRAC_DIGITS_RE.sub(lambda m: f" {m.group(1)}/{m.group(2)} ", t)
    t = _VAR_ASSIGN_RE.sub("", t.strip())
    t = t.replace("\\$", "").replace("$", "").replace("€", "").replace("£", "")
    t = _THOUSANDS_RE.sub(lambda m: m.group(1).replace(",", ""), t)
    t = " ".join(t.split())
    if t[:1] in "+-" and t[1:2] == " ":
        t = t[0] + t[2:]
    return t


def parse_quantity(s: Optional[str]) -> Optional[Quantity]:
    """Reads ``"1,234"``, ``"$5"``, ``"5.00"``, ``"-3"``, ``"3/4"``, ``"\\frac{3}{4}"``, ``"50%"``,
    ``"1.5 \\times 10^{8}"``, ``"x = 5"``, ``"seven"`` and any of them followed by units
    (``"18 dollars"``, ``"12 cm^2"``, ``"12\\text{ cm}^2"``, ``"60 km/h"``, ``"30^\\circ"``);
    None if ``s`` is not a single number ("3 or 4", "2x+1", "5 thousand", "\\sqrt{2}")."""
    if s is None:
        return None
    t = _number_text(s)
    if not t:
        return None
    return _read_number_text(t)


def parse_number(s: Optional[str]) -> Optional[Tuple[Fraction, bool]]:
    """``(value, had_percent_sign)`` of :func:`parse_quantity`; None if not a number."""
    q = parse_quantity(s)
    return None if q is None else (q.value, q.percent)


def strip_units(s: str) -> str:
    """The number of a number-with-units answer as text a symbolic parser reads (``"12 cm^2"`` ->
    ``"12"``, ``"\\frac{3}{4} cup"`` -> ``"3/4"``, ``"1e300"`` -> ``"1 \\times 10^{300}"``,
    ``"5 thousand"`` -> ``"5000"``, ``"2 1/2 cups"`` -> ``"5/2"``); anything else (percentages too)
    is returned normalized."""
    t = normalize_answer(s)
    text = _number_text(t)
    q = _read_number_text(text) if text else None
    if q is None or q.percent:
        return t
    m = None if _MIXED_RE.match(text) else _NUMBER_RE.match(text)
    if m is None or m.group("den") is not None or _MAGNITUDE_RE.match(m.group("tail")):
        v = q.value  # words, mixed numbers, ratios, magnitudes: the exact value
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    mantissa, _, exp = m.group("num").replace("E", "e").partition("e")
    if exp or m.group("exp10") is not None:
        return mantissa + " \\times 10^{%d}" % (int(exp or 0) + int(m.group("exp10") or 0))
    return mantissa


def _round_places(v: Fraction, places: int) -> Fraction:
    return Fraction(round(v, places))


def values_agree(a: Quantity, b: Quantity) -> bool:
    """Equal values, or one value is a decimal approximation of the other.

    * exact vs exact: equal only if exactly equal (1/2006! is not 1/2004!; 10^300 is not 10^300 + 1);
    * a decimal approximation d (at least MIN_APPROX_SIG_DIGITS significant digits) vs an exact x:
      equal if x rounds to d at d's last written digit (|x - d| <= ulp(d)/2), so 0.333333 matches 1/3
      and 0.33 does not;
    * decimal vs decimal: equal if equal, or both are approximations that agree at the coarser one's
      last digit and to DECIMAL_PLACES_AGREE decimal places.
    """
    if a.value == b.value:
        return True
    a_dec, b_dec = a.sig_digits is not None, b.sig_digits is not None
    if a_dec and b_dec:
        if not (a.is_approximation and b.is_approximation):
            return False
        coarse = max(a.ulp, b.ulp)
        return abs(a.value - b.value) * 2 <= coarse and _round_places(a.value, DECIMAL_PLACES_AGREE) == _round_places(
            b.value, DECIMAL_PLACES_AGREE
        )
    if not (a_dec or b_dec):
        return False
    d, x = (a, b) if a_dec else (b, a)
    tolerance = max(d.ulp / 2, abs(d.value) * FLOAT_NOISE_REL)
    return d.is_approximation and abs(x.value - d.value) <= tolerance


def quantities_match(answer: Quantity, gold: Quantity) -> bool:
    """:func:`values_agree` over the readings of each side: a percent against a plain number is read
    as p and as p/100 (``50%`` matches 50 and 0.5); two percents compare as written (``50%`` is not
    ``0.5%``)."""
    if answer.percent and gold.percent:
        return values_agree(answer, gold)
    return any(values_agree(a, g) for a in answer.readings() for g in gold.readings())


_DECIMAL_LITERAL_RE = re.compile(r"\d\.\d|(?<![\d.])\.\d")


def has_decimal_literal(text: Optional[str]) -> bool:
    """Does the text itself write a decimal (``0.5``, ``.25``)? Only then may a tolerance apply."""
    return bool(text) and bool(_DECIMAL_LITERAL_RE.search(text))


_WORDY_RE = re.compile(r"^[A-Za-z][A-Za-z' -]*$")


def is_wordy_answer(s: Optional[str]) -> bool:
    """An answer made only of words ("Tuesday", "no solution", "\\text{none}") — no digits and no
    math — which no number gold can equal (one letter such as "x" is math, not a word)."""
    if not s:
        return False
    t = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", normalize_answer(s)).strip()
    return bool(_WORDY_RE.match(t)) and len(t.replace(" ", "")) >= 2


_LIST_WORD_RE = re.compile(r"\s*(?:,\s*)?(?:\\text\s*\{\s*(?:and|or)\s*\}|\b(?:and|or)\b)\s*", re.IGNORECASE)


def list_words_to_commas(s: str) -> str:
    """``"3 and 4"`` / ``"x = 1 \\text{ or } x = 2"`` -> comma lists, which math-verify reads as sets.
    Safe for precision: a list only equals a gold with the same several elements."""
    return _LIST_WORD_RE.sub(", ", s)


_TEXT_UNIT_TAIL_RE = re.compile(
    r"^(?P<head>.*?)\s*\\(?:text|textrm|mathrm|mbox)\s*\{(?P<unit>[^{}]*)\}\s*(?:\^\s*\{?\s*\d\s*\}?|[²³])?\s*$",
    re.DOTALL,
)


def strip_text_units(s: str) -> str:
    """``"12\\sqrt{2}\\text{ cm}"`` -> ``"12\\sqrt{2}"``: a trailing ``\\text{...}`` that holds only unit
    words is a unit, whatever it follows (``"3\\text{ or more}"`` is kept)."""
    m = _TEXT_UNIT_TAIL_RE.match(s)
    if m and m.group("head").strip() and m.group("unit").strip() and is_unit_tail(" " + m.group("unit")):
        return m.group("head").rstrip()
    return s
