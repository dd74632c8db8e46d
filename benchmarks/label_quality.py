"""Label quality: how right are the step labels? OmegaPRM vs per-step MC, with and without consensus.

Scripted chain problems (``chain_problem``) are solved by scripted policies with
planted first errors (``chain_first_error`` is the ground truth), in scenarios
that stress the label semantics:

* ``arithmetic`` — slips are false equations ("10 * 2 = 22") that propagate;
* ``misread``    — slips use a wrong operand: the arithmetic is true, only the
  rollouts can find the error;
* ``repaired``   — misreads that the next step silently repairs 30% of the time:
  non-monotone MC (MC after the slip > 0), the classic failure of MC labels;
* ``rescued``    — false equations that the next step repairs 30% of the time: one
  lucky rollout makes MC > 0 after a plainly wrong step (issue 9, defect 9); also
  run with the arithmetic check off ("-noclaims") to show what the check buys;
* ``format``     — arithmetic slips, and 30% of solutions end without an answer
  marker (format failures: outcome negatives that must get no step labels);
* ``unknown``    — misreads, and 40% of answers are hedged ("The answer is 25 (I
  think).") so the verifier cannot decide them: unknown-heavy estimates.

Each scenario labels the same sampled trajectories with OmegaPRM and with the
per-step MC baseline (same k, same rollout seeds), then judges every labelled
solution with the scripted consensus judge (``ChainJudgePolicy``, wrong 10% of
the time, unparsable 2%) and keeps the agreeing rows ("+cons").

Metrics per (scenario, labeller): labelled solutions; first-error exact-match and
within-one accuracy; precision / recall of False step labels against the ground
truth; the share of True-labelled steps that state a false equation or a wrong
final answer (checked by the chain's own grammar, independent of
``labeling.arithmetic``); rollouts generated per labelled solution; format
failures labelled (must be 0); unresolved solutions.

    python benchmarks/label_quality.py                      # scripted, < 2 min on 2 CPU cores
    python benchmarks/label_quality.py --world styles       # the model-styles world (issue 15), seconds
    python benchmarks/label_quality.py --model embedded     # the embedded vLLM model (no ground
                                                            # truth: false-equation share + judge agreement)
    python benchmarks/label_quality.py --processbench FILE --model embedded   # ProcessBench-style JSONL

``--processbench FILE``: JSONL rows with ``problem``, ``steps`` (list of
paragraphs), ``label`` (index of the first wrong step by human annotators, -1 if
none) and ``answer`` (the gold final answer — ProcessBench itself has none: join
it from the source dataset). Each wrong solution (by the verifier) is labelled
with rollouts from ``--model`` (``--samples`` fresh samples give the root MC and
the correct evidence) and scored against the human first error.
Writes ``benchmarks/results/label_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.generators.base import GenerationRequest, SamplingParams  # noqa: E402
from counterpoint.generators.scripted import (  # noqa: E402
    ChainPolicy,
    ScriptedGenerator,
    chain_problem,
)
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, ProblemForLabeling, label_problems  # noqa: E402
from counterpoint.labeling.arithmetic import false_claims  # noqa: E402
from counterpoint.labeling.consensus import ConsensusConfig, apply_consensus, judge_requests, judgements_from  # noqa: E402
from counterpoint.testing.chain import ChainJudgePolicy, chain_first_error, chain_verify  # noqa: E402
from counterpoint.testing.worlds import sampled_chain_items  # noqa: E402
from counterpoint.segmentation import segment  # noqa: E402
from counterpoint.verifiers.extract import extract_final_answer  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "label_quality.json")
LABELERS = ("omegaprm", "mc")
ABLATE_CLAIMS = ("rescued",)
ROWS = ("omegaprm", "omegaprm+cons", "mc", "mc+cons", "omegaprm-noclaims", "mc-noclaims",
        "omegaprm-claims>evidence", "mc-claims>evidence")

SCENARIOS = {
    "arithmetic": dict(step_error_rate=0.06),
    "misread": dict(step_error_rate=0.06, slip="misread"),
    "repaired": dict(step_error_rate=0.06, slip="misread", repair_rate=0.3),
    "rescued": dict(step_error_rate=0.06, repair_rate=0.3),
    "format": dict(step_error_rate=0.06, no_answer_rate=0.3),
    "unknown": dict(step_error_rate=0.06, slip="misread", hedge_rate=0.4),
}

_CHAIN_STEP = re.compile(r"Step \d+: (-?\d+) ([+\-*]) (-?\d+) = (-?\d+)\.")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def chain_step_is_plainly_wrong(step: str, gold: str, last: bool) -> bool:
    """A false equation in the chain's grammar, or a stated final answer that is not the gold one."""
    m = _CHAIN_STEP.search(step)
    if m is not None and _OPS[m.group(2)](int(m.group(1)), int(m.group(3))) != int(m.group(4)):
        return True
    answer = extract_final_answer(step)
    return answer is not None and answer != str(gold)


