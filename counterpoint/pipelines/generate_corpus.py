"""The corpus pipeline: problems in, a Hub-layout positive/negative dataset out.

    Read -> Dedupe -> Resume split -> Sample (vLLM) -> Verify -> [Label: OmegaPRM | MC]
         -> Outcome pairs -> Checkpoint -> one Parquet sink per config

Every problem read leaves either output rows or a problem-level reject, and
the run checks ``problems in == problems with output + problems rejected``
before it calls the dataset done. Parquet shards are written to a staging
folder and swapped into ``<output>/data`` only after the pipeline succeeded,
so no partially written shard is ever part of the dataset.

Run it with ``counterpoint run`` or ``python -m counterpoint.pipelines.generate_corpus``;
any Beam pipeline option passes through (``--runner=DataflowRunner ...``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.utils import shared

from counterpoint import corpus, schemas
from counterpoint.cache import WORK_DIR
from counterpoint.config import RunConfig, dumps_config, load_config
from counterpoint.sources import iter_source
from counterpoint.transforms.stages import (
    CheckpointDoFn,
    LabelDoFn,
    SampleDoFn,
    SplitFinished,
    VerifyDoFn,
)

log = logging.getLogger(__name__)

# Beam 2.77's DirectRunner first tries to download the Prism binary (no internet here);
# the FnApiRunner is what it falls back to, so local runs pin it unless told otherwise.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"


class CounterpointOptions(PipelineOptions):
    """Run options; each overrides the matching field of the YAML config."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--config", dest="cp_config", default=None, help="YAML run config.")
        parser.add_argument("--output", dest="cp_output", default=None, help="Output directory (local, gs://, s3://).")
        parser.add_argument("--num-problems", "--num_problems", dest="cp_num_problems", type=int, default=None)
        parser.add_argument("--samples", dest="cp_samples", type=int, default=None, help="Samples per problem.")
        parser.add_argument("--labeler", dest="cp_labeler", choices=["none", "omegaprm", "mc"], default=None)
        parser.add_argument("--rollouts", dest="cp_rollouts", type=int, default=None,
                            help="Rollouts per prefix (OmegaPRM / MC k).")
        parser.add_argument("--search-limit", "--search_limit", dest="cp_search_limit", type=int, default=None,
                            help="OmegaPRM selections per problem.")
        parser.add_argument("--source", dest="cp_source", choices=["procedural", "file", "hf"], default=None)
        parser.add_argument("--input", dest="cp_input", action="append", default=None,
                            help="Problem file(s) or glob(s) for --source=file (repeatable).")
        parser.add_argument("--preset", dest="cp_preset", choices=["gsm8k", "math", "math500"], default=None)
        parser.add_argument("--generator", dest="cp_generator", choices=["vllm", "openai", "scripted"], default=None)
        parser.add_argument("--model", dest="cp_model", default=None, help="HF folder or Hub id, or 'embedded'.")
        parser.add_argument("--server-url", "--server_url", dest="cp_server_urls", action="append", default=None,
                            help="OpenAI-compatible server base URL (repeatable; --generator=openai).")
        parser.add_argument("--max-tokens", "--max_tokens", dest="cp_max_tokens", type=int, default=None)
        parser.add_argument("--temperature", dest="cp_temperature", type=float, default=None)
        parser.add_argument("--seed", dest="cp_seed", type=int, default=None)
        parser.add_argument("--batch-size", "--batch_size", dest="cp_batch_size", type=int, default=None)
        parser.add_argument("--num-shards", "--num_shards", dest="cp_num_shards", type=int, default=None)
        parser.add_argument("--no-validate", dest="cp_validate", action="store_false", default=None)
        parser.add_argument("--no-report", dest="cp_report", action="store_false", default=None)


