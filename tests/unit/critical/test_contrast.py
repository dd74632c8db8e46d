"""cDPO's contrastive estimator (counterpoint.critical.contrast): both forms, weights, top positions."""

import math

import numpy as np
import pytest

from counterpoint.critical import contrast


def _planted_logits(T=6, V=10, planted=3, seed=0):
    """Two models that agree everywhere but at position ``planted``, where the negative model puts most
    of its mass on the sampled token and the positive model little."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(T, V))
    pos, neg = base.copy(), base.copy()
    ids = [int(np.argmax(base[t])) for t in range(T)]  # the sampled tokens: each position's mode
    pos[planted, ids[planted]] -= 6.0
    neg[planted, ids[planted]] += 6.0
    return pos, neg, ids


def test_full_form_matches_the_papers_code_by_hand():
    # softmax((1+1) * pos_logits - 1 * neg_logits)[y], as in calculate_ce_score
    pos = np.array([[1.0, 0.0, -1.0]])
    neg = np.array([[0.0, 2.0, 0.0]])
    cd = 2 * pos - neg
    want = math.exp(cd[0, 0]) / np.exp(cd[0]).sum()
    assert contrast.scores_from_logits(pos, neg, [0]) == [pytest.approx(want)]
    # logits and log-probs give the same score (the per-position constants cancel)
    lp = pos - np.log(np.exp(pos).sum()); lq = neg - np.log(np.exp(neg).sum())
    assert contrast.scores_from_logits(lp, lq, [0]) == [pytest.approx(want)]


def test_planted_token_gets_the_largest_contrast_in_both_forms():
    pos, neg, ids = _planted_logits()
    full = contrast.scores_from_logits(pos, neg, ids)
    assert contrast.top_positions(full, 1) == [3]
    assert min(full) == full[3] and full[3] < 0.01 and all(s > 0.1 for t, s in enumerate(full) if t != 3)
    lp = contrast.sampled_logprobs(pos, ids); lq = contrast.sampled_logprobs(neg, ids)
    ratio = contrast.scores_from_logprobs(lp, lq)
    assert contrast.top_positions(ratio, 1) == [3]
    # the log-ratio form drops log Z >= 0 (a Rényi divergence): it bounds the full score from above
    assert all(r >= f - 1e-12 for r, f in zip(ratio, full))
    w = contrast.token_weights(full)
    assert w[3] == max(w) and w[3] > 0.99 and all(0.0 <= x <= 1.0 for x in w)


def test_equal_models_score_each_token_by_its_probability():
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    assert contrast.scores_from_logits(logits, logits, [1, 2]) == [pytest.approx(0.3), pytest.approx(0.8)]
    assert contrast.scores_from_logprobs([math.log(0.3)], [math.log(0.3)]) == [pytest.approx(0.3)]
    assert contrast.token_weights([0.3, 1.0, 0.0]) == [pytest.approx(0.7), 0.0, 1.0]


def test_top_positions_order_and_ties():
    assert contrast.top_positions([0.5, 0.1, 0.1, 0.9], 3) == [1, 2, 0]
    assert contrast.top_positions([0.5], 4) == [0]
    assert contrast.top_positions([], 2) == []


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        contrast.scores_from_logits(np.zeros((2, 3)), np.zeros((2, 3)), [0])
    with pytest.raises(ValueError):
        contrast.scores_from_logprobs([0.0], [])
