"""Step labelling: OmegaPRM tree, per-step MC, values/advantages, rows and pairs, round scheduler.

Hand-computed trees run on a tiny fake engine (``TableGenerator``) whose
continuations are fixed per prefix; the chain tests use the scripted engine with
``ChainPolicy``, whose slips only ever overshoot and so can never be repaired
(``chain_first_error`` is exactly the step where MC drops to 0).
"""

from __future__ import annotations

import json
import math

import pytest

from counterpoint.generators.base import Completion, GenerationRequest, Generator, SamplingParams
from counterpoint.generators.scripted import (
    ChainPolicy,
    ScriptedGenerator,
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
    RolloutAsk,
    RoundScheduler,
    best_of_k_value,
    fill_mc_values,
    label_problems,
    step_values,
    within_noise,
)
from counterpoint.labeling.common import seed_root
from counterpoint.testing.chain import chain_first_error, chain_verify
from counterpoint.testing.worlds import sampled_chain_items
from counterpoint.schemas import records
from counterpoint.segmentation import segment
from counterpoint.verifiers import base as vb

from _fakes import fake_verify  # noqa: E402

SAMPLING = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=384)


# ---------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------
class TableGenerator(Generator):
    """Continuations fixed per prefix: ``table[prefix]`` lists texts (or ``(text, finish_reason)``), cycled."""

    kind = "table"

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.calls = 0
        self.batches = []

    @property
    def model_id(self):
        return "fake/table"

    def _generate(self, requests):
        self.calls += 1
        self.batches.append([(r.messages[-1][1] if r.continue_final_message else "", r.n) for r in requests])
        out = []
        for r in requests:
            prefix = r.messages[-1][1] if r.continue_final_message else ""
            entries = self.table[prefix]
            comps = []
            for j in range(r.n):
                e = entries[j % len(entries)]
                text, finish = (e, "stop") if isinstance(e, str) else e
                comps.append(Completion(text, len(text), finish, num_prompt_tokens=10, num_cached_prompt_tokens=4))
            out.append(comps)
        return out


def traj(pid, i, text, verdict, tokens=None, finish="stop", reason=None):
    if reason is None and verdict == "incorrect":
        reason = vb.REASON_NO_FINAL_ANSWER if "ANS=" not in text else vb.REASON_ANSWER_MISMATCH
    return {
        "problem_id": pid,
        "sample_index": i,
        "completion": text,
        "steps": segment(text, "paragraph"),
        "verdict": verdict,
        "verdict_reason": reason,
        "finish_reason": finish,
        "num_generated_tokens": tokens if tokens is not None else len(text),
    }


def problem(pid="p", question="Q?", gold="1"):
    return {"problem_id": pid, "source": "test", "question": question, "gold_answer": gold,
            "answer_type": "exact", "difficulty": None, "metadata": None}


# The hand-built world. Root (K_f = 4): s0, s2 correct; s1 wrong at step 2 ("X"); s3 wrong at step 1 ("Z").
S1 = "a\n\nb\n\nX\n\nANS=2"
S3 = "a\n\nZ\n\nc\n\nANS=5"
TABLE = {
    "a\n\n": ["b\n\nc\n\nANS=1", "b\n\nc\n\nANS=1", "b\n\nc\n\nANS=1", "b\n\nc\n\nANS=?"],  # MC = 3/3 (one unknown)
    "a\n\nb\n\n": ["c\n\nANS=1", "Y\n\nANS=3", "c\n\nANS=1", "c\n\nANS=1"],  # MC = 3/4
    "a\n\nb\n\nX\n\n": ["ANS=2"],  # MC = 0
    "a\n\nb\n\nY\n\n": ["ANS=3"],  # MC = 0
    "a\n\nZ\n\n": ["c\n\nANS=5"],  # MC = 0
    "a\n\nZ\n\nc\n\n": ["ANS=5"],  # MC = 0 (only asked by the value pass)
}


def world_item(system_prompt=None):
    trajs = [
        traj("p", 0, "a\n\nb\n\nc\n\nANS=1", "correct"),
        traj("p", 1, S1, "incorrect", tokens=10),
        traj("p", 2, "a\n\nb\n\nc\n\nANS=1", "correct"),
        traj("p", 3, S3, "incorrect", tokens=12),
    ]
    return ProblemForLabeling(problem(), trajs, system_prompt, "paragraph")


def small_config(**kw):
    # Hand-built tables answer only the prefixes the paper's sequential loop asks: no speculation, one
    # selection per round.
    om = kw.pop("omegaprm", OmegaPRMConfig(k=4, parallel_searches=1, selections_per_round=1))
    return LabelerConfig(omegaprm=om, **kw)


def chain_items(n, rate, k_f=8, seed=3, policy=None):
    problems = [chain_problem(seed, i) for i in range(n)]
    return sampled_chain_items(policy or ChainPolicy(step_error_rate=rate), problems, k_f)


def run_labels(*args, **kw):
    kw.setdefault("sampling", SAMPLING)
    return label_problems(*args, **kw)


def drive(coro, gen, verify=fake_verify, ctx=None, params=None):
    sched = RoundScheduler(gen, verify, params or SAMPLING)
    (res,) = sched.run([(ctx, coro)])
    return res, sched


def tree_for(item, k=4, **kw):
    kw.setdefault("parallel_searches", 1)
    kw.setdefault("selections_per_round", 1)  # the paper's sequential loop
    cfg = OmegaPRMConfig(k=k, **kw)
    ctx = ProblemContext("p", item.problem["question"], item.problem["gold_answer"], "exact", min_known=cfg.min_known)
    seed_root(ctx, item.trajectories)
    return ctx, OmegaPRMTree(ctx, cfg, first_discovered_index=len(item.trajectories))


