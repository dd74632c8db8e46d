"""Label semantics, pinned: one test per defect of issue 9 (1-7, 9), properties (a)-(e), and the
determinism of issue 9 defect 10 / issue 11 item 4 (labels do not depend on throughput knobs).

Small hand-built worlds run on ``TableGenerator`` (continuations fixed per prefix); randomized
worlds run on the scripted engine (``LetterPolicy`` below, or the chain policies), whose samples are
seeded per request, so every run is reproducible.
"""

from __future__ import annotations

import json
import random

import pytest

from counterpoint.generators.base import Completion, GenerationRequest, Generator, SamplingParams
from counterpoint.generators.scripted import (
    ChainPolicy,
    Policy,
    ScriptedGenerator,
    ScriptedSample,
    chain_problem,
)
from counterpoint.labeling import (
    Estimate,
    LabelerConfig,
    OmegaPRMConfig,
    OmegaPRMTree,
    ProblemContext,
    ProblemForLabeling,
    Rollout,
    RoundScheduler,
    claims,
    decide,
    false_claims,
    label_problems,
)
from counterpoint.labeling.advantages import value_pass
from counterpoint.labeling.common import first_discovered_index, incorrect_targets, seed_root
from counterpoint.labeling.labeler import _label_row, verify_terminals
from counterpoint.labeling.mc import mc_label
from counterpoint.labeling.scheduler import side_by_side
from counterpoint.testing.chain import chain_verify
from counterpoint.testing.worlds import sampled_chain_items
from counterpoint.schemas import records
from counterpoint.segmentation import segment
from counterpoint.verifiers.suite import VerifierSuite

from _fakes import fake_verdict, fake_verify  # noqa: E402

SAMPLING = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=1024, stop=("</s>",))
NUMERIC = VerifierSuite("numeric")


def numeric_verify(items):
    return [v for v, _ in NUMERIC.verify(items)]


# ---------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------
class TableGenerator(Generator):
    """Continuations fixed per prefix: ``table[prefix]`` lists texts, cycled. Records every request."""

    kind = "table"

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.requests = []

    @property
    def model_id(self):
        return "fake/table"

    def _generate(self, requests):
        self.requests.extend(requests)
        out = []
        for r in requests:
            prefix = r.messages[-1][1] if r.continue_final_message else ""
            entries = self.table[prefix]
            out.append([Completion(entries[j % len(entries)], 5, "stop", num_prompt_tokens=10) for j in range(r.n)])
        return out

    def prefixes(self):
        return [r.messages[-1][1] for r in self.requests if r.continue_final_message]


def traj(pid, i, text, verdict_fn=fake_verdict, gold="1"):
    v = verdict_fn(text, gold, False)
    return {"problem_id": pid, "sample_index": i, "completion": text, "steps": segment(text, "paragraph"),
            "verdict": v.verdict, "verdict_reason": v.reason, "finish_reason": "stop",
            "num_generated_tokens": len(text)}


def problem(pid="p", gold="1", question="Q?", answer_type="exact"):
    return {"problem_id": pid, "source": "test", "question": question, "gold_answer": gold,
            "answer_type": answer_type, "difficulty": None, "metadata": None}


def item_of(texts, gold="1", verdict_fn=fake_verdict, pid="p", question="Q?", answer_type="exact"):
    return ProblemForLabeling(problem(pid, gold, question, answer_type),
                              [traj(pid, i, t, verdict_fn, gold) for i, t in enumerate(texts)])


def config(labeler="omegaprm", k=2, **kw):
    om = dict(k=k, parallel_searches=1)
    om.update(kw.pop("om", {}))
    return LabelerConfig(labeler=labeler, omegaprm=OmegaPRMConfig(**om), **kw)


def run(items, gen, verify=fake_verify, cfg=None, **kw):
    kw.setdefault("sampling", SAMPLING)
    return label_problems(items, gen, verify, cfg or config(), **kw)


def row_of(res, sample_index=1):
    (row,) = [r for r in res.step_labels if r["sample_index"] == sample_index]
    return row


def rows_of(results):
    return ([r for res in results for r in res.step_labels], [r for res in results for r in res.step_values],
            [r for res in results for r in res.preferences])


# ---------------------------------------------------------------------------
# Defect 1 / property (a): a verified-correct completion through a prefix proves its steps right
# ---------------------------------------------------------------------------
W1 = "a\n\nb\n\nc\n\nd\n\nANS=2"
C1 = "a\n\nb\n\nc\n\nANS=1"
TABLE1 = {
    "a\n\n": ["b\n\nc\n\nANS=1"],
    "a\n\nb\n\n": ["c\n\nANS=1"],
    "a\n\nb\n\nc\n\n": ["d\n\nANS=2"],  # every rollout from "a b c" fails ...
    "a\n\nb\n\nc\n\nd\n\n": ["ANS=2"],
}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
@pytest.mark.parametrize("values", [False, True])
def test_defect1_correct_trajectory_through_a_prefix_makes_it_true(labeler, values):
    # ... but the sampled trajectory C = "a b c ANS=1" is verified correct and passes through "c".
    (res,) = run([item_of([C1, W1])], TableGenerator(TABLE1), cfg=config(labeler, compute_values=values))
    row = row_of(res)
    assert row["completions"] == ["a", "b", "c", "d", "ANS=2"]
    assert row["labels"] == [True, True, True, False, False] and row["first_error_index"] == 3
    assert row["first_error_source"] == "evidence"
    # The rollouts of "a b c" were measured (MC = 0) and stay in the row, next to the True label.
    assert row["mc_values"][2] == 0.0 and row["mc_measured"][2] is True


