"""Mistake -> correction traces from the first wrong steps the labeller proved (issue 22; Beam-free).

Input: one problem (question, gold answer, answer type), its verified ``trajectories`` and its
``step_labels`` rows. Output: ``corrections`` rows (``schemas.corrections.CORRECTIONS``): one per sampled
continuation, verified, with a flip class for the verified-correct ones.

For every labelled negative (verdict ``incorrect``, not truncated, not a format failure:
``verifiers.base.is_format_failure``) whose first wrong step ``e`` was decided by the labeller's
search (OmegaPRM binary search / per-step MC: ``first_error_source == "search"``), a false
arithmetic claim (``claim``) or a stated wrong answer (``terminal``) — never by evidence alone
(``evidence``) nor by the whole solution's verdict (``verdict``), which do not locate a mistake —
the **prefix** is ``question + steps[0..e]`` (the wrong step included) followed by a **cue**
("Wait, that step is wrong."). The engine continues that open assistant turn (``n`` samples
per cue, one request per (negative, cue) with a seed from its content: rows never depend on
batching); the run's verifier judges ``prefix + cue + continuation``; verified-correct
continuations are the corrections (LEMA, arXiv 2310.20689, lets a teacher guess the mistake;
here the mistake is proved and the repair is verified).

**Flip classes** (a kept correction only; "First Try Matters", arXiv 2510.08308, finds most
reflections only confirm): ``restart`` — the continuation starts over / recomputes from scratch;
``revise`` — before its final answer it retracts the step explicitly ("that's wrong", "should
be", "I misread", ...) or, for a false claim, states the claim's true value as a result
("= 15"); ``ignore`` — it goes on without touching the wrong step. ``revise`` is a genuine flip.

**Recovery rate** per problem: verified-correct continuations / attempted, with the 95% Wilson
interval of :func:`counterpoint.rl.stats.wilson_interval`.

The gold answer is never written into a prompt or a cue: a cue that contains it is not used for that
problem (counted as ``cue_gives_gold``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from fractions import Fraction
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.generators.base import GenerationRequest, Generator, SamplingParams
from counterpoint.labeling.arithmetic import false_claims
from counterpoint.rl.stats import wilson_interval
from counterpoint.schemas import records
from counterpoint.verifiers.base import is_format_failure

DEFAULT_CUES = ("Wait, that step is wrong.", "Let me check that calculation again.")
ELIGIBLE_SOURCES = ("search", "claim", "terminal")
FLIP_REVISE, FLIP_RESTART, FLIP_IGNORE = "revise", "restart", "ignore"
FLIP_CLASSES = (FLIP_REVISE, FLIP_RESTART, FLIP_IGNORE)
GENUINE_FLIPS = (FLIP_REVISE,)
SEPARATOR = "\n\n"

# Why a labelled negative was not used (counted per problem; not rejects: nothing was dropped).
SKIP_FORMAT_FAILURE = "format_failure"
SKIP_TRUNCATED = "truncated"
SKIP_NOT_LOCATED = "first_error_not_located"  # evidence / verdict source, or no first error
SKIP_OVER_LIMIT = "over_max_negatives"
SKIP_CUE_GIVES_GOLD = "cue_gives_gold"  # (negative, cue) requests not made: the cue holds the gold answer

_RESTART_RE = re.compile(r"\b(start(?:ing)? (?:over|again|from scratch|from the beginning)|from scratch|"
                         r"recomput\w*|redo\w*|re-?do (?:it|this|the)|begin again)\b", re.IGNORECASE)
_RETRACT_RE = re.compile(r"\b(wrong|mistake|incorrect|error|misread|miscalculat\w*|should (?:be|have been)|"
                         r"not right|actually|correction|instead of)\b", re.IGNORECASE)


@dataclasses.dataclass
class CorrectionsConfig:
    """``corrections``: the stage's settings (``--corrections`` turns it on)."""

    enabled: bool = False
    cues: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_CUES))
    samples_per_cue: int = 2  # continuations sampled per (negative, cue)
    max_negatives_per_problem: int = 4  # labelled negatives used per problem (in sample order)

    def __post_init__(self):
        if isinstance(self.cues, str):
            self.cues = [self.cues]
        if not self.cues or any(not str(c).strip() for c in self.cues):
            raise ValueError("corrections.cues must be a non-empty list of non-empty strings")
        if self.samples_per_cue < 1:
            raise ValueError(f"corrections.samples_per_cue must be >= 1, got {self.samples_per_cue}")
        if self.max_negatives_per_problem < 1:
            raise ValueError(f"corrections.max_negatives_per_problem must be >= 1, got {self.max_negatives_per_problem}")