# ---------------------------------------------------------------------------
# Selection, visit counts, consumption
# ---------------------------------------------------------------------------
def test_selection_formula_values():
    ctx, tree = tree_for(world_item())
    assert tree.root.mc == 0.5 and len(tree.pool) == 2
    s1, s3 = tree.pool
    # Q = alpha^(1-MC) * beta^(len/L) with MC(root) = 0.5, len = 10 / 12 tokens; U = 0 before any visit.
    assert tree.q_value(s1) == pytest.approx(0.5 ** 0.5 * 0.9 ** (10 / 500))
    assert tree.q_value(s3) == pytest.approx(0.5 ** 0.5 * 0.9 ** (12 / 500))
    assert tree.u_value(tree.root) == 0.0
    assert tree.select() is s1  # the shorter rollout wins
    # After one selection: sum N = 1, N(root) = 1 -> U(root) = 0.125 * 1 / 2.
    assert tree.u_value(tree.root) == pytest.approx(0.0625)
    assert tree.score(s3) == pytest.approx(0.5 ** 0.5 * 0.9 ** (12 / 500) + 0.0625)


def test_visit_count_grows_on_selection_not_estimation():
    ctx, tree = tree_for(world_item())
    gen = TableGenerator(TABLE)
    sols, _ = drive(tree.run(), gen, ctx=ctx)
    n = {s.prefix: s.N for s in tree.states}
    # 3 selections: s1 and s3 from the root, the discovered "Y" rollout from state "a b".
    assert tree.selections == 3 and sum(n.values()) == 3
    assert n[""] == 2 and n["a\n\nb\n\n"] == 1
    # States created by probes were estimated (k rollouts each) but never selected from.
    assert n["a\n\n"] == 0 and n["a\n\nb\n\nX\n\n"] == 0 and n["a\n\nZ\n\n"] == 0


def test_selected_rollout_is_consumed_and_never_returns():
    ctx, tree = tree_for(world_item())
    first = tree.select()
    assert first not in tree.pool
    # Re-offering the same rollout from the same state (e.g. a cache hit on re-probe) does not re-add it.
    assert tree.add_candidate(tree.root, first.rollout) is False
    assert all(c.rollout is not first.rollout for c in tree.pool)
    gen = TableGenerator(TABLE)
    sols, _ = drive(tree.run(), gen, ctx=ctx)
    # s1 was consumed by the manual selection above (never searched, never back): only s3 remains.
    assert ["".join(s.steps) for s in sols] == [S3] and tree.selections == 2
    assert not tree.pool
    # In a full run every (state, rollout) is selected at most once.
    ctx, tree = tree_for(world_item())
    sols, _ = drive(tree.run(), TableGenerator(TABLE), ctx=ctx)
    texts = ["".join(s.steps) for s in sols]
    assert len(texts) == len(set(texts)) == 3 and not tree.pool


def test_search_limit_and_empty_pool_stop_the_tree():
    ctx, tree = tree_for(world_item(), search_limit=1)
    sols, _ = drive(tree.run(), TableGenerator(TABLE), ctx=ctx)
    assert len(sols) == 1 and tree.selections == 1 and len(tree.pool) == 2  # s3 + discovered Y remain


# ---------------------------------------------------------------------------
# Binary search
# ---------------------------------------------------------------------------
def test_binary_search_hand_tree_probes_and_edges():
    ctx, tree = tree_for(world_item())
    gen = TableGenerator(TABLE)
    sols, sched = drive(tree.run(), gen, ctx=ctx)
    s1, disc, s3 = sols
    # s1 (4 steps of 3,3,3,5 chars): span (-1, 3], token midpoint 7 -> split after step 1 (end 6);
    # MC("a b") = 3/4 > 0 -> right; then (1, 3] -> step 2, MC = 0 -> left; span (1, 2] is one step.
    assert [(i, v) for i, v, _ in s1.probes] == [(1, 0.75), (2, 0.0)]
    assert (s1.sample_index, s1.sampled, s1.first_error_index, s1.n_rollouts) == (1, True, 2, 8)
    # The discovered rollout "Y" from state "a b" (depth 2): only step 2 can be probed.
    assert (disc.sample_index, disc.sampled, disc.start_step, disc.first_error_index, disc.n_rollouts) == (4, False, 2, 2, 4)
    # s3: split after step 1 -> MC("a Z") = 0 -> left; step 0: MC("a") = 3/3 (unknown excluded) -> error at 1.
    assert [(i, v) for i, v, _ in s3.probes] == [(1, 0.0), (0, 1.0)]
    assert s3.first_error_index == 1
    assert gen.calls == len(sched.rounds) == 5  # one probe per round: 2 + 1 + 2
    # Tree: root -> "a b" -> {"a b X" (0), "a b Y" (0)}; root -> "a" -> "a Z" (0).
    parent = {s.prefix: (tree.states[s.parent].prefix if s.parent is not None else None) for s in tree.states}
    assert parent == {
        "": None,
        "a\n\nb\n\n": "",
        "a\n\nb\n\nX\n\n": "a\n\nb\n\n",
        "a\n\nb\n\nY\n\n": "a\n\nb\n\n",
        "a\n\nZ\n\n": "a\n\n",
        "a\n\n": "",
    }
    # Every non-root state was measured by rollouts: no MC assigned without them.
    for s in tree.states[1:]:
        assert s.n_rollouts == 4 and s.mc == (s.n_correct / (4 - (s.prefix == "a\n\n")))


