"""Issue 18 units: the adaptive rollout rule, sampling asks, and speculation only into idle capacity
(cancelled with the engine's ``abort``) — with scripted engines, no timing."""

from __future__ import annotations

import dataclasses
from typing import List

import pytest

from counterpoint.generators.base import Completion, GenerationRequest, Generator, SamplingParams
from counterpoint.generators.scripted import ChainPolicy, Policy, ScriptedGenerator, ScriptedSample, chain_problem
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
from counterpoint.labeling.common import seed_root
from counterpoint.labeling.evidence import Estimate, EvidenceStore, Rollout, RolloutAsk, adaptive_next_total
from counterpoint.labeling.omegaprm import OmegaPRMTree
from counterpoint.labeling.scheduler import (PRIORITY_SAMPLING, PRIORITY_SEARCH, PRIORITY_SPECULATIVE, ProblemContext,
                                             RoundScheduler, SampleAsk, Sampled, side_by_side)
from counterpoint.testing.chain import chain_verify
from counterpoint.testing.stream import (
    OneAtATimeGenerator,
    RequestCountedStreamGenerator,
    ShuffledStreamGenerator,
    SteppedStreamGenerator,
)
from counterpoint.testing.stream import lockstep as lockstep_driver
from counterpoint.testing.worlds import sampled_chain_items
from counterpoint.verifiers.base import Verdict


def test_adaptive_batches_double_up_to_the_cap():
    assert [adaptive_next_total(h, 8) for h in (0, 1, 2, 4, 8)] == [1, 2, 4, 8, 8]
    assert [adaptive_next_total(h, 5) for h in (0, 1, 2, 4)] == [1, 2, 4, 5]


def _rollouts(*verdicts):
    return [Rollout(f"r{i}", v, False, 1) for i, v in enumerate(verdicts)]


def test_adaptive_rule_decides_a_positive_at_one_correct_and_a_zero_after_zero_after_known():
    store = EvidenceStore()
    ask = RolloutAsk("p", 8, zero_after=6)
    assert (store.satisfied(ask), store.missing(ask)) == (False, 1)
    store.add_rollouts("p", _rollouts("incorrect"))
    assert (store.satisfied(ask), store.missing(ask)) == (False, 1)
    store.add_rollouts("p", _rollouts("incorrect", "correct"))  # 3 held, one correct: decided positive
    assert store.satisfied(ask) and store.estimate("p").positive
    zero = RolloutAsk("z", 8, zero_after=6)
    store.add_rollouts("z", _rollouts(*["incorrect"] * 4))
    assert store.missing(zero) == 2  # doubling would make 8; the zero needs only 6 known verdicts
    store.add_rollouts("z", _rollouts("incorrect", "unknown"))  # 5 known: not yet
    assert (store.satisfied(zero), store.missing(zero)) == (False, 1)
    store.add_rollouts("z", _rollouts("incorrect"))
    assert store.satisfied(zero) and store.estimate("z").zero and store.estimate("z").n == 7
    fixed = RolloutAsk("z", 8)  # no zero_after: exactly k
    assert (store.satisfied(fixed), store.missing(fixed)) == (False, 1)


class _PrefixEngine(Generator):
    """Rollouts of prefix "good" are correct from the 3rd one on; of "bad", never. Records request sizes."""

    kind = "fake"

    def __init__(self):
        super().__init__()
        self.sizes = {}
        self.made = {}

    @property
    def model_id(self):
        return "fake"

    def _generate(self, requests: List[GenerationRequest]):
        out = []
        for req in requests:
            prefix = req.messages[-1][1] if req.continue_final_message else ""
            self.sizes.setdefault(prefix, []).append(req.n)
            comps = []
            for _ in range(req.n):
                self.made[prefix] = self.made.get(prefix, 0) + 1
                ok = prefix == "good" and self.made[prefix] >= 3 or prefix == ""
                comps.append(Completion(text=" yes" if ok else " no", num_tokens=1, finish_reason="stop"))
            out.append(comps)
        return out