class LetterPolicy(Policy):
    """Random solutions over a small step alphabet, so prefixes of different samples coincide.

    A step "X" is a mistake: a solution containing it never reaches the answer; one without it does
    with probability 0.6 (the rest are unlucky: wrong answers after right steps). "F" ends a solution
    without an answer marker (a format failure, ``fmt`` of the time).
    """

    def __init__(self, fmt=0.0):
        self.fmt = fmt

    def sample(self, request, sample_index, rng):
        prefix = request.messages[-1][1] if request.continue_final_message else ""
        steps = [rng.choice("abcdX") for _ in range(rng.randint(1, 4))]
        if "X" in prefix or "X" in steps or rng.random() > 0.6:
            answer = "2"
        else:
            answer = "1"
        tail = "F" if rng.random() < self.fmt else f"ANS={answer}"
        return ScriptedSample("".join(s + "\n\n" for s in steps) + tail)


def letter_items(n, seed, k_f=6, fmt=0.0):
    gen = ScriptedGenerator(LetterPolicy(fmt))
    items = []
    for i in range(n):
        pid = f"letters-{seed}-{i}"
        (comps,) = gen.generate([GenerationRequest.chat(None, pid, n=k_f, seed=seed * 1000 + i)])
        items.append(item_of([c.text for c in comps], pid=pid, question=pid))
    return items


class Recording(ScriptedGenerator):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.made = []  # (prefix, continuation) of every sample

    def _generate(self, requests):
        out = super()._generate(requests)
        for r, comps in zip(requests, out):
            prefix = r.messages[-1][1] if r.continue_final_message else ""
            self.made.extend((_user(r), prefix, c.text) for c in comps)
        return out


def _user(request):
    return next(c for role, c in request.messages if role == "user")


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_property_a_any_correct_extension_makes_the_label_true(labeler):
    checked = 0
    for seed in range(6):
        items = letter_items(6, seed)
        gen = Recording(LetterPolicy())
        results = run(items, gen, cfg=config(labeler, k=2, om={"search_limit": 6}, compute_values=seed % 2 == 0))
        correct = {}  # problem -> step tuples of every verified-correct completion (sampled or rollout)
        for it in items:
            correct[it.problem["question"]] = [tuple(t["steps"]) for t in it.trajectories if t["verdict"] == "correct"]
        for question, prefix, text in gen.made:
            if fake_verdict(prefix + text, "1").verdict == "correct":
                correct[question].append(tuple(segment(prefix + text)))
        questions = {it.problem["problem_id"]: it.problem["question"] for it in items}
        for row in (r for res in results for r in res.step_labels):
            steps = [s for s in segment("\n\n".join(row["completions"]))]
            contents = [s.strip() for s in steps]
            for j in range(len(contents) - 1):
                if any([s.strip() for s in c[: j + 1]] == contents[: j + 1] for c in correct[questions[row["problem_id"]]]):
                    assert row["labels"][j], (row, j)
                    checked += 1
            assert row["labels"] == [i < row["first_error_index"] for i in range(len(contents))]  # monotone
    assert checked >= 30


# ---------------------------------------------------------------------------
# Defect 2 / property (b): the MC baseline is Math-Shepherd; it agrees with OmegaPRM on the same rollouts
# ---------------------------------------------------------------------------
W2 = "s0\n\ns1\n\ns2\n\ns3\n\nANS=9"
TABLE2 = {
    "s0\n\n": ["z\n\nANS=1", "ANS=9"],  # MC 0.5
    "s0\n\ns1\n\n": ["ANS=9"],  # 0
    "s0\n\ns1\n\ns2\n\n": ["q\n\nANS=1", "ANS=9"],  # 0.5: a slip that a later step repairs
    "s0\n\ns1\n\ns2\n\ns3\n\n": ["ANS=9"],  # 0
}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_defect2_mc_baseline_agrees_with_omegaprm_on_non_monotone_mc(labeler):
    (res,) = run([item_of(["ok\n\nANS=1", W2])], TableGenerator(TABLE2), cfg=config(labeler))
    row = row_of(res)
    assert row["mc_values"] == [0.5, 0.0, 0.5, 0.0, 0.0] and row["mc_measured"] == [True] * 5
    assert row["first_error_index"] == 3 and row["labels"] == [True, True, True, False, False]
    # Math-Shepherd's raw hard estimate stays recoverable from the values + the measured mask.
    assert [m and v > 0 for v, m in zip(row["mc_values"], row["mc_measured"])] == [True, False, True, False, False]


def _search_and_mc_on_one_store(item, gen, k, verify):
    """Runs the OmegaPRM tree + the value pass, then the MC labeller on the SAME evidence store."""
    cfg = OmegaPRMConfig(k=k, parallel_searches=1, search_limit=20)
    ctx = ProblemContext(item.problem["problem_id"], item.problem["question"], item.problem["gold_answer"],
                         "exact", min_known=cfg.min_known)
    roots = seed_root(ctx, item.trajectories)
    targets, _, _ = incorrect_targets(roots)
    tree = OmegaPRMTree(ctx, cfg, first_discovered_index=first_discovered_index(item.trajectories))

    def both():
        sols, _ = yield from side_by_side(tree.run(), value_pass(targets, k))
        mc_sols = yield from mc_label(ctx, targets, k)  # every prefix is held: no new rollouts
        yield from verify_terminals(ctx, [s.steps for s in sols + mc_sols], k)
        return sols, mc_sols

    sched = RoundScheduler(gen, verify, SAMPLING)
    (sols, mc_sols), = sched.run([(ctx, both())])
    return ctx, sols, mc_sols


