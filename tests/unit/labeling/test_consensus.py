"""Consensus filtering (Qwen 2025): judge prompts, reply parsing, keep-agreeing / annotate / off, and the
scripted chain judge end to end on labelled chain problems."""

from __future__ import annotations

import pytest

from counterpoint.generators.base import SamplingParams
from counterpoint.generators.scripted import (
    ChainPolicy,
    ScriptedGenerator,
    chain_problem,
)
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
from counterpoint.labeling.consensus import (
    PROCESSBENCH_TEMPLATE,
    ConsensusConfig,
    agrees,
    apply_consensus,
    judge_prompt,
    judge_requests,
    judgements_from,
    parse_judgement,
    read_judge_prompt,
    solution_targets,
)
from counterpoint.testing.chain import ChainJudgePolicy, chain_first_error, chain_verify
from counterpoint.testing.worlds import sampled_chain_items
from counterpoint.schemas import records, rows


def label_row(pid, idx, steps, e):
    return rows.step_label_row(
        problem_id=pid, sample_index=idx, prompt=f"question of {pid}", steps=steps,
        labels=[i < e for i in range(len(steps))], mc_values=[0.5] * len(steps), mc_measured=[True] * len(steps),
        n_rollouts_per_step=[4] * len(steps), first_error_index=e, first_error_source="search",
        labeler="omegaprm", labeler_params="{}",
    )


def value_row(pid, idx, t):
    return rows.step_value_row(problem_id=pid, sample_index=idx, labeler="omegaprm", step_index=t, step="s",
                               q_value=0.5, advantage=0.0, measured=True, n_rollouts=4, n_correct=2,
                               is_first_pit=False, within_noise=True)


def pair(pid, idx, pair_type, labeler="omegaprm"):
    return rows.preference_row(id=f"{pid}/{pair_type}/{idx}", problem_id=pid, prompt=[{"role": "user", "content": "q"}],
                               chosen="good", rejected=f"bad {idx}", pair_type=pair_type, rejected_sample_index=idx,
                               labeler=labeler)


def test_config_validation_names_the_key():
    assert ConsensusConfig().mode == "off" and ConsensusConfig().temperature == 0.0
    with pytest.raises(ValueError, match="consensus.mode"):
        ConsensusConfig(mode="drop")
    with pytest.raises(ValueError, match="consensus.tolerance"):
        ConsensusConfig(tolerance=-1)
    with pytest.raises(ValueError, match="tagged_response"):
        ConsensusConfig(prompt_template="{problem} only")


def test_judge_requests_are_processbench_prompts():
    row = label_row("p1", 3, ["Step 1: 2 + 3 = 5.\n\n", "The answer is 5."], 1)
    (req,) = judge_requests([row], {"p1": {"question": "Start with 2. Then add 3."}}, "Be a strict grader.")
    assert req.request_id == "p1/s3/omegaprm" and req.n == 1 and not req.continue_final_message
    assert req.params == SamplingParams(temperature=0.0, top_p=1.0, max_tokens=1024)
    expected = judge_prompt("Start with 2. Then add 3.", ["Step 1: 2 + 3 = 5.", "The answer is 5."])
    assert req.messages == (("system", "Be a strict grader."), ("user", expected))
    assert "<paragraph_0>\nStep 1: 2 + 3 = 5.\n</paragraph_0>\n\n<paragraph_1>\nThe answer is 5.\n</paragraph_1>" in expected
    assert expected.endswith("Please put your final answer (i.e., the index) in \\boxed{}.")
    assert read_judge_prompt(expected) == ("Start with 2. Then add 3.", ["Step 1: 2 + 3 = 5.", "The answer is 5."])
    # deterministic seeds per row; the question falls back to the row's prompt
    again = judge_requests([row], {}, None, config=ConsensusConfig(max_tokens=64))
    assert again[0].seed == req.seed and again[0].params.max_tokens == 64
    assert read_judge_prompt(again[0].messages[-1][1])[0] == "question of p1"
    assert judge_requests([row], {}, None, config=ConsensusConfig(seed=1))[0].seed != req.seed
    assert "{problem}" in PROCESSBENCH_TEMPLATE


@pytest.mark.parametrize("text,expected", [
    ("The earliest error is in paragraph 2. \\boxed{2}", 2),
    ("All paragraphs are correct. \\boxed{-1}", -1),
    ("\\boxed{ 0 }", 0),
    ("first \\boxed{1}, no wait \\boxed{3}", 3),
    ("Final answer: 4", 4),
    ("\\boxed{-2}", None),
    ("\\boxed{two}", None),
    ("I am not sure.", None),
    ("", None),
    (None, None),
])
def test_parse_judgement(text, expected):
    assert parse_judgement(text) == expected


def test_agreement_rule():
    assert agrees(2, 2) is True and agrees(2, 3) is False and agrees(2, 3, tolerance=1) is True
    assert agrees(2, -1) is False and agrees(None, -1) is True and agrees(2, None) is None