def sample_items(policy: ChainPolicy, n_problems: int, n_steps: int, k_f: int, seed: int) -> List[ProblemForLabeling]:
    problems = [chain_problem(seed, i, num_steps=n_steps) for i in range(n_problems)]
    return sampled_chain_items(policy, problems, k_f, seed_of=lambda i: seed * 1_000_003 + i)


def score(rows: Sequence[Dict[str, Any]], truth: Dict[str, Optional[int]], gold: Dict[str, str]) -> Dict[str, Any]:
    """Accuracy of first errors and step labels against ground truth (``truth[row id]``)."""
    exact = within = tp = fp = fn = true_steps = bad_true = 0
    scored = 0
    for r in rows:
        t = truth.get(r["id"])
        m = len(r["completions"])
        if t is not None or r["id"] in truth:
            scored += 1
            t_eff = m if t is None else t
            e = r["first_error_index"]
            exact += e == t_eff
            within += abs(e - t_eff) <= 1
            for i, lab in enumerate(r["labels"]):
                wrong = i >= t_eff
                tp += (not lab) and wrong
                fp += (not lab) and not wrong
                fn += lab and wrong
        for i, (step, lab) in enumerate(zip(r["completions"], r["labels"])):
            if lab:
                true_steps += 1
                bad_true += chain_step_is_plainly_wrong(step, gold[r["problem_id"]], i == m - 1)
    return {
        "rows": len(rows),
        "first_error_exact": exact / scored if scored else None,
        "first_error_within_one": within / scored if scored else None,
        "false_precision": tp / (tp + fp) if tp + fp else None,
        "false_recall": tp / (tp + fn) if tp + fn else None,
        "true_steps": true_steps,
        "true_steps_plainly_wrong": bad_true / true_steps if true_steps else 0.0,
    }


