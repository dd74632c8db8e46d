"""Issue 22: mistake -> correction traces from proved first wrong steps, verified, with flip classes.

Planted scripted worlds (chain problems, ``counterpoint.testing.corrections``): a false arithmetic
step (overshoot slips: false claims), a misread quantity (true arithmetic on a wrong operand: only
the search finds it), and "rescued" chains (the step after a slip sometimes repairs it). A scripted
corrector repairs the wrong step after a cue with a planted rate, in a planted way.
"""

from __future__ import annotations

import json
import re

import pytest

from _fakes import shard_rule_checker
from counterpoint.generators.base import GenerationRequest, SamplingParams
from counterpoint.generators.scripted import ScriptedGenerator, _rng, chain_problem
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
from counterpoint.labeling import corrections as C
from counterpoint.rl.stats import wilson_interval
from counterpoint.schemas import records
from counterpoint.testing.chain import chain_verify
from counterpoint.testing.corrections import CHAIN_CORRECTOR, ChainCorrectorPolicy, chain_step_is_wrong
from counterpoint.testing.worlds import sampled_chain_items

SAMPLING = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=256)
WORLDS = {
    "false_claim": dict(step_error_rate=0.12, slip="overshoot"),
    "misread": dict(step_error_rate=0.12, slip="misread"),
    "rescued": dict(step_error_rate=0.12, slip="overshoot", repair_rate=0.5, no_answer_rate=0.15),
}


def labelled_world(world, n=24, steps=6, seed=3, **planted):
    policy = ChainCorrectorPolicy(**WORLDS[world], **planted)
    problems = [chain_problem(seed, i, num_steps=steps) for i in range(n)]
    items = sampled_chain_items(policy, problems, 6, seed_of=lambda i: seed * 1000 + i)
    results = label_problems(items, ScriptedGenerator(policy), chain_verify,
                             LabelerConfig(omegaprm=OmegaPRMConfig(k=4, parallel_searches=1)), sampling=SAMPLING)
    by_id = {r.problem_id: r for r in results}
    return policy, [C.CorrectionItem(it.problem, it.trajectories, by_id[it.problem["problem_id"]].step_labels)
                    for it in items]


def correct(policy, items, cfg=None, **kw):
    cfg = cfg or C.CorrectionsConfig(enabled=True, samples_per_cue=4)
    return C.correct_problems(items, ScriptedGenerator(policy), chain_verify, cfg, sampling=SAMPLING,
                              system_prompt=None, run_seed=0, **kw)


def planted_of(policy, row, question, n=4):
    """The corrector's own draws for this row (same request: prefix, cue, seed, n; same sample index)."""
    prefix = C.SEPARATOR.join([row["prefix"], row["cue"]])
    req = GenerationRequest.continuation(None, question, prefix, n=n, params=SAMPLING, seed=row["seed"])
    return policy.draw(_rng(req.cache_key(ScriptedGenerator(policy).model_fingerprint), row["sample_index"]))


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_planted_worlds_rows_are_really_wrong_rates_and_flip_classes_match(world):
    policy, items = labelled_world(world, recover_rate=0.4, revise_share=0.5, restart_share=0.25)
    results = correct(policy, items)
    question = {it.problem["problem_id"]: it.problem["question"] for it in items}
    traj = {(it.problem["problem_id"], t["sample_index"]): t for it in items for t in it.trajectories}
    rows = [r for res in results for r in res.rows]
    assert len(rows) >= 40, (world, len(rows))
    for r in rows:
        t = traj[(r["problem_id"], r["negative_sample_index"])]
        # the step marked wrong is really wrong; the negative is a real, non-format-failure negative
        assert chain_step_is_wrong(question[r["problem_id"]], t["steps"], r["wrong_step_index"]), r
        assert t["verdict"] == "incorrect" and t["verdict_reason"] == "answer_mismatch"
        assert r["wrong_step_source"] in ("search", "claim", "terminal")
        assert r["prefix"] == "".join(t["steps"][: r["wrong_step_index"] + 1]).rstrip()
        records.table("corrections").conform(r)
        recover, planted = planted_of(policy, r, question[r["problem_id"]])
        assert r["kept"] == recover == (r["verdict"] == "correct")
        assert r["flip_class"] == planted
    from counterpoint.labeling.arithmetic import false_claims

    if world == "misread":  # true arithmetic on a misread operand: only the search locates it
        assert {r["wrong_step_source"] for r in rows} == {"search"}
        assert not any(false_claims(r["wrong_step"]) for r in rows)
    if world == "false_claim":  # every marked step states a false claim (search and claim agree on it)
        assert all(false_claims(r["wrong_step"]) for r in rows)
    summary = C.summarize(rows)
    assert summary["recovery_lo"] <= 0.4 <= summary["recovery_hi"], summary
    kept = [r for r in rows if r["kept"]]
    assert summary["genuine_flip_share"] == sum(r["flip_class"] == "revise" for r in kept) / len(kept)
    assert set(summary["flip_classes"]) == {"revise", "restart", "ignore"} and all(summary["flip_classes"].values())


