"""The corpus pipeline: problems in, a Hub-layout positive/negative dataset out.

    ReadProblems -> JoinCheckpoints/DedupeAndResume -> Sample (vLLM) -> Verify -> Clean
        -> OutcomePairs -> Checkpoint                                   (no labeller), or
    ReadProblems -> JoinCheckpoints/DedupeAndResume -> SampleAndLabel (one engine stream per
        bundle: sample, verify, clean, OmegaPRM | MC) -> [Judge: consensus] -> OutcomePairs -> Checkpoint
        -> WriteConfigs (one Parquet sink per config) + RunStats (one small record)

Sources are read by the workers and the job graph does not depend on the input's
size. Every problem read leaves either output rows or a problem-level reject; the
driver checks ``problems in == problems with output + problems rejected`` (all
three counted in the pipeline) and runs the validation gate against the run's
*staging* folder. A new version is published (one manifest switch) only when both
pass, so a failed run leaves the previous dataset byte-identical.

Run it with ``counterpoint run`` or ``python -m counterpoint.pipelines.generate_corpus``;
any Beam pipeline option passes through (``--runner=DataflowRunner ...``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions
from apache_beam.utils import shared

from counterpoint import storage
from counterpoint.config import FLAGS, RunConfig, add_flags, apply_overrides, load_config
from counterpoint.dataset import publish
from counterpoint.progress import LiveProgress
from counterpoint.schemas import content_id
from counterpoint.transforms.corrections import Corrections, CorrectionsDoFn
from counterpoint.transforms.critical import check as critical_check, critical_stage
from counterpoint.transforms.judge import JudgeDoFn
from counterpoint.transforms.label import SampleAndLabel, SampleAndLabelDoFn
from counterpoint.transforms.read import ReadProblems
from counterpoint.transforms.clean import DecontaminateProblems, GuardStepPrompts
from counterpoint.transforms.stages import (DedupeAndResumeProblems, EngineSpec, OutcomePairsDoFn, PairAndCheckpoint,
                                            SampleAndVerify)
from counterpoint.transforms.write import RunStats, WriteConfigs

log = logging.getLogger(__name__)

# Beam 2.77's DirectRunner first tries to download the Prism binary (no internet here);
# the FnApiRunner is what it falls back to, so local runs pin it unless told otherwise.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"
# Problems per engine stream (one scheduler run: sampling, verifying and labelling of a bundle) when the
# engine's capacity does not say more. The engine drains only at a bundle's end, so a bundle holds many
# times what the engine keeps in flight (few problems survive screening on a small model); a kill loses at
# most one bundle's unfinished work (its engine calls stay in the request cache).
DEFAULT_LABELING_BATCH = 256


class CounterpointOptions(PipelineOptions):
    """Counterpoint's own options (the flag table in ``counterpoint.config``); each overrides the YAML config."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser)


def resolve_config(options: PipelineOptions, config: Optional[RunConfig] = None) -> RunConfig:
    """The YAML config (or ``config``) with the command-line overrides applied."""
    o = options.view_as(CounterpointOptions)
    path = getattr(o, "cp_config", None)
    cfg = config or load_config(path)
    values = {f.dest: getattr(o, f.dest, None) for f in FLAGS}
    return apply_overrides(cfg, values, from_defaults=config is None and not path)


