"""Figures of the ``critical_tokens`` config (issue 21): the card's, the report's and the benchmark's aggregation.

Three hand-made rows, every expectation worked out by hand in the comments.
"""

from __future__ import annotations

import pytest

from counterpoint.dataset.critical_tokens import critical_figures, figure_rows, step_of


def _row(i, **kw):
    base = {"id": f"p/s{i}", "score_form": "full_distribution", "top_critical_positions": [],
            "step_token_starts": [0, 5, 9],
            "rollout_critical_position": None, "rollout_critical_step": None, "first_wrong_step": None,
            "contrast_in_first_wrong_step": None, "search_rollouts": 0, "banned_success_rate": None,
            "contrast_ban_success_rate": None, "random_ban_success_rate": None, "ban_rollouts": 4}
    return {**base, **kw}


ROWS = [
    # found at 6 (step 1 = first wrong step); contrast top 6: same token, same step, in the first wrong step
    _row(0, top_critical_positions=[6, 2], rollout_critical_position=6, rollout_critical_step=1, first_wrong_step=1,
         contrast_in_first_wrong_step=True, search_rollouts=12, banned_success_rate=0.75,
         contrast_ban_success_rate=0.75, random_ban_success_rate=0.0),
    # found at 9 (step 2; first wrong step 1); contrast top 7 (step 1): other token, other step
    _row(1, top_critical_positions=[7], rollout_critical_position=9, rollout_critical_step=2, first_wrong_step=1,
         contrast_in_first_wrong_step=True, search_rollouts=8, banned_success_rate=0.25,
         contrast_ban_success_rate=0.0, random_ban_success_rate=0.25),
    # not searched (no first wrong step located), log-ratio form, only the contrast ban test ran
    _row(2, score_form="log_ratio", top_critical_positions=[3], contrast_ban_success_rate=0.5),
]


def test_step_of():
    assert [step_of(p, [0, 5, 9]) for p in (0, 4, 5, 8, 9, 30)] == [0, 0, 1, 1, 2, 2]
    assert step_of(None, [0, 5]) is None and step_of(3, []) is None and step_of(1, [2, 4]) is None


def test_figures_of_planted_rows():
    f = critical_figures(ROWS)
    assert f == {
        "rows": 3, "searched": 2, "found": 2, "score_forms": {"full_distribution": 2, "log_ratio": 1},
        "rollout_ban_success": 0.5, "n_rollout_ban_success": 2,            # (0.75 + 0.25) / 2
        "contrast_ban_success": 1.25 / 3, "n_contrast_ban_success": 3,     # (0.75 + 0 + 0.5) / 3
        "random_ban_success": 0.125, "n_random_ban_success": 2,            # (0 + 0.25) / 2
        "agree_token": 0.5, "n_agree_token": 2, "agree_step": 0.5, "n_agree_step": 2,
        "rollout_in_first_wrong_step": 0.5, "n_rollout_in_first_wrong_step": 2,
        "contrast_in_first_wrong_step": 1.0, "n_contrast_in_first_wrong_step": 2,
        "ban_tests": 7, "rollouts": 12 + 8 + 7 * 4, "rollouts_per_critical_token": (12 + 8 + 28) / 2,
        "search_rollouts": 12 + 8, "search_rollouts_per_critical_token": (12 + 8) / 2,
    }
    table = figure_rows(f)
    assert table[0] == ["scored incorrect trajectories", "3", ""]
    assert ["success after banning a random token", "0.125", "2"] in table


def test_figures_of_no_rows():
    f = critical_figures([])
    assert f["rows"] == f["found"] == 0 and f["rollouts_per_critical_token"] is None
    assert f["rollout_ban_success"] is None and f["agree_token"] is None
    assert ["contrast = rollout (same token)", "n/a", "0"] in figure_rows(f)


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS[2:]])
def test_figures_never_divide_by_zero(rows):
    f = critical_figures(rows)
    assert f["rows"] == 1
