"""``counterpoint corrections OUT``: adds the ``corrections`` config to a validated, labelled output.

Input: the live version of ``OUT`` (its ``trajectories`` and ``step_labels``, each shard checked
against the verdict's sha256) and its ``run_config.json`` (engine, verifier, sampling, system
prompt). Output: a new version of ``OUT`` with ``corrections`` and every other config carried
over, made by the one publish procedure (:mod:`counterpoint.dataset.publish`, as
``counterpoint export`` does): staged, gated, described, switched in by the manifest. The
corrections themselves come from the same Beam stage a ``--corrections`` run applies
(:class:`counterpoint.transforms.corrections.CorrectionsDoFn`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared

from counterpoint import schemas, storage
from counterpoint.config import RunConfig, from_dict
from counterpoint.dataset import publish
from counterpoint.dataset.summary import RunSummary
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import UsageError
from counterpoint.labeling.corrections import summarize
from counterpoint.schemas import records
from counterpoint.state import ProblemState
from counterpoint.transforms.corrections import Corrections, CorrectionsDoFn
from counterpoint.transforms.stages import EngineSpec

log = logging.getLogger(__name__)
CONFIG = "corrections"


def problem_states(trajectories: List[Dict[str, Any]], step_labels: List[Dict[str, Any]],
                   keep: Callable[[List[Dict[str, Any]], List[Dict[str, Any]]], bool]) -> List[ProblemState]:
    """One state per problem whose (trajectories, step labels) ``keep`` accepts, its problem row rebuilt
    from its trajectories (the commands that add a config to a labelled output share it)."""
    labels: Dict[str, List[Dict[str, Any]]] = {}
    for r in step_labels:
        labels.setdefault(r["problem_id"], []).append(r)
    trajs: Dict[str, List[Dict[str, Any]]] = {}
    for t in trajectories:
        trajs.setdefault(t["problem_id"], []).append(t)
    states = []
    for pid in sorted(trajs):
        ts = sorted(trajs[pid], key=lambda t: t["sample_index"])
        if not keep(ts, labels.get(pid, [])):
            continue
        t0 = ts[0]
        # The verifier that judged the samples names the answer type (auto routes by it).
        answer_type = t0["verifier"] if t0["verifier"] in records.ANSWER_TYPES else "numeric"
        problem = {"problem_id": pid, "source": t0["source"], "question": t0["question"],
                   "gold_answer": t0["gold_answer"], "answer_type": answer_type, "difficulty": None, "metadata": None}
        states.append(ProblemState(problem=problem, trajectories=ts, step_labels=labels.get(pid, [])))
    return states


def write_stage(stage: beam.PTransform, states: List[ProblemState], config: str, folder: str, batch_size: int,
                runner_options: Optional[List[str]]) -> None:
    """A Beam job: batches of states -> ``stage`` -> the rows of ``config`` in one Parquet shard under ``folder``."""
    batches = [states[i:i + batch_size] for i in range(0, len(states), batch_size)] or [[]]
    options = PipelineOptions(list(runner_options or []) or ["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        _ = (p
             | "Problems" >> beam.Create(batches, reshuffle=False)
             | "Stage" >> stage
             | "Rows" >> beam.FlatMap(lambda batch: [schemas.table(config).conform(r) for s in batch
                                                     for r in s.rows(config)])
             | "Write" >> beam.io.WriteToParquet(folder.rstrip("/") + "/train",
                                                 schema=schemas.table(config).arrow_schema(), codec="zstd",
                                                 num_shards=1, shard_name_template="-SSSSS-of-NNNNN",
                                                 file_name_suffix=".parquet"))


def _generate(cfg: RunConfig, states: List[ProblemState], folder: str, cache_dir: Optional[str],
              runner_options: Optional[List[str]]) -> None:
    """The corrections stage over ``states``, written under ``folder``."""
    corrector = cfg.corrector or cfg.generator
    fn = CorrectionsDoFn(EngineSpec(corrector, shared.Shared(), cache_dir), cfg.verifier, shared.Shared(), cfg.retry,
                         corrections=cfg.corrections, sampling=cfg.sampling, system_prompt=cfg.system_prompt,
                         run_seed=cfg.generator.seed,
                         corrector="engine" if corrector == cfg.generator else "corrector_model")
    write_stage(Corrections(fn), states, CONFIG, folder, max(1, cfg.labeling_batch_size or 16), runner_options)


def labelled_live(target: storage.OutputLayout, what: str):
    """``(live version, trajectories, step_labels)`` of a labelled output, each shard checked against the
    verdict's sha256; ``UsageError`` when there is no dataset or no step labels."""
    live = target.live_version()
    if live is None:
        raise UsageError(f"{target.root} has no published dataset yet: finish a `counterpoint run` into it first")
    if not live.shards("step_labels"):
        raise UsageError(f"{target.root} has no step_labels: {what} need a labelled run (--labeler omegaprm)")
    verdict = Verdict.require(live, f"cannot add {what} to {target.root}", ["trajectories", "step_labels"])
    return live, verdict.read_verified("trajectories").to_pylist(), verdict.read_verified("step_labels").to_pylist()