def test_selections_per_round_searches_side_by_side_with_the_same_labels_in_fewer_rounds():
    # Sequential (the paper's loop): s1, then the "Y" rollout discovered inside s1's search, then s3.
    ctx1, seq_tree = tree_for(world_item())
    seq_gen = TableGenerator(TABLE)
    seq, _ = drive(seq_tree.run(), seq_gen, ctx=ctx1)
    # Two per round: s1 and s3 are picked together (s3 sees N(root) = 1 from s1's pick) and searched in
    # lockstep — one engine round carries a probe of each — then "Y" in a round of its own.
    ctx2, tree = tree_for(world_item(), selections_per_round=2)
    gen = TableGenerator(TABLE)
    batched, sched = drive(tree.run(), gen, ctx=ctx2)
    assert [(s.sample_index, s.first_error_index) for s in batched] == [(1, 2), (3, 1), (4, 2)]
    assert gen.calls == len(sched.rounds) == 3 and seq_gen.calls == 5
    assert gen.batches[:2] == [[("a\n\nb\n\n", 4), ("a\n\nZ\n\n", 4)], [("a\n\nb\n\nX\n\n", 4), ("a\n\n", 4)]]
    # The same labelled solutions (whole records) and the same tree, in a different selection order.
    key = lambda sol: sol.sample_index  # noqa: E731
    assert sorted(batched, key=key) == sorted(seq, key=key)
    shape = lambda t: {(s.prefix, s.mc, s.n_rollouts, t.states[s.parent].prefix if s.parent is not None else None)  # noqa: E731
                       for s in t.states}
    assert shape(tree) == shape(seq_tree) and tree.selections == seq_tree.selections == 3
    assert [st.N for st in tree.states if st.prefix == ""] == [2]
    with pytest.raises(ValueError, match="selections_per_round"):
        OmegaPRMConfig(selections_per_round=0)


def test_zero_probe_superseded_by_shallower_zero_is_not_an_edge():
    steps = ["s0\n\n", "s1\n\n", "s2\n\n", "s3\n\n", "s4\n\n", "ANS=9"]
    wrong = "".join(steps)
    table = {
        "".join(steps[:3]): ["ANS=9"],  # 1st probe (ends 4,8,12,16,20,25: midpoint 12.5 -> step 2): MC 0
        "".join(steps[:1]): ["ok\n\nANS=1", "ANS=9"],  # 2nd (midpoint 6, tie 4 vs 8 -> step 0): MC 1/2
        "".join(steps[:2]): ["ANS=9"],  # 3rd: MC 0 again, shallower -> supersedes the zero at step 2
    }
    item = ProblemForLabeling(problem(), [traj("p", 0, wrong, "incorrect"), traj("p", 1, "ok\n\nANS=1", "correct")])
    ctx, tree = tree_for(item, k=2)
    sols, _ = drive(tree.run(), TableGenerator(table), ctx=ctx)
    sol = sols[0]
    assert [(i, v) for i, v, _ in sol.probes] == [(2, 0.0), (0, 0.5), (1, 0.0)] and sol.first_error_index == 1
    prefixes = {s.prefix for s in tree.states}
    assert "".join(steps[:2]) in prefixes  # the first-error state is an edge (child of "s0")
    assert "".join(steps[:3]) not in prefixes  # the superseded zero is not
    assert tree.states[tree.by_prefix["".join(steps[:2])]].parent == tree.by_prefix["s0\n\n"]


def test_binary_search_finds_planted_first_error_on_chain():
    items = chain_items(4, rate=0.06)
    # Arithmetic checks off: the binary search alone must find every planted slip.
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=8, search_limit=8), compute_values=False, check_arithmetic=False)
    results = run_labels(items, ScriptedGenerator(ChainPolicy(step_error_rate=0.06)), chain_verify, cfg)
    q = {it.problem["problem_id"]: it.problem["question"] for it in items}
    rows = [r for res in results for r in res.step_labels]
    assert len(rows) >= 8
    for r in rows:
        assert r["first_error_index"] == chain_first_error(q[r["problem_id"]], r["completions"])
        assert r["first_error_source"] in ("search", "evidence")
        # rollouts held for the row's prefixes: k per probed prefix, none for the exact last step
        assert set(r["n_rollouts_per_step"]) <= {0, 8} and r["n_rollouts_per_step"][-1] == 0
        assert r["n_rollouts"] == sum(r["n_rollouts_per_step"])
        assert r["mc_measured"] == [n > 0 for n in r["n_rollouts_per_step"][:-1]] + [True]


def test_parallel_searches_keep_rows_identical_and_fill_rounds():
    items = chain_items(3, rate=0.06)
    q = {it.problem["problem_id"]: it.problem["question"] for it in items}
    runs = {}
    for width in (1, 4):
        gen = RecordingScripted(ChainPolicy(step_error_rate=0.06))
        rounds = []
        # One search at a time (the paper's loop): what speculation alone does to its rounds.
        cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=8, search_limit=8, parallel_searches=width,
                                                    selections_per_round=1),
                            compute_values=False, check_arithmetic=False)
        results = run_labels(items, gen, chain_verify, cfg, on_round=rounds.append)
        rows = [r for res in results for r in res.step_labels]
        for r in rows:
            assert r["first_error_index"] == chain_first_error(q[r["problem_id"]], r["completions"])
        stats = {key: sum(res.stats[key] for res in results)
                 for key in ("selections", "prefetched", "prefetch_used", "prefetch_wasted")}
        runs[width] = (rows, [res.preferences for res in results], rounds, stats)
    (rows1, prefs1, rounds1, st1), (rows4, prefs4, rounds4, st4) = runs[1], runs[4]
    # Speculation keeps the sequential loop: the very same rows, in far fewer (fuller) engine rounds.
    assert rows1 == rows4 and prefs1 == prefs4 and len(rows1) >= 8
    assert st1["selections"] == st4["selections"]
    assert st1["prefetched"] == 0 and st4["prefetch_used"] > 0
    assert st4["prefetched"] == st4["prefetch_used"] + st4["prefetch_wasted"]
    assert len(rounds4) * 3 <= len(rounds1) * 2
    assert max(r["samples"] for r in rounds4) > max(r["samples"] for r in rounds1)