def _verify(items):
    return [Verdict("correct", None, "1") if text.endswith("yes") else Verdict("incorrect", "answer_mismatch", "2")
            for text, *_ in items]


def test_scheduler_rolls_out_an_adaptive_ask_until_decided_and_answers_a_sampling_ask():
    engine = _PrefixEngine()
    ctx = ProblemContext("p1", "q?", "1")
    request = GenerationRequest.chat(None, "q?", n=3, seed=7)

    def search():
        (sampled,) = yield [SampleAsk(request)]
        good, bad = yield [RolloutAsk("good", 8, zero_after=8), RolloutAsk("bad", 8, zero_after=6)]
        return sampled, good, bad

    ((sampled, good, bad),) = RoundScheduler(engine, _verify, SamplingParams()).run([(ctx, search())])
    assert isinstance(sampled, Sampled) and [c.text for c in sampled.completions] == [" yes"] * 3
    assert [v.verdict for v in sampled.verdicts] == ["correct"] * 3
    assert engine.sizes == {"": [3], "good": [1, 1, 2], "bad": [1, 1, 2, 2]}
    assert (good.positive, good.n, good.n_correct) == (True, 4, 2)
    assert (bad.zero, bad.n) == (True, 6)
    assert ctx.store.held("") == 0  # a sampling ask never enters the evidence store by itself


def _chain_items(rate=0.1, n=6):
    problems = [chain_problem(3, i, num_steps=10) for i in range(n)]
    return sampled_chain_items(ChainPolicy(step_error_rate=rate), problems, 8, seed_of=lambda i: 100 + i)


def _label(engine, parallel, rounds=None, adaptive=False):
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=8, parallel_searches=parallel, adaptive=adaptive,
                                                selections_per_round=1),
                        compute_values=False, check_arithmetic=False, seed=1)
    return label_problems(_chain_items(), engine, chain_verify, cfg, sampling=SamplingParams(),
                          on_round=None if rounds is None else rounds.append)


def test_speculation_only_fills_idle_capacity_and_stale_probes_are_aborted():
    capacity = 12
    plain = _label(ScriptedGenerator(ChainPolicy(step_error_rate=0.1)), 1)
    engine = OneAtATimeGenerator(ChainPolicy(step_error_rate=0.1), capacity=capacity)
    rounds: list = []
    streamed = _label(engine, "auto", rounds)
    # Speculation and aborts change how full the engine is, never a row.
    assert [(r.step_labels, r.preferences, r.rejects) for r in streamed] == \
        [(r.step_labels, r.preferences, r.rejects) for r in plain]
    assert streamed[0].step_labels
    aborted = sum(r.stats["speculative_aborted"] for r in streamed)
    assert engine.aborted and aborted >= len(engine.aborted)
    assert sum(r.stats["prefetched"] for r in streamed) > 0
    # Never over capacity because of speculation: whenever speculative samples are in flight, all fit.
    for rec in rounds:
        if rec["inflight_samples"] > rec["inflight_real_samples"]:
            assert rec["inflight_samples"] <= capacity, rec


def test_abort_drops_queued_requests_of_a_round_engine():
    engine = ScriptedGenerator(ChainPolicy())
    q = chain_problem(0, 0, num_steps=3)["question"]
    h1, h2 = engine.submit([GenerationRequest.chat(None, q, n=1, seed=1), GenerationRequest.chat(None, q, n=2, seed=2)])
    engine.abort([h1])
    assert [h for h, _ in engine.poll()] == [h2]
    assert engine.poll() == []


def test_adaptive_omegaprm_labels_the_chain_world_exactly_with_fewer_rollouts():
    from counterpoint.testing.chain import chain_first_error

    fixed = _label(ScriptedGenerator(ChainPolicy(step_error_rate=0.1)), 1)
    adaptive = _label(ScriptedGenerator(ChainPolicy(step_error_rate=0.1)), 1, adaptive=True)
    items = {it.problem["problem_id"]: it.problem["question"] for it in _chain_items()}
    rows = [r for res in adaptive for r in res.step_labels]
    assert rows
    for row in rows:
        assert row["first_error_index"] == chain_first_error(items[row["problem_id"]], row["completions"])
    per_row = lambda results: sum(r.stats["rollouts"] for r in results) / sum(len(r.step_labels) for r in results)
    assert per_row(adaptive) < per_row(fixed)


