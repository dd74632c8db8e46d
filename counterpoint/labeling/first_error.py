"""The first error of a wrong solution, from every piece of evidence (the label semantics).

For a wrong solution ``W`` with steps ``s_0 .. s_{m-1}``:

* ``e_search`` — what the labeller found (OmegaPRM's binary search, or per-step MC:
  1 + the last step whose prefix has a proven MC > 0). A search stopped by an
  unresolved probe only brackets it: ``lo <= e_search <= hi``;
* ``e_evidence`` — 1 + the last ``j`` such that some verified-correct completion
  (sampled or rollout) starts with ``W.steps[:j+1]`` (0 if none): such a prefix
  provably reaches the gold answer;
* ``e_value = max(e_search, e_evidence)`` — evidence only moves the error later;
* ``e_terminal`` — the first step whose prefix states a final answer that the
  verifier judges wrong (no rollout may overturn a stated answer);
* ``e_claim`` — the first step stating a false arithmetic claim (``arithmetic``) at or
  after ``e_evidence``: a claim may only lower a label where no verified-correct
  extension passes through the step (issue 15; the check reads text and can be
  wrong, a correct completion through the step cannot). A claim before
  ``e_evidence`` is ignored and recorded (``claim_overruled``). With
  ``claims_over_evidence`` (issue 9's rule, ``labeling.claims_over_evidence``) a
  claim cuts wherever it is: it then also catches a plainly false step that a lucky
  continuation "rescued" to the right answer, at the price of trusting the check's
  reading over the verifier;
* ``e = min(e_value, e_terminal, e_claim, m - 1)``; labels are ``[i < e]``.

The last step of a wrong solution is the solution itself, whose value is its
verdict (0), hence the ``m - 1`` cap.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

SOURCE_SEARCH = "search"
SOURCE_EVIDENCE = "evidence"
SOURCE_TERMINAL = "terminal"
SOURCE_CLAIM = "claim"
SOURCE_VERDICT = "verdict"


@dataclasses.dataclass(frozen=True)
class FirstError:
    """The decision and what it rests on. ``index`` is None when the evidence does not decide it."""

    index: Optional[int]
    source: Optional[str]
    search: Optional[Tuple[int, int]]
    evidence: int
    terminal: Optional[int]
    claim: Optional[int]
    claim_overruled: bool = False  # a false claim was read in a step the evidence proves right

    @property
    def resolved(self) -> bool:
        return self.index is not None


def decide(
    m: int,
    search: Optional[Tuple[int, int]],
    evidence: int,
    terminal: Optional[int],
    claim: Optional[int],
    claims_over_evidence: bool = False,
) -> FirstError:
    """Combines the pieces (see the module docstring). ``search=(lo, hi)`` brackets ``e_search``
    (``lo == hi`` when the search resolved; ``None`` when it has no information at all)."""
    cap = m - 1
    overruled = not claims_over_evidence and claim is not None and claim < min(evidence, cap)
    if overruled:
        claim = None
    hard = min([x for x in (terminal, claim) if x is not None], default=cap)
    hard = min(hard, cap)
    evidence = min(evidence, cap)
    if search is None:
        lo, hi = evidence, max(evidence, cap)  # nothing searched: anywhere from the evidence on
    else:
        lo, hi = max(search[0], evidence), max(search[1], evidence)
    lo, hi = min(lo, hard), min(hi, hard)
    if lo != hi:
        return FirstError(None, None, search, evidence, terminal, claim, overruled)
    e = lo
    value_lo = max(search[0], evidence) if search is not None else evidence
    if e < value_lo or (search is None and e < cap):
        # cut by a stated wrong answer, a false claim or the verdict of the whole solution
        source = SOURCE_CLAIM if claim == e else SOURCE_TERMINAL if terminal == e else SOURCE_VERDICT
    elif search is not None and evidence > search[0]:
        source = SOURCE_EVIDENCE
    elif search is not None:
        source = SOURCE_SEARCH
    else:
        source = SOURCE_EVIDENCE if evidence == e else SOURCE_VERDICT
    return FirstError(e, source, search, evidence, terminal, claim, overruled)