def test_overlap_values_same_rows_in_fewer_rounds():
    items = chain_items(3, rate=0.06)
    out = {}
    for overlap in (False, True):
        rounds = []
        cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=4), overlap_values=overlap)
        results = run_labels(items, ScriptedGenerator(ChainPolicy(step_error_rate=0.06)), chain_verify, cfg,
                             on_round=rounds.append)
        rows = [(res.step_labels, res.step_values, res.preferences) for res in results]
        out[overlap] = (rows, rounds, sum(res.stats["rollouts"] - res.stats["prefetch_wasted"] for res in results))
    (rows0, r0, n0), (rows1, r1, n1) = out[False], out[True]
    assert rows0 == rows1  # whole rows: labels, mc_values, masks, counts, values, pairs
    assert sum(len(lab) for lab, _, _ in rows0) >= 4 and sum(len(v) for _, v, _ in rows0) > 0
    assert n0 == n1  # the same rollouts kept, spent in fewer, fuller rounds
    assert len(r1) < len(r0) and max(r["samples"] for r in r1) >= max(r["samples"] for r in r0)


def test_chain_policy_never_repairs_a_slip():
    # The chain tests rely on it: once a prefix holds a wrong step, no continuation reaches the gold answer.
    items = chain_items(4, rate=0.3)
    gen = ScriptedGenerator(ChainPolicy(step_error_rate=0.3))
    clean = ScriptedGenerator(ChainPolicy(step_error_rate=0.0))
    checked = 0
    for it in items:
        q, gold = it.problem["question"], it.problem["gold_answer"]
        for t in it.trajectories:
            fe = chain_first_error(q, t["steps"])
            if fe is None or fe >= len(t["steps"]) - 1:
                continue
            wrong = "".join(t["steps"][: fe + 1])
            right = "".join(t["steps"][:fe])
            (after,) = gen.generate([GenerationRequest.continuation(None, q, wrong, n=16, seed=t["sample_index"])])
            assert {v.verdict for v in chain_verify([(wrong + c.text, gold, False, "numeric") for c in after])} == {
                "incorrect"}
            (before,) = clean.generate([GenerationRequest.continuation(None, q, right, n=1, seed=0)])
            assert chain_verify([(right + before[0].text, gold, False, "numeric")])[0].verdict == "correct"
            checked += 1
    assert checked >= 8


def test_split_point_is_nearest_token_midpoint():
    # ends (cumulative tokens) of steps 0..4 = 10, 12, 14, 40, 50: span (-1, 4], midpoint 25 -> step 2 (|14-25| = 11 < 15).
    assert OmegaPRMTree.split_point([10, 12, 14, 40, 50], 0, -1, 4) == 2
    # span (2, 4] leaves only step 3.
    assert OmegaPRMTree.split_point([10, 12, 14, 40, 50], 0, 2, 4) == 3
    # ties go to the earlier step: ends 10, 20, 30, midpoint 15 between steps 0 and 1
    assert OmegaPRMTree.split_point([10, 20, 30], 0, -1, 2) in (0, 1)
    assert OmegaPRMTree.split_point([10, 20, 30], 0, -1, 2) == 0


def test_token_len_callable_drives_the_split():
    steps = ["aaaaaaaaaa\n\n", "b\n\n", "c\n\n", "ANS=9"]
    table = {"".join(steps[:1]): ["ok\n\nANS=1"], "".join(steps[:2]): ["ANS=9"], "".join(steps[:3]): ["ANS=9"]}
    item = ProblemForLabeling(problem(), [traj("p", 0, "".join(steps), "incorrect"), traj("p", 1, "ok\n\nANS=1", "correct")])
    # Character share: ends 12, 15, 18, 23 -> midpoint 11.5 -> step 0. One token per step: midpoint 2 -> step 1.
    ctx, tree = tree_for(item, k=1)
    sols, _ = drive(tree.run(), TableGenerator(table), ctx=ctx)
    assert sols[0].probes[0][0] == 0
    ctx, tree = tree_for(item, k=1, token_len=lambda s: 1)
    sols, _ = drive(tree.run(), TableGenerator(table), ctx=ctx)
    assert sols[0].probes[0][0] == 1 and sols[0].first_error_index == 1


