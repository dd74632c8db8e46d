"""Lossless step segmentation: exact segment lists, the join invariant, helpers.

Hand-written cases pin every mode's exact output (separators stay with the
segment they end; leading whitespace stays with the first segment). A seeded
random generator of texts (hypothesis is not installed) checks the invariants
on many inputs, against independent reference splits of the stripped content.
"""

from __future__ import annotations

import random
import re

import pytest

from counterpoint.segmentation import MODES, prefix_through, segment, step_content

# ---------------------------------------------------------------------------
# Exact segment lists
# ---------------------------------------------------------------------------
PARAGRAPH_CASES = [
    ("Step 1: 2 + 3 = 5.\n\nStep 2: 5 * 2 = 10.\n\nThe answer is 10.",
     ["Step 1: 2 + 3 = 5.\n\n", "Step 2: 5 * 2 = 10.\n\n", "The answer is 10."]),
    # Leading whitespace stays with the first segment, trailing with the last.
    ("\n\n  First.\n\nSecond.\n\n\n", ["\n\n  First.\n\n", "Second.\n\n\n"]),
    # Runs of blank lines (also blank lines holding spaces / tabs) are one separator.
    ("A\n\n\n\nB\n \t\nC", ["A\n\n\n\n", "B\n \t\n", "C"]),
    # A single newline is not a paragraph break.
    ("A\nB\n\nC\nD", ["A\nB\n\n", "C\nD"]),
    # The next paragraph's indentation belongs to the separator before it.
    ("A\n\n   B", ["A\n\n   ", "B"]),
    # CRLF blank lines split exactly like LF ones.
    ("A\r\n\r\nB\r\nC\r\n\r\nD\r\n", ["A\r\n\r\n", "B\r\nC\r\n\r\n", "D\r\n"]),
    ("A\r\n \r\n\r\nB", ["A\r\n \r\n\r\n", "B"]),
    ("just one line", ["just one line"]),
    ("one line with a trailing newline\n", ["one line with a trailing newline\n"]),
    ("", []),
    ("  \n\n \t", ["  \n\n \t"]),
]

LINE_CASES = [
    ("A\nB\n\n  C\n", ["A\n", "B\n\n  ", "C\n"]),
    ("A\r\nB\r\n", ["A\r\n", "B\r\n"]),
    ("\n\nA\nB", ["\n\nA\n", "B"]),
    ("  indented\n\tTabbed\n\n\n", ["  indented\n\t", "Tabbed\n\n\n"]),
    ("Step 1: x\n\nStep 2: y\nThe answer is 3.",
     ["Step 1: x\n\n", "Step 2: y\n", "The answer is 3."]),
    ("no newline at all", ["no newline at all"]),
    ("", []),
    ("\n \n", ["\n \n"]),
]

STEP_CASES = [
    # Markers on consecutive lines.
    ("Step 1: a\nStep 2: b\nThe answer is 5.", ["Step 1: a\n", "Step 2: b\nThe answer is 5."]),
    # Markers separated by blank lines: the blank lines stay with the step they end.
    ("Step 1: a\n\nStep 2: b\n\nThe answer is 5.", ["Step 1: a\n\n", "Step 2: b\n\nThe answer is 5."]),
    # Text before the first marker is its own segment.
    ("Let's solve it.\nStep 1: a\nStep 2: b", ["Let's solve it.\n", "Step 1: a\n", "Step 2: b"]),
    # Case, indentation, "." / ")" / ":" and a missing space are all markers.
    ("step 1. x\n  STEP 2) y\nStep3: z", ["step 1. x\n  ", "STEP 2) y\n", "Step3: z"]),
    # Not markers: mid-line "Step k:", "Stepping", "Step two".
    ("Step 1: see Step 2: later\nStepping on\nStep two: no",
     ["Step 1: see Step 2: later\nStepping on\nStep two: no"]),
    ("Step 1: a\r\nStep 2: b\r\n", ["Step 1: a\r\n", "Step 2: b\r\n"]),
    # Leading blank lines before the first marker stay with the first step.
    ("\n\nStep 1: a\nstep 2) b", ["\n\nStep 1: a\n", "step 2) b"]),
    ("a\n\nb", ["a\n\nb"]),
    ("", []),
]


@pytest.mark.parametrize("text, expected", PARAGRAPH_CASES)
def test_paragraph_mode_exact(text, expected):
    assert segment(text, "paragraph") == expected
    assert "".join(expected) == text  # the table itself is lossless


@pytest.mark.parametrize("text, expected", LINE_CASES)
def test_line_mode_exact(text, expected):
    assert segment(text, "line") == expected
    assert "".join(expected) == text


@pytest.mark.parametrize("text, expected", STEP_CASES)
def test_step_mode_exact(text, expected):
    assert segment(text, "step") == expected
    assert "".join(expected) == text


def test_default_mode_is_paragraph():
    text = "A\nB\n\nC"
    assert segment(text) == segment(text, "paragraph") == ["A\nB\n\n", "C"]


def test_same_text_in_every_mode():
    text = "Intro.\nStep 1: 4 + 4 = 8.\n\nStep 2: 8 / 2 = 4.\nStill step 2.\n\nThe answer is 4.\n"
    assert segment(text, "paragraph") == [
        "Intro.\nStep 1: 4 + 4 = 8.\n\n", "Step 2: 8 / 2 = 4.\nStill step 2.\n\n", "The answer is 4.\n"]
    assert segment(text, "line") == [
        "Intro.\n", "Step 1: 4 + 4 = 8.\n\n", "Step 2: 8 / 2 = 4.\n", "Still step 2.\n\n", "The answer is 4.\n"]
    assert segment(text, "step") == [
        "Intro.\n", "Step 1: 4 + 4 = 8.\n\n", "Step 2: 8 / 2 = 4.\nStill step 2.\n\nThe answer is 4.\n"]


