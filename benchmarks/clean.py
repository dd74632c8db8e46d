"""Clean-corpus costs and quality (issue 20): dedup + decontamination throughput, cost growth, planted recall.

1. **Cost growth**: synthetic trajectories (8 per problem; exact copies, case/whitespace variants, one-word and
   one-number edits among them) at each size in ``--sizes``, deduplicated per problem
   (``counterpoint.clean.dedup``) and their problems checked (``counterpoint.clean.decontam``) against synthetic
   evaluation sets of each size in ``--eval-sizes``; seconds per 1k trajectories, and the growth factor
   between sizes (1.0 per 10x = linear).
2. **Planted decontamination** (recall / precision) for the lm-eval 13-gram rule and the open-r1 8-gram rule
   side by side (exact-normalised and numbers-reordered keys on in both): evaluation set = the first
   ``--eval-items`` GSM8K test questions (``--gsm8k``; synthetic questions without it); positives = variants of
   evaluation questions (exact up to case/punctuation, 2 words paraphrased, numbers reordered, 25% of words
   paraphrased); negatives = the same variants of held-out GSM8K test questions (same domain and style, not in
   the evaluation set) plus fresh synthetic questions.
3. **Planted dedup** (recall / precision): duplicates = exact, case/whitespace, one-word edits; non-duplicates =
   one-number edits and distinct solutions.

    python benchmarks/clean.py --gsm8k /path/to/gsm8k/test.jsonl --sizes 1000 10000 100000

Single process, pure Python (what one Beam worker does per element). Writes ``benchmarks/results/clean.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from counterpoint.clean.decontam import RULES, EvalIndex, EvalItem  # noqa: E402
from counterpoint.clean.dedup import DedupConfig, dedup_rows  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "clean.json")
WORDS = ("apples pears baskets farmer market train station hours minutes tickets students teacher books pages "
         "garden flowers rows cookies boxes week day price dollars cents store bakery truck miles gallons water "
         "tank painter walls friends party guests chairs tables recipe cups flour sugar eggs bike wheels shop "
         "school bus seats").split()
SYNONYMS = {"buys": "purchases", "sells": "trades", "has": "owns", "makes": "earns", "how": "what", "many": "much",
            "total": "sum", "each": "every", "day": "morning", "more": "additional", "she": "the woman",
            "he": "the man", "they": "the group"}


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) if rng.random() > 0.15 else str(rng.randint(2, 99)) for _ in range(n))


def synthetic_question(rng: random.Random) -> str:
    return _sentence(rng, 18).capitalize() + ". " + _sentence(rng, 14).capitalize() + "? How many in total?"


# ---------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------
def case_variant(text: str) -> str:
    return "  " + text.upper().replace(",", "").replace(". ", " .  ")


def paraphrase(text: str, rng: random.Random, k: int) -> str:
    words = text.split()
    spots = [i for i, w in enumerate(words) if not any(c.isdigit() for c in w)]
    for i in rng.sample(spots, min(k, len(spots))):
        w = words[i].lower().strip(".,?!")
        words[i] = SYNONYMS.get(w, "quite " + w)
    return " ".join(words)


def reorder_numbers(text: str) -> str:
    import re

    nums = re.findall(r"\d+", text)
    if len(set(nums)) < 2:
        return text
    a, b = next((x, y) for i, x in enumerate(nums) for y in nums[i + 1:] if x != y)
    return re.sub(r"\d+", lambda m: b if m.group() == a else a if m.group() == b else m.group(), text)


def one_number_edit(text: str) -> str:
    import re

    m = list(re.finditer(r"\d+", text))
    if not m:
        return text + " 1"
    last = m[-1]
    return text[:last.start()] + str(int(last.group()) + 1) + text[last.end():]


# ---------------------------------------------------------------------------
# 1. cost growth
# ---------------------------------------------------------------------------
def synthetic_problem_rows(rng: random.Random, pid: str, per_problem: int = 8):
    """One problem's trajectories: half distinct solutions, the rest exact / case / one-word / one-number variants."""
    base = [_sentence(rng, 40) + ". The answer is " + str(rng.randint(2, 999)) + "." for _ in range(per_problem // 2)]
    texts = list(base)
    makers = [lambda t: t, case_variant, lambda t: paraphrase(t, rng, 1), one_number_edit]
    while len(texts) < per_problem:
        texts.append(rng.choice(makers)(rng.choice(base)))
    return [{"id": f"{pid}/s{i}", "problem_id": pid, "sample_index": i, "completion": t, "verdict": "incorrect",
             "final_answer": t.rsplit(" ", 1)[-1].rstrip("."), "finish_reason": "stop"} for i, t in enumerate(texts)]


def cost_growth(sizes, eval_sizes, seed: int):
    rng = random.Random(seed)
    out = {"trajectories_per_problem": 8, "dedup": [], "decontamination": []}
    biggest = max(sizes)
    problems = [synthetic_problem_rows(rng, f"p{i}") for i in range(biggest // 8)]
    questions = [synthetic_question(rng) for _ in range(biggest // 8)]
    cfg = DedupConfig()
    for n in sizes:
        t0 = time.perf_counter()
        dups = 0
        for rows in problems[: n // 8]:
            got, counts = dedup_rows(rows, cfg)
            dups += counts["exact"] + counts["near"]
        s = time.perf_counter() - t0
        out["dedup"].append({"trajectories": n, "seconds": round(s, 3), "s_per_1k": round(s / n * 1000, 4),
                             "duplicates_found": dups})
        print(f"dedup {n:>7} trajectories: {s:7.2f}s ({s / n * 1000:.3f}s per 1k)", flush=True)
    for m in eval_sizes:
        items = [EvalItem("synthetic", str(i), synthetic_question(rng)) for i in range(m)]
        t0 = time.perf_counter()
        index = EvalIndex(items, RULES["lm-eval"])
        build = time.perf_counter() - t0
        for n in sizes:
            t0 = time.perf_counter()
            hits = sum(index.check(q) is not None for q in questions[: n // 8])
            s = time.perf_counter() - t0
            out["decontamination"].append({
                "eval_items": m, "trajectories": n, "problems_checked": n // 8, "index_build_s": round(build, 3),
                "seconds": round(s, 3), "s_per_1k_trajectories": round(s / n * 1000, 4), "matches": hits})
            print(f"decontam {m:>5} eval items, {n:>7} trajectories ({n // 8} problems): {s:7.2f}s "
                  f"(index built in {build:.2f}s)", flush=True)
    for key in ("dedup", "decontamination"):
        rows = out[key]
        for a, b in zip(rows, rows[1:]):
            if a.get("eval_items") == b.get("eval_items") and b["trajectories"] > a["trajectories"]:
                b["growth_vs_previous"] = round(b["seconds"] / max(a["seconds"], 1e-9) /
                                                (b["trajectories"] / a["trajectories"]), 3)
    return out


# ---------------------------------------------------------------------------
# 2. planted decontamination
# ---------------------------------------------------------------------------
class Tally:
    """Recall / precision over (kind, flagged, truth) outcomes, with per-kind flag counts."""

    def __init__(self, flag_name: str):
        self.flag_name = flag_name
        self.tp = self.fp = self.fn = 0
        self.by_kind = {}

    def add(self, kind: str, hit: bool, truth: bool) -> None:
        self.tp += hit and truth
        self.fp += hit and not truth
        self.fn += truth and not hit
        k = self.by_kind.setdefault(kind, {"cases": 0, self.flag_name: 0})
        k["cases"] += 1
        k[self.flag_name] += hit

    def figures(self):
        return {"recall": round(self.tp / max(1, self.tp + self.fn), 4),
                "precision": round(self.tp / max(1, self.tp + self.fp), 4), "false_positives": self.fp,
                "missed": self.fn, "by_variant": self.by_kind}


VARIANTS = ("exact_normalised", "paraphrase_2_words", "numbers_reordered", "paraphrase_25pct")


def variant(kind: str, q: str, rng: random.Random) -> str:
    if kind == "exact_normalised":
        return case_variant(q)
    if kind == "paraphrase_2_words":
        return paraphrase(q, rng, 2)
    if kind == "numbers_reordered":
        return reorder_numbers(q)
    return paraphrase(q, rng, max(1, len(q.split()) // 4))


def planted_decontamination(questions, eval_items: int, planted: int, seed: int):
    rng = random.Random(seed)
    eval_q, held_out = questions[:eval_items], questions[eval_items:]
    cases = []  # (kind, text, contaminated?)
    for q in rng.sample(eval_q, min(planted, len(eval_q))):
        kind = rng.choice(VARIANTS)
        cases.append((kind, variant(kind, q, rng), True))
    for q in rng.sample(held_out, min(planted, len(held_out))):
        kind = rng.choice(VARIANTS)
        cases.append(("held_out_" + kind, variant(kind, q, rng), False))
    for _ in range(planted // 2):
        cases.append(("synthetic", synthetic_question(rng), False))
    items = [EvalItem("eval", str(i), q) for i, q in enumerate(eval_q)]
    out = {"eval_items": len(eval_q), "positives": sum(c[2] for c in cases),
           "negatives": sum(not c[2] for c in cases), "rules": {}}
    for rule, n in RULES.items():
        index = EvalIndex(items, n)
        tally = Tally("flagged")
        for kind, text, truth in cases:
            tally.add(kind, index.check(text) is not None, truth)
        out["rules"][rule] = {"ngram": n, **tally.figures()}
        print(f"{rule:8} ({n}-gram): {tally.figures()}", flush=True)
    return out


# ---------------------------------------------------------------------------
# 3. planted dedup
# ---------------------------------------------------------------------------
def planted_dedup(problems: int, seed: int):
    rng = random.Random(seed)
    tally = Tally("marked_duplicate")
    cfg = DedupConfig()
    for p in range(problems):
        base = _sentence(rng, 45) + ". The answer is " + str(rng.randint(2, 999)) + "."
        plan = [("base", base, None), ("exact", base, 0), ("case_whitespace", case_variant(base), 0),
                ("one_word_edit", paraphrase(base, rng, 1), 0), ("one_number_edit", one_number_edit(base), None),
                ("distinct", _sentence(rng, 45) + ". The answer is 7.", None)]
        rows = [{"id": f"p{p}/s{i}", "sample_index": i, "completion": t, "verdict": "incorrect",
                 "final_answer": t.rsplit(" ", 1)[-1].rstrip("."), "finish_reason": "stop"}
                for i, (_, t, _) in enumerate(plan)]
        got, _ = dedup_rows(rows, cfg)
        for (kind, _, truth), row in zip(plan, got):
            if kind != "base":
                tally.add(kind, row["duplicate_of"] is not None, truth is not None)
    out = {"problems": problems, **tally.figures(), "config": vars(cfg)}
    print(f"dedup planted: {tally.figures()}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", help="GSM8K test JSONL (question field) for the planted decontamination cases")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--eval-sizes", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--eval-items", type=int, default=1000, help="GSM8K questions in the evaluation set")
    ap.add_argument("--planted", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    if args.gsm8k:
        with open(args.gsm8k, encoding="utf-8") as f:
            questions = [json.loads(line)["question"] for line in f if line.strip()]
        source = os.path.basename(args.gsm8k)
    else:
        questions = [synthetic_question(rng) for _ in range(args.eval_items + 400)]
        source = "synthetic"
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "note": "single process"},
        "cost_growth": cost_growth(args.sizes, args.eval_sizes, args.seed),
        "planted_decontamination": {"questions": source, **planted_decontamination(questions, args.eval_items,
                                                                                   args.planted, args.seed)},
        "planted_dedup": planted_dedup(200, args.seed),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