# ---------------------------------------------------------------------------
# Rows: step_labels, step_values, preferences
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [True, False])
def test_omegaprm_rows_whole_records(overlap):
    cfg = small_config(best_of_k=2, overlap_values=overlap)
    gen = TableGenerator(TABLE)
    (res,) = run_labels([world_item("Be brief.")], gen, fake_verify, cfg)
    params = cfg.labeler_params(SAMPLING)
    p = json.loads(params)
    assert p["k"] == 4 and p["rollout_params"] == SAMPLING.to_dict() and p["min_known_verdicts"] == 2
    assert "parallel_searches" not in p and "max_trees" not in p and "overlap_values" not in p
    base = {"problem_id": "p", "prompt": "Q?", "labeler": "omegaprm", "labeler_params": params,
            "judge_first_error_index": None, "judge_agrees": None, "claim_overruled": False,
            "n_format_failure_rollouts": 0, "n_truncated_rollouts": 0}
    # Rows are built from the final evidence store: every prefix of the sampled negatives holds k = 4
    # rollouts (search or value pass, whichever paid), the last step is the exact verdict (0 rollouts).
    assert res.step_labels == [
        dict(base, id="p/s1/omegaprm", sample_index=1, completions=["a", "b", "X", "ANS=2"],
             labels=[True, True, False, False], mc_values=[1.0, 0.75, 0.0, 0.0], mc_measured=[True] * 4,
             n_rollouts_per_step=[4, 4, 4, 0], first_error_index=2, first_error_source="search", n_rollouts=12),
        dict(base, id="p/s4/omegaprm", sample_index=4, completions=["a", "b", "Y", "ANS=3"],
             labels=[True, True, False, False], mc_values=[1.0, 0.75, 0.0, 0.0], mc_measured=[True] * 4,
             n_rollouts_per_step=[4, 4, 4, 0], first_error_index=2, first_error_source="search", n_rollouts=12),
        dict(base, id="p/s3/omegaprm", sample_index=3, completions=["a", "Z", "c", "ANS=5"],
             labels=[True, False, False, False], mc_values=[1.0, 0.0, 0.0, 0.0], mc_measured=[True] * 4,
             n_rollouts_per_step=[4, 4, 4, 0], first_error_index=1, first_error_source="search", n_rollouts=12),
    ]
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    step_pairs = [p for p in res.preferences if p["pair_type"] == "step"]
    meta = [json.loads(p.pop("metadata")) for p in step_pairs]
    common = {"problem_id": "p", "prompt": prompt, "pair_type": "step", "chosen_source": "policy", "labeler": "omegaprm"}
    # chosen: the next step of a correct completion through the prefix, deepest origin first (a rollout
    # from the prefix itself beats a sampled solution through it).
    assert step_pairs == [
        dict(common, id="p/step/omegaprm/s1", chosen=[{"role": "assistant", "content": "a\n\nb\n\nc"}],
             rejected=[{"role": "assistant", "content": "a\n\nb\n\nX"}], chosen_sample_index=None,
             rejected_sample_index=1, step_index=2, prefix="a\n\nb\n\n"),
        dict(common, id="p/step/omegaprm/s4", chosen=[{"role": "assistant", "content": "a\n\nb\n\nc"}],
             rejected=[{"role": "assistant", "content": "a\n\nb\n\nY"}], chosen_sample_index=None,
             rejected_sample_index=4, step_index=2, prefix="a\n\nb\n\n"),
        dict(common, id="p/step/omegaprm/s3", chosen=[{"role": "assistant", "content": "a\n\nb"}],
             rejected=[{"role": "assistant", "content": "a\n\nZ"}], chosen_sample_index=None,
             rejected_sample_index=3, step_index=1, prefix="a\n\n"),
    ]
    assert [m["n_rollouts"] for m in meta] == [12, 12, 12]
    assert [(m["prefix_mc"], m["prefix_rollouts"], m["chosen_source"]) for m in meta] == [
        (0.75, 4, "rollout"), (0.75, 4, "rollout"), (1.0, 4, "rollout")]

    # Values. Root Q_-1 = 2/4 (n = 4). s1: Q = 1.0 (n 3: one unknown), 0.75 (n 4), 0.0 (n 4), 0.0 (exact).
    v = {(r["sample_index"], r["step_index"]): r for r in res.step_values}
    assert [v[(1, i)]["q_value"] for i in range(4)] == [1.0, 0.75, 0.0, 0.0]
    # best_of_k=2: advantages are taken on best-of-2 values (Setlur et al.): root 1 - C(2,2)/C(4,2) = 5/6,
    # then 1.0, 1.0, 0.0, 0.0 (see below)
    assert [v[(1, i)]["advantage"] for i in range(4)] == pytest.approx([1 / 6, 0.0, -1.0, 0.0])
    assert [v[(1, i)]["n_rollouts"] for i in range(4)] == [3, 4, 4, 0]
    assert [v[(1, i)]["n_correct"] for i in range(4)] == [3, 3, 0, 0]
    assert [v[(1, i)]["measured"] for i in range(4)] == [True] * 4
    # n = 3 < min_n -> noise; -0.75 vs 1.96*sqrt(.1875/4) = 0.424 -> signal; 0 vs exact 0 -> noise.
    assert [v[(1, i)]["within_noise"] for i in range(4)] == [True, True, False, True]
    assert [v[(1, i)]["is_first_pit"] for i in range(4)] == [False, False, True, False]
    # best-of-2: 1 - C(M-c, 2)/C(M, 2): (3,3) -> 1, (4,3) -> 1, (4,0) -> 0; terminal = its value.
    assert [v[(1, i)]["best_of_k_value"] for i in range(4)] == [1.0, 1.0, 0.0, 0.0]
    assert v[(1, 2)] == {
        "id": "p/s1/omegaprm/t2", "problem_id": "p", "sample_index": 1, "step_index": 2, "step": "X",
        "q_value": 0.0, "advantage": -1.0, "measured": True, "n_rollouts": 4, "n_correct": 0,
        "is_first_pit": True, "within_noise": False, "best_of_k_value": 0.0, "labeler": "omegaprm",
        "n_format_failure_rollouts": 0, "n_truncated_rollouts": 0,
    }
    assert [v[(3, i)]["q_value"] for i in range(4)] == [1.0, 0.0, 0.0, 0.0]
    assert v[(3, 1)]["is_first_pit"] and v[(3, 1)]["within_noise"]  # previous estimate rests on 3 rollouts

    pits = [p for p in res.preferences if p["pair_type"] == "first_pit"]
    assert len(pits) == 1  # s3's pit is within noise -> skipped and counted
    pit_meta = json.loads(pits[0].pop("metadata"))
    assert pits[0] == {
        "id": "p/first_pit/omegaprm/s1-s0", "problem_id": "p", "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "a\n\nb\n\nc\n\nANS=1"}],
        "rejected": [{"role": "assistant", "content": "a\n\nb\n\nX"}],
        "pair_type": "first_pit", "chosen_source": "policy", "chosen_sample_index": 0, "rejected_sample_index": 1,
        "step_index": 2, "prefix": None, "labeler": "omegaprm",
    }
    assert pit_meta == {"policy": "first_pit", "pit_q": 0.0, "pit_advantage": -1.0, "within_noise": False,
                        "n_rollouts": 11, "chosen_complete": True, "rejected_complete": False}
    assert [(m["chosen_complete"], m["rejected_complete"]) for m in meta] == [(False, False)] * 3
    s = res.stats
    # The same 24 rollouts either way; who paid differs (statistics only, never in a row).
    assert s["rollouts"] == 24 and s["selections"] == 3 and s["first_pit_within_noise"] == 1 and s["unknown"] == 1
    assert (s["label_rollouts"], s["value_rollouts"]) == ((8, 16) if overlap else (20, 4))
    assert s["prompt_tokens"] == 60 and s["cached_prompt_tokens"] == 24  # 6 requests x 10 / x 4
    assert gen.calls == (2 if overlap else 6)
    assert s["first_error_from_search"] == 3 and s["prefetched"] == 0
    # Every row conforms to its table (Arrow types, equal lengths).
    records.rows_to_table("step_labels", res.step_labels)
    records.rows_to_table("step_values", res.step_values)
    records.rows_to_table("preferences", [dict(p, metadata="{}") for p in res.preferences])


