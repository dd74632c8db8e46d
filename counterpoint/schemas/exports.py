"""Trainer-ready export configs: one ``TableSpec`` each, registered into ``records.OUTPUT_TABLES``.

``counterpoint.dataset.export`` derives these configs from a validated output (see that
package for the row transforms). Registering them here, on import of
``counterpoint.schemas``, lets the validation gate build their Great
Expectations suites (also in Beam workers, which import the schemas) and the
dataset card describe their columns, exactly as for the pipeline's configs.

* ``trl_stepwise`` (from ``step_labels``): TRL <= 1.13 ``trl.experimental.prm.PRMTrainer``;
* ``openrlhf_prm`` (from ``step_labels``): OpenRLHF <= 0.9.5 ``openrlhf.cli.train_prm``;
* ``step_dpo`` (from the step pairs of ``preferences``): TRL ``DPOTrainer`` after
  ``counterpoint.dataset.export.step_dpo_text``;
* ``weighted_pairs`` (from ``preferences``, ``step_values``, ``step_labels``): TRL
  ``DPOTrainer`` (which drops ``weight``) or a weighted DPO loss;
* issue 19 (``counterpoint.dataset.export.rl``): ``grpo_prompts`` / ``grpo_prompts_control`` (TRL
  ``GRPOTrainer`` + ``counterpoint.rewards.trl_reward``), ``verl_rl`` / ``verl_rl_control`` (verl +
  ``counterpoint.rewards.verl_compute_score``) from ``problem_stats``; ``npo_forget`` / ``npo_retain``
  (NPO), ``grouped_negatives`` (D2O), ``sft_positives`` (rejection-sampling FT) from ``trajectories``;
* issue 21: ``token_weighted_pairs`` (from ``critical_tokens`` + ``trajectories``): token-weighted DPO
  (cDPO) with ``counterpoint.training.token_weighted_dpo_loss``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import pyarrow as pa

from counterpoint.schemas import records
from counterpoint.schemas.records import MESSAGES_TYPE, ColumnSpec, TableSpec

DEFAULT_PLACEHOLDER = "ки"  # Math-Shepherd's step tag, OpenRLHF's documented --placeholder_token
REWARD_TOKENS = ("+", "-")  # OpenRLHF's --reward_tokens: positive first (soft labels need this order)

WEIGHT_ADVANTAGE = "advantage"
WEIGHT_MC_GAP = "mc_gap"
WEIGHT_DEFAULT = "default"
WEIGHT_SOURCES = (WEIGHT_ADVANTAGE, WEIGHT_MC_GAP, WEIGHT_DEFAULT)


def _c(name, type_, **kw) -> ColumnSpec:
    return ColumnSpec(name, type_, **kw)


TRL_STEPWISE = TableSpec(
    name="trl_stepwise",
    doc=(
        "`step_labels` projected to TRL's stepwise-supervision format (prompt / completions / labels). "
        "Trains with TRL <= 1.13 `trl.experimental.prm.PRMTrainer`; TRL 1.16 removed PRMTrainer and the "
        "stepwise-supervision dataset type, so pin `trl==1.13.0` for it."
    ),
    trainer="TRL <= 1.13 `trl.experimental.prm.PRMTrainer` (stepwise supervision; removed in TRL 1.16)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The step_labels row id."),
        _c("prompt", pa.string(), doc="The question."),
        _c("completions", pa.list_(pa.string()), doc="The solution's steps, whitespace-stripped."),
        _c("labels", pa.list_(pa.bool_()), doc="True for the steps before the first error."),
    ),
    equal_length=(("completions", "labels"),),
)

OPENRLHF_PRM = TableSpec(
    name="openrlhf_prm",
    doc=(
        "OpenRLHF's process-reward format (Math-Shepherd style): `input` = question + newline + every step "
        "followed by a space and the `placeholder` token, steps joined by newlines; `label` = one reward token "
        "per placeholder (`+` correct, `-` wrong, hard labels); `soft_label` = the Monte Carlo value of each "
        "step prefix (P(`+`)). Train with OpenRLHF <= 0.9.5 (train_prm was removed in 0.9.6): "
        "`--input_key input --label_key label --placeholder_token <placeholder> --reward_tokens + -`. "
        "Soft labels (`--label_key soft_label`) only train in OpenRLHF 0.5.0-0.5.5: from 0.5.6 its "
        "ProcessRewardDataset writes float labels into an integer tensor and raises."
    ),
    trainer="OpenRLHF <= 0.9.5 `openrlhf.cli.train_prm` (placeholder-token PRM; hard labels, soft labels in 0.5.0-0.5.5)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The step_labels row id."),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("input", pa.string(), doc="Question, then each step followed by ' ' + placeholder; steps joined by '\\n'."),
        _c("label", pa.list_(pa.string()), doc="Reward token per step: '+' (correct) or '-' (wrong)."),
        _c("soft_label", pa.list_(pa.float64()), element_min=0.0, element_max=1.0,
           doc="Monte Carlo value of each step prefix (soft label: probability of '+')."),
        _c("placeholder", pa.string(), doc="The placeholder token written after every step."),
    ),
    equal_length=(("label", "soft_label"),),
    unique_together=(("problem_id", "sample_index"),),
)

STEP_DPO = TableSpec(
    name="step_dpo",
    doc=(
        "Step-DPO pairs (Lai et al. 2024) from the `step` pairs of `preferences`, in TRL's conversational "
        "preference format: `prompt` = the chat (system?, user) plus, when the first error is not the first "
        "step, a final partial assistant message holding the correct prefix; `chosen` / `rejected` = one "
        "assistant message holding only the next step (correct / erroneous). TRL 1.16's DPOTrainer renders a "
        "prompt that ends in an assistant message as a closed turn followed by a new assistant turn, so render "
        "rows with `counterpoint.dataset.export.step_dpo_text` (prefix continued in the same turn, "
        "continue_final_message) before DPOTrainer."
    ),
    trainer="TRL `DPOTrainer` after `counterpoint.dataset.export.step_dpo_text` (Step-DPO: prefix in the prompt, next step as completion)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The preferences row id of the step pair."),
        _c("problem_id", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc="System?, user, then the correct prefix as a partial assistant message."),
        _c("chosen", MESSAGES_TYPE, doc="The correct next step (one assistant message)."),
        _c("rejected", MESSAGES_TYPE, doc="The erroneous step (one assistant message)."),
        _c("prefix", pa.string(), doc="The shared assistant prefix ('' when the first step is wrong)."),
        _c("step_index", pa.int32(), min_value=0, doc="Index of the erroneous step in the rejected solution."),
        _c("chosen_sample_index", pa.int32(), nullable=True),
        _c("rejected_sample_index", pa.int32()),
        _c("labeler", pa.string(), nullable=True),
        _c("metadata", pa.string(), nullable=True, doc="The source pair's metadata JSON."),
    ),
    must_differ=(("chosen", "rejected"),),
)

WEIGHT_FORMULA = (
    "weight = clip(-A, 0, 1) with A = Q_e - Q_{e-1}, the advantage (Setlur et al. 2024) of the rejected step e "
    "(the `step_values` row of problem_id / rejected_sample_index / step_index) [weight_source=advantage]; "
    "without that row, the Monte Carlo gap clip(V_{e-1} - V_e, 0, 1) from the rejected solution's "
    "`step_labels.mc_values` (V_{-1} = the pair's prefix_mc) [mc_gap]; outcome pairs, and step pairs with "
    "neither measurement, get the default weight, 1.0 unless set: the outcome reward gap between a verified "
    "correct and a verified wrong solution [default]."
)

WEIGHTED_PAIRS = TableSpec(
    name="weighted_pairs",
    doc="`preferences` plus a per-pair `weight` in [0, 1]. " + WEIGHT_FORMULA,
    trainer="TRL `DPOTrainer` (drops `weight`) or an advantage-weighted DPO loss reading `weight`",
    columns=records.PREFERENCES.columns + (
        _c("weight", pa.float64(), min_value=0.0, max_value=1.0, doc=WEIGHT_FORMULA),
        _c("weight_source", pa.string(), value_set=WEIGHT_SOURCES,
           doc="Where the weight came from: advantage, mc_gap or default."),
    ),
    unique_together=records.PREFERENCES.unique_together,
    must_differ=records.PREFERENCES.must_differ,
    equal_length=records.PREFERENCES.equal_length,
)

_CORRECTION_PROMPT_DOC = ("System?, user (the question), then the assistant's partial turn: its steps through the proved "
                          "wrong step and the cue. Never the gold answer.")

CORRECTION_SFT = TableSpec(
    name="correction_sft",
    doc=(
        "Self-correction SFT (issue 22) from the kept rows of `corrections`, in TRL's conversational "
        "prompt-completion layout with the mistake inside the prompt: `prompt` = the chat plus a final partial "
        "assistant message (the steps through the proved first wrong step, then a cue); `completion` = one "
        "assistant message holding the verified correction. Completion-only loss never trains on the mistake. "
        "TRL 1.16's SFTTrainer renders a prompt that ends in an assistant message as a closed turn followed by "
        "a new assistant turn, so render rows with `counterpoint.dataset.export.correction_sft_text` (plain-text "
        "prompt continuing the same turn, continue_final_message) before SFTTrainer."
    ),
    trainer="TRL `SFTTrainer` after `counterpoint.dataset.export.correction_sft_text` (prompt-completion, "
            "completion-only loss)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The corrections row id."),
        _c("problem_id", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc=_CORRECTION_PROMPT_DOC),
        _c("completion", MESSAGES_TYPE, doc="The verified correction (one assistant message)."),
        _c("wrong_step_index", pa.int32(), min_value=0),
        _c("wrong_step_source", pa.string(), value_set=("search", "claim", "terminal")),
        _c("flip_class", pa.string(), value_set=("revise", "restart", "ignore")),
        _c("cue", pa.string()),
    ),
)

CORRECTION_DPO = TableSpec(
    name="correction_dpo",
    doc=(
        "Self-correction preference pairs (issue 22) from `corrections`: one prompt (as in `correction_sft`) "
        "with `chosen` = a verified correction and `rejected` = a verified-wrong continuation of the same "
        "prefix and cue (the model agrees with its error). Render with "
        "`counterpoint.dataset.export.step_dpo_text` before TRL's DPOTrainer (same layout as `step_dpo`)."
    ),
    trainer="TRL `DPOTrainer` after `counterpoint.dataset.export.step_dpo_text`",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc=_CORRECTION_PROMPT_DOC),
        _c("chosen", MESSAGES_TYPE, doc="A verified correction (one assistant message)."),
        _c("rejected", MESSAGES_TYPE, doc="A verified-wrong continuation of the same prefix and cue."),
        _c("wrong_step_index", pa.int32(), min_value=0),
        _c("wrong_step_source", pa.string(), value_set=("search", "claim", "terminal")),
        _c("flip_class", pa.string(), value_set=("revise", "restart", "ignore"), doc="Of the chosen correction."),
        _c("cue", pa.string()),
    ),
    must_differ=(("chosen", "rejected"),),
)

# ---------------------------------------------------------------------------
# RL-ready and negative-only exports (issue 19): counterpoint.dataset.export.rl
# ---------------------------------------------------------------------------
PASS_BAND_DOC = (
    "Problems kept: `--pass-band LO,HI` keeps LO <= pass_rate <= HI (closed); without it the default band keeps "
    "0 < pass_rate < 1 (open: problems solved always or never are dropped, as in DAPO's dynamic sampling). A "
    "problem with no known verdict (pass_rate null) is never kept."
)
CONTROL_DOC = (
    "The unfiltered control of the ablation: as many problems as the banded config holds, drawn from all "
    "problems regardless of pass rate (the ones with the smallest blake2b hash of problem_id: deterministic, "
    "independent of sharding)."
)
REWARD_MODEL_TYPE = pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
VERL_EXTRA_INFO_TYPE = pa.struct([
    ("split", pa.string()), ("index", pa.int64()), ("pass_rate", pa.float64()), ("problem_id", pa.string()),
    ("verifier", pa.string()), ("verifier_version", pa.string()),
])
VERL_DATA_SOURCE_PREFIX = "counterpoint/"  # + verifier: matches none of verl's built-in scorers
VERL_REWARD_DOC = (
    "verl: `custom_reward_function.path=<site-packages>/counterpoint/rewards.py "
    "custom_reward_function.name=verl_compute_score` (data_source `counterpoint/<verifier>` matches none of "
    "verl's built-in scorers, so without it verl raises instead of judging differently)."
)
_VERDICT_COLS = (
    _c("verifier", pa.string(), doc="Verifier that judged the corpus (the reward function judges with it)."),
    _c("verifier_version", pa.string(), doc="Its version (the reward function refuses another one)."),
)


def _grpo_prompts(name: str, doc: str) -> TableSpec:
    return TableSpec(
        name=name,
        doc=doc,
        trainer="TRL `GRPOTrainer` with `reward_funcs=counterpoint.rewards.trl_reward` (reads `answer`, "
                "`verifier`, `verifier_version`)",
        columns=(
            _c("id", pa.string(), unique=True, doc="The problem id."),
            _c("problem_id", pa.string(), unique=True),
            _c("source", pa.string()),
            _c("prompt", MESSAGES_TYPE, doc="Conversational prompt (system + user), as sampled."),
            _c("answer", pa.string(), doc="Gold answer: the column `trl_reward` receives as a keyword argument."),
            *_VERDICT_COLS,
            _c("pass_rate", pa.float64(), min_value=0.0, max_value=1.0, nullable=True,
               doc="The problem_stats pass rate (correct / known verdicts)."),
            _c("pass_rate_lo", pa.float64(), min_value=0.0, max_value=1.0, nullable=True),
            _c("pass_rate_hi", pa.float64(), min_value=0.0, max_value=1.0, nullable=True),
            _c("samples", pa.int32(), min_value=1, doc="Samples the pass rate was measured on."),
        ),
    )


GRPO_PROMPTS = _grpo_prompts("grpo_prompts", "`problem_stats` prompts in a pass-rate band, TRL GRPOTrainer layout "
                                             "(conversational `prompt`, gold `answer`). " + PASS_BAND_DOC)
GRPO_PROMPTS_CONTROL = _grpo_prompts("grpo_prompts_control", "`grpo_prompts` layout, unfiltered. " + CONTROL_DOC)


def _verl_rl(name: str, doc: str) -> TableSpec:
    return TableSpec(
        name=name,
        doc=doc + " " + VERL_REWARD_DOC,
        trainer="verl PPO/GRPO (`data.train_files`), " + VERL_REWARD_DOC,
        columns=(
            _c("id", pa.string(), unique=True, doc="The problem id (verl ignores it)."),
            _c("data_source", pa.string(), doc="`counterpoint/<verifier>`: no verl built-in scorer matches."),
            _c("prompt", MESSAGES_TYPE, doc="Chat messages (verl applies the chat template)."),
            _c("ability", pa.string(), value_set=("math",)),
            _c("reward_model", REWARD_MODEL_TYPE, doc="{style: 'rule', ground_truth: the gold answer}."),
            _c("extra_info", VERL_EXTRA_INFO_TYPE,
               doc="{split, index, pass_rate, problem_id, verifier, verifier_version}: verl passes it to "
                   "`verl_compute_score`, which judges with that verifier and checks its version."),
        ),
    )


VERL_RL = _verl_rl("verl_rl", "verl's RL parquet layout of the `grpo_prompts` problems. " + PASS_BAND_DOC)
VERL_RL_CONTROL = _verl_rl("verl_rl_control", "verl's RL parquet layout, unfiltered. " + CONTROL_DOC)

_NPO_COLS = (
    _c("id", pa.string(), unique=True, doc="The trajectory id."),
    _c("problem_id", pa.string()),
    _c("sample_index", pa.int32(), min_value=0),
    _c("question", pa.string(), doc="The problem text (open-unlearning's QA `question` key)."),
    _c("answer", pa.string(), doc="The sampled solution (open-unlearning's QA `answer` key)."),
    _c("prompt", MESSAGES_TYPE, doc="The chat messages it was sampled with."),
    *_VERDICT_COLS,
)
def _npo(name: str, doc: str, trainer: str) -> TableSpec:
    return TableSpec(name=name, doc=doc, trainer=trainer, columns=_NPO_COLS,
                     unique_together=(("problem_id", "sample_index"),))


NPO_FORGET = _npo(
    "npo_forget",
    "NPO forget set (Zhang et al. 2024, Negative Preference Optimization): every verified-incorrect, not "
    "truncated sample (reward 0), question/answer layout of open-unlearning's QA datasets. Unknown verdicts and "
    "truncated samples are never in it.",
    "NPO (open-unlearning `NPO` with a QA dataset on `question`/`answer`; `counterpoint.rl.npo.npo_loss`)")
NPO_RETAIN = _npo(
    "npo_retain",
    "NPO retain set: every verified-correct, not truncated sample (reward 1), same layout as `npo_forget`.",
    "NPO retain loss (open-unlearning QA dataset on `question`/`answer`)")
GROUPED_NEGATIVES = TableSpec(
    name="grouped_negatives",
    doc="D2O (Duan et al. 2024, distributional dispreference optimization): one row per problem with at least "
        "one verified-incorrect, not truncated sample: the prompt, its DISTINCT incorrect completions (first "
        "sample of each text), and its distinct verified-correct ones (possibly none).",
    trainer="D2O / any loss over a set of negatives per prompt",
    columns=(
        _c("id", pa.string(), unique=True, doc="The problem id."),
        _c("problem_id", pa.string(), unique=True),
        _c("prompt", MESSAGES_TYPE),
        _c("answer", pa.string(), doc="The gold answer."),
        _c("negatives", pa.list_(pa.string()), doc="Distinct verified-incorrect completions (at least one)."),
        _c("negative_sample_indices", pa.list_(pa.int32()), element_min=0),
        _c("positives", pa.list_(pa.string()), doc="Distinct verified-correct completions (may be empty)."),
        _c("positive_sample_indices", pa.list_(pa.int32()), element_min=0),
        *_VERDICT_COLS,
    ),
    equal_length=(("negatives", "negative_sample_indices"), ("positives", "positive_sample_indices")),
)
SFT_POSITIVES = TableSpec(
    name="sft_positives",
    doc="Rejection-sampling fine-tuning (RFT, Yuan et al. 2023): distinct verified-correct, not truncated "
        "completions per problem (lowest sample index of each text), at most `--max-per-problem` of them; TRL "
        "conversational prompt/completion layout.",
    trainer="TRL `SFTTrainer` (prompt-completion, conversational)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The trajectory id."),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("prompt", MESSAGES_TYPE),
        _c("completion", MESSAGES_TYPE, doc="One assistant message: the verified-correct solution."),
        *_VERDICT_COLS,
    ),
    unique_together=(("problem_id", "sample_index"),),
)

# ---------------------------------------------------------------------------
# Token-level negatives (issue 21): counterpoint.dataset.export.token_pairs
# ---------------------------------------------------------------------------
TOKEN_WEIGHTED_DPO_LOSS = (
    "token-weighted DPO (cDPO, Lin et al. 2024, arXiv 2411.19943): L = -log sigmoid(beta * sum_t log-ratio(chosen_t) "
    "- beta * sum_t w_t * log-ratio(rejected_t)), log-ratio = log pi_theta - log pi_ref per token, w_t = "
    "rejected_weights; `counterpoint.training.token_weighted_dpo_loss` (TRL has no token-weighted DPO)"
)
TOKEN_WEIGHTED_PAIRS = TableSpec(
    name="token_weighted_pairs",
    doc=(
        "cDPO preference pairs (issue 21) from `critical_tokens` + `trajectories`, in TRL's conversational "
        "preference layout: `prompt` = the chat (system + user), `chosen` = a verified-correct, finished "
        "trajectory of the same problem, `rejected` = the scored incorrect trajectory, each one assistant "
        "message; `rejected_weights` = one weight per token of the POLICY tokenizer's ids of the rejected text "
        "alone (`rejected_token_ids`, no special tokens), checked against that tokenizer by the export. "
        "Loss: " + TOKEN_WEIGHTED_DPO_LOSS + "."
    ),
    trainer="`counterpoint.training.token_weighted_dpo_loss` (token-weighted DPO; TRL's DPOTrainer ignores the "
            "weights)",
    columns=(
        _c("id", pa.string(), unique=True, doc="The critical_tokens row id."),
        _c("problem_id", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc="System + user messages the trajectories were sampled with."),
        _c("chosen", MESSAGES_TYPE, doc="A verified-correct, finished trajectory of the problem (one assistant "
                                        "message); the problem's positives are used in turn."),
        _c("rejected", MESSAGES_TYPE, doc="The scored incorrect trajectory (one assistant message)."),
        _c("rejected_token_ids", pa.list_(pa.int64()),
           doc="The policy tokenizer's ids of the rejected text alone (add_special_tokens=False)."),
        _c("rejected_weights", pa.list_(pa.float64()), element_min=0.0,
           doc="Token-DPO weight of each rejected token (critical_tokens.token_weights), aligned with "
               "rejected_token_ids."),
        _c("chosen_sample_index", pa.int32(), min_value=0),
        _c("rejected_sample_index", pa.int32(), min_value=0),
        _c("score_form", pa.string(), doc="How the contrastive score behind the weights was computed."),
        _c("top_critical_positions", pa.list_(pa.int32()), element_min=0,
           doc="Most critical rejected token positions by contrastive score, most critical first."),
        _c("rollout_critical_position", pa.int32(), nullable=True, min_value=0,
           doc="The rollout-verified critical token position, if searched and found."),
        _c("first_wrong_step", pa.int32(), nullable=True, min_value=0, doc="OmegaPRM's first wrong step, if located."),
        _c("contrast_models", pa.string(), doc="JSON: the contrast models, recipe and data hashes."),
        _c("model_id", pa.string(), doc="The policy the weights are aligned to."),
        _c("tokenizer", pa.string(), doc="The tokenizer the export checked the alignment with."),
    ),
    unique_together=(("problem_id", "rejected_sample_index"),),
    must_differ=(("chosen", "rejected"),),
    equal_length=(("rejected_token_ids", "rejected_weights"),),
)

EXPORT_TABLES: Tuple[TableSpec, ...] = (TRL_STEPWISE, OPENRLHF_PRM, STEP_DPO, WEIGHTED_PAIRS)
EXPORT_TABLES += (CORRECTION_SFT, CORRECTION_DPO)
EXPORT_TABLES += (GRPO_PROMPTS, GRPO_PROMPTS_CONTROL, VERL_RL, VERL_RL_CONTROL, NPO_FORGET, NPO_RETAIN,
                  GROUPED_NEGATIVES, SFT_POSITIVES)
EXPORT_TABLES += (TOKEN_WEIGHTED_PAIRS,)
EXPORT_CONFIGS: Tuple[str, ...] = tuple(t.name for t in EXPORT_TABLES)


def register(tables: Dict[str, TableSpec] = records.OUTPUT_TABLES) -> None:
    """Adds the export specs to ``tables`` (idempotent; never replaces a pipeline config)."""
    records.register_tables(EXPORT_TABLES, tables)


register()
