"""The GX shard suite of ``critical_tokens``: the row rules beside the schema's."""

from counterpoint.schemas import records
from counterpoint.validation import suites

GOOD = {"id": "p/s1/critical", "problem_id": "p", "sample_index": 1, "prompt": [{"role": "user", "content": "q"}],
        "completion": "a b", "token_ids": [1, 2], "tokens": ["a", " b"], "logp_positive": [-1.0, -0.5],
        "logp_negative": [-0.2, -0.1], "contrastive_score": [0.3, 0.9], "token_weights": [0.7, 0.1],
        "score_form": "full_distribution", "top_critical_positions": [0, 1], "first_wrong_step": 0,
        "step_token_starts": [0], "rollout_critical_position": 0, "rollout_critical_step": 0,
        "contrast_in_first_wrong_step": True, "search_rollouts": 8, "banned_success_rate": 1.0,
        "contrast_ban_success_rate": 1.0, "random_ban_position": 1, "random_ban_success_rate": 0.0,
        "ban_rollouts": 4, "contrast_models": "{}", "model_id": "m"}


def test_critical_tokens_suite_fails_broken_rows():
    _, batch_definition, built = suites.make_context(["critical_tokens"], levels=(suites.SHARD,))
    suite = built[("critical_tokens", suites.SHARD)]

    def failed_rules(row):
        table = records.rows_to_table("critical_tokens", [row])
        df = suites.shard_frame(table, records.table("critical_tokens"))
        result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        return sorted(r.expectation_config.meta["counterpoint"]["rule"] for r in result.results if not r.success)

    assert failed_rules(GOOD) == []
    assert failed_rules(GOOD | {"rollout_critical_step": 1}) == ["equal"]
    assert failed_rules(GOOD | {"first_wrong_step": None}) == []  # nothing to compare
    assert failed_rules(GOOD | {"search_rollouts": 0}) == ["null where search_rollouts == 0"] * 2
    assert failed_rules(GOOD | {"token_weights": [0.7]}) == ["equal_length"]
    assert failed_rules(GOOD | {"score_form": "other"}) == ["value_set"]
    assert failed_rules(GOOD | {"logp_negative": [-0.2, 0.1]}) == ["element_range"]
