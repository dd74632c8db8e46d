"""The ``critical_tokens`` config (issue 21): token-level negatives of cDPO, registered into ``records.OUTPUT_TABLES``.

One row per scored incorrect trajectory (``trajectories`` row with verdict ``incorrect``). Tokens are those of
the **policy's** tokenizer applied to the completion alone (``add_special_tokens=False``), the way TRL tokenizes
a DPO completion, so ``token_weights`` line up with ``tokenize(rejected)`` in the ``token-weighted-pairs`` export.

Made by ``counterpoint.critical`` (contrastive estimation with a positive and a negative contrast model, after
"Critical Tokens Matter", arXiv 2411.19943) and, where searched, by the rollout search for the first token prefix
whose rollouts all fail inside OmegaPRM's first wrong step.
"""

from __future__ import annotations

from typing import Dict

import pyarrow as pa

from counterpoint.schemas import records
from counterpoint.schemas.records import MESSAGES_TYPE, TableSpec, _c

#: How the contrastive score was computed: from both models' full next-token distributions, or from the
#: sampled token's log-probabilities only (vLLM prompt log-probs, an OpenAI-compatible server).
SCORE_FORMS = ("full_distribution", "log_ratio")

CRITICAL_TOKENS = TableSpec(
    name="critical_tokens",
    doc="Token-level negatives (issue 21; counterpoint.critical): every token of a verified-incorrect trajectory "
        "scored by a positive and a negative contrast model (cDPO's contrastive estimation), its token-DPO weight, "
        "and the rollout-verified critical token inside OmegaPRM's first wrong step where it was searched.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0, doc="The incorrect trajectory (trajectories.sample_index)."),
        _c("prompt", MESSAGES_TYPE, doc="Chat messages of the question (system + user); never the gold answer."),
        _c("completion", pa.string(), doc="The incorrect trajectory's text (trajectories.completion)."),
        _c("token_ids", pa.list_(pa.int64()), doc="Policy tokenizer ids of `completion` (no special tokens)."),
        _c("tokens", pa.list_(pa.string()), doc="Each id decoded on its own (for reading; ''.join may differ)."),
        _c("logp_positive", pa.list_(pa.float64()), element_max=0.0,
           doc="log p(token | prompt, earlier tokens) under the positive contrast model."),
        _c("logp_negative", pa.list_(pa.float64()), element_max=0.0,
           doc="The same under the negative contrast model."),
        _c("contrastive_score", pa.list_(pa.float64()),
           doc="The paper's contrastive estimate per token (see counterpoint.critical.contrast); low = critical."),
        _c("token_weights", pa.list_(pa.float64()), element_min=0.0,
           doc="Per-token weight for token-level DPO on the rejected side (aligned with token_ids)."),
        _c("score_form", pa.string(), value_set=SCORE_FORMS),
        _c("top_critical_positions", pa.list_(pa.int32()), element_min=0,
           doc="Token positions of the most critical tokens by contrastive score, most critical first."),
        _c("first_wrong_step", pa.int32(), nullable=True, min_value=0,
           doc="OmegaPRM's first wrong step of this trajectory (step_labels.first_error_index), if located."),
        _c("step_token_starts", pa.list_(pa.int32()), element_min=0,
           doc="Token position where each step of trajectories.steps starts (step boundaries on the tokens)."),
        _c("rollout_critical_position", pa.int32(), nullable=True, min_value=0,
           doc="Rollout search: the token whose prefix (tokens before it included, it excluded) still succeeds "
               "while the prefix including it fails in every rollout; null when not searched or not found."),
        _c("rollout_critical_step", pa.int32(), nullable=True, min_value=0,
           doc="The step holding rollout_critical_position."),
        _c("contrast_in_first_wrong_step", pa.bool_(), nullable=True,
           doc="Whether the top contrastive position lies in OmegaPRM's first wrong step (null: none located)."),
        _c("search_rollouts", pa.int32(), min_value=0, doc="Rollouts the critical-token search spent."),
        _c("banned_success_rate", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="Success rate of continuations from just before the critical token with that token banned first."),
        _c("contrast_ban_success_rate", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="The same budget from just before the top contrastive position with that token banned first."),
        _c("random_ban_position", pa.int32(), nullable=True, min_value=0,
           doc="The random token position of the control test."),
        _c("random_ban_success_rate", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="The same budget from random_ban_position with its token banned first."),
        _c("ban_rollouts", pa.int32(), min_value=0, doc="Continuations per ban test (each side)."),
        _c("contrast_models", pa.string(), doc="JSON: both contrast models' paths, recipe and data hashes."),
        _c("model_id", pa.string(), doc="The policy whose tokenizer and rollouts were used."),
    ),
    unique_together=(("problem_id", "sample_index"),),
    equal_length=(("token_ids", "tokens"), ("token_ids", "logp_positive"), ("token_ids", "logp_negative"),
                  ("token_ids", "contrastive_score"), ("token_ids", "token_weights")),
)


def register(tables: Dict[str, TableSpec] = records.OUTPUT_TABLES) -> None:
    """Adds the ``critical_tokens`` spec to ``tables`` (idempotent)."""
    records.register_tables((CRITICAL_TOKENS,), tables)


register()