def test_property_b_omegaprm_and_mc_agree_given_the_same_rollouts():
    compared = 0
    for seed in range(8):
        for it in letter_items(4, 100 + seed):
            if not any(t["verdict"] == "correct" for t in it.trajectories) or \
                    not any(t["verdict"] == "incorrect" for t in it.trajectories):
                continue
            ctx, sols, mc_sols = _search_and_mc_on_one_store(it, ScriptedGenerator(LetterPolicy()), 2, fake_verify)
            mc_rows = {s.sample_index: _label_row(ctx, s, labeler="mc", params="{}", root_value=0.5,
                                                  check_arithmetic=True) for s in mc_sols}
            for s in sols:
                if not s.sampled:
                    continue
                om = _label_row(ctx, s, labeler="omegaprm", params="{}", root_value=0.5, check_arithmetic=True)
                mc = mc_rows[s.sample_index]
                assert (om is None) == (mc is None)
                if om is not None:
                    assert om["first_error_index"] == mc["first_error_index"], (s.steps, s.probes)
                    assert om["labels"] == mc["labels"] and om["mc_values"] == mc["mc_values"]
                    compared += 1
    assert compared >= 15


# ---------------------------------------------------------------------------
# Defect 3: rows once, after every estimate; per-step masks and counts in both configs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_defect3_overlap_values_gives_identical_rows_with_masks(labeler):
    out = {}
    for overlap in (False, True):
        gen = TableGenerator(TABLE2)
        res = run([item_of(["ok\n\nANS=1", W2])], gen, cfg=config(labeler, overlap_values=overlap))
        out[overlap] = rows_of(res)
    assert out[False] == out[True]
    labels, values, _ = out[True]
    (row,) = [r for r in labels if r["sample_index"] == 1]
    # The binary search probed only s2 and s3; the value pass measured s0 and s1. The row is built from
    # all of them: measured values, not the interpolation [.5, .5, .5, 0, 0] of the search's own probes.
    assert row["mc_values"] == [0.5, 0.0, 0.5, 0.0, 0.0] and row["mc_measured"] == [True] * 5
    assert row["n_rollouts_per_step"] == [2, 2, 2, 2, 0] and row["n_rollouts"] == 8
    assert "overlap_values" not in json.loads(row["labeler_params"])
    assert [(v["step_index"], v["q_value"], v["measured"], v["n_rollouts"]) for v in values] == [
        (0, 0.5, True, 2), (1, 0.0, True, 2), (2, 0.5, True, 2), (3, 0.0, True, 2), (4, 0.0, True, 0)]


def test_defect3_unmeasured_steps_are_masked_not_passed_off_as_measured():
    # No value pass: s0 and s1 are never measured. They are filled for TRL (interpolated) but marked.
    (res,) = run([item_of(["ok\n\nANS=1", W2])], TableGenerator(TABLE2), cfg=config(compute_values=False))
    row = row_of(res)
    assert row["mc_measured"] == [False, False, True, True, True]
    assert row["n_rollouts_per_step"] == [0, 0, 2, 2, 0]
    assert row["mc_values"] == [pytest.approx(0.5 + (0.5 - 0.5) / 3), 0.5, 0.5, 0.0, 0.0]
    assert row["first_error_index"] == 3 and res.step_values == []


# ---------------------------------------------------------------------------
# Defect 4: rollouts inherit the run's sampling unless rollout_params is set
# ---------------------------------------------------------------------------
def test_defect4_rollouts_inherit_the_runs_sampling():
    assert OmegaPRMConfig().rollout_params is None
    gen = TableGenerator(TABLE2)
    (res,) = run([item_of(["ok\n\nANS=1", W2])], gen, cfg=config())
    assert gen.requests and {r.params for r in gen.requests} == {SAMPLING}
    params = json.loads(res.step_labels[0]["labeler_params"])
    assert params["rollout_params"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024, "stop": ["</s>"]}
    # An explicit rollout_params still wins, and is what labeler_params records.
    own = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=64)
    gen = TableGenerator(TABLE2)
    (res,) = run([item_of(["ok\n\nANS=1", W2])], gen, cfg=config(om={"rollout_params": own}))
    assert {r.params for r in gen.requests} == {own}
    assert json.loads(res.step_labels[0]["labeler_params"])["rollout_params"]["max_tokens"] == 64
    with pytest.raises(ValueError, match="rollout_params"):
        run([item_of(["ok\n\nANS=1", W2])], TableGenerator(TABLE2), sampling=None)


# ---------------------------------------------------------------------------
# Defect 5: one known verdict does not decide
# ---------------------------------------------------------------------------
def test_defect5_estimate_needs_min_known_verdicts():
    unk = [Rollout("x", "unknown", False, 1)] * 7
    est = Estimate("p", tuple(unk + [Rollout("y", "incorrect", False, 1)]), min_known=4)
    assert est.value == 0.0 and not est.resolved and not est.zero
    assert Estimate("p", tuple(unk + [Rollout("y", "correct", False, 1)]), min_known=4).positive  # proof
    assert Estimate("p", (Rollout("y", "incorrect", False, 1),) * 4, min_known=4).zero
    assert OmegaPRMConfig(k=8).min_known == 4 and OmegaPRMConfig(k=5).min_known == 3
    with pytest.raises(ValueError, match="min_known_verdicts"):
        OmegaPRMConfig(k=4, min_known_verdicts=5)


