"""The ``corrections`` config (issue 22): mistake -> correction traces, registered into ``records.OUTPUT_TABLES``.

Rows are made by :mod:`counterpoint.labeling.corrections` (``--corrections`` on a labelled run, or
``counterpoint corrections OUT``); the gate's suites derive from this spec like every other config.
"""

from __future__ import annotations

from typing import Dict

import pyarrow as pa

from counterpoint.schemas.records import FINISH_REASONS, MESSAGES_TYPE, VERDICTS, TableSpec, _c
from counterpoint.schemas import records

CORRECTIONS = TableSpec(
    name="corrections",
    doc="Mistake -> correction traces (issue 22; counterpoint.labeling.corrections): every continuation sampled "
        "after a labelled negative's proved first wrong step and a cue, verified; kept = a verified correction.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("negative_sample_index", pa.int32(), min_value=0, doc="The labelled negative (trajectories.sample_index)."),
        _c("prompt", MESSAGES_TYPE, doc="Chat messages of the question (system + user); never the gold answer."),
        _c("prefix", pa.string(), doc="The negative's steps[0..e], the wrong step included (trailing space cut)."),
        _c("wrong_step_index", pa.int32(), min_value=0, doc="e: the first wrong step (step_labels.first_error_index)."),
        _c("wrong_step_source", pa.string(), value_set=("search", "claim", "terminal"),
           doc="What proved it: the labeller's search, a false arithmetic claim, or a stated wrong answer."),
        _c("wrong_step", pa.string()),
        _c("cue", pa.string(), doc="Written after the prefix (an open assistant turn) before the continuation."),
        _c("correction", pa.string(), doc="The sampled continuation of prefix + cue."),
        _c("final_answer", pa.string(), nullable=True),
        _c("verdict", pa.string(), value_set=VERDICTS, doc="Verdict of prefix + cue + correction."),
        _c("verdict_reason", pa.string(), nullable=True),
        _c("kept", pa.bool_(), doc="A verified correction: verdict correct and not truncated."),
        _c("flip_class", pa.string(), nullable=True, value_set=("revise", "restart", "ignore"),
           doc="Kept rows: revise (retracts / recomputes the wrong step: a genuine flip), restart, ignore."),
        _c("sample_index", pa.int32(), min_value=0, doc="Index of the continuation among its request's samples."),
        _c("seed", pa.int64(), doc="Request seed (from the negative, the wrong step and the cue)."),
        _c("finish_reason", pa.string(), value_set=FINISH_REASONS),
        _c("num_generated_tokens", pa.int32(), min_value=0),
        _c("model_id", pa.string()),
        _c("corrector", pa.string(), value_set=("engine", "corrector_model")),
        _c("problem_attempted", pa.int32(), min_value=1, doc="Continuations sampled for the problem."),
        _c("problem_recovered", pa.int32(), min_value=0, doc="Of them, verified corrections."),
        _c("problem_recovery_rate", pa.float64(), min_value=0.0, max_value=1.0,
           doc="problem_recovered / problem_attempted."),
        _c("problem_recovery_lo", pa.float64(), min_value=0.0, max_value=1.0, doc="95% Wilson interval, low."),
        _c("problem_recovery_hi", pa.float64(), min_value=0.0, max_value=1.0, doc="95% Wilson interval, high."),
    ),
    unique_together=(("problem_id", "negative_sample_index", "cue", "sample_index"),),
    ordered=(("problem_recovery_lo", "problem_recovery_rate"), ("problem_recovery_rate", "problem_recovery_hi"),
             ("problem_recovered", "problem_attempted")),
)


def register(tables: Dict[str, TableSpec] = records.OUTPUT_TABLES) -> None:
    """Adds the ``corrections`` spec to ``tables`` (idempotent)."""
    records.register_tables((CORRECTIONS,), tables)


register()