def staged_rows(staging, config: str) -> List[Dict[str, Any]]:
    """The rows of the one shard just staged (the gate's expected rows, and the summary's figures)."""
    return [r for path in staging.shards(config) for r in storage.read_parquet(path).to_pylist()]


def publish_added(target: storage.OutputLayout, live, staging, config: str, figures: Dict[str, Any], rows: int,
                  cfg: RunConfig, runner_options: Optional[List[str]], *, empty_reason: str) -> None:
    """Publishes ``staging`` (holding ``config``) as the next version, every other live config carried over."""
    summary = RunSummary.read(live) or RunSummary()
    summary.configs = list(dict.fromkeys([*summary.configs, config]))
    summary.written = {**summary.written, config: {"shards": len(staging.shards(config)), "rows": rows}}
    summary.provenance = {**(summary.provenance or {}), config: figures}
    if not rows:
        summary.empty_configs = {**summary.empty_configs, config: empty_reason}
    carry = [c for c in live.present_configs() if c != config]
    publish.publish(target, publish.Publication(
        staging=staging, staged=publish.Staged(written={config: summary.written[config]}), summary=summary,
        run_config=cfg.to_dict(), carry=carry, report=storage.exists(live.report_path)),
        publish.GateOptions(runner_options=runner_options))


def add_corrections(output: str, *, corrector_model: Optional[str] = None, cues: Sequence[str] = (),
                    samples_per_cue: Optional[int] = None, runner_options: Optional[List[str]] = None
                    ) -> Dict[str, Any]:
    """Publishes a new version of ``output`` with the ``corrections`` config; returns its summary figures.

    Raises ``UsageError`` (no labelled output), ``NotValidated`` / ``VerdictMismatch``, ``ValidationFailed``,
    ``OutputLocked``.
    """
    t0 = time.monotonic()
    target = storage.OutputLayout(output)
    with publish.claim(target, "corrections", create=False):
        live, trajectories, step_labels = labelled_live(target, "corrections")
        run_config = storage.read_json(live.config_path) or {}
        cfg = _config(run_config, corrector_model, cues, samples_per_cue)
        staging = target.staging(publish.new_version_id())
        _generate(cfg, problem_states(trajectories, step_labels, lambda ts, labels: bool(labels)),
                  staging.config_dir(CONFIG),
                  target.cache_dir("corrections"), runner_options)
        rows = staged_rows(staging, CONFIG)
        figures = summarize(rows, sum(r["num_generated_tokens"] for r in rows))
        publish_added(target, live, staging, CONFIG, figures, len(rows), cfg, runner_options,
                      empty_reason="no labelled negative had a first wrong step located by the search, a false "
                      "arithmetic claim or a stated wrong answer")
    figures["elapsed_s"] = round(time.monotonic() - t0, 3)
    log.info("corrections: %s", figures)
    return figures


def _config(run_config: Dict[str, Any], corrector_model: Optional[str], cues: Sequence[str],
            samples_per_cue: Optional[int]) -> RunConfig:
    cfg = from_dict(run_config)
    corrections = dataclasses.replace(cfg.corrections, enabled=True, cues=list(cues) or cfg.corrections.cues,
                                      samples_per_cue=samples_per_cue or cfg.corrections.samples_per_cue)
    corrector = dataclasses.replace(cfg.generator, model=corrector_model) if corrector_model else cfg.corrector
    return dataclasses.replace(cfg, corrections=corrections, corrector=corrector)