def test_format_failures_evidence_and_verdict_sources_are_never_used():
    policy, items = labelled_world("rescued", recover_rate=0.5)
    # Plant a step_labels row (a located first error) on every format-failure negative: still skipped.
    planted = 0
    for it in items:
        for t in it.trajectories:
            if t["verdict_reason"] == "no_final_answer":
                it.step_labels.append({"problem_id": it.problem["problem_id"], "sample_index": t["sample_index"],
                                       "completions": [s.strip() for s in t["steps"]], "first_error_index": 0,
                                       "first_error_source": "search"})
                planted += 1
    assert planted >= 5
    results = correct(policy, items)
    used = {(res.problem_id, r["negative_sample_index"]) for res in results for r in res.rows}
    n_format = sum(t["verdict_reason"] == "no_final_answer" for it in items for t in it.trajectories)
    assert n_format == planted and sum(res.skipped.get(C.SKIP_FORMAT_FAILURE, 0) for res in results) == planted
    assert used and sum(res.skipped.get(C.SKIP_NOT_LOCATED, 0) for res in results) >= 0
    for it in items:
        for t in it.trajectories:
            if t["verdict_reason"] == "no_final_answer":
                assert (it.problem["problem_id"], t["sample_index"]) not in used
        for row in it.step_labels:
            if row["first_error_source"] not in C.ELIGIBLE_SOURCES:
                assert (row["problem_id"], row["sample_index"]) not in used


def test_per_problem_recovery_rate_and_wilson_interval():
    policy, items = labelled_world("false_claim", n=8, recover_rate=0.5)
    for res in correct(policy, items):
        if not res.rows:
            continue
        n, k = len(res.rows), sum(r["kept"] for r in res.rows)
        lo, hi = wilson_interval(k, n)
        lo, hi = min(lo, k / n), max(hi, k / n)
        for r in res.rows:
            assert (r["problem_attempted"], r["problem_recovered"], r["problem_recovery_rate"],
                    r["problem_recovery_lo"], r["problem_recovery_hi"]) == (n, k, k / n, lo, hi)


def test_recovery_interval_holds_its_rate_at_zero_and_one():
    # wilson_interval(0, 7) rounds to a low bound of ~1e-17 > 0: the gate's ordered rule would fail the row
    for k, n in ((0, 7), (0, 48), (10, 10), (13, 13), (3, 7)):
        rows = C.with_recovery([{"problem_id": "p", "kept": i < k} for i in range(n)])
        r = rows[0]
        assert r["problem_recovery_lo"] <= r["problem_recovery_rate"] <= r["problem_recovery_hi"]
        assert (r["problem_recovery_lo"] == 0.0) == (k == 0) and (r["problem_recovery_hi"] == 1.0) == (k == n)


def test_rows_do_not_depend_on_batching():
    policy, items = labelled_world("misread", n=6, recover_rate=0.5)
    together = [r for res in correct(policy, items) for r in res.rows]
    apart = [r for it in items for res in correct(policy, [it]) for r in res.rows]
    assert together == apart and together


def test_gold_never_in_a_prompt_or_cue():
    policy, items = labelled_world("false_claim", n=10, recover_rate=0.5)
    gold = {it.problem["problem_id"]: it.problem["gold_answer"] for it in items}
    question = {it.problem["problem_id"]: it.problem["question"] for it in items}
    rows = [r for res in correct(policy, items) for r in res.rows]
    for r in rows:
        # the prompt is the question; the only added text is the prefix (the model's own steps) and the cue
        assert [m["content"] for m in r["prompt"]] == [question[r["problem_id"]]]
        assert not re.search(rf"(?<!\d){re.escape(gold[r['problem_id']])}(?!\d)", r["cue"])
    assert C.gives_gold("Hint: it is 42.", "42") and not C.gives_gold("Check step 142 again.", "42")
    # a cue holding a problem's gold is never used for that problem (and counted)
    pid = items[0].problem["problem_id"]
    leaky = C.CorrectionsConfig(enabled=True, samples_per_cue=1,
                                cues=["Wait, that step is wrong.", f"Hmm, is it {gold[pid]}?"])
    (res,) = correct(policy, items[:1], leaky)
    assert res.rows and {r["cue"] for r in res.rows} == {"Wait, that step is wrong."}
    assert res.skipped[C.SKIP_CUE_GIVES_GOLD] == len({r["negative_sample_index"] for r in res.rows})


