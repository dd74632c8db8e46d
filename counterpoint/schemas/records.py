"""Every record Counterpoint writes, and its Arrow schema, in one place.

Long: it is the one table of every config's columns and their documentation; split, the column lists
would be spelled out twice.

Stages exchange plain ``dict`` rows (cheap to pickle across Beam workers). Each
output config ("trajectories", "preferences", ...) is described once here as a
``TableSpec``: the column names, Arrow types, nullability and the value
constraints that the validation gate turns into Great Expectations suites.
Nothing else in the package spells a column list out again.

Column layouts of the trainer-facing configs follow TRL exactly:

* ``preferences``: ``prompt`` / ``chosen`` / ``rejected`` as conversational
  message lists (DPOTrainer, conversational preference format);
* ``unpaired``: ``prompt`` / ``completion`` / ``label`` (KTOTrainer, unpaired
  preference format);
* ``step_labels``: ``prompt`` / ``completions`` / ``labels`` (PRMTrainer,
  stepwise supervision format).

RL-facing data (issue 19): ``problem_stats`` holds one row per problem (verdict counts,
pass rate with its 95% Wilson interval, reason histogram, answers given), and
``trajectories`` carries signed columns next to ``cumulative_logprob`` and
``num_generated_tokens`` (A-LoL's importance-weight inputs): ``reward``,
``group_mean_reward``, ``grpo_advantage`` and ``rloo_advantage`` (see their column docs).

Clean corpora (issue 20): ``trajectories.duplicate_of`` / ``process_error`` and
``preferences.chosen_source`` (see counterpoint.clean).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import pyarrow as pa

# ---------------------------------------------------------------------------
# Vocabularies shared by every stage
# ---------------------------------------------------------------------------
VERDICT_CORRECT = "correct"
VERDICT_INCORRECT = "incorrect"
VERDICT_UNKNOWN = "unknown"
VERDICTS = (VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN)

PAIR_OUTCOME = "outcome"
PAIR_STEP = "step"
PAIR_FIRST_PIT = "first_pit"
PAIR_TYPES = (PAIR_OUTCOME, PAIR_STEP, PAIR_FIRST_PIT)
# Where a pair's chosen side comes from: the policy's own samples, or the source's reference solution
# (--reference-chosen, issue 20; off-policy).
CHOSEN_POLICY = "policy"
CHOSEN_REFERENCE = "reference"
CHOSEN_SOURCES = (CHOSEN_POLICY, CHOSEN_REFERENCE)

FINISH_REASONS = ("stop", "length", "abort", "error")

ANSWER_TYPES = ("numeric", "math", "exact")

# Pipeline stages that may reject a problem or a row (the `rejects.stage` value set).
STAGES = ("read", "validate_problem", "decontaminate", "dedupe", "sample", "verify", "label", "pair", "write",
          "correct", "critical")

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One column: its Arrow type plus the constraints the validation gate checks."""

    name: str
    type: pa.DataType
    nullable: bool = False
    doc: str = ""
    value_set: Optional[Tuple[Any, ...]] = None
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    # For list columns: bounds that apply to every element.
    element_min: Optional[float] = None
    element_max: Optional[float] = None
    unique: bool = False

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One output config (a Hub dataset config / Parquet folder)."""

    name: str
    columns: Tuple[ColumnSpec, ...]
    doc: str
    # Column groups whose combined value must be unique (beyond per-column `unique`).
    unique_together: Tuple[Tuple[str, ...], ...] = ()
    # Pairs of columns that must differ row by row (e.g. chosen vs rejected).
    must_differ: Tuple[Tuple[str, str], ...] = ()
    # Pairs of list columns that must have equal lengths row by row.
    equal_length: Tuple[Tuple[str, str], ...] = ()
    # Pairs (low, high) of columns with low <= high row by row (rows with a null skipped), e.g. interval bounds.
    ordered: Tuple[Tuple[str, str], ...] = ()
    # (parts, total): the parts add up to the total column row by row (e.g. verdict counts = samples).
    sums: Tuple[Tuple[Tuple[str, ...], str], ...] = ()
    # The trainer line the dataset card prints for this config ("" = the card's own wording).
    trainer: str = ""

    @property
    def column_names(self) -> List[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([c.field() for c in self.columns], metadata={"counterpoint.config": self.name})

    def conform(self, row: Mapping[str, Any]) -> Dict[str, Any]:
        """Returns ``row`` restricted to this table's columns, missing nullable ones as None.

        Raises ``KeyError`` naming the column when a required one is absent, so a
        stage that forgets a field fails at its own door, not in the writer.
        """
        out = {}
        for c in self.columns:
            if c.name in row:
                out[c.name] = row[c.name]
            elif c.nullable:
                out[c.name] = None
            else:
                raise KeyError(f"{self.name} row lacks required column {c.name!r}: {sorted(row)}")
        return out


def _c(name, type_, **kw) -> ColumnSpec:
    return ColumnSpec(name, type_, **kw)


_PROVENANCE = (
    _c("model_id", pa.string(), doc="Model that generated the text (HF id or local folder name)."),
    _c("sampling", pa.string(), doc="JSON of the sampling parameters used."),
)

PROBLEMS = TableSpec(
    name="problems",
    doc="Normalised input problems (not written as a config; the contract of problem sources).",
    columns=(
        _c("problem_id", pa.string(), unique=True),
        _c("source", pa.string()),
        _c("question", pa.string()),
        _c("gold_answer", pa.string()),
        _c("answer_type", pa.string(), value_set=ANSWER_TYPES),
        _c("difficulty", pa.int32(), nullable=True),
        _c("metadata", pa.string(), nullable=True, doc="JSON of source-specific fields."),
    ),
)

TRAJECTORIES = TableSpec(
    name="trajectories",
    doc="Every sampled solution, segmented into steps, with its verdict and provenance.",
    columns=(
        _c("id", pa.string(), unique=True, doc="<problem_id>/s<sample_index>"),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("source", pa.string()),
        _c("question", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc="Chat messages sent to the model (system + user)."),
        _c("completion", pa.string(), doc="Generated assistant text."),
        _c("steps", pa.list_(pa.string()), doc="Segments; ''.join(steps) == completion."),
        _c("num_steps", pa.int32(), min_value=0),
        _c("final_answer", pa.string(), nullable=True),
        _c("gold_answer", pa.string()),
        _c("verdict", pa.string(), value_set=VERDICTS),
        _c("verdict_reason", pa.string(), nullable=True),
        _c("verifier", pa.string()),
        _c("verifier_version", pa.string()),
        _c("finish_reason", pa.string(), value_set=FINISH_REASONS),
        _c("num_prompt_tokens", pa.int32(), min_value=0),
        _c("num_generated_tokens", pa.int32(), min_value=0),
        _c("cumulative_logprob", pa.float64(), nullable=True),
        *_PROVENANCE,
        _c("seed", pa.int64()),
        # Clean columns (issue 20; counterpoint.clean).
        _c("duplicate_of", pa.string(), nullable=True,
           doc="Id of the kept trajectory this one duplicates (exact or near, number-aware); null on kept rows. "
               "Duplicates stay for honest sampling statistics but form no pair, unpaired row or label target."),
        _c("process_error", pa.bool_(), value_set=(True, False),
           doc="Verified correct but a step states a false arithmetic claim (right answer, wrong process): "
               "never a positive anywhere."),
        # Signed columns (issue 19; counterpoint.rl.signed). Written by the run, never read back by it.
        _c("reward", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="1.0 correct / 0.0 incorrect; null for unknown verdicts and for truncated samples "
               "(finish_reason 'length'), which are no evidence either way."),
        _c("group_mean_reward", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="Mean of the problem's non-null rewards (same on every row of the problem); null when none."),
        _c("grpo_advantage", pa.float64(), nullable=True,
           doc="GRPO: (reward - group mean) / population std of the problem's non-null rewards; 0 where the "
               "std is 0; null where reward is null. Sums to 0 over a problem's known rewards."),
        _c("rloo_advantage", pa.float64(), nullable=True, min_value=-1.0, max_value=1.0,
           doc="RLOO: reward - mean of the problem's other non-null rewards; null where reward is null or no "
               "other reward is known. Sums to 0 over a problem's known rewards."),
    ),
    unique_together=(("problem_id", "sample_index"),),
)

REASON_COUNT_TYPE = pa.struct([("reason", pa.string()), ("count", pa.int32())])

PROBLEM_STATS = TableSpec(
    name="problem_stats",
    doc="One row per problem with samples: verdict counts, pass rate with a 95% Wilson interval, tokens, "
        "the verdict-reason histogram and the answers given (counterpoint.rl.stats).",
    columns=(
        _c("id", pa.string(), unique=True, doc="The problem id (like every config, rows carry an id)."),
        _c("problem_id", pa.string(), unique=True),
        _c("source", pa.string()),
        _c("prompt", MESSAGES_TYPE, doc="Chat messages the samples were drawn with (system + user)."),
        _c("gold_answer", pa.string()),
        _c("verifier", pa.string(), doc="Verifier that judged the samples (reward functions judge with it)."),
        _c("verifier_version", pa.string()),
        _c("samples", pa.int32(), min_value=1),
        _c("correct", pa.int32(), min_value=0),
        _c("incorrect", pa.int32(), min_value=0, doc="Verified incorrect, truncated samples included."),
        _c("unknown", pa.int32(), min_value=0),
        _c("truncated", pa.int32(), min_value=0, doc="Samples that hit max_tokens (finish_reason 'length')."),
        _c("pass_rate", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="correct / (correct + incorrect); null when no verdict is known."),
        _c("pass_rate_lo", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="Lower bound of the 95% Wilson score interval of pass_rate."),
        _c("pass_rate_hi", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="Upper bound of the 95% Wilson score interval of pass_rate."),
        _c("mean_generated_tokens", pa.float64(), min_value=0.0),
        _c("verdict_reasons", pa.list_(REASON_COUNT_TYPE),
           doc="{reason, count} of every non-correct verdict reason, most frequent first."),
        _c("distinct_final_answers", pa.int32(), min_value=0, doc="Distinct stated final answers (any verdict)."),
        _c("most_common_wrong_answer", pa.string(), nullable=True,
           doc="Most frequent final answer of the incorrect, not truncated samples; null when none."),
        _c("most_common_wrong_answer_count", pa.int32(), min_value=0),
    ),
    ordered=(("pass_rate_lo", "pass_rate"), ("pass_rate", "pass_rate_hi"), ("truncated", "samples")),
    sums=((("correct", "incorrect", "unknown"), "samples"),),
)

PREFERENCES = TableSpec(
    name="preferences",
    doc="TRL conversational preference pairs (DPOTrainer): prompt / chosen / rejected.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("prompt", MESSAGES_TYPE),
        _c("chosen", MESSAGES_TYPE),
        _c("rejected", MESSAGES_TYPE),
        _c("pair_type", pa.string(), value_set=PAIR_TYPES),
        _c("chosen_source", pa.string(), nullable=True, value_set=CHOSEN_SOURCES,
           doc="'policy': chosen is one of the run's samples; 'reference': the source's reference solution, "
               "verified against gold (--reference-chosen; off-policy, chosen_sample_index null). Every pair "
               "this version makes says which; null only in outputs made before the column existed."),
        _c("chosen_sample_index", pa.int32(), nullable=True),
        _c("rejected_sample_index", pa.int32()),
        _c("step_index", pa.int32(), nullable=True, doc="First-error / first-pit step (step pairs)."),
        _c("prefix", pa.string(), nullable=True, doc="Shared assistant prefix before the step (step pairs)."),
        _c("labeler", pa.string(), nullable=True),
        _c("metadata", pa.string(), nullable=True, doc="JSON: pairing policy, values, rollouts spent."),
    ),
    must_differ=(("chosen", "rejected"),),
)

UNPAIRED = TableSpec(
    name="unpaired",
    doc="TRL unpaired preference rows (KTOTrainer): prompt / completion / label.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("prompt", MESSAGES_TYPE),
        _c("completion", MESSAGES_TYPE),
        _c("label", pa.bool_(), value_set=(True, False)),
    ),
    unique_together=(("problem_id", "sample_index"),),
)

STEP_LABELS = TableSpec(
    name="step_labels",
    doc="TRL stepwise supervision (PRMTrainer): prompt / completions / labels, plus soft MC values.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("prompt", pa.string()),
        _c("completions", pa.list_(pa.string())),
        _c("labels", pa.list_(pa.bool_())),
        _c("mc_values", pa.list_(pa.float64()), element_min=0.0, element_max=1.0,
           doc="Value of each step prefix: measured (see mc_measured) or filled (interpolated before the first "
               "error, 0 from it on); never null."),
        _c("mc_measured", pa.list_(pa.bool_()),
           doc="Per step: the value was measured (resolved rollouts, or an exact verdict of a prefix that states "
               "an answer / of the whole solution), not filled."),
        _c("n_rollouts_per_step", pa.list_(pa.int32()), element_min=0,
           doc="Per step: rollouts held for the prefix (0 for exact verdict values and unmeasured prefixes)."),
        _c("first_error_index", pa.int32(), nullable=True, doc="Index of the first wrong step; null if none."),
        _c("first_error_source", pa.string(), nullable=True,
           value_set=("search", "evidence", "terminal", "claim", "verdict"),
           doc="What decided the first error: the labeller's search, a verified-correct completion through "
               "the earlier steps, a stated wrong answer, a false arithmetic claim, or the final verdict."),
        _c("n_rollouts", pa.int32(), min_value=0, doc="Rollouts held for the row's prefixes (sum per step)."),
        _c("labeler", pa.string(), value_set=("omegaprm", "mc")),
        _c("labeler_params", pa.string()),
        _c("judge_first_error_index", pa.int32(), nullable=True,
           doc="Consensus filter: the judge's earliest wrong step (-1 = none); null if not judged/unparsable."),
        _c("judge_agrees", pa.bool_(), nullable=True,
           doc="Consensus filter: judge index == first_error_index; null if not judged/unparsable."),
        _c("claim_overruled", pa.bool_(), nullable=True,
           doc="A false arithmetic claim was read in a step that a verified-correct completion passes "
               "through: claim and evidence disagreed, the evidence decided."),
        _c("n_format_failure_rollouts", pa.int32(), nullable=True, min_value=0,
           doc="Rollouts behind the row's values that reached no readable final answer (format failures; "
               "counted as 0 or unknown per labeling.rollout_format_failures)."),
        _c("n_truncated_rollouts", pa.int32(), nullable=True, min_value=0,
           doc="Rollouts behind the row's values that hit max_tokens (counted as incorrect)."),
    ),
    equal_length=(("completions", "labels"), ("completions", "mc_values"), ("completions", "mc_measured"),
                  ("completions", "n_rollouts_per_step")),
    unique_together=(("problem_id", "sample_index"),),
)

STEP_VALUES = TableSpec(
    name="step_values",
    doc="Per-step values and advantages of negative trajectories (Setlur et al. 2024).",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string()),
        _c("sample_index", pa.int32(), min_value=0),
        _c("step_index", pa.int32(), min_value=0),
        _c("step", pa.string()),
        _c("q_value", pa.float64(), nullable=True, min_value=0.0, max_value=1.0,
           doc="Value of the prefix through this step; null when unmeasured."),
        _c("advantage", pa.float64(), nullable=True, min_value=-1.0, max_value=1.0,
           doc="q_value minus the nearest earlier measured value (the question's at first); null when unmeasured."),
        _c("measured", pa.bool_(), doc="The prefix's value was measured (resolved rollouts or an exact verdict)."),
        _c("n_rollouts", pa.int32(), min_value=0,
           doc="Known-verdict rollouts behind q_value (0 for exact verdict values)."),
        _c("n_correct", pa.int32(), min_value=0),
        _c("is_first_pit", pa.bool_()),
        _c("within_noise", pa.bool_(), doc="|advantage| within sampling noise of the two estimates."),
        _c("best_of_k_value", pa.float64(), nullable=True, min_value=0.0, max_value=1.0),
        _c("labeler", pa.string(), value_set=("omegaprm", "mc")),
        _c("n_format_failure_rollouts", pa.int32(), nullable=True, min_value=0,
           doc="Rollouts behind q_value that reached no readable final answer (format failures)."),
        _c("n_truncated_rollouts", pa.int32(), nullable=True, min_value=0,
           doc="Rollouts behind q_value that hit max_tokens."),
    ),
    unique_together=(("problem_id", "sample_index", "step_index"),),
)

REJECTS = TableSpec(
    name="rejects",
    doc="Every problem or row dropped anywhere, with the stage and a snake_case reason.",
    columns=(
        _c("id", pa.string(), unique=True),
        _c("problem_id", pa.string(), nullable=True),
        _c("stage", pa.string(), value_set=STAGES),
        _c("reason", pa.string(), doc="snake_case; doubles as a metric name."),
        _c("detail", pa.string(), nullable=True),
        _c("scope", pa.string(), value_set=("problem", "row"),
           doc="'problem': the whole problem produced no output; 'row': one row dropped."),
        _c("payload", pa.string(), nullable=True, doc="JSON of the dropped input, truncated."),
    ),
)

OUTPUT_TABLES: Dict[str, TableSpec] = {
    t.name: t for t in (TRAJECTORIES, PROBLEM_STATS, PREFERENCES, UNPAIRED, STEP_LABELS, STEP_VALUES, REJECTS)
}
# Configs written by an outcome-only run; the labeller adds the step configs.
OUTCOME_CONFIGS = ("trajectories", "problem_stats", "preferences", "unpaired", "rejects")
STEP_CONFIGS = ("step_labels", "step_values")
# Written with --corrections (a labelled run) or added by `counterpoint corrections OUT` (schemas.corrections).
CORRECTION_CONFIGS = ("corrections",)
# Written with critical_tokens.enabled (a labelled run) or added by `counterpoint critical-tokens OUT`
# (schemas.critical, issue 21).
CRITICAL_CONFIGS = ("critical_tokens",)


def register_tables(specs, tables: Optional[Dict[str, TableSpec]] = None) -> None:
    """Adds config specs defined in their own modules (exports, corrections, critical tokens) to ``tables``
    (default ``OUTPUT_TABLES``); idempotent, and never replaces another spec of the same name."""
    tables = OUTPUT_TABLES if tables is None else tables
    for spec in specs:
        existing = tables.get(spec.name)
        if existing is not None and existing is not spec:
            raise ValueError(f"config name {spec.name!r} is already taken by another TableSpec")
        tables[spec.name] = spec


def table(name: str) -> TableSpec:
    try:
        return OUTPUT_TABLES[name] if name != "problems" else PROBLEMS
    except KeyError:
        raise KeyError(f"unknown config {name!r}; known: {sorted(OUTPUT_TABLES)}") from None


# ---------------------------------------------------------------------------
# Helpers every stage uses to build rows consistently
# ---------------------------------------------------------------------------
def content_id(*parts: Any, length: int = 16) -> str:
    """Stable short id from content (sha256 of the JSON of ``parts``)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


def trajectory_id(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}/s{sample_index}"


def messages(*pairs: Tuple[str, str]) -> List[Dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def dumps(obj: Any) -> str:
    """Canonical JSON for the string-typed JSON columns (sorted keys: deterministic bytes)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def make_reject(
    *,
    stage: str,
    reason: str,
    problem_id: Optional[str],
    scope: str,
    detail: Optional[str] = None,
    payload: Any = None,
    key: Any = None,
) -> Dict[str, Any]:
    """A row for the ``rejects`` config. ``key`` disambiguates several rejects of one problem."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    payload_json = None if payload is None else dumps(payload)[:4000]
    return {
        "id": content_id(stage, reason, problem_id, key, payload_json),
        "problem_id": problem_id,
        "stage": stage,
        "reason": reason,
        "detail": None if detail is None else str(detail)[:2000],
        "scope": scope,
        "payload": payload_json,
    }


def rows_to_table(config: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    spec = table(config)
    return pa.Table.from_pylist([spec.conform(r) for r in rows], schema=spec.arrow_schema())
