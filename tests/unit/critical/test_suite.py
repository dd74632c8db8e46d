"""The GX shard suite of ``critical_tokens``: the row rules beside the schema's."""

from _fakes import shard_rule_checker

GOOD = {"id": "p/s1/critical", "problem_id": "p", "sample_index": 1, "prompt": [{"role": "user", "content": "q"}],
        "completion": "a b", "token_ids": [1, 2], "tokens": ["a", " b"], "logp_positive": [-1.0, -0.5],
        "logp_negative": [-0.2, -0.1], "contrastive_score": [0.3, 0.9], "token_weights": [0.7, 0.1],
        "score_form": "full_distribution", "top_critical_positions": [0, 1], "first_wrong_step": 0,
        "step_token_starts": [0], "rollout_critical_position": 0, "rollout_critical_step": 0,
        "contrast_in_first_wrong_step": True, "search_rollouts": 8, "banned_success_rate": 1.0,
        "contrast_ban_success_rate": 1.0, "random_ban_position": 1, "random_ban_success_rate": 0.0,
        "ban_rollouts": 4, "contrast_models": "{}", "model_id": "m"}


def test_critical_tokens_suite_fails_broken_rows():
    failed_rules = shard_rule_checker("critical_tokens")

    assert failed_rules(GOOD) == []
    assert failed_rules(GOOD | {"rollout_critical_step": 1}) == ["equal"]
    assert failed_rules(GOOD | {"first_wrong_step": None}) == []  # nothing to compare
    assert failed_rules(GOOD | {"search_rollouts": 0}) == ["null where search_rollouts == 0"] * 2
    assert failed_rules(GOOD | {"token_weights": [0.7]}) == ["equal_length"]
    assert failed_rules(GOOD | {"score_form": "other"}) == ["value_set"]
    assert failed_rules(GOOD | {"logp_negative": [-0.2, 0.1]}) == ["element_range"]