def test_flip_class_rules():
    from fractions import Fraction

    assert C.flip_class("\n\nLet me start over.\n\nStep 1: 2 + 3 = 5.\n\nThe answer is 5.", "5", None) == "restart"
    assert C.flip_class("\n\nThat is wrong: 4 + 4 = 8.\n\nThe answer is 8.", "8", Fraction(8)) == "revise"
    assert C.flip_class("\n\nSo 4 + 4 = 8.\n\nThe answer is 16.", "16", Fraction(8)) == "revise"
    assert C.flip_class("\n\nStep 3: 8 * 2 = 16.\n\nThe answer is 16.", "16", Fraction(8)) == "ignore"
    # a retraction only after the final answer is not a revision
    assert C.flip_class("\n\nThe answer is 16. I was wrong before.", "16", None) == "ignore"


def test_config_checks_and_flags():
    from counterpoint.config import RunConfig, apply_overrides, from_dict
    from counterpoint.errors import ConfigError

    with pytest.raises(ConfigError, match="corrections.samples_per_cue"):
        from_dict({"corrections": {"samples_per_cue": 2.0}})
    with pytest.raises(ValueError, match="needs? .*labeler|add --labeler"):
        from_dict({"corrections": {"enabled": True}})
    cfg = apply_overrides(RunConfig(labeler="omegaprm"), {"cp_corrections": True, "cp_corrector_model": "bigger"})
    assert cfg.corrections.enabled and cfg.corrections.cues == list(C.DEFAULT_CUES) and cfg.corrector.model == "bigger"
    assert from_dict({"labeler": "omegaprm", "corrections": {"cues": "Hmm, check it."}}).corrections.cues == [
        "Hmm, check it."]
    assert "corrections" in cfg.configs() and "corrections" not in RunConfig(labeler="omegaprm").configs()
    assert cfg.output_fingerprint() != RunConfig(labeler="omegaprm").output_fingerprint()


# ---------------------------------------------------------------------------
# The stage in a run, the command, the exports (scripted engine, FnApiRunner)
# ---------------------------------------------------------------------------
IN_PROCESS = ["--runner=FnApiRunner"]


def _run_config(tmp_path, corrections: bool, exports=(), report=False):
    from counterpoint.config import from_dict

    problems = [chain_problem(11, i, num_steps=5) for i in range(6)]
    path = tmp_path / "chain.jsonl"
    path.write_text("".join(json.dumps({"id": p["problem_id"], "question": p["question"],
                                        "answer": p["gold_answer"]}) + "\n" for p in problems))
    return problems, from_dict({
        "source": {"kind": "file", "paths": [str(path)], "mapping": {"question": "question", "answer": "answer",
                                                                     "id": "id"}},
        "generator": {"kind": "scripted", "scripted": {"policy": CHAIN_CORRECTOR, "step_error_rate": 0.15,
                                                       "recover_rate": 0.5, "revise_share": 0.6,
                                                       "restart_share": 0.2}},
        "samples_per_problem": 6, "labeler": "omegaprm", "labeling": {"omegaprm": {"k": 4}},
        "corrections": {"enabled": corrections, "samples_per_cue": 3}, "exports": list(exports),
        "report": report, "num_shards": 1, "output": str(tmp_path / "out"),
    })