def resolve_config(options: PipelineOptions, config: Optional[RunConfig] = None) -> RunConfig:
    """The YAML config (or ``config``) with command-line overrides applied."""
    import dataclasses

    o = options.view_as(CounterpointOptions)
    cfg = config or load_config(o.cp_config)
    src = cfg.source
    if o.cp_source is not None:
        src = dataclasses.replace(src, kind=o.cp_source)
    if o.cp_input:
        src = dataclasses.replace(src, kind="file", paths=list(o.cp_input))
    if o.cp_preset:
        src = dataclasses.replace(src, preset=o.cp_preset)
        if src.kind == "procedural":
            src = dataclasses.replace(src, kind="hf")
    if o.cp_num_problems is not None:
        src = dataclasses.replace(src, num_problems=o.cp_num_problems)
    if o.cp_seed is not None:
        src = dataclasses.replace(src, seed=o.cp_seed)
    gen = cfg.generator
    if o.cp_generator:
        gen = dataclasses.replace(gen, kind=o.cp_generator)
    if o.cp_model:
        gen = dataclasses.replace(gen, model=o.cp_model)
    if o.cp_server_urls:
        gen = dataclasses.replace(gen, kind="openai", base_urls=list(o.cp_server_urls))
    if o.cp_seed is not None:
        gen = dataclasses.replace(gen, seed=o.cp_seed)
    sampling = cfg.sampling
    if o.cp_max_tokens is not None:
        sampling = dataclasses.replace(sampling, max_tokens=o.cp_max_tokens)
    if o.cp_temperature is not None:
        sampling = dataclasses.replace(sampling, temperature=o.cp_temperature)
    updates: Dict[str, Any] = dict(source=src, generator=gen, sampling=sampling)
    if o.cp_output:
        updates["output"] = o.cp_output
    if o.cp_samples is not None:
        updates["samples_per_problem"] = o.cp_samples
    if o.cp_labeler is not None:
        updates["labeler"] = None if o.cp_labeler == "none" else o.cp_labeler
    omega = cfg.labeling.omegaprm
    if o.cp_rollouts is not None:
        omega = dataclasses.replace(omega, k=o.cp_rollouts)
    if o.cp_search_limit is not None:
        omega = dataclasses.replace(omega, search_limit=o.cp_search_limit)
    if omega is not cfg.labeling.omegaprm:
        updates["labeling"] = dataclasses.replace(cfg.labeling, omegaprm=omega)
    if o.cp_batch_size is not None:
        updates["batch_size"] = o.cp_batch_size
    if o.cp_num_shards is not None:
        updates["num_shards"] = o.cp_num_shards
    if o.cp_validate is not None:
        updates["validate"] = o.cp_validate
    if o.cp_report is not None:
        updates["report"] = o.cp_report
    return dataclasses.replace(cfg, **updates)


# ---------------------------------------------------------------------------
# Small Beam pieces
# ---------------------------------------------------------------------------
class DedupeById(beam.DoFn):
    """Keeps the first-read problem of each id; later duplicates become problem-level rejects."""

    def process(self, keyed):
        problem_id, indexed = keyed
        ordered = sorted(indexed, key=lambda t: t[0])
        yield ordered[0][1]
        for index, dup in ordered[1:]:
            yield beam.pvalue.TaggedOutput("rejects", schemas.make_reject(
                stage="dedupe", reason="duplicate_problem_id", problem_id=problem_id, scope="problem",
                detail=f"problem id {problem_id!r} already read (input item {ordered[0][0]}); this is item {index}",
                payload={"question": dup["question"][:500]}, key=index))


def _unbatch(batch):
    return list(batch)


def _outcome(state, cfg: RunConfig):
    if not state["failed"]:
        corpus.outcome_rows(state, max_pairs_per_problem=cfg.pairing.max_pairs_per_problem,
                            truncated_as_rejected=cfg.pairing.truncated_as_rejected)
    return state


def _rows(state, config):
    return corpus.rows_for(config, [state])


def _state_summary(state) -> Dict[str, Any]:
    """What the driver needs back from each problem for the run summary (small)."""
    return {"problem_id": state["problem"]["problem_id"], "failed": state["failed"], "stats": state["stats"],
            "resumed": bool(state.get("resumed"))}