def _world():
    labels = [label_row("p", 1, ["a", "b", "c"], 1), label_row("p", 2, ["a", "x", "c"], 2),
              label_row("p", 3, ["a", "y"], 0), label_row("q", 1, ["z", "w"], 1)]
    values = [value_row(pid, idx, t) for pid, idx, n in (("p", 1, 3), ("p", 2, 3), ("p", 3, 2), ("q", 1, 2))
              for t in range(n)]
    prefs = [pair("p", 1, "step"), pair("p", 2, "step"), pair("p", 2, "first_pit"), pair("p", 2, "outcome"),
             pair("p", 3, "step"), pair("q", 1, "first_pit"), pair("p", 2, "step", labeler="mc")]
    judgements = {"p/s1/omegaprm": 1, "p/s2/omegaprm": 0, "p/s3/omegaprm": None}  # q/s1 is not judged
    return labels, values, prefs, judgements


def test_keep_agreeing_keeps_only_parsed_agreement_and_drops_the_rest_everywhere():
    labels, values, prefs, judgements = _world()
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing")
    assert [(r["id"], r["judge_first_error_index"], r["judge_agrees"]) for r in kept["step_labels"]] == [
        ("p/s1/omegaprm", 1, True)]
    assert [(v["problem_id"], v["sample_index"]) for v in kept["step_values"]] == [("p", 1)] * 3
    # only the agreeing solution's step pair and the outcome pair (never judged: not step-level) stay
    assert [p["id"] for p in kept["preferences"]] == ["p/step/1", "p/outcome/2"]

    def reject(reason, pid, key, detail):
        return records.make_reject(stage="label", reason=reason, problem_id=pid, scope="row", detail=detail, key=key)

    assert rejects == [reject("consensus_disagreement", "p", "p/s2/omegaprm", "label first error 2, judge 0"),
                       reject("consensus_unparsable", "p", "p/s3/omegaprm", "label first error 0, judge None"),
                       reject("consensus_not_judged", "q", "q/s1/omegaprm", "no judge reply"),
                       reject("consensus_not_judged", "p", "p/s2/mc", "no judge reply")]
    assert stats == {"judged": 3, "agreed": 1, "disagreed": 1, "unparsable": 1, "not_judged": 2,
                     "agreement_rate": 0.5, "dropped_step_labels": 3, "dropped_step_values": 7,
                     "dropped_preferences": 5, "kept_step_labels": 1, "kept_step_values": 3, "kept_preferences": 2}
    records.rows_to_table("step_labels", kept["step_labels"])
    # inputs are not modified (Beam forbids mutating inputs)
    assert all(r["judge_agrees"] is None for r in labels)


def test_values_only_solutions_are_judged_on_their_mc_first_error():
    # a negative with step values but no step-label row (e.g. its search was unresolved): its first error
    # for the judge is its first measured zero; its values and first-pit pair live or die with that judgement
    vals = [rows.step_value_row(problem_id="p", sample_index=5, labeler="mc", step_index=t, step=f"s{t}",
                                q_value=q, advantage=None if q is None else 0.0, measured=q is not None, n_rollouts=4,
                                n_correct=0, is_first_pit=t == 2, within_noise=False) for t, q in enumerate([0.5, None, 0.0, 0.0])]
    (target,) = solution_targets([], vals)
    assert target == {"id": "p/s5/mc", "problem_id": "p", "prompt": "", "completions": ["s0", "s1", "s2", "s3"],
                      "first_error_index": 2}
    pit = pair("p", 5, "first_pit", labeler="mc")
    kept, rejects, _ = apply_consensus([], vals, [pit], {"p/s5/mc": 2}, "keep-agreeing")
    assert (len(kept["step_values"]), kept["preferences"], rejects) == (4, [pit], [])
    kept, rejects, _ = apply_consensus([], vals, [pit], {"p/s5/mc": 1}, "keep-agreeing")
    assert (kept["step_values"], kept["preferences"], [r["reason"] for r in rejects]) == (
        [], [], ["consensus_disagreement"])


def test_annotate_keeps_and_flags_and_off_is_untouched():
    labels, values, prefs, judgements = _world()
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "annotate")
    assert rejects == [] and len(kept["step_labels"]) == 4 and kept["preferences"] == prefs
    assert [r["judge_agrees"] for r in kept["step_labels"]] == [True, False, None, None]
    assert [r["judge_first_error_index"] for r in kept["step_labels"]] == [1, 0, None, None]
    assert stats["agreement_rate"] == 0.5 and stats["dropped_step_labels"] == 0
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "off")
    assert kept == {"step_labels": labels, "step_values": values, "preferences": prefs} and rejects == []
    assert stats["judged"] == 0 and stats["agreement_rate"] is None
    # tolerance: the judge's 0 against the label 2 agrees within 2 steps
    _, _, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing", tolerance=2)
    assert (stats["agreed"], stats["disagreed"]) == (2, 0)
    with pytest.raises(ValueError, match="consensus mode"):
        apply_consensus(labels, values, prefs, judgements, "sometimes")


