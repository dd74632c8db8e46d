"""The vLLM engine's first-token ban (issue 21), without an engine: the two phases and how they are merged."""

from __future__ import annotations

from counterpoint.generators.base import Completion, GenerationRequest, SamplingParams
from counterpoint.generators.vllm_local import VLLMGenerator


def test_banned_request_is_one_biased_token_then_a_continuation_from_it(monkeypatch):
    gen = VLLMGenerator("embedded")
    calls = []

    def fake_plain(requests, extra_ids=None, keep_token_ids=False):
        calls.append((requests, extra_ids, keep_token_ids))
        if keep_token_ids:  # phase 1: one token per sample; sample 1 stopped (EOS) at once
            return [[(Completion("A", 1, "length", -0.5), (11,)), (Completion("", 1, "stop", -0.1), (2,)),
                     (Completion("B", 1, "length", -0.7), (12,))]]
        return [[(Completion(f" rest{i}", 4, "stop", -1.0, num_prompt_tokens=30), (0,))] for i in range(len(requests))]

    monkeypatch.setattr(gen, "_generate_plain", fake_plain)
    plain = GenerationRequest.chat(None, "q", n=1, seed=3)
    req = GenerationRequest.continuation("sys", "q", "prefix", n=3, seed=40, ban_first_tokens=(11, 99),
                                         params=SamplingParams(max_tokens=8))
    monkeypatch.setattr(gen, "_generate_banned", VLLMGenerator._generate_banned.__get__(gen))
    out = gen._generate_banned([req])
    (first, _, keep), (rest, extra, _) = calls
    assert keep and [r.params.max_tokens for r in first] == [1] and first[0].ban_first_tokens == (11, 99)
    # only samples that did not stop go on: without the ban, one sample each, from prompt + their first token
    assert extra == [[11], [12]] and all(r.ban_first_tokens == () and r.n == 1 for r in rest)
    assert [r.params.max_tokens for r in rest] == [7, 7] and [r.seed for r in rest] == [41, 43]
    assert [c.text for c in out[0]] == ["A rest0", "", "B rest1"]
    assert [c.num_tokens for c in out[0]] == [5, 1, 5] and out[0][0].cumulative_logprob == -1.5
    assert plain.ban_first_tokens == ()


def test_logit_bias_bans_only_when_asked():
    gen = VLLMGenerator("embedded")
    gen._resolved_seed_mode = "request"
    banned = gen._sampling_params(GenerationRequest.chat(None, "q", ban_first_tokens=(5,)))
    assert banned.logit_bias == {5: -100.0}
    assert gen._sampling_params(GenerationRequest.chat(None, "q")).logit_bias is None