TABLE5 = {
    "a\n\n": ["z\n\nANS=1"],
    "a\n\nb\n\n": ["ANS=?"] * 7 + ["Y\n\nANS=3"],  # 7 unknown + 1 incorrect
    "a\n\nb\n\nX\n\n": ["ANS=2"],
}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_defect5_seven_unknown_one_incorrect_is_unresolved_not_a_confident_zero(labeler):
    item = item_of(["q\n\nANS=1", "a\n\nb\n\nX\n\nANS=2"])
    (res,) = run([item], TableGenerator(TABLE5), cfg=config(labeler, k=8, compute_values=False))
    assert res.step_labels == [] and res.stats["searches_unresolved"] == 1
    assert [r["reason"] for r in res.rejects] == ["label_unresolved_probe"]
    # With min_known_verdicts = 1 the same rollouts are believed: MC("a b") = 0, first error 1.
    cfg = config(labeler, k=8, compute_values=False, om={"min_known_verdicts": 1})
    (res,) = run([item], TableGenerator(TABLE5), cfg=cfg)
    assert [r["first_error_index"] for r in res.step_labels] == [1]


def test_defect5_unresolved_probe_settled_by_evidence():
    # W = a b c X <long answer line>: the search first finds MC("a b c X") = 0, then its probe of "a b" is
    # unresolved (7 unknown + 1 incorrect): the error lies in steps 0..3. A correct sample through "a b c"
    # settles it: steps 0..2 are right, so the first error is 3.
    w = "a\n\nb\n\nc\n\nX\n\nzzzzzzzzzzzzzz ANS=2"
    table = {"a\n\nb\n\nc\n\nX\n\n": ["ANS=2"], "a\n\nb\n\n": ["ANS=?"] * 7 + ["Y\n\nANS=3"]}
    item = item_of(["a\n\nb\n\nc\n\nANS=1", w])
    (res,) = run([item], TableGenerator(table), cfg=config(k=8, compute_values=False))
    row = row_of(res)
    assert row["first_error_index"] == 3 and row["first_error_source"] == "evidence"
    assert row["mc_measured"] == [False, False, False, True, True]  # the unresolved estimate is not measured
    assert row["n_rollouts_per_step"] == [0, 8, 0, 8, 0] and res.stats["unresolved_probes"] == 1


# ---------------------------------------------------------------------------
# Defect 6 / property (e): format failures are outcome negatives, never step-level evidence
# ---------------------------------------------------------------------------
FMT = "a\n\nb\n\nSo the total is 7."
TABLE6 = {"a\n\n": ["b\n\nANS=1", "b\n\nSo the total is 7."], "a\n\nb\n\n": ["ANS=1", "So the total is 7."]}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_defect6_format_failure_gets_no_rows(labeler):
    item = item_of(["a\n\nb\n\nANS=1", FMT])
    assert item.trajectories[1]["verdict_reason"] == "no_final_answer"
    (res,) = run([item], TableGenerator(TABLE6), cfg=config(labeler, k=2))
    assert res.step_labels == [] and res.step_values == [] and res.preferences == []
    assert res.stats["format_failures_not_labelled"] == 1
    assert [r["reason"] for r in res.rejects] == ["label_format_failure"]


def test_defect6_format_failure_rollouts_count_as_wrong_but_never_join_the_pool():
    # W fails at "X"; rollouts from "a" are a correct one and a format failure: MC("a") = 1/2.
    table = {"a\n\n": ["b\n\nANS=1", "b\n\nSo the total is 7."], "a\n\nX\n\n": ["ANS=2"],
             "a\n\nX\n\nc\n\n": ["ANS=2"]}
    (res,) = run([item_of(["q\n\nANS=1", "a\n\nX\n\nc\n\nANS=2"])], TableGenerator(table), cfg=config(k=2))
    (row,) = res.step_labels  # the format-failure rollout from "a" was never searched
    assert row["sample_index"] == 1 and row["mc_values"][0] == 0.5 and row["first_error_index"] == 1
    assert res.stats["selections"] == 1 and res.stats["pool_format_failures_skipped"] >= 1


def test_property_e_format_failure_negatives_yield_no_step_rows():
    seen = 0
    for seed in range(4):
        items = letter_items(6, 200 + seed, fmt=0.4)
        fmt_ids = {(it.problem["problem_id"], t["sample_index"]) for it in items for t in it.trajectories
                   if t["verdict_reason"] == "no_final_answer"}
        for labeler in ("omegaprm", "mc"):
            labels, values, prefs = rows_of(run(items, ScriptedGenerator(LetterPolicy(fmt=0.4)),
                                                cfg=config(labeler, om={"search_limit": 8})))
            assert labels and prefs
            for r in labels + values:
                assert (r["problem_id"], r["sample_index"]) not in fmt_ids
                assert not r.get("completions", ["x"])[-1].startswith("F")
            for p in prefs:
                assert (p["problem_id"], p["rejected_sample_index"]) not in fmt_ids
                assert not p["rejected"][0]["content"].rstrip().endswith("F")
        seen += len(fmt_ids)
    assert seen >= 10