def test_mc_baseline_rows_and_one_round():
    gen = TableGenerator(TABLE)
    (res,) = run_labels([world_item()], gen, fake_verify, small_config(labeler="mc"))
    assert gen.calls == 1  # every prefix of every trajectory in one round; the value pass is all cache hits
    params = json.loads(res.step_labels[0]["labeler_params"])
    assert params["k"] == 4
    rows = {r["sample_index"]: r for r in res.step_labels}
    assert rows[1]["mc_values"] == [1.0, 0.75, 0.0, 0.0] and rows[1]["labels"] == [True, True, False, False]
    assert rows[1]["first_error_index"] == 2 and rows[1]["id"] == "p/s1/mc" and rows[1]["labeler"] == "mc"
    assert rows[3]["mc_values"] == [1.0, 0.0, 0.0, 0.0] and rows[3]["first_error_index"] == 1
    assert rows[1]["mc_measured"] == rows[3]["mc_measured"] == [True] * 4  # per-step MC measures every prefix
    # n_rollouts counts rollouts held for the row's prefixes: "a" is shared, generated once, held by both.
    assert rows[1]["n_rollouts_per_step"] == rows[3]["n_rollouts_per_step"] == [4, 4, 4, 0]
    assert (rows[1]["n_rollouts"], rows[3]["n_rollouts"]) == (12, 12)
    assert res.stats["value_rollouts"] == 0 and res.stats["rollouts"] == 20
    assert set(rows) == {1, 3}  # correct trajectories get no row (no MC = 1 without rollouts)


def test_mc_values_fill_rule():
    # Interpolate unmeasured positives between measured positives (root at -1), carry forward, 0 after the error.
    assert fill_mc_values([None, 0.5, None, None, 0.0, None], 4, 0.25) == [0.375, 0.5, 0.5, 0.5, 0.0, 0.0]
    assert fill_mc_values([None, None, 0.0], 2, 0.5) == [0.5, 0.5, 0.0]
    # A measured 0 before the first error stays (measured), but is no interpolation anchor.
    # (index 1 between the root (-1, 0.4) and (2, 0.8): 0.4 + 2/3 * 0.4)
    assert fill_mc_values([0.0, None, 0.8, 0.0], 3, 0.4) == pytest.approx([0.0, 0.4 + 0.4 * 2 / 3, 0.8, 0.0])


def test_a_correct_continuation_with_other_spacing_is_evidence_for_the_same_step():
    # Issue 15: the trie keys steps on content with whitespace normalised. The only correct continuation
    # of "a b" is "X  " (other spacing): it proves W's own step 2 right, so the first error moves to the
    # last step, and the step pair at it is built from the correct next step ("ANS=1").
    table = {"a\n\nb\n\n": ["X  \n\nANS=1"], "a\n\nb\n\nX\n\n": ["ANS=2"]}
    item = ProblemForLabeling(problem(), [traj("p", 0, "q\n\nANS=1", "correct"), traj("p", 1, S1, "incorrect")])
    (res,) = run_labels([item], TableGenerator(table), fake_verify, small_config(compute_values=False))
    assert [(r["first_error_index"], r["first_error_source"]) for r in res.step_labels] == [(3, "evidence")]
    (pair,) = res.preferences
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == ("a\n\nb\n\nX\n\nANS=1",
                                                                              "a\n\nb\n\nX\n\nANS=2")
    assert not res.rejects


# ---------------------------------------------------------------------------
# Values and advantages
# ---------------------------------------------------------------------------
def test_best_of_k_value_hand_numbers():
    assert best_of_k_value(8, 2, 4) == pytest.approx(1 - 15 / 70)  # 1 - C(6,4)/C(8,4)
    assert best_of_k_value(8, 0, 4) == 0.0
    assert best_of_k_value(8, 5, 4) == 1.0  # C(3,4) = 0
    assert best_of_k_value(3, 1, 4) is None  # fewer rollouts than K


