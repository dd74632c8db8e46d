"""Issue 18 units: the adaptive rollout rule, sampling asks, and speculation only into idle capacity
(cancelled with the engine's ``abort``) — with scripted engines, no timing."""

from __future__ import annotations

from typing import List

from counterpoint.generators.base import Completion, GenerationRequest, Generator, SamplingParams
from counterpoint.generators.scripted import ChainPolicy, ScriptedGenerator, chain_problem
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
from counterpoint.labeling.evidence import EvidenceStore, Rollout, RolloutAsk, adaptive_next_total
from counterpoint.labeling.scheduler import ProblemContext, RoundScheduler, SampleAsk, Sampled
from counterpoint.testing.chain import chain_verify
from counterpoint.testing.stream import OneAtATimeGenerator
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