def run_scenario(name: str, args) -> Dict[str, Any]:
    policy = ChainPolicy(**SCENARIOS[name])
    items = sample_items(policy, args.problems, args.steps, args.samples, args.seed)
    questions = {it.problem["problem_id"]: it.problem["question"] for it in items}
    gold = {it.problem["problem_id"]: it.problem["gold_answer"] for it in items}
    fmt_ids = {(it.problem["problem_id"], t["sample_index"]) for it in items for t in it.trajectories
               if t["verdict_reason"] == "no_final_answer"}
    sampling = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=512)
    judge = ScriptedGenerator(ChainJudgePolicy(error_rate=args.judge_error_rate, unparsable_rate=0.02),
                              model_id="scripted/chain-judge")
    entry: Dict[str, Any] = {"scenario": name, "policy": SCENARIOS[name],
                             "format_failure_samples": len(fmt_ids)}
    variants = [(lab, True) for lab in LABELERS]
    if name in ABLATE_CLAIMS:  # the check off, and issue 9's rule (a claim cuts below the evidence too)
        variants += [(lab, False) for lab in LABELERS] + [(lab, "over") for lab in LABELERS]
    for labeler, checks in variants:
        cfg = LabelerConfig(labeler=labeler, omegaprm=OmegaPRMConfig(k=args.k, search_limit=args.search_limit),
                            compute_values=False, seed=args.seed, check_arithmetic=bool(checks),
                            claims_over_evidence=checks == "over")
        t0 = time.perf_counter()
        results = label_problems(items, ScriptedGenerator(policy), chain_verify, cfg, sampling=sampling)
        wall = time.perf_counter() - t0
        rows = [r for res in results for r in res.step_labels]
        truth = {r["id"]: chain_first_error(questions[r["problem_id"]], r["completions"]) for r in rows}
        rollouts = sum(res.stats["rollouts"] for res in results)
        base = score(rows, truth, gold)
        base.update({
            "rollouts_per_labelled_solution": rollouts / len(rows) if rows else None,
            "format_failures_labelled": sum((r["problem_id"], r["sample_index"]) in fmt_ids for r in rows),
            "unresolved": sum(res.stats["searches_unresolved"] for res in results),
            "first_error_sources": {s: sum(r["first_error_source"] == s for r in rows)
                                    for s in ("search", "evidence", "terminal", "claim", "verdict")},
            "wall_s": round(wall, 2),
        })
        replies = [c[0].text for c in judge.generate(judge_requests(rows, {}, None, config=ConsensusConfig()))]
        judgements = judgements_from(rows, replies)
        kept, _, cstats = apply_consensus(rows, [], [], judgements, "keep-agreeing")
        cons = score(kept["step_labels"], truth, gold)
        cons.update({"rollouts_per_labelled_solution": rollouts / len(kept["step_labels"])
                     if kept["step_labels"] else None, "agreement_rate": cstats["agreement_rate"],
                     "kept_share": len(kept["step_labels"]) / len(rows) if rows else None})
        name_ = labeler + {True: "", False: "-noclaims", "over": "-claims>evidence"}[checks]
        entry[name_] = base
        if checks is True:
            entry[name_ + "+cons"] = cons
    return entry


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def print_table(out: Dict[str, Any]) -> None:
    head = (f"{'scenario':<11}{'labeller':<18}{'rows':>5}{'exact':>7}{'±1':>7}{'F prec':>8}{'F rec':>7}"
            f"{'bad T':>7}{'r/sol':>7}{'agree':>7}{'fmt':>5}{'unres':>6}")
    print(head)
    print("-" * len(head))
    for e in out["scenarios"]:
        for lab in (x for x in ROWS if x in e):
            r = e[lab]
            print(f"{e['scenario']:<11}{lab:<18}{r['rows']:>5}{_fmt(r['first_error_exact']):>7}"
                  f"{_fmt(r['first_error_within_one']):>7}{_fmt(r['false_precision']):>8}{_fmt(r['false_recall']):>7}"
                  f"{_fmt(r['true_steps_plainly_wrong']):>7}{_fmt(r['rollouts_per_labelled_solution'], '.1f'):>7}"
                  f"{_fmt(r.get('agreement_rate')):>7}{r.get('format_failures_labelled', ''):>5}"
                  f"{r.get('unresolved', ''):>6}")