def _labelled_chain(policy, n=8, steps=8):
    probs = [chain_problem(11, i, num_steps=steps) for i in range(n)]
    items = sampled_chain_items(policy, probs, 6)
    results = label_problems(items, ScriptedGenerator(policy), chain_verify,
                             LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=6)),
                             sampling=SamplingParams(temperature=0.8, top_p=0.95, max_tokens=256))
    problems = {p["problem_id"]: p for p in probs}
    return problems, results


def _judge(problems, labels, error_rate, unparsable_rate=0.0):
    judge = ScriptedGenerator(ChainJudgePolicy(error_rate=error_rate, unparsable_rate=unparsable_rate),
                              model_id="scripted/judge")
    reqs = judge_requests(labels, problems)
    return judgements_from(labels, [c[0].text for c in judge.generate(reqs)])


def test_scripted_judge_end_to_end_filters_wrong_labels():
    # Misread operands are true arithmetic (no claim catches them) and repairs make MC non-monotone: some
    # labels are wrong. A perfect judge keeps exactly the rows whose label is the ground truth.
    policy = ChainPolicy(step_error_rate=0.1, slip="misread", repair_rate=0.25)
    problems, results = _labelled_chain(policy)
    labels = [r for res in results for r in res.step_labels]
    values = [v for res in results for v in res.step_values]
    prefs = [p for res in results for p in res.preferences]
    truth = {r["id"]: chain_first_error(problems[r["problem_id"]]["question"], r["completions"]) for r in labels}
    right = {rid for rid, t in truth.items() if t == next(r for r in labels if r["id"] == rid)["first_error_index"]}
    assert 0 < len(right) < len(labels)  # the world is hard enough to have wrong labels
    targets = solution_targets(labels, values)
    judgements = _judge(problems, targets, error_rate=0.0)
    assert {rid: judgements[rid] for rid in truth} == {rid: (-1 if t is None else t) for rid, t in truth.items()}
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing")
    assert {r["id"] for r in kept["step_labels"]} == right
    agreeing = sum(judgements[t["id"]] == t["first_error_index"] for t in targets)
    assert stats["agreement_rate"] == pytest.approx(agreeing / len(targets)) and stats["not_judged"] == 0
    assert len(rejects) == len(targets) - agreeing and {r["reason"] for r in rejects} == {"consensus_disagreement"}
    dropped = {(r["problem_id"], r["sample_index"]) for r in labels if r["id"] not in right}
    assert not [p for p in kept["preferences"] if p["pair_type"] in ("step", "first_pit")
                and (p["problem_id"], p["rejected_sample_index"]) in dropped]


@pytest.mark.parametrize("judge_kind", ["unparsable", "disagreeing"])
def test_a_judge_that_never_agrees_keeps_no_step_level_row(judge_kind):
    # Issue 15: an always-unparsable judge keeps 0 rows under keep-agreeing, and so does an
    # always-disagreeing one, of every kind (labels, values, step and first-pit pairs).
    problems, results = _labelled_chain(ChainPolicy(step_error_rate=0.15))
    labels = [r for res in results for r in res.step_labels]
    values = [v for res in results for v in res.step_values]
    prefs = [p for res in results for p in res.preferences]
    targets = solution_targets(labels, values)
    if judge_kind == "unparsable":
        judgements = _judge(problems, targets, 0.0, 1.0)
    else:  # names a step other than the label's first error, always
        judgements = {t["id"]: (t["first_error_index"] + 1) % len(t["completions"]) for t in targets}
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing")
    step_prefs = [p for p in prefs if p["pair_type"] in ("step", "first_pit")]
    assert labels and values and step_prefs
    assert (kept["step_labels"], kept["step_values"]) == ([], [])
    assert [p for p in kept["preferences"] if p["pair_type"] in ("step", "first_pit")] == []
    assert (stats["kept_step_labels"], stats["dropped_step_labels"], stats["dropped_step_values"]) == (
        0, len(labels), len(values))
    reason = {"unparsable": "consensus_unparsable", "disagreeing": "consensus_disagreement"}[judge_kind]
    assert len(rejects) == len(targets) and {r["reason"] for r in rejects} == {reason}


def test_scripted_judge_is_deterministic_and_errs_at_its_rate():
    problems, results = _labelled_chain(ChainPolicy(step_error_rate=0.1))
    labels = [r for res in results for r in res.step_labels]
    a = _judge(problems, labels, error_rate=0.3, unparsable_rate=0.1)
    assert a == _judge(problems, labels, error_rate=0.3, unparsable_rate=0.1)
    truth = {r["id"]: chain_first_error(problems[r["problem_id"]]["question"], r["completions"]) for r in labels}
    wrong = sum(j is not None and j != truth[rid] for rid, j in a.items())
    unparsable = sum(j is None for j in a.values())
    assert len(labels) >= 20 and 0 < wrong < len(labels) * 0.6 and unparsable < len(labels) * 0.4
