"""counterpoint.rewards: TRL and verl reward functions that judge as the corpus did (issue 19).

Values on known right / wrong / unknown / malformed completions, TRL's calling
convention (conversational completions, dataset columns as keyword arguments, the
trainer's extra keywords), verl's (NaiveRewardManager calls the custom function with
keyword arguments, ``reward_kwargs`` bound by ``get_custom_reward_fn``), the unknown
score's bounds, the version check, and a call from a non-main thread with the
math-verify pool (whose own timeout would need the main thread).
"""

from __future__ import annotations

import functools
import threading

import pytest

from counterpoint import rewards
from counterpoint.errors import ConfigError
from counterpoint.verifiers import MathVerifier, NumericVerifier

RIGHT = ["The steps add up.\n\nSo the result is \\boxed{42}.", "6 * 7 = 42\n#### 42", "The answer is 42."]
WRONG = ["So the result is \\boxed{41}.", "#### 43", "The answer is 40."]
MALFORMED = ["lorem ipsum dolor", "", "\\boxed{"]


def _conv(text):
    return [{"role": "assistant", "content": text}]


def _trl_call(fn, completions, **columns):
    """What GRPOTrainer._calculate_rewards passes to a synchronous reward function (TRL 1.16)."""
    n = len(completions)
    return fn(prompts=[[{"role": "user", "content": "What is 6 * 7?"}]] * n, completions=completions,
              completion_ids=[[1, 2, 3]] * n, trainer_state=object(), log_extra=lambda *a, **k: None,
              log_metric=lambda *a, **k: None, **columns)


def test_trl_reward_scores_right_wrong_and_malformed_completions_with_the_math_verifier():
    texts = RIGHT + WRONG + MALFORMED
    got = _trl_call(rewards.trl_reward, [_conv(t) for t in texts], answer=["42"] * len(texts))
    assert got == [1.0] * 3 + [0.0] * 3 + [0.0] * 3
    # Plain-string completions (the standard, non-conversational format) and the `solution` alias.
    assert _trl_call(rewards.trl_reward, texts, solution=["42"] * len(texts)) == got
    assert all(isinstance(x, float) for x in got)


def test_trl_reward_follows_the_corpus_verifier_column_and_scores_unknown_as_configured():
    texts = ["The answer is 90 minutes.", "The answer is 90 seconds.", "The answer is 80 minutes.", "no idea"]
    version = NumericVerifier().version
    cols = dict(answer=["90 minutes"] * 4, verifier=["numeric"] * 4, verifier_version=[version] * 4)
    assert _trl_call(rewards.trl_reward, [_conv(t) for t in texts], **cols) == [1.0, 0.0, 0.0, 0.0]
    penalised = rewards.make_trl_reward(unknown_score=-0.5)
    assert penalised.__name__ == "counterpoint_reward"  # TRL logs reward functions by __name__
    assert _trl_call(penalised, texts, **cols) == [1.0, -0.5, 0.0, 0.0]


@pytest.mark.parametrize("bad", [1.0, 1.5, float("nan"), float("inf"), True, "0"])
def test_unknown_never_scores_one(bad):
    with pytest.raises(ConfigError, match="below 1.0"):
        rewards.make_trl_reward(unknown_score=bad)
    with pytest.raises(ConfigError, match="below 1.0"):
        rewards.verl_compute_score("counterpoint/x", "The answer is 4.", "4", unknown_score=bad)


def test_malformed_inputs_and_missing_gold_give_clear_errors_or_zero():
    odd = [None, 5, [{"role": "user", "content": "The answer is 42."}],
           [{"role": "assistant", "content": [{"type": "text", "text": "The answer is "}, {"type": "text", "text": "42."}]}]]
    assert _trl_call(rewards.trl_reward, odd, answer=["42"] * 4, verifier=["numeric"] * 4) == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="'answer' column"):
        _trl_call(rewards.trl_reward, ["The answer is 42."], question=["q"])
    with pytest.raises(ConfigError, match="1 gold answers for 2 completions"):
        _trl_call(rewards.trl_reward, ["a", "b"], answer=["42"])
    with pytest.raises(ConfigError, match="unknown"):
        _trl_call(rewards.trl_reward, ["a"], answer=["42"], verifier=["sympy"])


def test_a_different_verifier_version_is_refused_unless_asked():
    cols = dict(answer=["42"], verifier=["numeric"], verifier_version=["counterpoint==0.0.1 rules-1"])
    with pytest.raises(ConfigError, match="judged by numeric 'counterpoint==0.0.1 rules-1'"):
        _trl_call(rewards.trl_reward, ["The answer is 42."], **cols)
    assert _trl_call(rewards.make_trl_reward(check_version=False), ["The answer is 42."], **cols) == [1.0]


def test_verl_compute_score_called_like_verls_reward_manager():
    """NaiveRewardManager: compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...);
    get_custom_reward_fn binds custom_reward_function.reward_kwargs as extra keyword arguments."""

    def _call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):  # verl.trainer.ppo.reward
        return raw_fn(*args, **kwargs, **extra_kwargs)

    compute_score = functools.partial(_call_with_kwargs, rewards.verl_compute_score, {})
    penalised = functools.partial(_call_with_kwargs, rewards.verl_compute_score, {"unknown_score": -1.0})
    numeric = {"split": "train", "index": 3, "pass_rate": 0.5, "verifier": "numeric",
               "verifier_version": NumericVerifier().version}
    cases = [  # (solution_str, ground_truth, extra_info, score, penalised score)
        ("So \\boxed{42}.", "42", None, 1.0, 1.0),
        ("6 * 7 = 42\n#### 42", "42", {"split": "train", "index": 0}, 1.0, 1.0),
        ("The answer is 42.", 42, numeric, 1.0, 1.0),
        ("The answer is 41.", "42", numeric, 0.0, 0.0),
        ("The answer is 90 seconds.", "90 minutes", numeric, 0.0, -1.0),  # unknown
        ("asdf qwerty", "42", numeric, 0.0, 0.0),  # malformed: no final answer
    ]
    for solution, gold, extra, want, want_penalised in cases:
        kw = dict(data_source="counterpoint/math", solution_str=solution, ground_truth=gold, extra_info=extra)
        score = compute_score(**kw)
        assert isinstance(score, float) and score == want, solution
        assert penalised(**kw) == want_penalised, solution


def test_math_verifier_pool_from_a_non_main_thread():
    """math-verify's own timeout is signal.alarm (main thread only); the suite's spawned workers judge instead."""
    out = {}

    def work():
        try:
            out["scores"] = rewards.trl_reward(RIGHT + WRONG, answer=["42"] * 6, verifier=["math"] * 6,
                                               verifier_version=[MathVerifier().version] * 6)
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=work, name="not-main")
    t.start()
    t.join(timeout=300)
    assert "error" not in out, out.get("error")
    assert out["scores"] == [1.0] * 3 + [0.0] * 3
