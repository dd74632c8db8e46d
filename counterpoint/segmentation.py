"""Splitting a solution into steps, losslessly.

Every mode returns segments whose concatenation is exactly the input text: each
segment keeps its trailing separator (and any leading whitespace stays with the
first segment). That makes "the prefix through step i" simply
``"".join(steps[:i + 1])``, which is what rollouts from a step prefix send to the
engine, and it means no character of a sample is ever lost or invented.

Modes:

* ``paragraph`` — blank-line separated paragraphs (the system prompt asks for one
  step per paragraph);
* ``line`` — one step per non-empty line;
* ``step`` — a new step starts at each line beginning with ``Step k:``.
"""

from __future__ import annotations

import re
from typing import List

MODES = ("paragraph", "line", "step")

_BOUNDARY = {
    # A boundary is the end of a run of separators that follows content.
    # ``\r`` counts as blank-line whitespace so CRLF text splits like LF text.
    "paragraph": re.compile(r"\n[ \t\r]*\n\s*"),
    "line": re.compile(r"\n\s*"),
    "step": re.compile(r"\n\s*(?=Step\s*\d+\s*[:.)])", re.IGNORECASE),
}


def segment(text: str, mode: str = "paragraph") -> List[str]:
    """Splits ``text`` into steps; ``"".join(segment(text, mode)) == text`` always holds."""
    if mode not in _BOUNDARY:
        raise ValueError(f"unknown segmentation mode {mode!r}; choose one of {MODES}")
    if not text:
        return []
    steps: List[str] = []
    start = 0
    for m in _BOUNDARY[mode].finditer(text):
        end = m.end()
        if text[start:m.start()].strip():
            steps.append(text[start:end])
            start = end
    tail = text[start:]
    if tail:
        if steps and not tail.strip():
            steps[-1] += tail
        else:
            steps.append(tail)
    return steps


def step_content(step: str) -> str:
    """A step without its surrounding whitespace (what TRL's ``completions`` hold)."""
    return step.strip()


def prefix_through(steps: List[str], index: int) -> str:
    """The text of steps ``0..index`` inclusive (``index = -1`` is the empty prefix)."""
    return "".join(steps[: index + 1])
