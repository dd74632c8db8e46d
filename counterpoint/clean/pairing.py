"""Near-miss outcome pairing with two-sided guards, and reference solutions as ``chosen`` (Beam-free).

* **nearest** (default): each ``chosen`` (shortest correct first) is paired with the most similar
  verified-incorrect ``rejected`` not used yet (word-level ``difflib.SequenceMatcher`` ratio; once every
  rejected is used, all are free again). A near-miss negative — the same reasoning with one wrong number —
  is what teaches the preference; a distant failure mostly teaches style. Ties go to the lower sample index.
  ``round-robin`` spreads both sides evenly instead (the behaviour before issue 20).
* **false-negative guard** (the rejected side): a verified-incorrect row whose verdict reason is
  ``unconfirmed_equivalence`` or whose final answer equals gold under a second check
  (:func:`counterpoint.clean.text.equivalent_answers`: normalised text or numeric value) never pairs and is
  no negative in ``unpaired``.
* **process-error guard** (the chosen side): a verified-correct row holding a false arithmetic claim
  (``counterpoint.labeling.arithmetic``) is flagged ``process_error``; it is never a ``chosen``, a positive
  ``unpaired`` row, or correct evidence for labelling (right answer, wrong process — Lightman et al. 2023's
  reason for process supervision).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from counterpoint.clean import text as T

PAIRING_STRATEGIES = ("nearest", "round-robin")
UNCONFIRMED = "unconfirmed_equivalence"


def similarity(a: str, b: str) -> float:
    """Word-level edit similarity in [0, 1] (SequenceMatcher ratio over normalised tokens)."""
    return difflib.SequenceMatcher(None, T.tokens(a), T.tokens(b), autojunk=False).ratio()


def has_process_error(steps: Sequence[str]) -> bool:
    """Whether any step states a false arithmetic claim (exact check, counterpoint.labeling.arithmetic)."""
    from counterpoint.labeling.arithmetic import first_false_claim_step

    return first_false_claim_step(list(steps)) is not None


def suspect_negative(row: Dict[str, Any]) -> bool:
    """A verified-incorrect row that may be right after all: never a negative."""
    return row.get("verdict_reason") == UNCONFIRMED or T.equivalent_answers(row.get("final_answer"), row["gold_answer"])


def nearest_pairs(chosen: Sequence[Dict[str, Any]], rejected: Sequence[Dict[str, Any]],
                  cap: int) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Greedy near-miss pairs: each chosen in turn takes the most similar unused rejected (see module doc)."""
    if not chosen or not rejected or cap <= 0:
        return []
    sims = {(i, j): similarity(c["completion"], r["completion"])
            for i, c in enumerate(chosen) for j, r in enumerate(rejected)}
    pairs, used, seen = [], set(), set()
    # Up to len(rejected) rounds over the chosen side, so every (chosen, rejected) pair can be reached.
    for _ in range(len(rejected)):
        for i, c in enumerate(chosen):
            free = [j for j in range(len(rejected)) if (i, j) not in seen and j not in used]
            if not free:
                used.clear()
                free = [j for j in range(len(rejected)) if (i, j) not in seen]
            if not free:
                continue
            j = max(free, key=lambda j: (sims[(i, j)], -j))
            seen.add((i, j))
            used.add(j)
            if c["completion"] == rejected[j]["completion"]:
                continue
            pairs.append((c, rejected[j]))
            if len(pairs) >= cap:
                return pairs
    return pairs


# ---------------------------------------------------------------------------
# Reference solutions (--reference-chosen)
# ---------------------------------------------------------------------------
def reference_solution(problem: Dict[str, Any]) -> Optional[str]:
    """The source's reference solution as a policy-style answer, or None when the source kept none.

    GSM8K references end in ``#### 42`` and carry ``<<6*7=42>>`` calculator notes: the notes are dropped and
    the final line becomes ``The final answer is \\boxed{42}.``, the form the run's prompt asks for, so the
    verifier reads it like any sample. MATH solutions already end in a ``\\boxed{}`` answer (MATH-500's sit
    in its ``solution`` field, kept in the metadata's ``extra``).
    """
    try:
        meta = json.loads(problem.get("metadata") or "{}")
    except ValueError:
        return None
    text = meta.get("reference_solution")
    if not isinstance(text, str) or not text.strip():  # MATH-500 keeps its answer apart: the solution is extra
        text = (meta.get("extra") or {}).get("solution")
    if not isinstance(text, str) or not text.strip():
        return None
    text = re.sub(r"<<[^<>]*>>", "", text)
    m = re.search(r"\n?####\s*(.+?)\s*$", text)
    if m:
        text = text[:m.start()].rstrip() + f"\nThe final answer is \\boxed{{{m.group(1).replace(',', '')}}}."
    return text.strip()
