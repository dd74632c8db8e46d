"""Test doubles shared by the labelling tests."""

from __future__ import annotations

import re

from counterpoint.verifiers import base as vb


def fake_verdict(text, gold, truncated=False):
    """``ANS=<v>`` at the end: correct when v == gold; ``ANS=?``: unknown; no ``ANS=``: a format failure."""
    m = re.search(r"ANS=(\S+)\s*$", text)
    if truncated:
        return vb.incorrect(vb.REASON_TRUNCATED, None)
    if not m:
        return vb.incorrect(vb.REASON_NO_FINAL_ANSWER, None)
    if m.group(1) == "?":
        return vb.unknown(vb.REASON_UNPARSABLE_ANSWER, "?")
    return vb.correct(m.group(1)) if m.group(1) == gold else vb.incorrect(vb.REASON_ANSWER_MISMATCH, m.group(1))


def fake_verify(items):
    return [fake_verdict(text, gold, truncated) for text, gold, truncated, _ in items]
