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
from typing import Any, Dict, List, Optional, Sequence

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


def _states(trajectories: List[Dict[str, Any]], step_labels: List[Dict[str, Any]]) -> List[ProblemState]:
    """One state per labelled problem (its problem row rebuilt from its trajectories)."""
    labels: Dict[str, List[Dict[str, Any]]] = {}
    for r in step_labels:
        labels.setdefault(r["problem_id"], []).append(r)
    trajs: Dict[str, List[Dict[str, Any]]] = {}
    for t in trajectories:
        trajs.setdefault(t["problem_id"], []).append(t)
    states = []
    for pid in sorted(labels):
        ts = sorted(trajs.get(pid, []), key=lambda t: t["sample_index"])
        if not ts:
            continue
        t0 = ts[0]
        # The verifier that judged the samples names the answer type (auto routes by it).
        answer_type = t0["verifier"] if t0["verifier"] in records.ANSWER_TYPES else "numeric"
        problem = {"problem_id": pid, "source": t0["source"], "question": t0["question"],
                   "gold_answer": t0["gold_answer"], "answer_type": answer_type, "difficulty": None, "metadata": None}
        states.append(ProblemState(problem=problem, trajectories=ts, step_labels=labels[pid]))
    return states


def _generate(cfg: RunConfig, states: List[ProblemState], folder: str, cache_dir: Optional[str],
              runner_options: Optional[List[str]]) -> None:
    """The Beam job: batches of states -> the corrections stage -> one Parquet shard under ``folder``."""
    corrector = cfg.corrector or cfg.generator
    fn = CorrectionsDoFn(EngineSpec(corrector, shared.Shared(), cache_dir), cfg.verifier, shared.Shared(), cfg.retry,
                         corrections=cfg.corrections, sampling=cfg.sampling, system_prompt=cfg.system_prompt,
                         run_seed=cfg.generator.seed,
                         corrector="engine" if corrector == cfg.generator else "corrector_model")
    size = max(1, cfg.labeling_batch_size or 16)
    batches = [states[i:i + size] for i in range(0, len(states), size)] or [[]]
    options = PipelineOptions(list(runner_options or []) or ["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        _ = (p
             | "Problems" >> beam.Create(batches, reshuffle=False)
             | "Corrections" >> Corrections(fn)
             | "Rows" >> beam.FlatMap(lambda batch: [schemas.table(CONFIG).conform(r) for s in batch
                                                     for r in s.corrections])
             | "Write" >> beam.io.WriteToParquet(folder.rstrip("/") + "/train",
                                                 schema=schemas.table(CONFIG).arrow_schema(), codec="zstd",
                                                 num_shards=1, shard_name_template="-SSSSS-of-NNNNN",
                                                 file_name_suffix=".parquet"))


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
        live = target.live_version()
        if live is None:
            raise UsageError(f"{output} has no published dataset yet: finish a `counterpoint run` into it first")
        if not live.shards("step_labels"):
            raise UsageError(f"{output} has no step_labels: corrections need a labelled run (--labeler omegaprm)")
        verdict = Verdict.require(live, f"cannot add corrections to {output}", ["trajectories", "step_labels"])
        trajectories = verdict.read_verified("trajectories").to_pylist()
        step_labels = verdict.read_verified("step_labels").to_pylist()
        run_config = storage.read_json(live.config_path) or {}
        cfg = _config(run_config, corrector_model, cues, samples_per_cue)
        staging = target.staging(publish.new_version_id())
        _generate(cfg, _states(trajectories, step_labels), staging.config_dir(CONFIG),
                  target.cache_dir("corrections"), runner_options)
        # The one shard just written (the gate's expected rows, and the summary's figures).
        rows = [r for path in staging.shards(CONFIG) for r in storage.read_parquet(path).to_pylist()]
        figures = summarize(rows, sum(r["num_generated_tokens"] for r in rows))
        summary = RunSummary.read(live) or RunSummary()
        summary.configs = list(dict.fromkeys([*summary.configs, CONFIG]))
        summary.written = {**summary.written, CONFIG: {"shards": len(staging.shards(CONFIG)), "rows": len(rows)}}
        summary.provenance = {**(summary.provenance or {}), "corrections": figures}
        if not rows:
            summary.empty_configs = {**summary.empty_configs, CONFIG: "no labelled negative had a first wrong step "
                                     "located by the search, a false arithmetic claim or a stated wrong answer"}
        carry = [c for c in live.present_configs() if c != CONFIG]
        publish.publish(target, publish.Publication(
            staging=staging, staged=publish.Staged(written={CONFIG: summary.written[CONFIG]}), summary=summary,
            run_config=cfg.to_dict(), carry=carry, report=storage.exists(live.report_path)),
            publish.GateOptions(runner_options=runner_options))
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
