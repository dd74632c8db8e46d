"""The "model styles" world of the label-quality benchmark (issue 15).

Solutions written the ways real models write — markdown lists and dashed bullets,
LaTeX inline and display, "### Step k" / "####" headings, clock times and ratios,
money, percentages, rounding and repeating decimals — each problem with one correct
solution and wrong ones whose first error is planted (``tests/data/
model_style_solutions.jsonl``, written by the project, MIT). A scripted policy
(:class:`StylePolicy`) rolls out from any prefix: on the correct path it goes on
with the correct solution (or, with probability ``1 - p_correct``, with a wrong one
that shares the prefix), off it it goes on with the wrong solution it is on; a share
``format_rate`` of rollouts ends "So the total is X." (the right number, no answer
marker: a format failure). ``lead`` is what every continuation starts with after
the prefix ("", "\\n" or "\\n\\n": trimmed and untrimmed chat templates).

Reported per style: claim precision / recall of ``labeling.arithmetic`` against the
planted arithmetic errors (every step of every solution), first-error accuracy of
both labellers against the planted first errors, steps labelled False although the
verified-correct sampled solution passes through them (must be 0), prefixes that
would be terminal before a solution's end (must be 0; the old rule's count beside
it), whether the labels are identical for the three leads, and the format-failure
rollouts behind the rows under ``rollout_format_failures`` ``zero`` and ``unknown``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Sequence

from counterpoint.generators.base import SamplingParams
from counterpoint.generators.scripted import Policy, ScriptedGenerator, ScriptedSample
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, ProblemForLabeling, label_problems
from counterpoint.labeling.arithmetic import claims
from counterpoint.labeling.evidence import step_key
from counterpoint.segmentation import segment
from counterpoint.verifiers.extract import extract_final_answer, states_final_answer
from counterpoint.verifiers.simple import NumericVerifier

CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                     "model_style_solutions.jsonl")
LABELERS = ("omegaprm", "mc")
LEADS = {"untrimmed": "", "newline": "\n", "blank_line": "\n\n"}
SEP = "\n\n"
_VERIFIER = NumericVerifier()


def load_cases(path: str = CASES) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def verify(items):
    return [_VERIFIER.verify(text, gold, truncated=truncated) for text, gold, truncated, _ in items]


@dataclasses.dataclass
class StylePolicy(Policy):
    """Continues a prefix of one of the cases' solutions (module docstring)."""

    cases: Sequence[Mapping[str, Any]]
    lead: str = ""
    p_correct: float = 0.75
    format_rate: float = 0.0

    def sample(self, request, sample_index, rng):
        question = next(c for r, c in reversed(request.messages) if r == "user")
        case = next(c for c in self.cases if c["question"] == question)
        prefix = request.messages[-1][1] if request.continue_final_message else ""
        done = [step_key(s) for s in segment(prefix)] if prefix else []
        correct = case["solutions"][0]["steps"]
        on = [s for s in case["solutions"] if [step_key(x) for x in s["steps"][:len(done)]] == done
              and len(s["steps"]) > len(done)]
        wrong = [s for s in on if s["first_error"] is not None]
        if not on:
            rest = [f"So the answer is {_off_by_one(case['gold'])}."]
        elif on[0]["steps"] is correct and (not wrong or rng.random() < self.p_correct):
            rest = correct[len(done):]
        else:
            rest = rng.choice(wrong)["steps"][len(done):]
        if rng.random() < self.format_rate:
            answer = extract_final_answer(rest[-1]) or case["gold"]
            rest = list(rest[:-1]) + [f"So the total is {answer}."]
        return ScriptedSample((self.lead if prefix else "") + SEP.join(rest))


def _off_by_one(gold: str) -> str:
    try:
        return str(float(gold) + 1).removesuffix(".0")
    except ValueError:
        return gold + "1"