def test_unknown_mode_raises_naming_the_modes():
    with pytest.raises(ValueError) as excinfo:
        segment("a\n\nb", "sentence")
    message = str(excinfo.value)
    assert "'sentence'" in message
    for mode in MODES:
        assert repr(mode) in message
    # The mode is checked before the empty-text shortcut.
    with pytest.raises(ValueError, match="unknown segmentation mode 'Paragraph'"):
        segment("", "Paragraph")


def test_modes_constant():
    assert MODES == ("paragraph", "line", "step")


# ---------------------------------------------------------------------------
# step_content / prefix_through
# ---------------------------------------------------------------------------
def test_step_content_strips_surrounding_whitespace_only():
    assert step_content("  Step 1: a\n\n") == "Step 1: a"
    assert step_content("\r\n x \t") == "x"
    assert step_content("a\n\nb\n") == "a\n\nb"
    assert step_content("") == ""
    assert step_content(" \n\t") == ""
    assert [step_content(s) for s in segment("\n  A.\n\nB.\r\n\r\nC.  ", "paragraph")] == ["A.", "B.", "C."]


def test_prefix_through():
    steps = ["Step 1: a\n\n", "Step 2: b\n\n", "The answer is 3."]
    assert prefix_through(steps, -1) == ""
    assert prefix_through(steps, 0) == "Step 1: a\n\n"
    assert prefix_through(steps, 1) == "Step 1: a\n\nStep 2: b\n\n"
    assert prefix_through(steps, 2) == "Step 1: a\n\nStep 2: b\n\nThe answer is 3."
    assert prefix_through(steps, 10) == prefix_through(steps, 2)
    assert prefix_through([], -1) == prefix_through([], 0) == ""


# ---------------------------------------------------------------------------
# Invariants on generated texts
# ---------------------------------------------------------------------------
_PIECES = [
    "x", "42", "The answer is 7.", "a + b = c", "Step 1:", "Step 2.", "step 3)", "STEP 10:", "Step",
    "Stepping", "Step two:", " ", "  ", "\t", "\n", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n", "\n \n",
    "\n\t\n", "\r", "é", "∑",
]


def _random_texts(seed: int = 20240611, count: int = 600):
    rng = random.Random(seed)
    texts = ["", " ", "\n", "\n\n", "\r\n", "x", "Step 1:", "\nStep 1: a", "a\n\n", "\n\na"]
    for _ in range(count):
        texts.append("".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 25))))
    return texts


TEXTS = _random_texts()


def _reference_contents(text: str, mode: str):
    """Stripped step contents from an independent split (separators are whitespace only)."""
    if mode == "paragraph":
        parts = re.split(r"\n[ \t\r]*\n", text)
    elif mode == "line":
        parts = text.split("\n")
    else:
        parts = re.split(r"\n(?=\s*Step\s*\d+\s*[:.)])", text, flags=re.IGNORECASE)
    return [p.strip() for p in parts if p.strip()]


@pytest.mark.parametrize("mode", MODES)
def test_join_invariant_and_segment_shape_on_generated_texts(mode):
    assert len(set(TEXTS)) > 500
    for text in TEXTS:
        steps = segment(text, mode)
        assert "".join(steps) == text, (mode, text)
        if not text:
            assert steps == []
        elif not text.strip():
            # Whitespace only: one segment holding all of it.
            assert steps == [text], (mode, text)
        else:
            # Every segment carries content; only the first may start with whitespace.
            assert all(s.strip() for s in steps), (mode, text, steps)
            assert all(not s[0].isspace() for s in steps[1:]), (mode, text, steps)
            assert [step_content(s) for s in steps] == _reference_contents(text, mode), (mode, text, steps)
        for i in range(-1, len(steps)):
            assert prefix_through(steps, i) + "".join(steps[i + 1:]) == text


def test_generated_texts_exercise_every_mode():
    # Guards the generator: the property test must see real multi-segment splits in each mode.
    for mode in MODES:
        multi = sum(1 for t in TEXTS if len(segment(t, mode)) >= 3)
        assert multi > 50, mode


def test_crlf_and_lf_texts_have_the_same_steps():
    for text in TEXTS:
        lf = text.replace("\r", "")
        crlf = lf.replace("\n", "\r\n")
        for mode in MODES:
            # Same number of steps, same content once the interior "\r"s are dropped.
            assert [step_content(s).replace("\r", "") for s in segment(crlf, mode)] == [
                step_content(s) for s in segment(lf, mode)], (mode, lf)


def test_scripted_answer_key_text_segments():
    """The scripted policy's layout: one step per paragraph, ending with the answer line."""
    text = "\n\n".join([f"Step {i}: I work on part {i} of the problem." for i in (1, 2, 3)] + ["The answer is 12."])
    assert segment(text, "paragraph") == [
        "Step 1: I work on part 1 of the problem.\n\n",
        "Step 2: I work on part 2 of the problem.\n\n",
        "Step 3: I work on part 3 of the problem.\n\n",
        "The answer is 12.",
    ]
    assert segment(text, "step") == [
        "Step 1: I work on part 1 of the problem.\n\n",
        "Step 2: I work on part 2 of the problem.\n\n",
        "Step 3: I work on part 3 of the problem.\n\nThe answer is 12.",
    ]
    assert segment(text, "line") == segment(text, "paragraph")