def markdown_table(out: Dict[str, Any]) -> str:
    lines = ["| scenario | labeller | rows | first-error exact | within one | False precision | False recall | "
             "True steps plainly wrong | rollouts / solution | judge agreement |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in out["scenarios"]:
        for lab in (x for x in ROWS if x in e):
            r = e[lab]
            lines.append(f"| {e['scenario']} | {lab} | {r['rows']} | {_fmt(r['first_error_exact'])} | "
                         f"{_fmt(r['first_error_within_one'])} | {_fmt(r['false_precision'])} | "
                         f"{_fmt(r['false_recall'])} | {_fmt(r['true_steps_plainly_wrong'])} | "
                         f"{_fmt(r['rollouts_per_labelled_solution'], '.1f')} | {_fmt(r.get('agreement_rate'))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Real models (the lead / GPU users run these; they need vLLM)
# ---------------------------------------------------------------------------
def _real_generator(model: str):
    from counterpoint.config import GeneratorConfig
    from counterpoint.generators import build_generator

    gen = build_generator(GeneratorConfig(kind="vllm", model=model))
    gen.load()
    return gen


def run_embedded(args) -> Dict[str, Any]:
    """The embedded model on procedural problems: no ground-truth first errors, so the report is the share
    of True steps with a false arithmetic claim or a wrong stated answer (with the checks off and on) and
    the judge's agreement (the same model as judge)."""
    from counterpoint import corpus
    from counterpoint.config import DEFAULT_SYSTEM_PROMPT
    from counterpoint.sources.procedural import procedural_problem
    from counterpoint.verifiers.suite import VerifierSuite

    gen = _real_generator(args.model)
    suite = VerifierSuite("auto")

    def verify(items):
        return [v for v, _ in suite.verify(items)]

    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)
    problems = [procedural_problem(args.seed, i, 1, 3) for i in range(args.problems)]
    reqs = [corpus.sample_request(p, system_prompt=DEFAULT_SYSTEM_PROMPT, n=args.samples, params=params,
                                  run_seed=args.seed) for p in problems]
    items = []
    for p, req, comps in zip(problems, reqs, gen.generate(reqs)):
        rows = corpus.trajectory_rows(p, comps, request=req, model_id=gen.model_id, segmentation="paragraph")
        verdicts = verify([(r["completion"], p["gold_answer"], r["finish_reason"] == "length", p["answer_type"])
                           for r in rows])
        rows = corpus.apply_verdicts(rows, verdicts, verifier_name="auto", verifier_version="")
        items.append(ProblemForLabeling(problem=p, trajectories=rows, system_prompt=DEFAULT_SYSTEM_PROMPT))
    gold = {p["problem_id"]: p["gold_answer"] for p in problems}
    out: Dict[str, Any] = {"model": gen.model_id, "problems": args.problems, "samples": args.samples, "runs": {}}
    for labeler in LABELERS:
        for checks in (False, True):
            cfg = LabelerConfig(labeler=labeler, check_arithmetic=checks, compute_values=False, seed=args.seed,
                                omegaprm=OmegaPRMConfig(k=args.k, search_limit=args.search_limit))
            results = label_problems(items, gen, verify, cfg, sampling=params)
            rows = [r for res in results for r in res.step_labels]
            true_steps = [(s, r) for r in rows for s, lab in zip(r["completions"], r["labels"]) if lab]
            bad = sum(bool(false_claims(s)) or (extract_final_answer(s) not in (None, gold[r["problem_id"]]))
                      for s, r in true_steps)
            judge_reqs = judge_requests(rows, {p["problem_id"]: p for p in problems}, DEFAULT_SYSTEM_PROMPT)
            judgements = judgements_from(rows, [c[0].text for c in gen.generate(judge_reqs)]) if rows else {}
            _, _, cstats = apply_consensus(rows, [], [], judgements, "annotate")
            out["runs"][f"{labeler}{'' if checks else '-nochecks'}"] = {
                "rows": len(rows), "true_steps": len(true_steps),
                "true_steps_plainly_wrong": bad / len(true_steps) if true_steps else None,
                "rollouts_per_labelled_solution": (sum(res.stats["rollouts"] for res in results) / len(rows))
                if rows else None,
                "judge_agreement_rate": cstats["agreement_rate"], "judge_unparsable": cstats["unparsable"],
            }
    suite.close()
    return out


def run_processbench(args) -> Dict[str, Any]:
    """Scores the labellers' first errors against human first errors on a ProcessBench-style JSONL."""
    from counterpoint.verifiers.suite import VerifierSuite

    gen = _real_generator(args.model)
    suite = VerifierSuite(args.verifier)

    def verify(items):
        return [v for v, _ in suite.verify(items)]

    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)
    records_in = [json.loads(line) for line in open(args.processbench, encoding="utf-8") if line.strip()]
    items, human, skipped = [], {}, {"no_answer_field": 0, "verified_correct": 0, "no_correct_sample": 0}
    for n, rec in enumerate(records_in):
        if "answer" not in rec:
            skipped["no_answer_field"] += 1
            continue
        pid = str(rec.get("id", f"pb-{n}"))
        steps = [s.strip() for s in rec["steps"]]
        raw = [s + "\n\n" for s in steps[:-1]] + [steps[-1]]
        text = "".join(raw)
        answer_type = "math" if args.verifier in ("auto", "math") else args.verifier
        (v,) = verify([(text, str(rec["answer"]), False, answer_type)])
        if v.verdict != "incorrect":
            skipped["verified_correct"] += 1
            continue
        problem = {"problem_id": pid, "source": "processbench", "question": rec["problem"],
                   "gold_answer": str(rec["answer"]), "answer_type": answer_type, "difficulty": None,
                   "metadata": None}
        (comps,) = gen.generate([GenerationRequest.chat(None, rec["problem"], n=args.samples, params=params,
                                                        seed=args.seed + n)])
        trajs = [{"problem_id": pid, "sample_index": 0, "completion": text, "steps": raw, "verdict": v.verdict,
                  "verdict_reason": v.reason, "finish_reason": "stop", "num_generated_tokens": len(text) // 4}]
        for j, c in enumerate(comps, start=1):
            cv = verify([(c.text, str(rec["answer"]), c.truncated, answer_type)])[0]
            if cv.verdict == "correct":  # only correct samples: evidence and the root's MC, nothing else to search
                trajs.append({"problem_id": pid, "sample_index": j, "completion": c.text, "steps": segment(c.text),
                              "verdict": cv.verdict, "verdict_reason": cv.reason, "finish_reason": c.finish_reason,
                              "num_generated_tokens": c.num_tokens})
        if len(trajs) == 1:
            skipped["no_correct_sample"] += 1
            continue
        items.append(ProblemForLabeling(problem, trajs, None, "paragraph"))
        human[f"{pid}/s0"] = int(rec["label"])
    out: Dict[str, Any] = {"file": args.processbench, "model": gen.model_id, "items": len(records_in),
                           "scored": len(items), "skipped": skipped, "runs": {}}
    for labeler in LABELERS:
        cfg = LabelerConfig(labeler=labeler, compute_values=False, seed=args.seed,
                            omegaprm=OmegaPRMConfig(k=args.k, search_limit=1))
        results = label_problems(items, gen, verify, cfg, sampling=params)
        rows = [r for res in results for r in res.step_labels if r["sample_index"] == 0]
        pairs = [(r["first_error_index"], human[f"{r['problem_id']}/s0"]) for r in rows]
        pairs = [(e, len(r["completions"]) if h == -1 else h) for (e, h), r in zip(pairs, rows)]
        out["runs"][labeler] = {
            "rows": len(rows),
            "first_error_exact": sum(e == h for e, h in pairs) / len(pairs) if pairs else None,
            "first_error_within_one": sum(abs(e - h) <= 1 for e, h in pairs) / len(pairs) if pairs else None,
            "unresolved": sum(res.stats["searches_unresolved"] for res in results),
        }
    suite.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--steps", type=int, default=12, help="operations per chain problem (plus an answer line)")
    ap.add_argument("--samples", type=int, default=8, help="K_f sampled solutions per problem")
    ap.add_argument("--k", type=int, default=8, help="rollouts per MC estimate")
    ap.add_argument("--search-limit", type=int, default=20)
    ap.add_argument("--judge-error-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--model", default=None, help="run on a real model instead (e.g. 'embedded'); needs vLLM")
    ap.add_argument("--world", choices=("chain", "styles"), default="chain",
                    help="chain: the scripted chain scenarios; styles: solutions written the ways models write "
                         "(benchmarks/model_styles.py, tests/data/model_style_solutions.jsonl)")
    ap.add_argument("--processbench", default=None, help="ProcessBench-style JSONL to score (needs --model)")
    ap.add_argument("--verifier", default="math", help="verifier for --processbench answers")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--out", default=None,
                    help="results JSON (default: results/label_quality.json; label_quality_embedded.json with --model, "
                         "label_quality_processbench.json with --processbench)")
    args = ap.parse_args(argv)
    if args.out is None:
        suffix = ("_processbench" if args.processbench else "_embedded" if args.model
                  else "_styles" if args.world == "styles" else "")
        args.out = RESULTS.replace(".json", f"{suffix}.json")
    t0 = time.perf_counter()
    if args.processbench:
        if not args.model:
            ap.error("--processbench needs --model (the generator that rolls out)")
        out = {"config": vars(args), "processbench": run_processbench(args)}
    elif args.model:
        out = {"config": vars(args), "embedded": run_embedded(args)}
    elif args.world == "styles":
        from benchmarks.model_styles import markdown_table as styles_table
        from benchmarks.model_styles import run_styles

        out = {"config": vars(args), "styles": run_styles(k=args.k, seed=args.seed)}
        out["markdown"] = styles_table(out["styles"])
        print(out["markdown"])
        print(json.dumps({k: out["styles"][k] for k in ("format_failures",)}, indent=1))
        print({lab: out["styles"]["labellers"][lab]["labels_identical_across_leads"] for lab in LABELERS})
    else:
        out = {"config": vars(args), "scenarios": [run_scenario(s, args) for s in args.scenarios.split(",")]}
        print_table(out)
        out["markdown"] = markdown_table(out)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    if "scenarios" not in out:
        print(json.dumps(out, indent=2, default=str))
    print(f"total {out['wall_s']:.1f}s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