def style_items(cases: Sequence[Mapping[str, Any]]) -> List[ProblemForLabeling]:
    """Every solution of every case as a sampled trajectory, verified by the numeric verifier."""
    items = []
    for c in cases:
        problem = {"problem_id": c["problem_id"], "source": "model_styles", "question": c["question"],
                   "gold_answer": c["gold"], "answer_type": "numeric", "difficulty": None, "metadata": None}
        trajs = []
        for j, sol in enumerate(c["solutions"]):
            steps = [s + SEP for s in sol["steps"][:-1]] + [sol["steps"][-1]]
            text = "".join(steps)
            v = _VERIFIER.verify(text, c["gold"])
            trajs.append({"problem_id": c["problem_id"], "sample_index": j, "completion": text, "steps": steps,
                          "verdict": v.verdict, "verdict_reason": v.reason, "finish_reason": "stop",
                          "num_generated_tokens": len(text) // 4})
        items.append(ProblemForLabeling(problem, trajs))
    return items


def claim_scores(cases: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per style: steps, claims read, and precision / recall of flagged steps against planted arithmetic errors;
    plus answer-marker checks: non-final steps read as final answers now (must be 0) and by the old rule."""
    out: Dict[str, Dict[str, Any]] = {}
    for c in cases:
        s = out.setdefault(c["style"], {"steps": 0, "claims_read": 0, "tp": 0, "fp": 0, "fn": 0,
                                        "early_terminal_steps": 0, "early_terminal_steps_old_rule": 0})
        for sol in c["solutions"]:
            prefix = ""
            for i, step in enumerate(sol["steps"]):
                prefix += step + SEP
                found = claims(step)
                flagged = any(not x.holds for x in found)
                planted = sol["first_error"] == i and sol["error_kind"] == "arithmetic"
                s["steps"] += 1
                s["claims_read"] += len(found)
                s["tp"] += flagged and planted
                s["fp"] += flagged and not planted
                s["fn"] += planted and not flagged
                if i < len(sol["steps"]) - 1:
                    s["early_terminal_steps"] += states_final_answer(step)
                    s["early_terminal_steps_old_rule"] += extract_final_answer(prefix) is not None
    for s in out.values():
        s["claim_precision"] = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else None
        s["claim_recall"] = s["tp"] / (s["tp"] + s["fn"]) if s["tp"] + s["fn"] else None
    return out


def _label(cases, items, labeler, *, lead="", format_rate=0.0, mode="zero", k=8, seed=0):
    cfg = LabelerConfig(labeler=labeler, omegaprm=OmegaPRMConfig(k=k, search_limit=20), compute_values=True,
                        seed=seed, rollout_format_failures=mode)
    policy = StylePolicy(cases, lead=lead, format_rate=format_rate)
    return label_problems(items, ScriptedGenerator(policy), verify, cfg,
                          sampling=SamplingParams(temperature=0.8, top_p=0.95, max_tokens=512))


def _label_scores(cases, results) -> Dict[str, Dict[str, Any]]:
    by_id = {c["problem_id"]: c for c in cases}
    out: Dict[str, Dict[str, Any]] = {}
    for res in results:
        for r in res.step_labels:
            case = by_id[r["problem_id"]]
            s = out.setdefault(case["style"], {"rows": 0, "exact": 0, "within_one": 0, "false_on_correct_path": 0,
                                               "format_failure_rollouts": 0, "rollouts": 0, "claim_overruled": 0})
            s["format_failure_rollouts"] += r["n_format_failure_rollouts"] or 0
            s["rollouts"] += r["n_rollouts"]
            s["claim_overruled"] += bool(r["claim_overruled"])
            if r["sample_index"] >= len(case["solutions"]):
                continue  # found inside an OmegaPRM tree: no planted truth
            truth = case["solutions"][r["sample_index"]]["first_error"]
            correct = [step_key(x) for x in case["solutions"][0]["steps"]]
            shared = next((i for i, (a, b) in enumerate(zip(map(step_key, r["completions"]), correct)) if a != b),
                          min(len(correct), len(r["completions"])))
            s["rows"] += 1
            s["exact"] += r["first_error_index"] == truth
            s["within_one"] += abs(r["first_error_index"] - truth) <= 1
            s["false_on_correct_path"] += sum(not lab for lab in r["labels"][:shared])
    for s in out.values():
        s["first_error_exact"] = s["exact"] / s["rows"] if s["rows"] else None
        s["first_error_within_one"] = s["within_one"] / s["rows"] if s["rows"] else None
    return out


def _label_map(results) -> Dict[str, Any]:
    return {r["id"]: (r["labels"], r["first_error_index"]) for res in results for r in res.step_labels}


def run_styles(k: int = 8, seed: int = 0, path: str = CASES) -> Dict[str, Any]:
    """The whole world: claim scores, both labellers under three leads, format-failure modes."""
    cases = load_cases(path)
    items = style_items(cases)
    out: Dict[str, Any] = {"problems": len(cases), "solutions": sum(len(c["solutions"]) for c in cases),
                           "claims": claim_scores(cases), "labellers": {}, "format_failures": {}}
    for labeler in LABELERS:
        maps = {}
        for name, lead in LEADS.items():
            results = _label(cases, items, labeler, lead=lead, k=k, seed=seed)
            maps[name] = _label_map(results)
            if name == "untrimmed":
                out["labellers"][labeler] = _label_scores(cases, results)
        out["labellers"][labeler]["labels_identical_across_leads"] = all(m == maps["untrimmed"] for m in maps.values())
        for mode in ("zero", "unknown"):
            results = _label(cases, items, labeler, format_rate=0.25, mode=mode, k=k, seed=seed)
            scores = _label_scores(cases, results)
            rows = sum(s["rows"] for s in scores.values())
            out["format_failures"][f"{labeler}/{mode}"] = {
                "rows": rows,
                "first_error_exact": sum(s["exact"] for s in scores.values()) / rows if rows else None,
                "format_failure_rollouts": sum(s["format_failure_rollouts"] for s in scores.values()),
                "rollouts": sum(s["rollouts"] for s in scores.values()),
                "unresolved": sum(res.stats["searches_unresolved"] for res in results),
            }
    return out


def markdown_table(out: Mapping[str, Any]) -> str:
    lines = ["| style | claims read | claim precision | claim recall | omegaprm first-error exact | "
             "mc first-error exact | False on a verified-correct path |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for style, c in out["claims"].items():
        o = out["labellers"]["omegaprm"].get(style, {})
        m = out["labellers"]["mc"].get(style, {})
        lines.append(f"| {style} | {c['claims_read']} | {f(c['claim_precision'])} | {f(c['claim_recall'])} | "
                     f"{f(o.get('first_error_exact'))} | {f(m.get('first_error_exact'))} | "
                     f"{o.get('false_on_correct_path', 0) + m.get('false_on_correct_path', 0)} |")
    return "\n".join(lines)