def check_config(cfg: RunConfig, local: bool = True) -> RunConfig:
    """Fails at the door: everything a worker would trip over is checked here, in the driver.

    Returns the config with ``auto`` choices resolved (labelling batch, judge, and — when the job
    runs on this machine (``local``) — the compile mode; elsewhere each worker picks it for its own
    hardware).
    """
    from counterpoint.generators import build_generator

    cfg.source.check()
    cfg.decontamination.check()
    gen = build_generator(cfg.generator)  # builds (not loads) the engine: bad kinds / policies fail here
    if (cfg.generator.kind == "scripted" and cfg.generator.scripted.get("policy", "chain") == "chain"
            and cfg.source.kind == "procedural"):
        raise ValueError("generator.kind=scripted (policy chain) solves chain problems only, not procedural word "
                         "problems: use --source chain, or the scripted policy answer_key with an answer_key")
    if cfg.corrections.enabled and cfg.corrector is not None:
        build_generator(cfg.corrector)  # a bad --corrector-model fails here, not in a worker
    critical_check(cfg)  # contrast models that do not load or tokenize otherwise than the policy fail here
    from counterpoint.verifiers.suite import VerifierSuite

    VerifierSuite(cfg.verifier.name)
    updates: Dict[str, Any] = {}
    if cfg.generator.kind == "vllm" and cfg.generator.compile == "auto" and local:
        from counterpoint.generators.vllm_local import choose_compile

        updates["generator"] = dataclasses.replace(cfg.generator, compile=choose_compile(cfg))
    if cfg.labeler and cfg.labeling_batch_size is None:
        capacity = getattr(gen, "capacity", None) or cfg.generator.max_num_seqs or 0
        k = cfg.labeling.omegaprm.k
        updates["labeling_batch_size"] = max(DEFAULT_LABELING_BATCH, capacity // max(1, k))
    if cfg.consensus.mode != "off" and cfg.judge is None:
        updates["judge"] = cfg.generator
    if cfg.exports:
        from counterpoint.dataset.export import FORMAT_SOURCES, FORMATS

        unknown = [f for f in cfg.exports if f not in FORMATS]
        if unknown:
            raise ValueError(f"--export: unknown format(s) {unknown}; choose from {sorted(FORMATS)}")
        for fmt in cfg.exports:
            missing = [c for c in FORMAT_SOURCES[fmt][0] if c not in cfg.configs()]
            if "critical_tokens" in missing:
                raise ValueError(f"--export {fmt} needs the critical_tokens config: add --labeler omegaprm and "
                                 "--critical-tokens DIR (contrast models from `counterpoint contrast-models`), or "
                                 "export later with `counterpoint critical-tokens OUT` then `counterpoint export`")
            if missing:
                raise ValueError(f"--export {fmt} needs the {missing} config(s), which only a labelling run writes: "
                                 "add --labeler omegaprm (or mc)")
        if "step-dpo" in cfg.exports and not cfg.labeler:
            raise ValueError("--export step-dpo needs step pairs, which only a labelling run makes: add --labeler omegaprm")
    return dataclasses.replace(cfg, **updates) if updates else cfg


def build_pipeline(p: beam.Pipeline, cfg: RunConfig, layout: storage.OutputLayout,
                   staging: storage.StagingLayout, hf_files: Optional[List[str]] = None) -> None:
    """Applies the corpus transforms to ``p`` (sinks are part of the graph)."""
    engine = EngineSpec(cfg.generator, shared.Shared(), layout.cache_dir(_model_key(cfg)))
    verifier_handle = shared.Shared()
    checkpoints = layout.checkpoints_dir(cfg.output_fingerprint())

    read = p | "ReadProblems" >> ReadProblems(cfg.source, hf_files)
    problems, early = read["problems"], [read["rejects"]]
    decon = cfg.decontamination
    if decon.enabled:  # before resume: a checkpoint made before the evaluation set was named is checked too
        clean = problems | "Decontaminate" >> DecontaminateProblems(decon)
        problems = clean["problems"]
        early.append(clean["rejects"])
    split = problems | "DedupeAndResume" >> DedupeAndResumeProblems(checkpoints)
    if cfg.labeler:
        # One engine stream per bundle: sampling, verifying, labelling (and judging, when the judge is the
        # run's own model) share one scheduler (issue 18).
        in_stream = cfg.consensus.mode != "off" and (cfg.judge or cfg.generator) == cfg.generator
        states = split["todo"] | "SampleAndLabel" >> SampleAndLabel(
            SampleAndLabelDoFn(engine, cfg.verifier, verifier_handle, cfg.retry, labeling=cfg.labeling_config,
                               sampling=cfg.sampling, samples_per_problem=cfg.samples_per_problem,
                               system_prompt=cfg.system_prompt, segmentation=cfg.segmentation,
                               run_seed=cfg.generator.seed, dedup=cfg.dedup,
                               consensus=cfg.consensus if in_stream else None),
            cfg.labeling_batch_size or DEFAULT_LABELING_BATCH, judge=None if in_stream else _judge(cfg, engine, layout))
        if cfg.corrections.enabled:
            states = states | "Corrections" >> Corrections(_corrector(cfg, engine, layout, verifier_handle))
        if cfg.critical_tokens.enabled:
            states = states | "CriticalTokens" >> critical_stage(cfg, engine, verifier_handle)
    else:
        states = split["todo"] | "SampleAndVerify" >> SampleAndVerify(
            engine, cfg.verifier, verifier_handle, cfg.retry, batch_size=cfg.batch_size, sampling=cfg.sampling,
            samples_per_problem=cfg.samples_per_problem, system_prompt=cfg.system_prompt,
            segmentation=cfg.segmentation, run_seed=cfg.generator.seed, dedup=cfg.dedup)
    outcome = OutcomePairsDoFn(cfg.pairing, cfg.verifier, verifier_handle, cfg.segmentation)
    finished = states | "PairAndCheckpoint" >> PairAndCheckpoint(cfg.pairing, checkpoints, outcome)
    all_states = (finished, split["finished"]) | "AllProblems" >> beam.Flatten()
    if decon.enabled and decon.step_prompts and cfg.labeler:
        all_states = all_states | "GuardStepPrompts" >> beam.ParDo(
            GuardStepPrompts(decon.n), index=beam.pvalue.AsSingleton(clean["index"]))
    early_rejects = tuple(early) + (split["rejects"],) | "EarlyRejects" >> beam.Flatten()
    _ = (all_states, early_rejects) | "WriteConfigs" >> WriteConfigs(staging.data_dir, cfg.configs(), cfg.shards())
    _ = (all_states, early_rejects, read["problems_in"]) | "RunStats" >> RunStats(staging.counts_dir)


def _judge(cfg: RunConfig, engine: EngineSpec, layout: storage.OutputLayout):
    """The consensus judge stage (None when consensus is off); it shares the run's engine when it is the same."""
    if cfg.consensus.mode == "off":
        return None
    judge = cfg.judge or cfg.generator
    handle = engine.handle if judge == cfg.generator else shared.Shared()
    return JudgeDoFn(EngineSpec(judge, handle, layout.cache_dir(_model_key(cfg, judge=True))), cfg.retry,
                     consensus=cfg.consensus)


def _corrector(cfg: RunConfig, engine: EngineSpec, layout: storage.OutputLayout,
               verifier_handle: shared.Shared) -> CorrectionsDoFn:
    """The corrections stage; it shares the run's engine unless --corrector-model names another."""
    corrector = cfg.corrector or cfg.generator
    spec = engine if corrector == cfg.generator else EngineSpec(
        corrector, shared.Shared(), layout.cache_dir(content_id(corrector.kind, corrector.model, corrector.dtype,
                                                                length=12)))
    return CorrectionsDoFn(spec, cfg.verifier, verifier_handle, cfg.retry, corrections=cfg.corrections,
                           sampling=cfg.sampling, system_prompt=cfg.system_prompt, run_seed=cfg.generator.seed,
                           corrector="engine" if corrector == cfg.generator else "corrector_model")


LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def _runs_here(options: PipelineOptions, test_pipeline=None) -> bool:
    """Whether the job's workers run on this machine (the local runners), not on a cluster."""
    if test_pipeline is not None:
        return True
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def _model_key(cfg: RunConfig, judge: bool = False) -> str:
    from counterpoint.schemas import content_id

    g = (cfg.judge or cfg.generator) if judge else cfg.generator
    return content_id(g.kind, g.model, g.dtype, length=12)


def _progress_total(cfg: RunConfig) -> Optional[int]:
    return cfg.source.num_problems


def _stages(cfg: RunConfig) -> List[str]:
    stages = ["sample", "verify"]
    if cfg.labeler:
        stages.append("label")
        if cfg.consensus.mode != "off":
            stages.append("judge")
        if cfg.corrections.enabled:
            stages.append("correct")
        if cfg.critical_tokens.enabled:
            stages.append("critical")
    return stages


def run(argv: Optional[List[str]] = None, save_main_session: bool = True,
        test_pipeline: Optional[beam.Pipeline] = None, config: Optional[RunConfig] = None) -> Dict[str, Any]:
    """Runs the corpus pipeline; returns the run summary (also written as ``run_summary.json``)."""
    started = time.perf_counter()
    options = PipelineOptions(argv)
    storage.configure(options)  # credentials / endpoints reach the driver's own filesystem calls too
    options.view_as(SetupOptions).save_main_session = save_main_session
    if options.view_as(StandardOptions).runner is None and test_pipeline is None:
        options.view_as(StandardOptions).runner = DEFAULT_LOCAL_RUNNER
    local = _runs_here(options, test_pipeline)
    cfg = check_config(resolve_config(options, config), local=local)

    layout = storage.OutputLayout(cfg.output)
    # Ownership (a folder that is not ours is refused) and the one-writer lock, before any work.
    with publish.claim(layout, "run"):
        return _run_claimed(cfg, options, layout, started, local, test_pipeline)


def _run_claimed(cfg: RunConfig, options: PipelineOptions, layout: storage.OutputLayout, started: float,
                 local: bool, test_pipeline: Optional[beam.Pipeline]) -> Dict[str, Any]:
    """The run, while this process holds the output folder's lock."""
    from counterpoint.pipelines import finalize

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    # Leftovers of killed runs: never part of the dataset, safe to drop (we hold the lock).
    storage.delete_tree(layout.staging_root)
    staging = layout.staging(run_id)

    hf_files = None
    if cfg.source.kind == "hf":
        from counterpoint.sources.hf import resolve_data_files

        name, hf_config, split = cfg.source.hf_args()
        hf_files = resolve_data_files(name, hf_config, split, data_files=cfg.source.hf_data_files,
                                      load_kwargs=cfg.source.hf_kwargs)
        log.info("%s: %d data file(s) for split %s", name, len(hf_files), split)

    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg, layout, staging, hf_files)
    t_pipe = time.perf_counter()
    total = _progress_total(cfg)
    budget = total * cfg.samples_per_problem * cfg.sampling.max_tokens if total else None
    with LiveProgress(total=total, stages=_stages(cfg), enabled=not cfg.quiet, sampling_token_budget=budget) as live:
        result = p.run()
        live.poll(result)  # returns at once on runners whose run() already waited (FnApiRunner)
        result.wait_until_finish()
        live.poll(result, stop_when_done=False)  # the final figures (workers in other processes)
    pipeline_seconds = time.perf_counter() - t_pipe

    return finalize.finalize_run(cfg, layout=layout, staging=staging, timing={"pipeline_s": pipeline_seconds},
                                 started=started, options=options, pipeline_result=result, on_job_runner=not local)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(argv)


if __name__ == "__main__":
    main()