# ---------------------------------------------------------------------------
# Defect 7 / property (d): no first-pit pair is an outcome pair
# ---------------------------------------------------------------------------
def test_defect7_no_first_pit_pair_when_the_pit_is_the_last_step():
    # Every prefix of W reaches the answer (MC = 1): the only drop is the final verdict.
    table = {"a\n\n": ["b\n\nANS=1"], "a\n\nb\n\n": ["ANS=1"]}
    (res,) = run([item_of(["a\n\nb\n\nANS=1", "a\n\nb\n\nANS=2"])], TableGenerator(table),
                 cfg=config(k=8, om={"min_known_verdicts": 1}))
    assert [v["is_first_pit"] for v in res.step_values] == [False, False, True]
    assert not [p for p in res.preferences if p["pair_type"] == "first_pit"]
    assert res.stats["first_pit_is_last_step"] == 1
    assert "first_pit_is_last_step" in [r["reason"] for r in res.rejects]


def test_property_d_no_first_pit_pair_equals_an_outcome_pair():
    n_pits = 0
    for seed in range(4):
        items = letter_items(6, 300 + seed)
        whole = {(it.problem["problem_id"], t["completion"].rstrip()) for it in items for t in it.trajectories}
        _, _, prefs = rows_of(run(items, ScriptedGenerator(LetterPolicy()),
                                  cfg=config("mc", first_pit_require_signal=False)))
        for p in prefs:
            if p["pair_type"] == "first_pit":
                n_pits += 1
                assert (p["problem_id"], p["rejected"][0]["content"]) not in whole
    assert n_pits >= 5


# ---------------------------------------------------------------------------
# Defect 9: a false equation or a stated wrong answer is an error whatever MC says
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["20 + 8 = 40", "21 - 3 = 15", "9 - 7 = 1. The answer is 1.", "Step 2: 10 * 2 = 22.",
                                  "$1,200 / 4 = $301", "10 / 3 = 3.4", "so 2 * (3 + 4) = 15 apples",
                                  "Step 4: -3 * 2 = -5."])
def test_arithmetic_false_claims_are_caught(text):
    assert false_claims(text)


@pytest.mark.parametrize("text", ["2 * 3 + 4 = 10", "3 + 4 = 7, 7 + 2 = 9", "$1,200 / 4 = $300", "10 / 3 = 3.33",
                                  "20% of 50 = 10", "x = 5", "Step 3: 7 + 5 = 12.", "2x + 3 = 7",
                                  "5 dollars * 3 = 16", "7 / 2 = 3 boxes", "2^3 + 1 = 10", "3 + 4 = 5x",
                                  "1,5 + 2 = 3,5", "\\frac{1}{2} + 3 = 4", "3 x 4 = 12", "Step 5: 5 - 8 = -3."])
def test_arithmetic_conservative_no_false_alarm(text):
    assert not false_claims(text)


def test_arithmetic_claims_are_read_exactly():
    (c,) = claims("so 2 * 3 + 4 = 10 apples")
    assert (c.text, c.value, c.rhs, c.holds) == ("2 * 3 + 4 = 10", 10, 10, True)
    assert [x.text for x in claims("3 + 4 = 7, 7 + 2 = 9")] == ["3 + 4 = 7", "7 + 2 = 9"]
    assert claims("x = 5") == [] and claims("20% of 50 = 10") == []


Q9 = "Tom has 20 apples and gets 8 more, then eats 1. How many are left?"
W9 = "Step 1: 20 + 8 = 40.\n\nStep 2: 40 - 1 = 39.\n\nThe answer is 39."
TABLE9 = {
    # one lucky rollout in two: MC(step 0) = 0.5 > 0 although the step states a false equation
    "Step 1: 20 + 8 = 40.\n\n": ["Step 2: 28 - 1 = 27.\n\nThe answer is 27.", "Step 2: 40 - 1 = 39.\n\nThe answer is 39."],
    "Step 1: 20 + 8 = 40.\n\nStep 2: 40 - 1 = 39.\n\n": ["The answer is 39."],
}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_a_false_claim_never_cuts_below_a_verified_correct_extension(labeler):
    # Issue 15 (supersedes issue 9's "whatever MC says"): the claim check reads text and can be wrong; a
    # verified-correct completion through the step cannot. The claim is overruled and the row says so.
    right = "Step 1: 20 + 8 = 28.\n\nStep 2: 28 - 1 = 27.\n\nThe answer is 27."
    item = item_of([right, W9], gold="27", verdict_fn=lambda t, g, tr: NUMERIC.verify([(t, g, tr, "numeric")])[0][0],
                   question=Q9, answer_type="numeric")
    (res,) = run([item], TableGenerator(TABLE9), numeric_verify, config(labeler, compute_values=True))
    (row,) = res.step_labels
    assert row["mc_values"][0] == 0.5 and row["mc_measured"][0]
    assert (row["labels"], row["first_error_index"], row["claim_overruled"]) == ([True, False, False], 1, True)
    assert res.stats["claims_overruled_by_evidence"] == 1
    (res,) = run([item], TableGenerator(TABLE9), numeric_verify, config(labeler, check_arithmetic=False))
    assert (res.step_labels[0]["first_error_index"], res.step_labels[0]["claim_overruled"]) == (1, False)


def test_decide_claim_cuts_only_from_the_evidence_on():
    # search unresolved in [2, 4]: a false claim at step 2 decides it; a claim at step 0 under evidence 1 does not
    d = decide(5, (2, 4), 1, None, 2)
    assert (d.index, d.claim, d.claim_overruled) == (2, 2, False)
    d = decide(5, (1, 1), 1, None, 0)
    assert (d.index, d.source, d.claim, d.claim_overruled) == (1, "search", None, True)