def _read(out, config):
    from counterpoint import storage

    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def test_run_with_corrections_publishes_validated_config_and_exports(tmp_path):
    from counterpoint.pipelines.generate_corpus import run

    problems, cfg = _run_config(tmp_path, True, ["correction-sft", "correction-dpo"], report=True)
    summary = run(IN_PROCESS, config=cfg)
    assert summary["validation"]["success"] is True
    out = tmp_path / "out"
    from counterpoint import storage

    live = storage.OutputLayout(str(out)).live_version()
    card = storage.read_text(live.card_path) if hasattr(live, "card_path") else (out / "README.md").read_text()
    assert "### Corrections (mistake -> correction traces)" in card and "recovery rate" in card
    assert '<section id="corrections"><h2>Corrections</h2><table' in storage.read_text(live.report_path)
    rows = _read(out, "corrections")
    assert rows and summary["written"]["corrections"]["rows"] == len(rows)
    gold = {p["problem_id"]: p["gold_answer"] for p in problems}
    question = {p["problem_id"]: p["question"] for p in problems}
    traj = {(t["problem_id"], t["sample_index"]): t for t in _read(out, "trajectories")}
    for r in rows:
        t = traj[(r["problem_id"], r["negative_sample_index"])]
        assert chain_step_is_wrong(question[r["problem_id"]], t["steps"], r["wrong_step_index"])
        assert (r["verdict"] == "correct") == r["kept"] == (r["final_answer"] == gold[r["problem_id"]])
    sft, dpo = _read(out, "correction_sft"), _read(out, "correction_dpo")
    assert len(sft) == sum(r["kept"] for r in rows) and dpo
    by_id = {r["id"]: r for r in rows}
    for s in sft:
        src = by_id[s["id"]]
        assert s["prompt"][-1] == {"role": "assistant", "content": src["prefix"] + "\n\n" + src["cue"]}
        assert s["completion"] == [{"role": "assistant", "content": src["correction"]}]
        # beyond the question and the model's own prefix, the prompt adds only the cue: never the gold
        added = s["prompt"][-1]["content"][len(src["prefix"]):]
        assert gold[s["problem_id"]] not in re.findall(r"-?\d+", added)
        assert src["wrong_step"].strip() in s["prompt"][-1]["content"]  # the mistake is in the prompt
    for d in dpo:
        assert d["chosen"] != d["rejected"] and d["prompt"][-1]["role"] == "assistant"
        assert d["prompt"][-1]["content"].endswith("\n\n" + d["cue"]) and d["cue"] in cfg.corrections.cues
        assert gold[d["problem_id"]] not in re.findall(r"-?\d+", d["cue"])


def test_corrections_command_adds_the_config_through_publish(tmp_path):
    from counterpoint import storage
    from counterpoint.cli import main
    from counterpoint.pipelines.generate_corpus import run

    _, cfg = _run_config(tmp_path, False)
    run(IN_PROCESS, config=cfg)
    out = tmp_path / "out"
    layout = storage.OutputLayout(str(out))
    before = layout.manifest().live
    labels = _read(out, "step_labels")
    assert main(["corrections", str(out), "--samples-per-cue", "2"]) == 0
    layout.refresh()
    assert layout.manifest().live != before and layout.manifest().previous == before
    rows = _read(out, "corrections")
    assert rows and {r["sample_index"] for r in rows} == {0, 1}  # --samples-per-cue 2
    assert _read(out, "step_labels") == labels  # carried over unchanged
    from counterpoint.dataset.verdicts import Verdict

    verdict = Verdict.require(layout.live_version(), "test", ["corrections", "step_labels", "trajectories"])
    assert verdict.configs["corrections"].success
    assert main(["export", str(out), "--format", "correction-sft"]) == 0
    assert _read(out, "correction_sft")


def test_corrections_suite_fails_broken_rows():
    """The GX shard suite: a kept row must be verified correct with a flip class; an unkept row has no class."""
    good = {"id": "a", "problem_id": "p", "negative_sample_index": 1, "prompt": [{"role": "user", "content": "q"}],
            "prefix": "Step 1: 2 + 2 = 5.", "wrong_step_index": 0, "wrong_step_source": "claim",
            "wrong_step": "Step 1: 2 + 2 = 5.", "cue": "Wait, that step is wrong.", "correction": " 2 + 2 = 4.",
            "final_answer": "4", "verdict": "correct", "verdict_reason": None, "kept": True, "flip_class": "revise",
            "sample_index": 0, "seed": 1, "finish_reason": "stop", "num_generated_tokens": 5, "model_id": "m",
            "corrector": "engine", "problem_attempted": 2, "problem_recovered": 1, "problem_recovery_rate": 0.5,
            "problem_recovery_lo": 0.09, "problem_recovery_hi": 0.91}
    failed_rules = shard_rule_checker("corrections")

    assert failed_rules(good) == []
    assert failed_rules(good | {"verdict": "incorrect", "verdict_reason": "answer_mismatch"}) == [
        "value_set where kept == True"]
    assert failed_rules(good | {"flip_class": None}) == ["not_null where kept == True"]
    assert failed_rules(good | {"kept": False}) == ["null where kept == False"]
    assert failed_rules(good | {"problem_recovery_lo": 0.6}) == ["ordered"]