def build_pipeline(p: beam.Pipeline, cfg: RunConfig, problems: List[Dict], read_rejects: List[Dict],
                   staging_dir: str, output_dir: str, configs: Sequence[str]):
    """Applies the corpus transforms to ``p``; returns nothing (sinks are part of the graph)."""
    engine = shared.Shared()
    verifier = shared.Shared()
    indexed = p | "CreateProblems" >> beam.Create(list(enumerate(problems)), reshuffle=True)
    deduped = (
        indexed
        | "KeyByProblemId" >> beam.Map(lambda t: (t[1]["problem_id"], t))
        | "GroupByProblemId" >> beam.GroupByKey()
        | "DropDuplicateIds" >> beam.ParDo(DedupeById()).with_outputs("rejects", main="problems")
    )
    split = deduped.problems | "SkipFinished" >> beam.ParDo(SplitFinished(output_dir, cfg.output_fingerprint())).with_outputs(
        "finished", main="todo")
    states = (
        split.todo
        | "BatchForSampling" >> beam.BatchElements(min_batch_size=cfg.batch_size, max_batch_size=cfg.batch_size)
        | "Sample" >> beam.ParDo(SampleDoFn(cfg, engine, output_dir))
        | "Verify" >> beam.ParDo(VerifyDoFn(cfg, verifier))
        | "UnbatchVerified" >> beam.FlatMap(_unbatch)
    )
    if cfg.labeler:
        states = (
            states
            | "BatchForLabeling" >> beam.BatchElements(min_batch_size=cfg.labeling_batch_size, max_batch_size=cfg.labeling_batch_size)
            | "Label" >> beam.ParDo(LabelDoFn(cfg, engine, verifier, output_dir))
            | "UnbatchLabeled" >> beam.FlatMap(_unbatch)
        )
    processed = (
        states
        | "OutcomePairs" >> beam.Map(_outcome, cfg)
        | "Checkpoint" >> beam.ParDo(CheckpointDoFn(output_dir, cfg.output_fingerprint()))
    )
    all_states = (processed, split.finished) | "AllProblems" >> beam.Flatten()
    early_rejects = (
        (p | "CreateReadRejects" >> beam.Create(read_rejects), deduped.rejects)
        | "EarlyRejects" >> beam.Flatten()
    )
    for config in configs:
        rows = all_states | f"Rows[{config}]" >> beam.FlatMap(_rows, config)
        if config == "rejects":
            rows = (rows, early_rejects) | "AllRejects" >> beam.Flatten()
        spec = schemas.table(config)
        _ = rows | f"Write[{config}]" >> beam.io.WriteToParquet(
            FileSystems.join(staging_dir, "data", config, "train"),
            schema=spec.arrow_schema(),
            codec="zstd",
            num_shards=cfg.num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
            file_name_suffix=".parquet",
        )
    summaries_dir = FileSystems.join(staging_dir, "state_summaries")
    _ = (
        all_states
        | "SummariseStates" >> beam.Map(lambda s: json.dumps(_state_summary(s)))
        | "WriteStateSummaries" >> beam.io.WriteToText(FileSystems.join(summaries_dir, "part"), file_name_suffix=".jsonl")
    )


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def read_problems(cfg: RunConfig):
    """Reads the source in the driver: (problems, rejects). Source-level errors raise."""
    problems, rejects = [], []
    for kind, row in iter_source(cfg.source):
        (problems if kind == "problem" else rejects).append(row)
    return problems, rejects


def run(argv: Optional[List[str]] = None, save_main_session: bool = True,
        test_pipeline: Optional[beam.Pipeline] = None, config: Optional[RunConfig] = None) -> Dict[str, Any]:
    """Runs the corpus pipeline; returns the run summary (also written as ``run_summary.json``)."""
    from counterpoint.pipelines import finalize

    started = time.perf_counter()
    options = PipelineOptions(argv)
    cfg = resolve_config(options, config)
    options.view_as(SetupOptions).save_main_session = save_main_session
    if options.view_as(StandardOptions).runner is None and test_pipeline is None:
        options.view_as(StandardOptions).runner = DEFAULT_LOCAL_RUNNER

    output_dir = cfg.output
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    staging_root = FileSystems.join(output_dir, WORK_DIR, "staging")
    if "://" not in staging_root and os.path.isdir(staging_root):
        # Leftovers of killed runs: never part of the dataset, safe to drop.
        shutil.rmtree(staging_root, ignore_errors=True)
    staging_dir = FileSystems.join(staging_root, run_id)
    configs = list(schemas.OUTCOME_CONFIGS) + (list(schemas.STEP_CONFIGS) if cfg.labeler else [])

    t_read = time.perf_counter()
    problems, read_rejects = read_problems(cfg)
    read_seconds = time.perf_counter() - t_read
    log.info("read %d problems and %d rejects from %s source", len(problems), len(read_rejects), cfg.source.kind)

    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg, problems, read_rejects, staging_dir, output_dir, configs)
    t_pipe = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    pipeline_seconds = time.perf_counter() - t_pipe

    summary = finalize.finalize_run(
        cfg, output_dir=output_dir, staging_dir=staging_dir, configs=configs,
        problems_in=len(problems) + len(read_rejects),
        timing={"read_s": read_seconds, "pipeline_s": pipeline_seconds},
        started=started, options=options,
    )
    return summary


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(argv)


if __name__ == "__main__":
    main()