Q9B = "What is twice 9 - 7?"
W9B = "First, 9 - 7 = 1. The answer is 1.\n\nWait, let me redo it: twice 2 is 5.\n\nThe answer is 5."
TABLE9B = {
    # a continuation that would "rescue" the stated wrong answer -- it must never be asked for
    "First, 9 - 7 = 1. The answer is 1.\n\n": ["Actually 9 - 7 = 2, twice that is 4.\n\nThe answer is 4."],
    "First, 9 - 7 = 1. The answer is 1.\n\nWait, let me redo it: twice 2 is 5.\n\n": ["The answer is 5."],
}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_defect9_a_prefix_that_states_a_wrong_answer_is_terminal(labeler):
    right = "First, 9 - 7 = 2.\n\nTwice 2 is 4.\n\nThe answer is 4."
    item = item_of([right, W9B], gold="4", verdict_fn=lambda t, g, tr: NUMERIC.verify([(t, g, tr, "numeric")])[0][0],
                   question=Q9B, answer_type="numeric")
    gen = TableGenerator(TABLE9B)
    (res,) = run([item], gen, numeric_verify, config(labeler, check_arithmetic=False))
    (row,) = res.step_labels
    assert row["first_error_index"] == 0 and row["first_error_source"] in ("terminal", "search")
    assert row["labels"] == [False, False, False]
    # judged exactly by the verifier: value 0.0, measured, 0 rollouts; never rolled out
    assert row["mc_values"][0] == 0.0 and row["mc_measured"][0] and row["n_rollouts_per_step"][0] == 0
    assert "First, 9 - 7 = 1. The answer is 1.\n\n" not in gen.prefixes()
    assert res.stats["terminal_verifications"] >= 1


def test_defect9_terminal_wrong_overrides_evidence_and_search():
    # Evidence and a search that never probes the terminal prefix would put the error later; the stated
    # wrong answer at step 1 caps it.
    from counterpoint.labeling.first_error import SOURCE_TERMINAL
    d = decide(4, (3, 3), 3, 1, None)
    assert d.index == 1 and d.source == SOURCE_TERMINAL
    assert decide(4, (0, 3), 2, None, None).index is None  # unresolved bracket above the evidence
    assert decide(4, (0, 3), 2, None, 2).index == 2  # ... unless a false claim settles it
    assert decide(4, (0, 3), 2, None, 1).index is None  # a claim under the evidence is overruled (issue 15)
    assert decide(5, (1, 1), 3, None, None).source == "evidence"
    assert decide(5, None, 4, None, None).index == 4


# ---------------------------------------------------------------------------
# Defect 10 / property (c): rows do not depend on throughput knobs, batching or answer order
# ---------------------------------------------------------------------------
class ShuffledStreaming(Generator):
    """A streaming engine that finishes requests out of order: each poll returns a random non-empty
    subset of what is in flight, shuffled. Samples come from ``inner`` (seeded per request)."""

    kind = "shuffled"
    streaming = True

    def __init__(self, inner, seed=0, max_per_poll=3):
        super().__init__()
        self.inner = inner
        self.rng = random.Random(seed)
        self.max_per_poll = max_per_poll
        self.pending = {}
        self.next_handle = 0
        self.polls = 0

    @property
    def model_id(self):
        return self.inner.model_id

    @property
    def capacity(self):
        return self.inner.capacity

    def _generate(self, requests):
        return self.inner.generate(requests)

    def submit(self, requests):
        handles = []
        for r in requests:
            self.next_handle += 1
            self.pending[self.next_handle] = r
            handles.append(self.next_handle)
        return handles

    def poll(self):
        if not self.pending:
            return []
        self.polls += 1
        handles = self.rng.sample(sorted(self.pending), min(len(self.pending), self.rng.randint(1, self.max_per_poll)))
        reqs = [self.pending.pop(h) for h in handles]
        return list(zip(handles, self.inner.generate(reqs)))


HARD = ChainPolicy(step_error_rate=0.08, slip="misread", repair_rate=0.3, no_answer_rate=0.1, hedge_rate=0.1)


def chain_items(n, policy=HARD, seed=7, steps=8, k_f=6):
    problems = [chain_problem(seed, i, num_steps=steps) for i in range(n)]
    return sampled_chain_items(policy, problems, k_f, seed_of=lambda i: seed * 100 + i)


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_property_c_rows_do_not_depend_on_knobs_batching_or_answer_order(labeler):
    items = chain_items(8)

    def once(gen_wrap=None, items_=items, **om):
        om.setdefault("k", 4)
        om.setdefault("search_limit", 6)
        overlap = om.pop("overlap_values", True)
        cfg = LabelerConfig(labeler=labeler, omegaprm=OmegaPRMConfig(**om), overlap_values=overlap, seed=3,
                            best_of_k=2)
        gen = ScriptedGenerator(HARD, capacity=om.get("max_inflight_samples") or 256)
        if gen_wrap is not None:
            gen = gen_wrap(gen)
        return label_problems(items_, gen, chain_verify, cfg, sampling=SAMPLING)

    base = once(parallel_searches=1, max_trees=1, overlap_values=False)
    reference = rows_of(base)
    assert len(reference[0]) >= (8 if labeler == "omegaprm" else 4) and reference[1] and reference[2]
    variants = {
        "auto": once(),
        "parallel_2": once(parallel_searches=2),
        "parallel_8_overlap_off": once(parallel_searches=8, overlap_values=False),
        "max_trees_2": once(max_trees=2),
        "tiny_budget": once(max_inflight_samples=5),
        "streaming_out_of_order": once(lambda g: ShuffledStreaming(g, seed=1)),
        "streaming_out_of_order_2": once(lambda g: ShuffledStreaming(g, seed=2, max_per_poll=1), parallel_searches=3),
    }
    for name, results in variants.items():
        assert rows_of(results) == reference, name
    # batch composition: each problem alone, and the batch reversed
    alone = [once(items_=[it])[0] for it in items]
    assert rows_of(alone) == reference
    reversed_ = once(items_=list(reversed(items)))
    assert rows_of(list(reversed(reversed_))) == reference
    if labeler == "omegaprm":
        spec = variants["auto"]
        assert sum(r.stats["prefetch_used"] for r in spec) > 0
        for r in spec:
            assert r.stats["prefetched"] == r.stats["prefetch_used"] + r.stats["prefetch_wasted"]


