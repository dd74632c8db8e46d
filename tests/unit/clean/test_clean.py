"""Clean corpora (issue 20): decontamination, number-aware dedup, near-miss pairs, two-sided guards, references.

Beam-free checks of counterpoint.clean first, then one scripted pipeline run (the ``replay`` policy replays
planted samples per question) against two planted evaluation sets in two formats (a JSONL with other field
names, a Parquet file), asserting whole records and rejects read back from the output.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from counterpoint import corpus
from counterpoint.clean import text as T
from counterpoint.clean.decontam import DecontaminationConfig, EvalIndex, EvalItem, contaminated_step_pairs, read_eval_file
from counterpoint.clean.dedup import DedupConfig, dedup_rows
from counterpoint.clean.pairing import has_process_error, nearest_pairs, reference_solution, suspect_negative
from counterpoint.config import from_dict
from counterpoint.errors import ConfigError
from counterpoint.pipelines.generate_corpus import run
from counterpoint.storage import DatasetLayout

IN_PROCESS = ["--runner=FnApiRunner"]

# -- the planted evaluation sets ------------------------------------------------------------------
NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
           "How many clips did Natalia sell altogether in April and May?")
WENG = ("Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting and "
        "then went home to rest. How much did she earn for the babysitting she did yesterday?")
ROBE = ("A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it "
        "take to make 3 robes for the winter festival?")
JAMES = "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"
BENCH_JSONL = [{"unique_id": "mb/1", "problem": NATALIA, "answer": "72"},
               {"unique_id": "mb/2", "problem": WENG, "answer": "10"}]
BENCH_PARQUET = [{"id": "gb-7", "question": ROBE, "answer": "9"}, {"id": "gb-8", "question": JAMES, "answer": "624"}]

# -- planted contamination -----------------------------------------------------------------------
EXACT = ("NATALIA sold clips to 48 of her friends in april and then she sold half as many clips in May  "
         "how many clips did Natalia sell altogether in April and May")  # case, punctuation, whitespace
PARAPHRASED = ("Weng makes 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting "
               "and then went home to rest. How much money did she earn for the babysitting she did yesterday?")
REORDERED = ("A robe takes 3 bolts of blue fiber and half that much white fiber. How many bolts in total does it "
             "take to make 2 robes for the winter festival?")


# ---------------------------------------------------------------------------
# Beam-free: normalisation, the index, the readers
# ---------------------------------------------------------------------------
def test_normalize_folds_case_punctuation_whitespace_and_number_formats():
    assert T.normalize("  Tom paid $1,000.50 -- then 07 more!\n") == "tom paid 1000.5 then 7 more"
    assert T.normalize("TOM PAID 1000.50 THEN 7.0 MORE") == "tom paid 1000.5 then 7 more"
    assert T.numbers(T.tokens("3 * 4 = 12, so 12.0 + 5 = 17")) == ("3", "4", "12", "12", "5", "17")
    assert T.word_ngrams(["a", "b", "c"], 2) == ["a b", "b c"] and T.word_ngrams(["a"], 13) == ["a"]


@pytest.mark.parametrize("a,b,same", [("$1,200.00", "1200", True), ("3/4", "0.75", True), ("75%", "75", True),
                                      ("18 dollars", "18", True), ("17", "18", False), (None, "1", False)])
def test_second_answer_check(a, b, same):
    assert T.equivalent_answers(a, b) is same


def _index(n=13):
    items = [EvalItem("mathbench", r["unique_id"], r["problem"]) for r in BENCH_JSONL]
    items += [EvalItem("gsmbench", r["id"], r["question"]) for r in BENCH_PARQUET]
    return EvalIndex(items, n)


def test_index_catches_exact_paraphrased_and_reordered_and_passes_a_clean_problem():
    index = _index()
    m = index.check(EXACT)
    assert (m.benchmark, m.item_id, m.kind, m.overlap) == ("mathbench", "mb/1", "exact", 1.0)
    assert m.snippet == NATALIA[:120]
    m = index.check(PARAPHRASED)
    assert (m.benchmark, m.item_id, m.kind) == ("mathbench", "mb/2", "ngram") and 0 < m.overlap < 1
    m = index.check(REORDERED)
    assert (m.benchmark, m.item_id, m.kind) == ("gsmbench", "gb-7", "numbers_reordered")
    assert index.check("How many minutes does a worker need to paint 4 fences if one takes 30 minutes?") is None
    # Same template, other numbers: no exact rule matches (a templated variant is no copy); only n-grams may.
    other = ROBE.replace("2 bolts", "5 bolts").replace("3 robes", "4 robes")
    assert index.check(other).kind == "ngram"
    assert EvalIndex([EvalItem("b", "1", ROBE)], 13).check("A robe takes 5 bolts of blue fiber.") is None


def test_lm_eval_13_gram_and_open_r1_8_gram_rules_differ_on_a_heavy_paraphrase():
    # Longest stretch shared with WENG: 10 words ("of babysitting and then went home to rest how much").
    heavy = ("Weng is paid 12 dollars each hour to mind kids; she worked 50 minutes of babysitting and then went "
             "home to rest. How much is that?")
    assert _index(13).check(heavy) is None
    m = _index(8).check(heavy)
    assert (m.item_id, m.kind) == ("mb/2", "ngram")
    assert m.detail(8) == (f"mathbench item 'mb/2' ({m.overlap:.0%} of its 8-grams shared): {WENG[:120]!r}")
    # A threshold asks for more than one shared n-gram.
    assert EvalIndex([EvalItem("mathbench", "mb/2", WENG)], 8, threshold=0.5).check(heavy) is None


def test_eval_files_in_other_formats_and_field_names(tmp_path):
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BENCH_JSONL))
    pq.write_table(pa.Table.from_pylist(BENCH_PARQUET), tmp_path / "bench.parquet")
    assert list(read_eval_file(str(tmp_path / "bench.jsonl"), "mathbench")) == [
        EvalItem("mathbench", "mb/1", NATALIA), EvalItem("mathbench", "mb/2", WENG)]
    assert list(read_eval_file(str(tmp_path / "bench.parquet"), "gsmbench")) == [
        EvalItem("gsmbench", "gb-7", ROBE), EvalItem("gsmbench", "gb-8", JAMES)]


def test_decontamination_config_is_strict_and_checks_paths(tmp_path):
    with pytest.raises(ConfigError, match="decontamination.rule"):
        from_dict({"decontamination": {"rule": "gpt3"}})
    with pytest.raises(ConfigError, match="decontamination.ngram"):
        from_dict({"decontamination": {"ngram": "13"}})
    with pytest.raises(ConfigError, match="1 name"):
        from_dict({"decontamination": {"paths": ["a", "b"], "names": ["x"]}})
    assert DecontaminationConfig(rule="open-r1").n == 8 and DecontaminationConfig().n == 13
    with pytest.raises(ConfigError, match="--decontaminate .*nothing-here.jsonl: no file matches"):
        DecontaminationConfig(paths=[str(tmp_path / "nothing-here.jsonl")]).check()


def test_contaminated_step_prompts_are_found_by_question_plus_prefix():
    pairs = [{"id": "q/step/0-1", "prefix": "First, " + NATALIA + "\n\n"}, {"id": "q/step/0-2", "prefix": "Step 1: 2."},
             {"id": "q/outcome/0-1", "prefix": None}]
    hits = contaminated_step_pairs(pairs, "How many clips in total?", _index())
    assert [(p["id"], m.item_id) for p, m in hits] == [("q/step/0-1", "mb/1")]


# ---------------------------------------------------------------------------
# Beam-free: dedup, pairing, guards
# ---------------------------------------------------------------------------
A = ("Step 1: The apples cost 3 * 4 = 12 dollars in total at the market this morning.\n\n"
     "Step 2: The pears cost 5 dollars, so together they cost 12 + 5 = 17 dollars.\n\nThe answer is 17.")
W = A.replace("The answer is 17.", "The answer is 18.")  # one number edited: wrong
PLANTED = [
    ("C", A),
    ("C", "  " + A.upper().replace("\n\n", " \n\n  ")),  # exact after normalisation
    ("C", A.replace("market", "shop")),  # one-word edit: near duplicate
    ("W", "I think the total is probably 20 because fruit is expensive.\n\nThe answer is 20."),  # distant
    ("W", W),
    ("W", W.replace("market", "shop")),  # near duplicate of the one above
    ("W", A.replace("The answer is 17.", "The answer is 19.")),  # one-number edit of W: NOT a duplicate
    ("C", A.replace("3 * 4 = 12", "4 * 3 = 12")),  # numbers reordered: NOT a duplicate
]


def _rows(plan, gold="17"):
    return [{"id": f"p/s{i}", "problem_id": "p", "sample_index": i, "completion": text, "steps": text.split("\n\n"),
             "verdict": {"C": "correct", "W": "incorrect"}[lab], "verdict_reason": None if lab == "C" else "answer_mismatch",
             "final_answer": text.rsplit(" ", 1)[-1].rstrip("."), "gold_answer": gold, "finish_reason": "stop",
             "num_generated_tokens": 40, "prompt": [], "process_error": False}
            for i, (lab, text) in enumerate(plan)]


def test_dedup_exact_case_whitespace_one_word_but_never_one_number():
    rows, counts = dedup_rows(_rows(PLANTED), DedupConfig())
    assert [r["duplicate_of"] for r in rows] == [None, "p/s0", "p/s0", None, None, "p/s4", None, None]
    assert counts == {"exact": 1, "near": 2}
    assert [dict(r, duplicate_of=None) for r in rows] == [dict(r, duplicate_of=None) for r in _rows(PLANTED)]
    exact_only, counts = dedup_rows(_rows(PLANTED), DedupConfig(near=False))
    assert [r["duplicate_of"] for r in exact_only] == [None, "p/s0"] + [None] * 6 and counts == {"exact": 1, "near": 0}


def test_nearest_pairs_pick_the_near_miss_over_the_distant_failure():
    rows = _rows(PLANTED)
    correct, wrong = [rows[0], rows[7]], [rows[3], rows[4], rows[6]]
    pairs = nearest_pairs(correct, wrong, 2)
    assert [(c["sample_index"], r["sample_index"]) for c, r in pairs] == [(0, 4), (7, 6)]
    # Without a cap every pair is reached, the distant one last for each chosen.
    pairs = nearest_pairs(correct, wrong, 10)
    assert sorted((c["sample_index"], r["sample_index"]) for c, r in pairs) == [(0, 3), (0, 4), (0, 6), (7, 3), (7, 4),
                                                                              (7, 6)]


def test_guards_process_error_and_suspect_negatives():
    assert has_process_error(["Step 1: 3 * 4 = 13 dollars.\n\n", "The answer is 17."])
    assert not has_process_error(A.split("\n\n"))
    row = _rows([("W", W)])[0]
    assert not suspect_negative(row)
    assert suspect_negative(row | {"final_answer": "17.00"})  # the verifier said wrong; the value is gold
    assert suspect_negative(row | {"verdict_reason": "unconfirmed_equivalence"})


def test_outcome_rows_skip_duplicates_suspects_and_process_errors():
    rows, _ = dedup_rows(_rows(PLANTED), DedupConfig())
    rows[7]["process_error"] = True
    rows.append(_rows([("W", W.replace("The answer is 18.", "The answer is 17.00."))])[0] | {"id": "p/s8", "sample_index": 8})
    state = corpus.new_state({"problem_id": "p", "question": "q"}).evolve(trajectories=rows)
    state = corpus.outcome_rows(state, max_pairs_per_problem=2)
    assert [(p["chosen_sample_index"], p["rejected_sample_index"]) for p in state.preferences] == [(0, 4), (0, 6)]
    assert [(u["sample_index"], u["label"]) for u in state.unpaired] == [(0, True), (3, False), (4, False), (6, False)]
    assert state.stats == {"clean_process_error_positives": 1, "clean_suspect_negatives": 1, "clean_pairs_avoided": 0,
                           "clean_reference_chosen_pairs": 0}


def test_reference_solution_from_gsm8k_metadata():
    problem = {"metadata": json.dumps({"reference_solution": "Apples: 3*4=<<3*4=12>>12.\nTotal 12+5=<<12+5=17>>17.\n#### 17"})}
    assert reference_solution(problem) == "Apples: 3*4=12.\nTotal 12+5=17.\nThe final answer is \\boxed{17}."
    assert reference_solution({"metadata": "{}"}) is None
    math500 = {"metadata": json.dumps({"extra": {"solution": "So $x = 3$, and $\\boxed{3}$.", "subject": "Algebra"}})}
    assert reference_solution(math500) == "So $x = 3$, and $\\boxed{3}$."


# ---------------------------------------------------------------------------
# One scripted pipeline run
# ---------------------------------------------------------------------------
PROCESS = [  # right answer, wrong process (short: round-robin would choose it first)
    ("C", "Step 1: The apples cost 3 * 4 = 13 dollars.\n\nThe answer is 17."),
    ("C", A),
    ("W", W),
]
REF_WRONG = [("W", W), ("W", "I think the total is probably 20 because fruit is expensive.\n\nThe answer is 20.")]
GOOD_REF = "The apples cost 3*4=<<3*4=12>>12 dollars.\nWith the pears, 12+5=<<12+5=17>>17 dollars.\n#### 17"
BAD_REF = "The apples cost 3*4=<<3*4=13>>13 dollars.\nWith the pears, 13+4=<<13+4=17>>17 dollars.\n#### 17"
PROBLEMS = {  # id -> (question, reference answer field, planted samples)
    "p-exact": (EXACT, "#### 72", REF_WRONG),
    "p-para": (PARAPHRASED, "#### 10", REF_WRONG),
    "p-reorder": (REORDERED, "#### 9", REF_WRONG),
    "p-parquet": (JAMES, "#### 624", REF_WRONG),
    "p-dup": ("How much do the apples and pears at the corner market cost together, in dollars?", GOOD_REF, PLANTED),
    "p-process": ("How much do the fruits at the stall cost together, in dollars?", GOOD_REF, PROCESS),
    "p-ref": ("What do the apples and the pears of the orchard shop cost, in dollars?", GOOD_REF, REF_WRONG),
    "p-badref": ("What do the apples and the pears of the village shop cost, in dollars?", BAD_REF, REF_WRONG),
}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    (tmp / "problems.jsonl").write_text("".join(json.dumps({"id": pid, "question": q, "answer": ans}) + "\n"
                                                for pid, (q, ans, _) in PROBLEMS.items()))
    (tmp / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BENCH_JSONL))
    pq.write_table(pa.Table.from_pylist(BENCH_PARQUET), tmp / "bench.parquet")
    script = {q: [text for _, text in plan] for q, _, plan in PROBLEMS.values()}
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "problems.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id", "gold_format": "gsm8k"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "replay", "script": script}},
        "sampling": {"temperature": 0.8, "max_tokens": 128},
        "samples_per_problem": 8, "batch_size": 3, "num_shards": 1,
        "pairing": {"max_pairs_per_problem": 2, "reference_chosen": True},
        "decontamination": {"paths": [str(tmp / "bench.jsonl"), str(tmp / "bench.parquet")],
                            "names": ["mathbench", "gsmbench"]},
        "report": False,
        "output": str(tmp / "out"),
    })
    summary = run(IN_PROCESS, config=cfg)
    return DatasetLayout(str(tmp / "out")), summary


def _table(layout, config):
    return layout.read_table(config).to_pylist()


def test_contaminated_problems_are_rejected_with_the_benchmark_item(clean_run):
    layout, summary = clean_run
    rejects = sorted(_table(layout, "rejects"), key=lambda r: r["problem_id"])
    assert len({r["id"] for r in rejects}) == len(rejects) == 4
    got = [{k: v for k, v in r.items() if k != "id"} | {"payload": json.loads(r["payload"])} for r in rejects]
    overlap = {r["problem_id"]: json.loads(r["payload"])["overlap"] for r in rejects}
    assert 0 < overlap["p-para"] < 1
    expected = [
        ("p-exact", "mathbench", "mb/1", "exact", 1.0, "exact after normalisation", NATALIA),
        ("p-para", "mathbench", "mb/2", "ngram", overlap["p-para"], f"{overlap['p-para']:.0%} of its 13-grams shared", WENG),
        ("p-parquet", "gsmbench", "gb-8", "exact", 1.0, "exact after normalisation", JAMES),
        ("p-reorder", "gsmbench", "gb-7", "numbers_reordered", 1.0, "same text, numbers reordered", ROBE),
    ]
    assert got == [{
        "problem_id": pid, "stage": "decontaminate", "reason": "contaminated", "scope": "problem",
        "detail": f"{bench} item {item!r} ({how}): {text[:120]!r}",
        "payload": {"question": PROBLEMS[pid][0], "benchmark": bench, "item_id": item, "match": kind, "overlap": ov},
    } for pid, bench, item, kind, ov, how, text in expected]
    traj = _table(layout, "trajectories")
    assert sorted({t["problem_id"] for t in traj}) == ["p-badref", "p-dup", "p-process", "p-ref"]
    clean = summary["clean"]
    assert clean["problems_contaminated"] == 4
    assert clean["contaminated_by_benchmark"] == {"gsmbench": 2, "mathbench": 2}
    assert clean["decontamination"] == {"rule": "lm-eval", "ngram": 13, "threshold": 0.0,
                                        "sets": ["mathbench", "gsmbench"]}
    c = summary["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (8, 4, 4)
    # The dataset card states the same counts (issue 20: summary, report and card).
    card = open(layout.card_path, encoding="utf-8").read()
    assert ("Decontaminated against `mathbench`, `gsmbench` (rule `lm-eval`, 13-grams): 4 problem(s) rejected as "
            '`contaminated` {"gsmbench": 2, "mathbench": 2}, 0 step pair(s) as `contaminated_step_prompt`.') in card
    assert f"| duplicate trajectories (exact) | {clean['trajectories_duplicate_exact']} |" in card


def test_duplicates_stay_in_trajectories_but_form_no_rows(clean_run):
    layout, summary = clean_run
    traj = {t["id"]: t for t in _table(layout, "trajectories")}
    dup = {i: traj[f"p-dup/s{i}"] for i in range(8)}
    assert [dup[i]["duplicate_of"] for i in range(8)] == [None, "p-dup/s0", "p-dup/s0", None, None, "p-dup/s4", None,
                                                          None]
    assert [dup[i]["completion"] for i in range(8)] == [text for _, text in PLANTED]
    assert [dup[i]["verdict"] for i in range(8)] == ["correct"] * 3 + ["incorrect"] * 4 + ["correct"]
    assert not any(t["process_error"] for t in dup.values())
    prefs = [p for p in _table(layout, "preferences") if p["problem_id"] == "p-dup"]
    # The near-miss negatives (one number wrong) are picked over the distant failure (s3).
    assert sorted((p["chosen_sample_index"], p["rejected_sample_index"]) for p in prefs) == [(0, 4), (7, 6)]
    for p in prefs:
        c, r = dup[p["chosen_sample_index"]], dup[p["rejected_sample_index"]]
        assert p == {
            "id": f"p-dup/outcome/{c['sample_index']}-{r['sample_index']}", "problem_id": "p-dup", "prompt": c["prompt"],
            "chosen": [{"role": "assistant", "content": c["completion"]}],
            "rejected": [{"role": "assistant", "content": r["completion"]}], "pair_type": "outcome",
            "chosen_source": "policy", "chosen_sample_index": c["sample_index"],
            "rejected_sample_index": r["sample_index"], "step_index": None, "prefix": None, "labeler": None,
            "metadata": p["metadata"],  # JSON: compared parsed below
        }
        assert json.loads(p["metadata"]) == {"max_pairs_per_problem": 2, "policy": "nearest",
                                             "rejected_verdict_reason": r["verdict_reason"]}
    unpaired = sorted((u["sample_index"], u["label"]) for u in _table(layout, "unpaired") if u["problem_id"] == "p-dup")
    assert unpaired == [(0, True), (3, False), (4, False), (6, False), (7, True)]
    for pid in ("p-dup", "p-process", "p-ref", "p-badref"):  # no text twice within a problem
        texts = [u["completion"][0]["content"] for u in _table(layout, "unpaired") if u["problem_id"] == pid]
        assert texts and len(texts) == len(set(texts)), pid
    # p-dup: 1 exact; the replayed repeats: 5 in p-process (3 planted of 8), 6 in p-ref and p-badref (2 of 8).
    assert summary["clean"]["trajectories_duplicate_exact"] == 1 + 5 + 6 + 6
    assert summary["clean"]["trajectories_duplicate_near"] == 2
    # problem_stats still counts every sample (sampling statistics stay honest).
    stats = {r["problem_id"]: r for r in _table(layout, "problem_stats")}
    assert (stats["p-dup"]["samples"], stats["p-dup"]["correct"], stats["p-dup"]["incorrect"]) == (8, 4, 4)


def test_right_answer_wrong_process_is_never_chosen(clean_run):
    layout, summary = clean_run
    traj = {t["id"]: t for t in _table(layout, "trajectories")}
    # Three planted samples, replayed in turn over eight: s3 and s6 repeat s0 (and are its exact duplicates).
    assert [traj[f"p-process/s{i}"]["process_error"] for i in range(8)] == [True, False, False] * 2 + [True, False]
    assert [traj[f"p-process/s{i}"]["duplicate_of"] for i in range(8)] == [None] * 3 + [
        "p-process/s0", "p-process/s1", "p-process/s2", "p-process/s0", "p-process/s1"]
    assert traj["p-process/s0"]["verdict"] == "correct"  # the verdict itself is the verifier's
    prefs = [p for p in _table(layout, "preferences") if p["problem_id"] == "p-process"]
    assert [(p["chosen_sample_index"], p["rejected_sample_index"]) for p in prefs] == [(1, 2)]
    assert sorted((u["sample_index"], u["label"]) for u in _table(layout, "unpaired")
                  if u["problem_id"] == "p-process") == [(1, True), (2, False)]
    for p in _table(layout, "preferences"):
        if p["chosen_sample_index"] is not None:
            assert not traj[f"{p['problem_id']}/s{p['chosen_sample_index']}"]["process_error"]
    assert summary["clean"]["process_error_positives"] == 3  # flagged rows, duplicates included
    # Pairs avoided: p-process had 6 correct x 2 incorrect samples (cap 2 -> 2 pairs) and made 1; p-dup made
    # its 2; p-ref's pairs come from the reference and p-badref has no positive.
    assert summary["clean"]["pairs_avoided"] == 1 and summary["clean"]["suspect_negatives"] == 0
    assert summary["clean"]["pairing"] == "nearest"


def test_reference_solution_is_the_chosen_where_no_sample_is_correct(clean_run):
    layout, summary = clean_run
    traj = {t["id"]: t for t in _table(layout, "trajectories")}
    prefs = sorted((p for p in _table(layout, "preferences") if p["problem_id"] == "p-ref"), key=lambda p: p["id"])
    chosen = "The apples cost 3*4=12 dollars.\nWith the pears, 12+5=17 dollars.\nThe final answer is \\boxed{17}."
    assert [p | {"metadata": json.loads(p["metadata"])} for p in prefs] == [{
        "id": f"p-ref/outcome/ref-{i}", "problem_id": "p-ref", "prompt": traj[f"p-ref/s{i}"]["prompt"],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": REF_WRONG[i][1]}], "pair_type": "outcome",
        "chosen_source": "reference", "chosen_sample_index": None, "rejected_sample_index": i,
        "step_index": None, "prefix": None, "labeler": None,
        "metadata": {"max_pairs_per_problem": 2, "policy": "nearest", "rejected_verdict_reason": "answer_mismatch"},
    } for i in range(2)]
    # A reference holding a false claim (3*4=13) is no chosen; references never enter trajectories.
    assert not [p for p in _table(layout, "preferences") if p["problem_id"] == "p-badref"]
    assert not [t for t in traj.values() if t["sample_index"] < 0]
    assert summary["clean"]["reference_chosen_pairs"] == 2
    assert {p["chosen_source"] for p in _table(layout, "preferences") if p["problem_id"] != "p-ref"} == {"policy"}


def test_flags_set_the_clean_config_keys():
    import argparse

    from counterpoint.config import RunConfig, add_flags, apply_overrides

    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--decontaminate", "a.jsonl", "--decontaminate", "gs://b/test.parquet",
                              "--decontamination-rule", "open-r1", "--pairing", "round-robin", "--reference-chosen"])
    cfg = apply_overrides(RunConfig(), vars(args))
    assert cfg.decontamination == DecontaminationConfig(paths=["a.jsonl", "gs://b/test.parquet"], rule="open-r1")
    assert (cfg.pairing.strategy, cfg.pairing.reference_chosen) == ("round-robin", True)
    defaults = RunConfig()
    assert (defaults.pairing.strategy, defaults.pairing.reference_chosen, defaults.decontamination.enabled) == (
        "nearest", False, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--pairing", "random"])


def test_guard_step_prompts_drops_the_pair_with_a_row_reject():
    from counterpoint.transforms.clean import GuardStepPrompts

    pair = {"id": "q/step/omegaprm/s1", "prefix": NATALIA, "pair_type": "step"}
    keep = {"id": "q/outcome/0-1", "prefix": None, "pair_type": "outcome"}
    state = corpus.new_state({"problem_id": "q", "question": "How many clips?"}).evolve(preferences=[pair, keep])
    (out,) = list(GuardStepPrompts(13).process(state, _index()))
    # The prompt is the question + the prefix: every 13-gram inside the prefix is shared, none across the seam.
    shared, total = len(T.tokens(NATALIA)) - 12, len(T.tokens("How many clips? " + NATALIA)) - 12
    assert out.preferences == [keep]
    (reject,) = out.rejects
    assert {k: reject[k] for k in ("problem_id", "stage", "reason", "scope", "detail")} == {
        "problem_id": "q", "stage": "decontaminate", "reason": "contaminated_step_prompt", "scope": "row",
        "detail": f"pair q/step/omegaprm/s1: mathbench item 'mb/1' ({shared / total:.0%} of its 13-grams shared): "
                  f"{NATALIA[:120]!r}"}
    assert json.loads(reject["payload"]) == {"pair_id": "q/step/omegaprm/s1", "benchmark": "mathbench", "item_id": "mb/1"}


def test_a_process_error_solution_is_no_correct_evidence_for_the_labeller():
    from counterpoint.labeling.common import trajectory_rollout

    row = _rows([("C", "Step 1: 3 * 4 = 13.\n\nThe answer is 17.")])[0] | {"process_error": True}
    r = trajectory_rollout(row, "paragraph")
    assert (r.verdict, r.reason, r.is_correct) == ("unknown", "process_error", False)
    r = trajectory_rollout(row | {"process_error": False}, "paragraph")
    assert (r.verdict, r.reason, r.is_correct) == ("correct", None, True)


def test_duplicates_are_no_labelling_targets(tmp_path):
    """A labelling run (scripted chain policy, OmegaPRM): no step row or step pair for a duplicate trajectory."""
    from counterpoint.generators.scripted import chain_problem

    problems = [chain_problem(5, i, num_steps=2) for i in range(3)]
    (tmp_path / "chain.jsonl").write_text("".join(json.dumps(
        {"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]}) + "\n" for p in problems))
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp_path / "chain.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "chain", "step_error_rate": 0.5}},
        "samples_per_problem": 16, "labeler": "omegaprm", "labeling": {"omegaprm": {"k": 4, "search_limit": 10}},
        "validate": False, "report": False, "output": str(tmp_path / "out"),
    })
    run(IN_PROCESS, config=cfg)
    layout = DatasetLayout(str(tmp_path / "out"))
    dups = {(t["problem_id"], t["sample_index"]) for t in _table(layout, "trajectories") if t["duplicate_of"]}
    wrong_dups = {(t["problem_id"], t["sample_index"]) for t in _table(layout, "trajectories")
                  if t["duplicate_of"] and t["verdict"] == "incorrect"}
    assert dups and wrong_dups  # the planted chain samples repeat themselves (guards the test itself)
    labelled = {(r["problem_id"], r["sample_index"]) for r in _table(layout, "step_labels")}
    assert labelled and not labelled & dups
    paired = {(p["problem_id"], p["rejected_sample_index"]) for p in _table(layout, "preferences")}
    assert paired and not paired & dups


def test_contaminated_step_dpo_prompts_are_dropped_in_a_labelling_run(tmp_path):
    """Two identical OmegaPRM runs on chain problems; the second names an evaluation set holding one step pair's
    prefix: exactly the pairs whose prompt (question + prefix) shares an 8-gram with it are dropped."""
    from counterpoint.generators.scripted import chain_problem

    problems = [chain_problem(7, i, num_steps=6) for i in range(3)]
    (tmp_path / "chain.jsonl").write_text("".join(json.dumps(
        {"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]}) + "\n" for p in problems))
    base = {
        "source": {"kind": "file", "paths": [str(tmp_path / "chain.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": "chain", "step_error_rate": 0.15}},
        "samples_per_problem": 8, "labeler": "omegaprm", "labeling": {"omegaprm": {"k": 4, "search_limit": 10}},
        "validate": False, "report": False,
    }
    run(IN_PROCESS, config=from_dict(base | {"output": str(tmp_path / "a")}))
    before = _table(DatasetLayout(str(tmp_path / "a")), "preferences")
    with_prefix = sorted((p for p in before if p["prefix"] and len(T.tokens(p["prefix"])) >= 8), key=lambda p: p["id"])
    assert with_prefix
    target = with_prefix[0]
    (tmp_path / "bench.jsonl").write_text(json.dumps({"id": "leak-1", "question": target["prefix"]}) + "\n")
    index = EvalIndex([EvalItem("bench", "leak-1", target["prefix"])], 8)
    questions = {p["problem_id"]: p["question"] for p in problems}
    expected = {p["id"] for p in before if p["prefix"] and index.check(questions[p["problem_id"]] + "\n" + p["prefix"])}
    assert target["id"] in expected
    assert all(index.check(q) is None for q in questions.values())  # the problems themselves are clean

    summary = run(IN_PROCESS, config=from_dict(base | {
        "output": str(tmp_path / "b"),
        "decontamination": {"paths": [str(tmp_path / "bench.jsonl")], "rule": "open-r1"}}))
    layout = DatasetLayout(str(tmp_path / "b"))
    after = _table(layout, "preferences")
    assert sorted(p["id"] for p in after) == sorted(p["id"] for p in before if p["id"] not in expected)
    rejects = [r for r in _table(layout, "rejects") if r["reason"] == "contaminated_step_prompt"]
    assert sorted(json.loads(r["payload"])["pair_id"] for r in rejects) == sorted(expected)
    assert {(r["stage"], r["scope"]) for r in rejects} == {("decontaminate", "row")}
    assert summary["clean"]["step_pairs_contaminated"] == len(expected)
    assert summary["clean"]["problems_contaminated"] == 0