@dataclasses.dataclass(frozen=True)
class Target:
    """One labelled negative with a located first wrong step."""

    problem_id: str
    sample_index: int
    steps: Tuple[str, ...]
    wrong_step_index: int
    source: str  # search | claim | terminal
    claim_value: Optional[Fraction]  # the true value of the wrong step's first false claim, if any

    @property
    def head(self) -> str:
        return "".join(self.steps[: self.wrong_step_index + 1]).rstrip()


@dataclasses.dataclass
class ProblemCorrections:
    problem_id: str
    rows: List[Dict[str, Any]]
    skipped: Dict[str, int]
    generated_tokens: int = 0


# ---------------------------------------------------------------------------
# Which negatives, and their prefixes
# ---------------------------------------------------------------------------
def targets(trajectories: Sequence[Mapping[str, Any]], step_labels: Sequence[Mapping[str, Any]],
            max_negatives: int) -> Tuple[List[Target], Dict[str, int]]:
    """The eligible labelled negatives of one problem (sample order) and why the others were skipped."""
    by_index = {t["sample_index"]: t for t in trajectories}
    out: List[Target] = []
    # Format-failure negatives are counted whether or not a step_labels row names them (the labeller gives them none).
    skipped: Counter = Counter({SKIP_FORMAT_FAILURE: sum(
        t["verdict"] == records.VERDICT_INCORRECT and is_format_failure(t.get("verdict_reason")) for t in trajectories)})
    for row in sorted(step_labels, key=lambda r: r["sample_index"]):
        traj = by_index.get(row["sample_index"])
        if traj is None or traj["verdict"] != records.VERDICT_INCORRECT:
            continue  # a positive (or a row without its trajectory): not a negative
        if is_format_failure(traj.get("verdict_reason")):
            continue  # counted above
        if traj.get("finish_reason") == "length":
            skipped[SKIP_TRUNCATED] += 1
            continue
        e, source = row.get("first_error_index"), row.get("first_error_source")
        # The trajectory's own segments (with their separators); step_labels.completions are stripped.
        steps = tuple(traj.get("steps") or ())
        if len(steps) != len(row["completions"]):
            steps = tuple(c + SEPARATOR for c in row["completions"])
        if e is None or source not in ELIGIBLE_SOURCES or not 0 <= e < len(steps):
            skipped[SKIP_NOT_LOCATED] += 1
            continue
        if len(out) >= max_negatives:
            skipped[SKIP_OVER_LIMIT] += 1
            continue
        wrong = false_claims(steps[e])
        out.append(Target(row["problem_id"], row["sample_index"], steps, e, source,
                          wrong[0].value if wrong else None))
    return out, {k: v for k, v in skipped.items() if v}


def assistant_prefix(target: Target, cue: str) -> str:
    """The open assistant turn the engine continues: the steps through the wrong one, then the cue."""
    return target.head + SEPARATOR + cue


def gives_gold(cue: str, gold: str) -> bool:
    """Whether ``cue`` holds the gold answer (as a number / token of its own): such a cue is never used."""
    g = str(gold).strip()
    return bool(g) and re.search(r"(?<![\d.])" + re.escape(g) + r"(?![\d])", cue) is not None


