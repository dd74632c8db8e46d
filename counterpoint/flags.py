"""The one table of command-line flags: each flag's names, the config path(s) it sets, how it parses.

Used by the CLI's ``--help``, the ``PipelineOptions`` subclass of the pipeline and
:func:`counterpoint.config.apply_overrides`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

from counterpoint.generators.config import COMPILE_MODES, DTYPES, GENERATOR_KINDS, SEED_MODES
from counterpoint.sources import KINDS as SOURCE_KINDS
from counterpoint.sources import PRESETS

def _min_rows(text: str) -> Tuple[str, int]:
    import argparse

    config, sep, n = text.partition("=")
    if not sep or not n.strip().isdigit():
        # argparse shows an ArgumentTypeError's own message (a ValueError would become "invalid value")
        raise argparse.ArgumentTypeError(f"--min-rows takes CONFIG=N (e.g. preferences=10), got {text!r}")
    return config.strip(), int(n)


def _on_off(text: str) -> bool:
    import argparse

    if text.lower() not in ("on", "off", "true", "false"):
        raise argparse.ArgumentTypeError(f"takes on or off, got {text!r}")
    return text.lower() in ("on", "true")


def _pass_band(text: str):
    import argparse

    from counterpoint.rl.band import parse_pass_band

    try:
        return list(parse_pass_band(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag: its names, the config path(s) it sets, and how it parses.

    ``action``: ``store`` (one value), ``append`` (repeatable: a list), ``false`` (a switch that sets False),
    ``true`` (a switch that sets True). ``implies``: other config paths set when the flag is given.
    """

    names: Tuple[str, ...]
    paths: Tuple[str, ...]
    group: str
    help: str
    type: Callable[[str], Any] = str
    choices: Optional[Sequence[Any]] = None
    action: str = "store"
    implies: Tuple[Tuple[str, Any], ...] = ()
    metavar: Optional[str] = None

    @property
    def dest(self) -> str:
        return "cp_" + self.names[0].lstrip("-").replace("-", "_")


NONE = "none"  # a flag value meaning "set this config key to null" (None itself means "flag not given")


def _none_or(kind):
    def parse(text: str):
        return NONE if text.lower() in ("none", "null", "auto") else kind(text)
    parse.__name__ = kind.__name__
    return parse


FLAG_GROUPS = ("source", "generator", "sampling", "labelling", "cleaning", "output")