def test_step_values_advantages_and_first_pit():
    stats = [(0.5, 8, 4), (0.625, 8, 5), (0.125, 8, 1), None, (0.0, 8, 0), (0.0, None, 0)]
    vals = step_values(0.5, 8, stats)  # raw MC (best-of-1) values
    assert [v.step_index for v in vals] == [0, 1, 2, 3, 4, 5]  # every step gets an entry
    assert [v.measured for v in vals] == [True, True, True, False, True, True]
    assert (vals[3].q_value, vals[3].advantage, vals[3].within_noise) == (None, None, True)  # unmeasured: no value
    assert [v.advantage for v in vals if v.measured] == pytest.approx([0.0, 0.125, -0.5, -0.125, 0.0])  # 4 vs 2
    assert [v.is_first_pit for v in vals] == [False, False, False, False, True, False]  # first measured min Q
    # noise: step 2: |-0.5| vs 1.96*sqrt(.109375/8 + .234375/8) = 0.406 -> signal; step 1 -> noise.
    assert [v.within_noise for v in vals] == [True, True, False, True, True, True]
    assert all(v.best_of_k_value is None for v in vals)
    # best-of-4 (Setlur et al.): advantages and the pit on 1 - C(M-c,4)/C(M,4); the root's is 1 - 1/70
    bok = step_values(0.5, 8, stats, best_of_k=4, c_root=4)
    assert [v.best_of_k_value for v in bok] == pytest.approx([69 / 70, 1.0, 1 - math.comb(7, 4) / math.comb(8, 4),
                                                               None, 0.0, 0.0])
    assert bok[5].n_rollouts is None and [v.q_value for v in bok] == [v.q_value for v in vals]
    assert [v.advantage for v in bok if v.measured] == pytest.approx([0.0, 1 / 70, -0.5, -0.5, 0.0])
    assert [v.is_first_pit for v in bok] == [False, False, False, False, True, False]
    assert [v.within_noise for v in bok] == [v.within_noise for v in vals]  # noise is judged on the MC estimates
    # a step whose best-of-K value is undefined (fewer rollouts than K) gets no advantage and is no pit
    short = step_values(0.5, 8, [(0.0, 3, 0), (0.5, 8, 4)], best_of_k=4, c_root=4)
    assert [(v.advantage, v.is_first_pit) for v in short] == [(None, False), (pytest.approx(0.0), True)]


def test_within_noise_flag():
    assert within_noise(-0.75, 0.0, 8, 0.75, 8) is False
    assert within_noise(-0.125, 0.0, 8, 0.125, 8) is True  # 0.125 < 1.96*sqrt(.109375/8) = 0.229
    assert within_noise(-1.0, 0.0, 2, 1.0, 2) is True  # n too small: never read a signal
    assert within_noise(-1.0, 0.0, None, 1.0, 8) is False  # exact terminal vs a confident 1.0
    assert within_noise(0.0, 0.0, None, 0.0, 8) is True
    assert within_noise(-0.3, 0.2, 100, 0.5, 100, z=1.0) is False


def test_values_reuse_tree_measurements():
    items = chain_items(2, rate=0.08)
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=3), compute_values=True, best_of_k=2)
    results = run_labels(items, ScriptedGenerator(ChainPolicy(step_error_rate=0.08)), chain_verify, cfg)
    for res, it in zip(results, items):
        if res.stats["screening"] != "kept":
            continue
        wrong = [t for t in it.trajectories if t["verdict"] == "incorrect"]
        # 17 steps each; 16 rollout prefixes x k = 64 per trajectory if nothing were reused.
        assert 0 < res.stats["value_rollouts"] < 64 * len(wrong)
        assert len(res.step_values) == 17 * len(wrong)
        records.rows_to_table("step_values", res.step_values)
        for r in res.step_values:
            if r["measured"]:
                assert -1.0 <= r["advantage"] <= 1.0 and 0.0 <= r["q_value"] <= 1.0
            else:
                assert r["q_value"] is None and r["advantage"] is None and r["within_noise"]


# ---------------------------------------------------------------------------
# Verdict handling and screening
# ---------------------------------------------------------------------------
def test_unknown_verdicts_are_not_wrong():
    est = Estimate("x", (Rollout("a", "correct", False, 1), Rollout("b", "unknown", False, 1),
                         Rollout("c", "incorrect", False, 1), Rollout("d", "unknown", False, 1)))
    assert est.value == 0.5 and est.n_known == 2 and est.n_unknown == 2
    assert Estimate("x", (Rollout("a", "unknown", False, 1),)).value is None
    # A probe whose rollouts are all unknown leaves the search unresolved: no row, a reject, counted.
    table = {"a\n\nb\n\n": ["c\n\nANS=?"], "a\n\nb\n\nX\n\n": ["ANS=2"]}
    item = world_item()
    item.trajectories = [t for t in item.trajectories if t["sample_index"] != 3]
    (res,) = run_labels([item], TableGenerator(table), fake_verify, small_config(compute_values=False))
    assert res.step_labels == [] and res.stats["searches_unresolved"] == 1 and res.stats["unknown"] == 4
    assert res.rejects[0]["reason"] == "label_unresolved_probe"


def test_truncated_rollouts_count_as_wrong():
    table = dict(TABLE)
    table["a\n\nb\n\n"] = [("c\n\nANS=1", "length"), "c\n\nANS=1", ("c\n\nANS", "length"), "Y\n\nANS=3"]
    item = world_item()
    item.trajectories = [t for t in item.trajectories if t["sample_index"] != 3]
    (res,) = run_labels([item], TableGenerator(table), fake_verify, small_config(compute_values=False))
    # MC("a b") = 1/4: both truncated ones are wrong even though one carries the right answer.
    assert res.step_labels[0]["mc_values"][1] == 0.25 and res.stats["truncated"] == 2
    # Truncated rollouts are not searched: only the "Y" rollout joins the pool (discovered: index K_f = 3).
    assert [r["sample_index"] for r in res.step_labels] == [1, 3]
    assert res.step_labels[1]["completions"] == ["a", "b", "Y", "ANS=3"]


