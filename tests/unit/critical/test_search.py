"""The rollout search and the ban test on the scripted poison-token world (counterpoint.testing.critical)."""

import pytest

from counterpoint.critical.rows import step_of, step_token_starts
from counterpoint.critical.search import BanAsk, ban_tests, critical_search, random_position, run_searches
from counterpoint.generators.base import GenerationRequest, SamplingParams
from counterpoint.generators.scripted import ScriptedGenerator, chain_problem
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
from counterpoint.testing.chain import chain_verify
from counterpoint.testing.critical import PoisonChainPolicy, chain_texts, poison_step, poison_token_position
from counterpoint.testing.worlds import sampled_chain_items

SAMPLING = SamplingParams(temperature=0.8, max_tokens=256)


@pytest.fixture(scope="module")
def world(tokenizer, poison_id):
    """Labelled chain problems of the poison policy (every incorrect sample is a planted one), as search jobs."""
    policy = PoisonChainPolicy(poison_rate=0.4, poison_token_id=poison_id)
    items = sampled_chain_items(policy, [chain_problem(7, i, num_steps=5) for i in range(5)], 6)
    labelled = label_problems(items, ScriptedGenerator(policy), chain_verify,
                              LabelerConfig(omegaprm=OmegaPRMConfig(k=8, parallel_searches=1)), sampling=SAMPLING)
    first = {(r["problem_id"], r["sample_index"]): r["first_error_index"]
             for res in labelled for r in res.step_labels}
    jobs = []
    for it in items:
        for t in it.trajectories:
            if (it.problem["problem_id"], t["sample_index"]) not in first:
                continue  # OmegaPRM searches one of identical negatives (the world has two texts per question)
            enc = tokenizer(t["completion"], add_special_tokens=False, return_offsets_mapping=True)
            jobs.append((it.problem, enc["input_ids"], step_token_starts(enc["offset_mapping"], t["steps"]),
                         first[(it.problem["problem_id"], t["sample_index"])]))
    return policy, jobs


def test_the_world_plants_the_poison_in_every_incorrect_sample(world, poison_id):
    _, jobs = world
    assert len(jobs) >= 5
    for problem, ids, starts, first in jobs:
        pos = poison_token_position(ids, poison_id)
        assert pos is not None and step_of(starts, pos) == poison_step(problem["question"]) == first


def test_rollout_search_finds_the_planted_token_exactly(world, tokenizer, poison_id):
    policy, jobs = world
    engine = ScriptedGenerator(policy)
    results = run_searches(jobs, engine, chain_verify, k=8, params=SAMPLING, system_prompt=None,
                           decode=tokenizer.decode, seed=0)
    for (problem, ids, starts, first), r in zip(jobs, results):
        assert r.position == poison_token_position(ids, poison_id), (r, problem["problem_id"])
        lo, hi = starts[first], starts[first + 1]
        # both ends, then a halving per probe: about log2(tokens in the step) probes of k rollouts
        assert [p for p, _ in r.probes[:2]] == [lo, hi] and r.probes[0][1] > 0 and r.probes[1][1] == 0.0
        assert len(r.probes) - 2 <= (hi - lo - 1).bit_length()
        assert 0 < r.rollouts <= 8 * len(r.probes)


def test_search_reports_why_it_found_nothing(tokenizer, poison_id):
    """A step that does not hold the poison: its end still succeeds, no position."""
    problem = chain_problem(7, 0, num_steps=5)
    _, bad, _ = chain_texts(problem["question"])
    from counterpoint.segmentation import segment

    steps = segment(bad)
    enc = tokenizer(bad, add_special_tokens=False, return_offsets_mapping=True)
    starts = step_token_starts(enc["offset_mapping"], steps)
    policy = PoisonChainPolicy(poison_rate=0.4, poison_token_id=poison_id)
    (r,) = run_searches([(problem, enc["input_ids"], starts, 0)], ScriptedGenerator(policy), chain_verify, k=8,
                        params=SAMPLING, system_prompt=None, decode=tokenizer.decode)
    assert r.position is None and r.why == "step_end_succeeds" and r.rollouts > 0
    gen = critical_search([1, 2], [0, 2], 1, 4, tokenizer.decode)  # an empty last step: no probe at all
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value.why == "empty_step"


def test_ban_test_shows_the_planted_gap(world, tokenizer, poison_id):
    policy, jobs = world
    engine = ScriptedGenerator(policy)
    asks, randoms = [], []
    for i, (problem, ids, _, _) in enumerate(jobs):
        pos = poison_token_position(ids, poison_id)
        rand = random_position(problem["problem_id"], i, len(ids), 0)
        randoms.append(rand > pos)
        asks += [BanAsk(problem, tuple(ids), pos), BanAsk(problem, tuple(ids), rand)]
    rates = ban_tests(asks, engine, chain_verify, n=8, params=SAMPLING, system_prompt=None, decode=tokenizer.decode)
    banned, random_rates = rates[0::2], rates[1::2]
    assert banned == [1.0] * len(jobs)  # decoding something else at the poison always recovers
    for after, r in zip(randoms, random_rates):
        assert r == 0.0 if after else r < 1.0  # after the poison nothing recovers; before it, sometimes
    assert sum(banned) / len(banned) - sum(random_rates) / len(random_rates) >= 0.4


def test_ban_is_part_of_the_request_and_its_cache_key():
    plain = GenerationRequest.chat(None, "q", n=2, seed=1)
    banned = GenerationRequest.chat(None, "q", n=2, seed=1, ban_first_tokens=[5, 3])
    assert banned.ban_first_tokens == (5, 3) and plain.ban_first_tokens == ()
    assert plain.cache_key("m") != banned.cache_key("m")
    # a request without a ban keeps the key it had before the field existed
    import hashlib
    import json

    old = json.dumps({"model": "m", "messages": plain.messages, "continue": False, "params": plain.params.to_dict(),
                      "seed": 1, "n": 2}, sort_keys=True, ensure_ascii=False)
    assert plain.cache_key("m") == hashlib.sha256(old.encode("utf-8")).hexdigest()