FLAGS: Tuple[Flag, ...] = (
    # source
    Flag(("--source",), ("source.kind",), "source", "where problems come from", choices=SOURCE_KINDS),
    Flag(("--input",), ("source.paths",), "source", "problem file(s) or glob(s), local/gs:///s3://, "
         "JSONL/JSON/Parquet, .gz/.bz2/.zst (repeatable; implies --source file)", action="append",
         implies=(("source.kind", "file"),), metavar="PATH"),
    Flag(("--preset",), ("source.preset",), "source", "field mapping (and HF dataset) of a known dataset",
         choices=tuple(sorted(PRESETS))),
    Flag(("--num-problems", "--num_problems"), ("source.num_problems",), "source",
         "problems to read (the first N items; required for the procedural and chain sources)", type=int),
    Flag(("--seed",), ("generator.seed", "source.seed"), "source", "seed of the procedural source and the engine",
         type=int),
    # generator
    Flag(("--generator",), ("generator.kind",), "generator", "engine", choices=GENERATOR_KINDS),
    Flag(("--model",), ("generator.model",), "generator", "HF folder or Hub id, or 'embedded'"),
    Flag(("--server-url", "--server_url"), ("generator.base_urls",), "generator",
         "OpenAI-compatible server base URL (repeatable; implies --generator openai)", action="append",
         implies=(("generator.kind", "openai"),), metavar="URL"),
    Flag(("--seed-mode", "--seed_mode"), ("generator.seed_mode",), "generator",
         "per-request seeds (a sample never depends on its batch) or one engine seed", choices=SEED_MODES),
    Flag(("--compile",), ("generator.compile",), "generator",
         "vLLM torch.compile: on, off (eager) or auto (by the job's size)", choices=COMPILE_MODES),
    Flag(("--max-num-seqs", "--max_num_seqs"), ("generator.max_num_seqs",), "generator",
         "sequences the engine decodes at once", type=int),
    Flag(("--dtype",), ("generator.dtype",), "generator",
         "the model's dtype: auto (bfloat16 on a GPU or a CPU with bf16 units, else float32), bfloat16, float16, "
         "float32", choices=DTYPES),
    # sampling
    Flag(("--samples",), ("samples_per_problem",), "sampling", "solutions sampled per problem", type=int),
    Flag(("--temperature",), ("sampling.temperature",), "sampling", "sampling temperature (samples and rollouts)",
         type=float),
    Flag(("--top-p", "--top_p"), ("sampling.top_p",), "sampling", "nucleus sampling (samples and rollouts)",
         type=float),
    Flag(("--max-tokens", "--max_tokens"), ("sampling.max_tokens",), "sampling",
         "tokens per sample and per rollout", type=int),
    Flag(("--batch-size", "--batch_size"), ("batch_size",), "sampling", "problems per sampling engine call",
         type=int),
    # labelling
    Flag(("--labeler",), ("labeler",), "labelling", "step labeller: omegaprm, mc (Math-Shepherd) or none",
         choices=(NONE, "omegaprm", "mc")),
    Flag(("--rollouts",), ("labeling.omegaprm.k",), "labelling", "rollouts per prefix (OmegaPRM / MC k)", type=int),
    Flag(("--search-limit", "--search_limit"), ("labeling.omegaprm.search_limit",), "labelling",
         "OmegaPRM selections per problem", type=int),
    Flag(("--parallel-searches", "--parallel_searches"), ("labeling.omegaprm.parallel_searches",), "labelling",
         "speculative binary searches per tree (auto = sized from the engine; never changes labels)",
         type=lambda s: s if s == "auto" else int(s)),
    Flag(("--selections-per-round", "--selections_per_round"), ("labeling.omegaprm.selections_per_round",),
         "labelling", "OmegaPRM candidates selected and binary-searched side by side per round of a tree "
         "(1: the paper's sequential loop; default 16)", type=int),
    Flag(("--adaptive-rollouts", "--adaptive_rollouts"), ("labeling.omegaprm.adaptive",), "labelling",
         "on: an OmegaPRM probe stops at its first correct rollout (a proven positive) or after "
         "labeling.omegaprm.zero_after known wrong ones (default ceil(k/2)); off: exactly k per probe", type=_on_off, metavar="on|off"),
    Flag(("--labeling-batch-size", "--labeling_batch_size"), ("labeling_batch_size",), "labelling",
         "problems whose trees share the engine (none = from the engine's capacity)", type=_none_or(int)),
    Flag(("--consensus",), ("consensus.mode",), "labelling",
         "judge-model consensus filter on step labels", choices=("off", "keep-agreeing", "annotate")),
    Flag(("--rollout-format-failures", "--rollout_format_failures"), ("labeling.rollout_format_failures",),
         "labelling", "a rollout with no readable final answer counts as 0 (zero: Math-Shepherd/OmegaPRM) "
         "or as an unknown verdict", choices=("zero", "unknown")),
    Flag(("--judge-model", "--judge_model"), ("judge.model",), "labelling",
         "judge model for --consensus (default: the run's model)"),
    # cleaning (issue 20: counterpoint.clean)
    Flag(("--decontaminate",), ("decontamination.paths",), "cleaning",
         "evaluation set file(s) or glob(s), any source format, local/gs:///s3://: matching problems and Step-DPO "
         "prompts are rejected as contaminated (repeatable)", action="append", metavar="PATH"),
    Flag(("--decontamination-rule", "--decontamination_rule"), ("decontamination.rule",), "cleaning",
         "n-gram rule: lm-eval (13-gram) or open-r1 (8-gram)", choices=("lm-eval", "open-r1")),
    Flag(("--pairing",), ("pairing.strategy",), "cleaning",
         "outcome pairing: nearest (near-miss rejected) or round-robin", choices=("nearest", "round-robin")),
    Flag(("--reference-chosen", "--reference_chosen"), ("pairing.reference_chosen",), "cleaning",
         "where no sample is correct, the verified reference solution is the chosen side (off-policy)",
         action="true"),
    Flag(("--corrections",), ("corrections.enabled",), "labelling",
         "verified mistake -> correction traces after each proved first wrong step (needs --labeler)",
         action="true"),
    Flag(("--corrector-model", "--corrector_model"), ("corrector.model",), "labelling",
         "model that writes the corrections (default: the run's model; still verified)"),
    # critical tokens (issue 21: counterpoint.critical)
    Flag(("--critical-tokens", "--critical_tokens"), ("critical_tokens.contrast_models",), "labelling",
         "score every incorrect trajectory with these contrast models (a `counterpoint contrast-models` "
         "directory) and search its critical token (needs --labeler)", implies=(("critical_tokens.enabled", True),),
         metavar="DIR"),
    Flag(("--no-critical-search", "--no_critical_search"), ("critical_tokens.search",), "labelling",
         "contrastive scores only: no rollout search inside the first wrong step", action="false"),
    Flag(("--critical-k", "--critical_k"), ("critical_tokens.k",), "labelling",
         "rollouts per probe of the critical-token search", type=int),
    Flag(("--critical-ban-rollouts", "--critical_ban_rollouts"), ("critical_tokens.ban_rollouts",), "labelling",
         "continuations per ban test (0: no ban test)", type=int),
    Flag(("--critical-top-k", "--critical_top_k"), ("critical_tokens.top_k",), "labelling",
         "top contrastive positions kept per trajectory", type=int),
    Flag(("--critical-beta", "--critical_beta"), ("critical_tokens.beta",), "labelling",
         "contrast strength of the cDPO estimator (the paper's 1.0)", type=float),
    Flag(("--critical-score-form", "--critical_score_form"), ("critical_tokens.score_form",), "labelling",
         "cDPO's estimator over full distributions, or the log-ratio form (sampled tokens only)",
         choices=("full_distribution", "log_ratio")),
    Flag(("--critical-tokenizer", "--critical_tokenizer"), ("critical_tokens.tokenizer",), "labelling",
         "the policy's tokenizer (default: the run's model)"),
    # output
    Flag(("--config",), (), "output", "YAML run config (flags override it)", metavar="FILE"),
    Flag(("--output",), ("output",), "output", "output folder (local, gs://, s3://)"),
    Flag(("--num-shards", "--num_shards"), ("num_shards",), "output",
         "Parquet shards per config (none = one per 5,000 problems)", type=_none_or(int)),
    Flag(("--min-rows", "--min_rows"), ("min_rows",), "output",
         "fail validation when CONFIG has fewer than N rows (repeatable)", type=_min_rows, action="append",
         metavar="CONFIG=N"),
    Flag(("--export",), ("exports",), "output", "trainer export made after validation (repeatable)",
         action="append", metavar="FORMAT"),
    Flag(("--pass-band", "--pass_band"), ("export_options.pass_band",), "output",
         "grpo-prompts/verl-rl exports: keep LO <= pass rate <= HI (default: 0 < pass rate < 1)",
         type=_pass_band, metavar="LO,HI"),
    Flag(("--control",), ("export_options.control",), "output",
         "grpo-prompts/verl-rl exports: add an equal-size unfiltered control config", action="true"),
    Flag(("--max-per-problem", "--max_per_problem"), ("export_options.max_per_problem",), "output",
         "sft-positives export: at most N distinct positives per problem", type=_none_or(int), metavar="N"),
    Flag(("--no-validate",), ("validate",), "output", "skip the Great Expectations gate", action="false"),
    Flag(("--no-report",), ("report",), "output", "skip report.html", action="false"),
    Flag(("--quiet", "-q"), ("quiet",), "output", "no progress display", action="true"),
)
