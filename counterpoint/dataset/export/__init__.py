"""Trainer-ready exports of a validated Counterpoint output (see :mod:`.api`, :mod:`.formats`, :mod:`.trainers`).

``export_output(out_dir, "step-dpo")`` writes ``data/step_dpo/`` next to the other
configs (or into ``output_dir``), validated by the same gate and declared in the
dataset card. Formats: ``trl-stepwise``, ``openrlhf-prm``, ``step-dpo``,
``weighted-pairs``, ``token-weighted-pairs`` (issue 21, :mod:`.token_pairs`), and (issue 19, :mod:`.rl`) ``grpo-prompts``, ``verl-rl``,
``npo-forget-retain``, ``grouped-negatives``, ``sft-positives``; their schemas live in
:mod:`counterpoint.schemas.exports`. Every export streams (:mod:`.stream`).
"""

from counterpoint.dataset.export.api import (
    FORMAT_CONFIG,
    FORMAT_EXTRA_CONFIGS,
    FORMAT_SOURCES,
    FORMATS,
    ExportError,
    ExportResult,
    export_output,
    rl_options,
    run_exports,
    stage_exports,
)
from counterpoint.dataset.export.formats import (
    ExportRows,
    openrlhf_input,
    openrlhf_prm_rows,
    pair_weight,
    step_dpo_rows,
    trl_stepwise_rows,
    weighted_pair_rows,
)
from counterpoint.dataset.export.rl import RLOptions
from counterpoint.dataset.export.trainers import (
    check_openrlhf_prm,
    openrlhf_label_positions,
    placeholder_token_id,
    step_dpo_text,
)
from counterpoint.dataset.export.formats import correction_dpo_rows, correction_sft_rows  # noqa: E402
from counterpoint.dataset.export.trainers import correction_sft_text  # noqa: E402

__all__ = [
    "FORMATS", "FORMAT_CONFIG", "FORMAT_EXTRA_CONFIGS", "RLOptions", "rl_options", "FORMAT_SOURCES",
    "ExportError", "ExportResult", "ExportRows", "export_output",
    "run_exports", "stage_exports", "trl_stepwise_rows", "openrlhf_prm_rows", "openrlhf_input", "step_dpo_rows",
    "weighted_pair_rows", "pair_weight", "step_dpo_text", "check_openrlhf_prm", "openrlhf_label_positions",
    "placeholder_token_id",
]
__all__ += ["correction_sft_rows", "correction_dpo_rows", "correction_sft_text"]
from counterpoint.dataset.export.token_pairs import token_weighted_pair_rows  # noqa: E402

__all__ += ["token_weighted_pair_rows"]
