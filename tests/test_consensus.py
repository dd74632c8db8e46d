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


def test_keep_agreeing_drops_the_disagreeing_solution_everywhere():
    labels, values, prefs, judgements = _world()
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing")
    assert [r["id"] for r in kept["step_labels"]] == ["p/s1/omegaprm", "p/s3/omegaprm", "q/s1/omegaprm"]
    got = {r["id"]: (r["judge_first_error_index"], r["judge_agrees"]) for r in kept["step_labels"]}
    assert got == {"p/s1/omegaprm": (1, True), "p/s3/omegaprm": (None, None), "q/s1/omegaprm": (None, None)}
    assert not [v for v in kept["step_values"] if (v["problem_id"], v["sample_index"]) == ("p", 2)]
    assert len(kept["step_values"]) == 3 + 2 + 2
    # the solution's step and first-pit pairs go; its outcome pair and another labeller's pair stay
    assert [p["id"] for p in kept["preferences"]] == ["p/step/1", "p/outcome/2", "p/step/3", "q/first_pit/1",
                                                      "p/step/2"]
    assert rejects == [records.make_reject(stage="label", reason="consensus_disagreement", problem_id="p",
                                           scope="row", detail="label first error 2, judge 0", key="p/s2/omegaprm")]
    assert stats == {"judged": 3, "agreed": 1, "disagreed": 1, "unparsable": 1, "agreement_rate": 0.5,
                     "dropped_step_labels": 1, "dropped_step_values": 3, "dropped_preferences": 2}
    records.rows_to_table("step_labels", kept["step_labels"])
    # inputs are not modified (Beam forbids mutating inputs)
    assert all(r["judge_agrees"] is None for r in labels)


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
    judgements = _judge(problems, labels, error_rate=0.0)
    assert judgements == {r["id"]: (-1 if truth[r["id"]] is None else truth[r["id"]]) for r in labels}
    kept, rejects, stats = apply_consensus(labels, values, prefs, judgements, "keep-agreeing")
    assert {r["id"] for r in kept["step_labels"]} == right
    assert stats["agreement_rate"] == pytest.approx(len(right) / len(labels))
    assert len(rejects) == len(labels) - len(right) and {r["reason"] for r in rejects} == {"consensus_disagreement"}
    dropped = {(r["problem_id"], r["sample_index"]) for r in labels if r["id"] not in right}
    assert not [p for p in kept["preferences"] if p["pair_type"] in ("step", "first_pit")
                and (p["problem_id"], p["rejected_sample_index"]) in dropped]


def test_scripted_judge_is_deterministic_and_errs_at_its_rate():
    problems, results = _labelled_chain(ChainPolicy(step_error_rate=0.1))
    labels = [r for res in results for r in res.step_labels]
    a = _judge(problems, labels, error_rate=0.3, unparsable_rate=0.1)
    assert a == _judge(problems, labels, error_rate=0.3, unparsable_rate=0.1)
    truth = {r["id"]: chain_first_error(problems[r["problem_id"]]["question"], r["completions"]) for r in labels}
    wrong = sum(j is not None and j != truth[rid] for rid, j in a.items())
    unparsable = sum(j is None for j in a.values())
    assert len(labels) >= 20 and 0 < wrong < len(labels) * 0.6 and unparsable < len(labels) * 0.4