def test_on_problem_done_is_called_once_per_problem_with_final_rows():
    items = chain_items(4)
    seen = []
    results = label_problems(items, ScriptedGenerator(HARD), chain_verify, LabelerConfig(), sampling=SAMPLING,
                             on_problem_done=lambda res: seen.append((res.problem_id, len(res.step_labels))))
    assert sorted(seen) == sorted((r.problem_id, len(r.step_labels)) for r in results)


class ProblemsPerCall(ScriptedGenerator):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.per_call = []

    def _generate(self, requests):
        self.per_call.append(len({_user(r) for r in requests}))
        return super()._generate(requests)


def test_capacity_drives_admission_and_speculation():
    items = chain_items(6)
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4), compute_values=False)
    # A budget of one sample: one problem in flight at a time (its real asks always go), no room to speculate.
    tight = ProblemsPerCall(HARD, capacity=1)
    small = label_problems(items, tight, chain_verify, cfg, sampling=SAMPLING)
    assert max(tight.per_call) == 1 and sum(r.stats["prefetched"] for r in small) == 0
    # The engine's capacity admits every tree at once and leaves room for speculation.
    wide = ProblemsPerCall(HARD, capacity=4096)
    large = label_problems(items, wide, chain_verify, cfg, sampling=SAMPLING)
    assert max(wide.per_call) >= 3 and sum(r.stats["prefetched"] for r in large) > 0
    assert len(wide.per_call) < len(tight.per_call)
    # max_inflight_samples overrides the engine's capacity
    capped = ProblemsPerCall(HARD, capacity=4096)
    label_problems(items, capped, chain_verify,
                   LabelerConfig(omegaprm=OmegaPRMConfig(k=4, max_inflight_samples=1), compute_values=False),
                   sampling=SAMPLING)
    assert capped.per_call == tight.per_call
    assert rows_of(small) == rows_of(large)
    assert ScriptedGenerator().capacity == 256 and ScriptedGenerator(capacity=8).capacity == 8


