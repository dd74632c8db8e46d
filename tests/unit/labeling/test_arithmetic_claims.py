"""The arithmetic-claim check on the formats models write (issue 15): every case asserts the whole list
of claims read — (claim as read in plain notation, exact value of the left side, stated value, holds) — so
a case that stops being read fails as loudly as one that is read wrong."""

from __future__ import annotations

import json
import os
from fractions import Fraction as F

import pytest

import _paths
from counterpoint.labeling.arithmetic import claims, false_claims
from counterpoint.labeling.claim_text import BOUND, plain

DATA = str(_paths.DATA)


def read(text):
    return [(c.text, c.value, c.rhs, c.holds) for c in claims(text)]


@pytest.mark.parametrize("text,expected", [
    # expressions end at a newline; a list marker is not a minus
    ("Cost = 20\n- 6 + 20 = 26", [("6 + 20 = 26", 26, 26, True)]),
    ("- 6 + 20 = 26", [("6 + 20 = 26", 26, 26, True)]),
    ("* 6 + 20 = 27", [("6 + 20 = 27", 26, 27, False)]),
    ("1. Notebooks: 28 * 3 = 84\n2. Extra: 10", [("28 * 3 = 84", 84, 84, True)]),
    ("Total cost:\n- $12 - $12 = $0", [("$12 - $12 = $0", 0, 0, True)]),
    # a dash after a word or a colon is punctuation; a glued minus is a sign
    ("3 shirts - 3 * 15 = 45", [("3 * 15 = 45", 45, 45, True)]),
    ("Total: - 3 + 5 = 8", [("3 + 5 = 8", 8, 8, True)]),
    ("Total: - 3 + 5 = 2", []),  # a dash that may be a minus: unsure, nothing said
    ("Total: - 3 + 5 = 9", [("3 + 5 = 9", 8, 9, False)]),
    ("Step 4: -3 * 2 = -6.", [("-3 * 2 = -6", -6, -6, True)]),
    # clock times, ratios, dates are not arithmetic
    ("10:30 + 2 hours = 12:30", []),
    ("10:30 + 2 = 12:30", []),
    ("The ratio 3:4 means 3 + 4 = 7 parts.", [("3 + 4 = 7", 7, 7, True)]),
    ("On 12/25/2023 = Christmas", []),
    ("2023-10-05 = the date", []),
    ("<<16-3-4=9>>", [("16-3-4=9", 9, 9, True)]),
    # rounding at the writer's precision, repeating decimals
    ("12 × 0.33 = 4", [("12 × 0.33 = 4", F(99, 25), 4, True)]),
    ("12 × 0.33 = 5", [("12 × 0.33 = 5", F(99, 25), 5, False)]),
    ("20/3 = 6.666...", [("20/3 = 6.666...", F(20, 3), F(3333, 500), True)]),
    ("20/3 = 6.66", [("20/3 = 6.66", F(20, 3), F(333, 50), True)]),
    ("20/3 = 6.67", [("20/3 = 6.67", F(20, 3), F(667, 100), True)]),
    ("10 / 3 = 3.4", [("10 / 3 = 3.4", F(10, 3), F(17, 5), False)]),
    ("2.5 + 2.5 = 6", [("2.5 + 2.5 = 6", 5, 6, False)]),
    ("100 / 7 = 15 buses", []),  # a ceiling in context: not read
    ("7 / 2 = 3 boxes", [("7 / 2 = 3", F(7, 2), 3, True)]),
    # LaTeX inline and display, operators, fractions, separators
    ("\\( 20 + 8 = 40 \\)", [("20 + 8 = 40", 28, 40, False)]),
    ("so \\(48 + 24 = 72\\).", [("48 + 24 = 72", 72, 72, True)]),
    ("\\[ 60 \\times 3 = 180 \\text{ km} \\]", [("60 × 3 = 180", 180, 180, True)]),
    ("$$3 \\times 4 = 12$$", [("3 × 4 = 12", 12, 12, True)]),
    ("$8 \\cdot 12 = 96$ chairs", [("$8 · 12 = 96", 96, 96, True)]),
    ("\\(48 \\div 6 = 8\\)", [("48 ÷ 6 = 8", 8, 8, True)]),
    ("\\( \\frac{3}{4} \\cdot 64 = 46 \\)", [("(3/4) · 64 = 46", 48, 46, False)]),
    ("\\[\\frac{36}{48} = \\frac{3}{4}\\]", [("(36/48) = (3/4)", F(3, 4), F(3, 4), True)]),
    ("\\[\\frac{36}{48} = \\frac{2}{3}\\]", [("(36/48) = (2/3)", F(3, 4), F(2, 3), False)]),
    ("1,\\!000 \\times 2 = 2,\\!000", [("1,000 × 2 = 2,000", 2000, 2000, True)]),
    ("\\(1\\,250 \\times 4 = 5\\,000\\)", [("1,250 × 4 = 5,000", 5000, 5000, True)]),
    ("\\begin{align*} 20 + 8 &= 28 \\\\ 28 \\times 2 &= 56 \\end{align*}",
     [("20 + 8 = 28", 28, 28, True), ("28 × 2 = 56", 56, 56, True)]),
    ("\\(180^\\circ - 50^\\circ = 130^\\circ\\)", [("180- 50= 130", 130, 130, True)]),
    ("1 + 2 + \\cdots + 10 = 55", []),
    ("\\(2^3 + 1 = 9\\)", []),
    # money and percentages
    ("$1,200.50 + $45.25 = $1,245.75", [("$1,200.50 + $45.25 = $1,245.75", F(124575, 100), F(124575, 100), True)]),
    ("8 × $12.75 = $102", [("8 × $12.75 = $102", 102, 102, True)]),
    ("15% × 2,000 = 300 people", [("15% × 2,000 = 300", 300, 300, True)]),
    ("100% - 20% = 80%", [("100% - 20% = 80%", F(4, 5), F(4, 5), True)]),
    ("3/5 = 60%", [("3/5 = 60%", F(3, 5), F(3, 5), True)]),
    ("20% of 50 = 10", []),
    # markdown emphasis
    ("**Total:** 20 + 8 = 28", [("20 + 8 = 28", 28, 28, True)]),
])
def test_claims_read_as_models_write(text, expected):
    assert read(text) == expected


def test_plain_notation():
    assert plain("\\( \\frac{1}{2} \\times 1,\\!000 = 500 \\)") == f" {BOUND}  (1/2) × 1,000 = 500  {BOUND} "
    assert plain("**$5 \\cdot 2 = 10$**") == " $5 · 2 = 10$ "


def test_style_world_cases_flag_exactly_the_planted_arithmetic_errors():
    # every step of the written style cases: a false claim iff the step is a planted arithmetic error
    with open(os.path.join(DATA, "model_style_solutions.jsonl"), encoding="utf-8") as f:
        cases = [json.loads(line) for line in f]
    flagged, planted = set(), set()
    for c in cases:
        for j, sol in enumerate(c["solutions"]):
            for i, step in enumerate(sol["steps"]):
                if false_claims(step):
                    flagged.add((c["problem_id"], j, i))
                if sol["first_error"] == i and sol["error_kind"] == "arithmetic":
                    planted.add((c["problem_id"], j, i))
    assert len(planted) >= 30 and flagged == planted


def test_latex_solutions_are_read_without_false_alarms():
    with open(os.path.join(DATA, "math_latex_solutions.jsonl"), encoding="utf-8") as f:
        steps = [s for line in f for s in json.loads(line)["steps"]]
    found = [c for s in steps for c in claims(s)]
    assert len(found) >= 20 and all(c.holds for c in found)