def _tree_world(rate=0.15):
    """One chain problem whose samples are mixed (a tree to search), and its trajectories."""
    for i in range(40):
        problem = chain_problem(5, i, num_steps=12)
        (item,) = sampled_chain_items(ChainPolicy(step_error_rate=rate), [problem], 8, seed_of=lambda j: 300 + i)
        verdicts = [t["verdict"] for t in item.trajectories]
        if 1 <= verdicts.count("correct") <= 3:
            return item
    raise AssertionError("no mixed chain problem")


def _searched_tree(engine, item, adaptive=False, lockstep=False):
    """Runs one OmegaPRM tree (6 searches side by side) on ``engine``; returns the tree, its solutions
    and, per resumption, (groups pending, groups answered)."""
    cfg = OmegaPRMConfig(k=4, search_limit=30, parallel_searches=1, adaptive=adaptive, selections_per_round=6)
    p = item.problem
    ctx = ProblemContext(p["problem_id"], p["question"], p["gold_answer"], p["answer_type"], min_known=cfg.min_known)
    seed_root(ctx, item.trajectories)
    tree = OmegaPRMTree(ctx, cfg, first_discovered_index=len(item.trajectories))
    resumed: list = []

    def recorded(run):
        asks = next(run)
        while True:
            answers = yield asks
            resumed.append((len(asks.groups), len(answers)))
            try:
                asks = run.send(answers)
            except StopIteration as stop:
                return stop.value

    run = lockstep_driver(tree.run()) if lockstep else tree.run()
    (sols,) = RoundScheduler(engine, chain_verify, SamplingParams(), seed=1).run([(ctx, recorded(run))])
    return tree, sols, resumed


def _tree_shape(tree):
    return [(s.prefix, s.mc, s.n_rollouts, s.n_correct, s.N, s.terminal,
             tree.states[s.parent].prefix if s.parent is not None else None) for s in tree.states]


@pytest.mark.parametrize("adaptive", [False, True])
def test_tree_searches_run_at_their_own_pace_and_build_one_tree_whatever_the_answer_order(adaptive):
    item = _tree_world()
    policy = ChainPolicy(step_error_rate=0.15)
    # The reference: every pending search answered before any moves on (the tree in lockstep).
    lock_tree, lock_sols, _ = _searched_tree(ScriptedGenerator(policy), item, adaptive, lockstep=True)
    assert len(lock_sols) > 6 and lock_tree.selections == len(lock_sols)  # at least one slot refilled
    # Slots are refilled by searches selected ahead (chosen while the slot's search ran, started when it ended).
    ahead = lock_tree.ctx.stats["searches_selected_ahead"]
    assert 0 < ahead < lock_tree.selections
    engines = [ScriptedGenerator(policy)] + [ShuffledStreamGenerator(policy, order_seed=s) for s in (0, 1, 2)]
    for engine in engines:
        tree, sols, resumed = _searched_tree(engine, item, adaptive)
        assert max(pending for pending, _ in resumed) == 6
        if isinstance(engine, ShuffledStreamGenerator):
            # One request per poll, in random order: searches are resumed while others still wait ...
            assert sum(answered < pending for pending, answered in resumed) > len(resumed) // 2
        # ... and the tree, its N counts, every labelled solution and their order are the reference's
        # (n_rollouts is statistics: which search's ask caused a shared rollout depends on arrival).
        assert _tree_shape(tree) == _tree_shape(lock_tree)
        assert tree.ctx.stats["searches_selected_ahead"] == ahead
        strip = lambda s: dataclasses.replace(s, n_rollouts=0)  # noqa: E731
        assert [strip(s) for s in sols] == [strip(s) for s in lock_sols]
        assert sum(s.n_rollouts for s in sols) == sum(s.n_rollouts for s in lock_sols)
        assert [s.first_error_index for s in sols] == [s.first_error_index for s in lock_sols]