def test_knob_values_are_validated_with_the_key_in_the_message():
    assert OmegaPRMConfig().parallel_searches == "auto" and OmegaPRMConfig().max_trees == "auto"
    assert OmegaPRMConfig(parallel_searches="4", max_trees=None).parallel_searches == 4
    for bad in ({"parallel_searches": 0}, {"parallel_searches": "many"}, {"max_trees": 0},
                {"max_inflight_samples": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            OmegaPRMConfig(**bad)


def test_rows_conform_to_their_tables():
    items = chain_items(6)
    for labeler in ("omegaprm", "mc"):
        labels, values, prefs = rows_of(label_problems(items, ScriptedGenerator(HARD), chain_verify,
                                                       LabelerConfig(labeler=labeler), sampling=SAMPLING))
        records.rows_to_table("step_labels", labels)
        records.rows_to_table("step_values", values)
        records.rows_to_table("preferences", prefs)
        for r in labels:
            assert len(r["mc_measured"]) == len(r["n_rollouts_per_step"]) == len(r["completions"])
            assert r["n_rollouts"] == sum(r["n_rollouts_per_step"])
        for v in values:
            assert v["measured"] == (v["q_value"] is not None) == (v["advantage"] is not None)


# ---------------------------------------------------------------------------
# Issue 15: final answers only at the end, format failures stated, whitespace-proof evidence
# ---------------------------------------------------------------------------
Q15 = "Apples cost 2 dollars and pears 3 dollars. Mia buys 5 apples and 4 pears. What does she pay?"
H0 = "#### Step 1: Cost of the apples\n5 × 2 = 10 dollars.\n\n"
H1 = "#### Step 2: Cost of the pears\n4 × 3 = 12 dollars. The answer is reasonable.\n\n"
C15 = H0 + H1 + "#### Step 3: Total\n10 + 12 = 22 dollars.\n\n#### 22"
W15 = H0 + H1 + "#### Step 3: Total\n12 - 10 = 2 dollars.\n\n#### 2"
TABLE15 = {H0: ["#### Step 2: Pears\n4 × 3 = 12.\n\n10 + 12 = 22.\n\n#### 22"],
           H0 + H1: ["#### Step 3: Sum\n10 + 12 = 22.\n\n#### 22"],
           H0 + H1 + "#### Step 3: Total\n12 - 10 = 2 dollars.\n\n": ["#### 2"]}


def numeric_item(texts, gold, question):
    return item_of(texts, gold=gold, verdict_fn=lambda t, g, tr: NUMERIC.verify([(t, g, tr, "numeric")])[0][0],
                   question=question, answer_type="numeric")


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_headings_and_prose_about_the_answer_are_never_terminal(labeler):
    # "#### Step 1: ..." is a markdown heading and "The answer is reasonable." prose: both prefixes are rolled
    # out like any other (the old rule made them terminal with a format-class verdict -> all steps False)
    gen = TableGenerator(TABLE15)
    (res,) = run([numeric_item([C15, W15], "22", Q15)], gen, numeric_verify, config(labeler, compute_values=False))
    row = row_of(res)
    assert (row["labels"], row["first_error_index"]) == ([True, True, False, False], 2)
    assert res.stats["terminal_verifications"] == 0  # only "#### 2" states an answer; it is the whole solution


Q15B = "Tom has 20 apples and buys 8 more, then eats 1. How many are left?"
S0 = "Step 1: 20 + 8 = 28.\n\n"
S1 = "So the answer is many.\n\n"  # states an answer the numeric verifier cannot read: format class
W15B = S0 + S1 + "Step 2: 28 - 2 = 26.\n\nThe answer is 26."
C15B = "Step 1: 8 + 20 = 28.\n\nStep 2: 28 - 1 = 27.\n\nThe answer is 27."
TABLE15B = {S0: ["Step 2: 28 - 1 = 27.\n\nThe answer is 27."], S0 + S1: ["Step 2: 28 - 1 = 27.\n\nThe answer is 27."],
            S0 + S1 + "Step 2: 28 - 2 = 26.\n\n": ["The answer is 26."]}


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_a_terminal_prefix_with_a_format_class_verdict_is_no_evidence_and_is_rolled_out(labeler):
    gen = TableGenerator(TABLE15B)
    (res,) = run([numeric_item([C15B, W15B], "27", Q15B)], gen, numeric_verify, config(labeler, compute_values=False))
    row = row_of(res)
    assert (row["labels"], row["first_error_index"]) == ([True, True, False, False], 2)
    assert S0 + S1 in gen.prefixes()  # verified first (non_numeric_answer), then rolled out
    assert res.stats["terminal_verifications"] >= 1


S15C = "Step 1: 20 + 8 = 28.\n\n"
W15C = S15C + "Step 2: 28 - 2 = 26.\n\nThe answer is 26."
C15C = "Step 1: 8 + 20 = 28.\n\nStep 2: 28 - 1 = 27.\n\nThe answer is 27."
TABLE15C = {S15C: ["Step 2: 28 - 1 = 27.\n\nSo the total is 27."],  # right work, no answer marker
            S15C + "Step 2: 28 - 2 = 26.\n\n": ["The answer is 26."]}


def test_rollout_format_failures_zero_or_unknown_and_counted_on_every_row():
    item = numeric_item([C15C, W15C], "27", Q15B)
    (res,) = run([item], TableGenerator(TABLE15C), numeric_verify, config("mc", k=2, compute_values=True))
    row = row_of(res)
    assert (row["labels"], row["first_error_index"], row["n_format_failure_rollouts"]) == ([False] * 3, 0, 2)
    assert [v["n_format_failure_rollouts"] for v in res.step_values] == [2, 0, 0]
    # counted per row, label and value rows alike: the summary reports the share
    assert (res.stats["row_format_failure_rollouts"], res.stats["row_rollouts"]) == (4, 8)
    # unknown: the two format failures are no verdict, the probe stays unresolved: no confident zero
    (res,) = run([item], TableGenerator(TABLE15C), numeric_verify,
                 config("mc", k=2, compute_values=True, rollout_format_failures="unknown"))
    assert res.step_labels == [] and "label_unresolved_probe" in [r["reason"] for r in res.rejects]
    assert [(v["measured"], v["q_value"], v["n_format_failure_rollouts"]) for v in res.step_values] == [
        (False, None, 2), (True, 0.0, 0), (True, 0.0, 0)]
    assert json.loads(config("mc", rollout_format_failures="unknown").labeler_params(SAMPLING))["rollout_format_failures"] \
        == "unknown"
    with pytest.raises(ValueError, match="rollout_format_failures"):
        config("mc", rollout_format_failures="drop")


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_labels_identical_whatever_separator_a_continuation_starts_with(labeler):
    # trimmed chat templates continue a prefix with "\n" or "\n\n"; evidence is keyed on step content
    out = {}
    for lead in ("", "\n", "\n\n"):
        table = {p: [lead + t for t in texts] for p, texts in TABLE1.items()}
        (res,) = run([item_of([W1, C1])], TableGenerator(table), cfg=config(labeler))
        out[lead] = [(r["id"], r["labels"], r["first_error_index"], r["first_error_source"]) for r in res.step_labels]
    assert out["\n"] == out[""] == out["\n\n"] and out[""]


@pytest.mark.parametrize("labeler", ["omegaprm", "mc"])
def test_claims_over_evidence_restores_issue_9_rule(labeler):
    # the documented option: a false claim cuts even where a lucky continuation reached the gold answer
    right = "Step 1: 20 + 8 = 28.\n\nStep 2: 28 - 1 = 27.\n\nThe answer is 27."
    item = numeric_item([right, W9], "27", Q9)
    (res,) = run([item], TableGenerator(TABLE9), numeric_verify, config(labeler, claims_over_evidence=True))
    row = row_of(res)
    assert (row["labels"], row["first_error_source"], row["claim_overruled"]) == ([False] * 3, "claim", False)
    assert json.loads(row["labeler_params"])["claims_over_evidence"] is True