def test_screening_counts():
    items = [
        ProblemForLabeling(problem("all_c"), [traj("all_c", i, "ANS=1", "correct") for i in range(3)]),
        ProblemForLabeling(problem("all_w"), [traj("all_w", i, "ANS=2", "incorrect") for i in range(3)]),
        ProblemForLabeling(problem("none"), [traj("none", i, "ANS=?", "unknown") for i in range(3)]),
        # A "correct" verdict on a truncated sample counts as wrong: the problem is kept.
        ProblemForLabeling(problem("trunc"), [traj("trunc", 0, "ANS=1", "correct"),
                                              traj("trunc", 1, "ANS=1", "correct", finish="length"),
                                              traj("trunc", 2, "ANS=?", "unknown")]),
        ProblemForLabeling(problem("empty"), []),
    ]
    gen = TableGenerator({})
    results = run_labels(items, gen, fake_verify, small_config())
    status = {r.problem_id: r.stats["screening"] for r in results}
    assert status == {"all_c": "all_correct", "all_w": "all_incorrect", "none": "no_verdict",
                      "trunc": "kept", "empty": "no_verdict"}
    for r in results:
        assert sum(r.stats[f"screened_{s}"] for s in ("kept", "all_correct", "all_incorrect", "no_verdict")) == 1
    trunc = next(r for r in results if r.problem_id == "trunc")
    assert trunc.stats["trajectories_truncated"] == 1 and trunc.stats["trajectories_unknown"] == 1
    assert trunc.stats["trajectories_truncated_not_labelled"] == 1 and trunc.step_labels == []
    assert gen.calls == 0


# ---------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------
class RecordingScripted(ScriptedGenerator):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batch_problems = []

    def _generate(self, requests):
        self.batch_problems.append({c for r in requests for role, c in r.messages if role == "user"})
        return super()._generate(requests)


def test_one_engine_call_per_round_across_trees():
    items = chain_items(3, rate=0.08)
    gen = RecordingScripted(ChainPolicy(step_error_rate=0.08))
    seen = []
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=4), compute_values=False)
    results = run_labels(items, gen, chain_verify, cfg, on_round=seen.append)
    kept = [r for r in results if r.stats["screening"] == "kept"]
    assert len(kept) >= 2
    assert gen.calls == len(seen) == results[0].stats["rounds"]
    assert max(len(b) for b in gen.batch_problems) >= 2  # one call carries several trees' probes
    assert sum(r["samples"] for r in seen) == sum(r.stats["rollouts"] for r in results) == gen.samples_served
    assert all(r["requests"] >= 1 and r["verify_items"] == r["samples"] for r in seen)
    # Sequential alternative: one tree at a time needs as many calls as all trees' probes.
    gen1 = RecordingScripted(ChainPolicy(step_error_rate=0.08))
    cfg1 = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=4, max_trees=1), compute_values=False)
    results1 = run_labels(items, gen1, chain_verify, cfg1)
    assert max(len(b) for b in gen1.batch_problems) == 1 and gen1.calls > gen.calls
    assert [r.step_labels for r in results1] == [r.step_labels for r in results]  # same labels either way


def test_scheduler_dedupes_identical_asks_in_a_round():
    ctx = ProblemContext("p", "Q?", "1", "exact")

    def search(n):
        (est,) = yield [RolloutAsk("a\n\n", n)]
        return est

    gen = TableGenerator(TABLE)
    sched = RoundScheduler(gen, fake_verify, SAMPLING)
    e1, e2 = sched.run([(ctx, search(4)), (ctx, search(2))])
    assert gen.calls == 1 and gen.batches == [[("a\n\n", 4)]]
    assert sched.rounds[0]["requests"] == 1
    assert (e1.n_new, e2.n_new) == (4, 0) and e1.rollouts == e2.rollouts and e1.value == 1.0
    # A later ask for more rollouts tops the cache up (only the missing ones are generated).
    e3, = sched.run([(ctx, search(6))])
    assert gen.batches[-1] == [("a\n\n", 2)] and e3.n == 6 and e3.n_new == 2


def test_deterministic_for_scripted_generator():
    items = chain_items(3, rate=0.08)
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=4), best_of_k=2)

    def once():
        res = run_labels(items, ScriptedGenerator(ChainPolicy(step_error_rate=0.08)), chain_verify, cfg)
        return [(r.step_labels, r.step_values, r.preferences, r.stats) for r in res]

    a = once()
    assert a == once()
    for step_labels, step_values_, prefs, _ in a:
        records.rows_to_table("step_labels", step_labels)
        records.rows_to_table("step_values", step_values_)
        records.rows_to_table("preferences", prefs)
        for p in prefs:
            assert p["chosen"] != p["rejected"]
        ids = [r["id"] for r in step_labels]
        assert len(ids) == len(set(ids))


def test_config_validation():
    with pytest.raises(ValueError):
        LabelerConfig(labeler="prm800k")
    with pytest.raises(ValueError):
        OmegaPRMConfig(k=0)
    with pytest.raises(ValueError):
        run_labels([ProblemForLabeling(problem("p"), [traj("q", 0, "ANS=1", "correct")])],
                       TableGenerator({}), fake_verify, LabelerConfig())