def test_side_by_side_resumes_each_search_when_its_own_asks_are_answered():
    def search(prefixes, log, name):
        for p in prefixes:
            (est,) = yield [RolloutAsk(p, 2)]
            log.append((name, p, est.n))
        return name

    log: list = []
    both = side_by_side(search(["good", "bad"], log, "a"), search(["bad"], log, "b"))
    asks = next(both)
    assert [key for key, _ in asks.groups] == [(0, None), (1, None)]
    est = Estimate("x", tuple(_rollouts("incorrect", "incorrect")), 2, min_known=1)
    asks = both.send({(1, None): [est]})  # only b's ask is back: b finishes, a still waits on "good"
    assert log == [("b", "bad", 2)] and [key for key, _ in asks.groups] == [(0, None)]
    assert asks.groups[0][1][0].prefix == "good"
    asks = both.send({(0, None): [est]})
    assert asks.groups[0][1][0].prefix == "bad"
    with pytest.raises(StopIteration) as stop:
        both.send({(0, None): [est]})
    assert stop.value.value == ("a", "b")
    assert log == [("b", "bad", 2), ("a", "good", 2), ("a", "bad", 2)]


class _Words(Policy):
    """Sample i of a request whose question is "N" is N + i words (N + i scripted tokens)."""

    def sample(self, request, sample_index, rng):
        return ScriptedSample(" ".join(["x"] * (int(request.messages[-1][1]) + sample_index)))


def test_stepped_engine_decodes_up_to_capacity_a_step_and_returns_a_request_when_its_longest_sequence_ends():
    eng = SteppedStreamGenerator(_Words(), capacity=2, step_ms_fixed=10.0, step_ms_per_sequence=1.0)
    a, b = eng.submit([GenerationRequest.chat(None, "3", n=2), GenerationRequest.chat(None, "2", n=1)])
    # a's sequences (3 and 4 tokens) fill both slots; b (2 tokens) joins when a's shorter one ends after step 3.
    ((handle, comps),) = eng.poll()
    assert handle == a and [c.num_tokens for c in comps] == [3, 4] and [c.text for c in comps] == ["x x x", "x x x x"]
    assert eng.seconds == pytest.approx(4 * 0.012) and eng.tokens == 8
    ((handle, comps),) = eng.poll()  # b decoded one token beside a's last step, one alone
    assert handle == b and [c.num_tokens for c in comps] == [2]
    assert eng.seconds == pytest.approx(4 * 0.012 + 0.011) and eng.tokens == 9
    assert eng.mean_running == pytest.approx((2 * 4 * 0.012 + 0.011) / (4 * 0.012 + 0.011))
    assert eng.plain_tokens_per_s == pytest.approx(2 / 0.012) and eng.poll() == []
    # Aborted requests never come back; lengths can be drawn around the script's (seeded factors).
    c, d = eng.submit([GenerationRequest.chat(None, "5", n=1), GenerationRequest.chat(None, "1", n=1)])
    eng.abort([d])
    before = eng.seconds
    assert [h for h, _ in eng.poll()] == [c] and eng.poll() == []
    assert eng.seconds == pytest.approx(before + 5 * 0.011)
    long = SteppedStreamGenerator(_Words(), capacity=2, length_factors=(3.0,), step_ms_fixed=10.0,
                                  step_ms_per_sequence=1.0)
    long.submit([GenerationRequest.chat(None, "2", n=1)])
    long.poll()
    assert long.tokens == 6 and long.seconds == pytest.approx(6 * 0.011)


def test_stepped_engine_starts_waiting_sequences_by_priority_then_first_come():
    eng = SteppedStreamGenerator(_Words(), capacity=1, step_ms_fixed=10.0, step_ms_per_sequence=1.0)
    late, early, urgent = eng.submit([GenerationRequest.chat(None, "1", n=1)], priority=1) + \
        eng.submit([GenerationRequest.chat(None, "1", n=1)], priority=1) + \
        eng.submit([GenerationRequest.chat(None, "1", n=1)], priority=0)
    assert [eng.poll()[0][0] for _ in range(3)] == [urgent, late, early] and eng.poll() == []


