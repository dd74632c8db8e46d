"""The contrast models (counterpoint.critical.scorer): scores by an independent forward pass, and bad input."""

import math

import pytest

from counterpoint.critical import contrast
from counterpoint.critical.scorer import ContrastScorer, preflight
from counterpoint.errors import UsageError

from _critical import break_tokenizer, copy_dir, make_contrast_dir


@pytest.fixture(scope="module")
def contrast_dir(tmp_path_factory):
    return make_contrast_dir(tmp_path_factory.mktemp("contrast") / "cm")


def test_scores_match_an_independent_forward_pass(contrast_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    prompt = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "What is 2 + 3?"}]
    completions = ["Step 1: 2 + 3 = 6.\n\nThe answer is 6.", "The answer is 5."]
    scorer = ContrastScorer(str(contrast_dir), None, batch_size=2).load()
    got = scorer.score([(prompt, c) for c in completions])
    for c, sc in zip(completions, got):
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        assert sc.token_ids == ids and sc.tokens == [tokenizer.decode([i]) for i in ids] and not sc.truncated
        p = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        logits = {}
        for side in ("positive", "negative"):  # one sequence at a time: no padding involved
            model = AutoModelForCausalLM.from_pretrained(contrast_dir / side).eval()
            with torch.no_grad():
                out = model(torch.tensor([p + ids])).logits[0, len(p) - 1:len(p) - 1 + len(ids)].float().numpy()
            logits[side] = out
        want_p = contrast.sampled_logprobs(logits["positive"], ids)
        assert sc.logp_positive == pytest.approx(want_p, abs=1e-4)
        assert sc.logp_negative == pytest.approx(contrast.sampled_logprobs(logits["negative"], ids), abs=1e-4)
        assert sc.scores == pytest.approx(contrast.scores_from_logits(logits["positive"], logits["negative"], ids),
                                          abs=1e-5)
        assert all(x <= 0 and math.isfinite(x) for x in sc.logp_positive)
    assert '"beta": 1.0' in scorer.contrast_models and str(contrast_dir) in scorer.contrast_models


def test_too_long_is_flagged(contrast_dir):
    sc = ContrastScorer(str(contrast_dir), None, max_length=40).load().score(
        [([{"role": "user", "content": "q"}], "word " * 50)])[0]
    assert sc.truncated and len(sc.token_ids) < 50


def test_tokenizer_mismatch_is_a_clear_error(contrast_dir, tmp_path):
    bad = copy_dir(contrast_dir, tmp_path / "bad")
    break_tokenizer(bad)
    with pytest.raises(UsageError, match="another tokenizer than the policy.*contrast-models --base"):
        preflight(str(bad), None)
    with pytest.raises(UsageError, match="another tokenizer"):
        ContrastScorer(str(bad), None).load()


def test_directory_that_does_not_load_is_a_clear_error(contrast_dir, tmp_path):
    with pytest.raises(UsageError, match="not a contrast-models directory.*counterpoint contrast-models"):
        preflight(str(tmp_path / "missing"), None)
    broken = copy_dir(contrast_dir, tmp_path / "broken")
    (broken / "positive" / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="positive contrast model .* does not load.*contrast-models"):
        preflight(str(broken), None)
    weights = copy_dir(contrast_dir, tmp_path / "weights")
    for f in (weights / "negative").glob("*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(UsageError, match="negative contrast model .* does not load"):
        ContrastScorer(str(weights), None).load()


def test_log_ratio_form_from_the_same_log_probs(contrast_dir):
    from counterpoint.critical.contrast import scores_from_logprobs

    item = [([{"role": "user", "content": "What is 2 + 3?"}], "The answer is 6.")]
    full = ContrastScorer(str(contrast_dir), None).load().score(item)[0]
    ratio = ContrastScorer(str(contrast_dir), None, score_form="log_ratio").load().score(item)[0]
    assert ratio.score_form == "log_ratio" and full.score_form == "full_distribution"
    assert ratio.logp_positive == full.logp_positive and ratio.token_ids == full.token_ids
    assert ratio.scores == scores_from_logprobs(full.logp_positive, full.logp_negative)
    assert all(r >= f - 1e-9 for r, f in zip(ratio.scores, full.scores))  # an upper bound of the full form
    with pytest.raises(ValueError):
        ContrastScorer(str(contrast_dir), None, score_form="other")