def request_seed(run_seed: int, problem_id: str, sample_index: int, wrong_step: int, cue: str) -> int:
    blob = repr((run_seed, "corrections", problem_id, sample_index, wrong_step, cue)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


# ---------------------------------------------------------------------------
# Flip classes
# ---------------------------------------------------------------------------
def _before_final(continuation: str, final_answer: Optional[str]) -> str:
    if final_answer:
        at = continuation.rfind(str(final_answer))
        if at >= 0:
            return continuation[:at]
    return continuation


def _number_re(value: Fraction) -> Optional[str]:
    if value.denominator != 1:
        return None
    return r"(?:=|\bis|\bbe|\bequals|\bgives)\s*\$?" + re.escape(str(value.numerator)) + r"(?![\d])"


def flip_class(continuation: str, final_answer: Optional[str], claim_value: Optional[Fraction]) -> str:
    """``restart``, ``revise`` or ``ignore`` of a verified-correct continuation (module docstring)."""
    head = _before_final(continuation, final_answer)
    if _RESTART_RE.search(head):
        return FLIP_RESTART
    if _RETRACT_RE.search(head):
        return FLIP_REVISE
    pattern = _number_re(claim_value) if claim_value is not None else None
    if pattern and re.search(pattern, head):
        return FLIP_REVISE
    return FLIP_IGNORE


# ---------------------------------------------------------------------------
# The stage's algorithm
# ---------------------------------------------------------------------------
def _requests(problem: Mapping[str, Any], tgts: Sequence[Target], cfg: CorrectionsConfig, *,
              system_prompt: Optional[str], params: SamplingParams, run_seed: int):
    cues = [c for c in cfg.cues if not gives_gold(c, problem["gold_answer"])]  # a cue never hands over the answer
    out = []
    for t in tgts:
        for cue in cues:
            seed = request_seed(run_seed, t.problem_id, t.sample_index, t.wrong_step_index, cue)
            req = GenerationRequest.continuation(system_prompt, problem["question"], assistant_prefix(t, cue),
                                                 n=cfg.samples_per_cue, params=params, seed=seed,
                                                 request_id=f"{t.problem_id}/s{t.sample_index}/c")
            out.append((t, cue, req))
    return out


def _problem_rows(asks, comps_of, verdicts, model_id: str, corrector: str) -> List[Dict[str, Any]]:
    rows = []
    it = iter(verdicts)
    for (t, cue, req), comps in zip(asks, comps_of):
        for i, c in enumerate(comps):
            v = next(it)
            kept = v.verdict == records.VERDICT_CORRECT and not c.truncated
            rows.append({
                "id": records.content_id(t.problem_id, t.sample_index, t.wrong_step_index, cue, i),
                "problem_id": t.problem_id,
                "negative_sample_index": t.sample_index,
                "prompt": req.message_dicts()[:-1],
                "prefix": t.head,
                "wrong_step_index": t.wrong_step_index,
                "wrong_step_source": t.source,
                "wrong_step": t.steps[t.wrong_step_index],
                "cue": cue,
                "correction": c.text,
                "final_answer": v.final_answer,
                "verdict": v.verdict,
                "verdict_reason": v.reason,
                "kept": kept,
                "flip_class": flip_class(c.text, v.final_answer, t.claim_value) if kept else None,
                "sample_index": i,
                "seed": req.seed,
                "finish_reason": c.finish_reason,
                "num_generated_tokens": c.num_tokens,
                "model_id": model_id,
                "corrector": corrector,
            })
    return with_recovery(rows)


def with_recovery(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Adds each problem's recovery rate (kept / attempted) and its 95% Wilson interval to its rows."""
    by_problem: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    for group in by_problem.values():
        n, k = len(group), sum(r["kept"] for r in group)
        lo, hi = _interval(k, n)
        for r in group:
            r.update(problem_attempted=n, problem_recovered=k, problem_recovery_rate=k / n,
                     problem_recovery_lo=lo, problem_recovery_hi=hi)
    return rows


def _interval(k: int, n: int) -> Tuple[Optional[float], Optional[float]]:
    """The 95% Wilson interval, holding its rate: rounding leaves ``wilson_interval(0, 7)[0]`` at ~1e-17 > 0."""
    lo, hi = wilson_interval(k, n)
    if lo is None or hi is None:
        return lo, hi
    return min(lo, k / n), max(hi, k / n)


@dataclasses.dataclass(frozen=True)
class CorrectionItem:
    """One problem as the stage gets it."""

    problem: Mapping[str, Any]  # problem_id, question, gold_answer, answer_type
    trajectories: Sequence[Mapping[str, Any]]
    step_labels: Sequence[Mapping[str, Any]]


VerifyFn = Callable[[List[Tuple[str, str, bool, str]]], List[Any]]


def correct_problems(items: Sequence[CorrectionItem], generator: Generator, verify: VerifyFn,
                     cfg: CorrectionsConfig, *, sampling: SamplingParams, system_prompt: Optional[str],
                     run_seed: int, corrector: str = "engine") -> List[ProblemCorrections]:
    """Corrections of a batch of problems: one engine call for all their (negative, cue) requests, one
    verifier call; results aligned with ``items``."""
    plans = []
    for item in items:
        tgts, skipped = targets(item.trajectories, item.step_labels, cfg.max_negatives_per_problem)
        dropped = sum(gives_gold(c, item.problem["gold_answer"]) for c in cfg.cues)
        if dropped and tgts:
            skipped[SKIP_CUE_GIVES_GOLD] = dropped * len(tgts)
        plans.append((item, _requests(item.problem, tgts, cfg, system_prompt=system_prompt, params=sampling,
                                      run_seed=run_seed), skipped))
    all_reqs = [req for _, asks, _ in plans for _, _, req in asks]
    comps = generator.generate(all_reqs) if all_reqs else []
    checks = []
    for (item, asks, _), start in zip(plans, _offsets([len(a) for _, a, _ in plans])):
        for (t, cue, req), cs in zip(asks, comps[start:start + len(asks)]):
            head = req.messages[-1][1]
            checks.extend((head + c.text, item.problem["gold_answer"], c.truncated,
                           item.problem.get("answer_type") or "numeric") for c in cs)
    verdicts = verify(checks) if checks else []
    out, vi = [], 0
    for (item, asks, skipped), start in zip(plans, _offsets([len(a) for _, a, _ in plans])):
        mine = comps[start:start + len(asks)]
        n = sum(len(cs) for cs in mine)
        rows = _problem_rows(asks, mine, verdicts[vi:vi + n], generator.model_id, corrector)
        vi += n
        out.append(ProblemCorrections(item.problem["problem_id"], rows, skipped,
                                      sum(c.num_tokens for cs in mine for c in cs)))
    return out


def _offsets(sizes: Sequence[int]) -> List[int]:
    out, at = [], 0
    for s in sizes:
        out.append(at)
        at += s
    return out


def summarize(rows: Sequence[Mapping[str, Any]], generated_tokens: float = 0.0) -> Dict[str, Any]:
    """Recovery rate (with its Wilson interval), genuine-flip share and flip-class counts of ``rows``."""
    n, kept = len(rows), [r for r in rows if r["kept"]]
    lo, hi = _interval(len(kept), n)
    classes = Counter(r["flip_class"] for r in kept)
    genuine = sum(classes[c] for c in GENUINE_FLIPS)
    return {
        "attempted": n, "recovered": len(kept), "recovery_rate": len(kept) / n if n else None,
        "recovery_lo": lo, "recovery_hi": hi, "flip_classes": {c: classes.get(c, 0) for c in FLIP_CLASSES},
        "genuine_flip_share": genuine / len(kept) if kept else None,
        "by_source": dict(Counter(r["wrong_step_source"] for r in rows)),
        "generated_tokens": generated_tokens,
        "tokens_per_kept_correction": generated_tokens / len(kept) if kept else None,
    }