class _PriorityLog(SteppedStreamGenerator):
    """A stepped engine that records the priority of every request it is sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list = []  # (priority, a problem's own sampling?)

    def submit(self, requests, priority: int = 0):
        self.sent.extend((priority, not r.continue_final_message) for r in requests)
        return super().submit(requests, priority=priority)


def _stream_job(engine, n=12, rate=0.25, parallel_searches="auto"):
    from counterpoint.labeling.stream import sample_and_label

    problems = [chain_problem(5, i, num_steps=8) for i in range(n)]
    requests = [GenerationRequest.chat(None, p["question"], n=8, seed=500 + i) for i, p in enumerate(problems)]
    cfg = LabelerConfig(omegaprm=OmegaPRMConfig(k=4, search_limit=8, selections_per_round=4,
                                                parallel_searches=parallel_searches),
                        compute_values=True, check_arithmetic=False, seed=3)
    back: list = []

    def on_sampled(i, sampled):
        back.append((i, engine.seconds))
        (item,) = sampled_chain_items(ChainPolicy(step_error_rate=rate), [problems[i]], 8, seed_of=lambda _: 500 + i)
        assert [t["completion"] for t in item.trajectories] == [c.text for c in sampled.completions]
        return item

    results = sample_and_label(problems, requests, engine, chain_verify, cfg, sampling=SamplingParams(),
                               on_sampled=on_sampled)
    tables = [(r.problem_id, r.step_labels, r.step_values, r.preferences, r.rejects) for _, r, _ in results]
    return tables, back


@pytest.mark.parametrize("capacity", [1, 8, 128])
def test_sampling_runs_first_on_an_engine_with_priorities_and_rows_stay_the_same(capacity):
    """Issue 18: problems' own sampling is queued at PRIORITY_SAMPLING ahead of the searches' rollouts (every
    tree starts early); only the order of work changes: the tables equal those of the budget-only window."""
    policy = ChainPolicy(step_error_rate=0.25)
    fifo = SteppedStreamGenerator(policy, capacity=capacity, length_factors=(0.5, 1, 2), length_seed=1)
    fifo.priorities = False
    base, fifo_back = _stream_job(fifo)
    engine = _PriorityLog(policy, capacity=capacity, length_factors=(0.5, 1, 2), length_seed=1)
    tables, back = _stream_job(engine)
    assert tables == base
    assert any(labels for _, labels, _, _, _ in tables) and sorted(i for i, _ in back) == list(range(12))
    assert {p for p, sampling in engine.sent if sampling} == {PRIORITY_SAMPLING}
    assert PRIORITY_SEARCH in {p for p, sampling in engine.sent if not sampling} <= {PRIORITY_SEARCH,
                                                                                  PRIORITY_SPECULATIVE}
    if capacity < 12 * 8:  # not every problem's sampling fits at once: with priorities it is all back sooner
        assert back[-1][1] < 0.5 * fifo_back[-1][1], (back[-1], fifo_back[-1])


@pytest.mark.parametrize("capacity", [8, 32])
def test_the_window_admits_problems_by_the_engines_own_sequence_count_and_rows_stay_the_same(capacity):
    """A request of 8 samples is in flight until its longest sample ends, while the engine's slots of its
    finished samples are free: counted by the engine, the window admits the next problems into them."""
    policy = ChainPolicy(step_error_rate=0.25)
    blind = RequestCountedStreamGenerator(policy, capacity=capacity, length_factors=(0.5, 1, 2, 4), length_seed=1)
    blind.priorities = False
    base, blind_back = _stream_job(blind)
    seeing = SteppedStreamGenerator(policy, capacity=capacity, length_factors=(0.5, 1, 2, 4), length_seed=1)
    seeing.priorities = False
    assert seeing.unfinished_sequences == 0
    tables, back = _stream_job(seeing)
    assert tables == base and any(labels for _, labels, _, _, _ in tables)
    assert sorted(i for i, _ in back) == list(range(12))
    # the engine fuller and faster, the last problem sampled sooner (the simulated lengths are drawn in
    # submission order, so the work is not the same to the token: rates are compared)
    assert seeing.mean_running > blind.mean_running, (seeing.mean_running, blind.mean_running)
    assert seeing.tokens / seeing.seconds > blind.tokens / blind.seconds
    assert back[-1][1] < blind_back[-1][1]


def test_speculation_fills_what_the_engines_own_count_leaves_idle_and_rows_stay_the_same(monkeypatch):
    """A probe of k rollouts holds k places until its longest rollout ends: counted by requests, a speculation
    budget is never under while the engine decodes a few stragglers (0 prefetched in a real 64-problem job).
    Counted by the engine, speculation runs in that idle room — never past the speculation budget — and the
    tables are those of a job without speculation."""
    from counterpoint.labeling import scheduler as scheduler_mod

    sends: list = []  # (speculative, engine's count before, samples in requests before, n)
    send = scheduler_mod._Run.send

    def logged(run, i, asks, *, speculative):
        engine = run.s.generator.unfinished_sequences
        sends.append((speculative, engine, run.inflight, sum(n for _, _, n in asks)))
        return send(run, i, asks, speculative=speculative)

    def engine(cls, spec=8):
        e = cls(ChainPolicy(step_error_rate=0.25), capacity=32, length_factors=(0.5, 1, 2, 4), length_seed=1,
                speculation_capacity=spec)
        e.priorities = False
        return e

    monkeypatch.setattr(scheduler_mod._Run, "send", logged)
    seeing = engine(SteppedStreamGenerator)
    tables, _ = _stream_job(seeing)
    speculative = [(held, requested, n) for spec, held, requested, n in sends if spec]
    sends.clear()
    blind_tables, _ = _stream_job(engine(RequestCountedStreamGenerator))
    blind = [(held, requested, n) for spec, held, requested, n in sends if spec]
    sends.clear()
    plain_tables, _ = _stream_job(engine(SteppedStreamGenerator, spec=None), parallel_searches=1)
    assert tables == blind_tables == plain_tables and any(labels for _, labels, _, _, _ in tables)
    assert speculative and len(speculative) > len(blind)
    assert all(held + n <= 8 for held, _, n in speculative), speculative
    # sent where the samples of requests in flight left no room: only the engine's count saw it
    assert any(requested + n > 8 for _, requested, n in speculative), speculative


def test_the_request_cache_passes_priorities_and_the_speculation_capacity_to_its_engine(tmp_path):
    from counterpoint.cache import CachedGenerator, RequestCache

    class CpuLike(SteppedStreamGenerator):
        speculation_capacity = 5

    inner = CpuLike(_Words(), capacity=1, step_ms_fixed=10.0, step_ms_per_sequence=1.0)
    gen = CachedGenerator(inner, RequestCache(str(tmp_path), inner.model_fingerprint))
    assert gen.priorities and gen.capacity == 1 and gen.speculation_capacity == 5
    assert gen.unfinished_sequences == 0
    first = GenerationRequest.chat(None, "2", n=1, seed=1)
    late, urgent = gen.submit([first], priority=1) + gen.submit([GenerationRequest.chat(None, "1", n=1, seed=2)],
                                                                priority=0)
    assert gen.unfinished_sequences == 2  # the engine's own count, through the cache
    assert [gen.poll()[0][0] for _ in range(2)] == [urgent, late] and gen.poll() == []
    (again,) = gen.submit([first], priority=1)  # a cache hit: never sent to the engine
    steps = inner.tokens
    assert [(h, [c.text for c in comps]) for h, comps in gen.poll()] == [(again, ["x x"])] and inner.tokens == steps
    fifo = CachedGenerator(OneAtATimeGenerator(_Words(), capacity=4), RequestCache(str(tmp_path / "b"), "m"))
    assert not fifo.priorities  # an engine without priorities is sent plain submits
    (h,) = fifo.submit([first], priority=1)
    assert [hh for hh, _ in fifo.poll()] == [h]
