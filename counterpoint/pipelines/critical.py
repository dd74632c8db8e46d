"""``counterpoint critical-tokens OUT --contrast-models DIR``: adds the ``critical_tokens`` config to a labelled output.

Input: the live version of ``OUT`` (its ``trajectories`` and ``step_labels``, each shard checked against the
verdict's sha256), its ``run_config.json`` (engine, verifier, sampling, system prompt) and a contrast-models
directory. Output: a new version of ``OUT`` with ``critical_tokens`` and every other config carried over, made
by the one publish procedure (:mod:`counterpoint.dataset.publish`, as ``counterpoint corrections`` does):
staged, gated, described, switched in by the manifest. The rows come from the same Beam stage a run with
``critical_tokens.enabled`` applies (:class:`counterpoint.transforms.critical.CriticalTokensDoFn`).

Everything that can be checked is checked before anything is staged: a labelled output with incorrect
trajectories, contrast models that load and share the policy's tokenizer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from counterpoint import schemas, storage
from counterpoint.config import RunConfig, from_dict
from counterpoint.dataset import publish
from counterpoint.dataset.summary import RunSummary
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import UsageError
from counterpoint.schemas import records
from counterpoint.state import ProblemState
from counterpoint.transforms.critical import check, critical_stage
from counterpoint.transforms.stages import EngineSpec

log = logging.getLogger(__name__)
CONFIG = "critical_tokens"


def _states(trajectories: List[Dict[str, Any]], step_labels: List[Dict[str, Any]]) -> List[ProblemState]:
    """One state per problem with an incorrect trajectory (its problem row rebuilt from its trajectories)."""
    labels: Dict[str, List[Dict[str, Any]]] = {}
    for r in step_labels:
        labels.setdefault(r["problem_id"], []).append(r)
    trajs: Dict[str, List[Dict[str, Any]]] = {}
    for t in trajectories:
        trajs.setdefault(t["problem_id"], []).append(t)
    states = []
    for pid in sorted(trajs):
        ts = sorted(trajs[pid], key=lambda t: t["sample_index"])
        if not any(t["verdict"] == records.VERDICT_INCORRECT for t in ts):
            continue
        t0 = ts[0]
        answer_type = t0["verifier"] if t0["verifier"] in records.ANSWER_TYPES else "numeric"
        problem = {"problem_id": pid, "source": t0["source"], "question": t0["question"],
                   "gold_answer": t0["gold_answer"], "answer_type": answer_type, "difficulty": None, "metadata": None}
        states.append(ProblemState(problem=problem, trajectories=ts, step_labels=labels.get(pid, [])))
    return states


def _generate(cfg: RunConfig, states: List[ProblemState], folder: str, cache_dir: Optional[str],
              runner_options: Optional[List[str]]) -> None:
    """The Beam job: batches of states -> the critical-token stage -> one Parquet shard under ``folder``."""
    from apache_beam.utils import shared

    stage = critical_stage(cfg, EngineSpec(cfg.generator, shared.Shared(), cache_dir), shared.Shared())
    size = max(1, cfg.labeling_batch_size or 16)
    batches = [states[i:i + size] for i in range(0, len(states), size)] or [[]]
    options = PipelineOptions(list(runner_options or []) or ["--runner=FnApiRunner"])
    with beam.Pipeline(options=options) as p:
        _ = (p
             | "Problems" >> beam.Create(batches, reshuffle=False)
             | "CriticalTokens" >> stage
             | "Rows" >> beam.FlatMap(lambda batch: [schemas.table(CONFIG).conform(r) for s in batch
                                                     for r in s.critical_tokens])
             | "Write" >> beam.io.WriteToParquet(folder.rstrip("/") + "/train",
                                                 schema=schemas.table(CONFIG).arrow_schema(), codec="zstd",
                                                 num_shards=1, shard_name_template="-SSSSS-of-NNNNN",
                                                 file_name_suffix=".parquet"))


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The provenance figures: rows, rollout-found tokens, mean ban success rates, agreement with OmegaPRM."""
    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    found = [r for r in rows if r["rollout_critical_position"] is not None]
    located = [r for r in rows if r["contrast_in_first_wrong_step"] is not None]
    return {"rows": len(rows), "searched": sum(r["search_rollouts"] > 0 for r in rows), "found": len(found),
            "search_rollouts": sum(r["search_rollouts"] for r in rows),
            "banned_success_rate": mean("banned_success_rate"),
            "contrast_ban_success_rate": mean("contrast_ban_success_rate"),
            "random_ban_success_rate": mean("random_ban_success_rate"),
            "contrast_in_first_wrong_step": (round(sum(r["contrast_in_first_wrong_step"] for r in located)
                                                   / len(located), 4) if located else None)}


def add_critical_tokens(output: str, *, contrast_models: str, search: Optional[bool] = None, k: Optional[int] = None,
                        ban_rollouts: Optional[int] = None, top_k: Optional[int] = None,
                        tokenizer: Optional[str] = None, runner_options: Optional[List[str]] = None) -> Dict[str, Any]:
    """Publishes a new version of ``output`` with the ``critical_tokens`` config; returns its summary figures.

    Raises ``UsageError`` (no labelled output, no incorrect trajectory, contrast models that do not load or
    tokenize otherwise than the policy), ``NotValidated`` / ``VerdictMismatch``, ``ValidationFailed``,
    ``OutputLocked``.
    """
    t0 = time.monotonic()
    target = storage.OutputLayout(output)
    with publish.claim(target, "critical-tokens", create=False):
        live = target.live_version()
        if live is None:
            raise UsageError(f"{output} has no published dataset yet: finish a `counterpoint run` into it first")
        if not live.shards("step_labels"):
            raise UsageError(f"{output} has no step_labels: critical tokens need a labelled run (--labeler omegaprm)")
        verdict = Verdict.require(live, f"cannot add critical tokens to {output}", ["trajectories", "step_labels"])
        trajectories = verdict.read_verified("trajectories").to_pylist()
        states = _states(trajectories, verdict.read_verified("step_labels").to_pylist())
        if not states:
            raise UsageError(f"{output} has no incorrect trajectory to score: critical tokens are found in "
                             "verified-incorrect samples; run with more samples per problem or harder problems")
        cfg = _config(storage.read_json(live.config_path) or {}, contrast_models, search, k, ban_rollouts, top_k,
                      tokenizer)
        check(cfg)  # before anything is staged
        staging = target.staging(publish.new_version_id())
        _generate(cfg, states, staging.config_dir(CONFIG), target.cache_dir("critical_tokens"), runner_options)
        rows = [r for path in staging.shards(CONFIG) for r in storage.read_parquet(path).to_pylist()]
        figures = summarize(rows)
        summary = RunSummary.read(live) or RunSummary()
        summary.configs = list(dict.fromkeys([*summary.configs, CONFIG]))
        summary.written = {**summary.written, CONFIG: {"shards": len(staging.shards(CONFIG)), "rows": len(rows)}}
        summary.provenance = {**(summary.provenance or {}), CONFIG: figures}
        if not rows:
            summary.empty_configs = {**summary.empty_configs, CONFIG: "no incorrect trajectory could be scored "
                                     "(see rejects of stage critical)"}
        carry = [c for c in live.present_configs() if c != CONFIG]
        publish.publish(target, publish.Publication(
            staging=staging, staged=publish.Staged(written={CONFIG: summary.written[CONFIG]}), summary=summary,
            run_config=cfg.to_dict(), carry=carry, report=storage.exists(live.report_path)),
            publish.GateOptions(runner_options=runner_options))
    figures["elapsed_s"] = round(time.monotonic() - t0, 3)
    log.info("critical tokens: %s", figures)
    return figures


def _config(run_config: Dict[str, Any], contrast_models: str, search: Optional[bool], k: Optional[int],
            ban_rollouts: Optional[int], top_k: Optional[int], tokenizer: Optional[str]) -> RunConfig:
    cfg = from_dict(run_config)
    given = {"search": search, "k": k, "ban_rollouts": ban_rollouts, "top_k": top_k, "tokenizer": tokenizer}
    critical = dataclasses.replace(cfg.critical_tokens, enabled=True, contrast_models=contrast_models,
                                   **{key: v for key, v in given.items() if v is not None})
    return dataclasses.replace(cfg, critical_tokens=critical)


def add_parser(sub) -> None:
    """``counterpoint critical-tokens``'s arguments (on the command line's subparsers)."""
    c = sub.add_parser("critical-tokens", help="add cDPO's critical tokens (contrastive scores, rollout-verified "
                       "critical tokens, ban tests) to a labelled output")
    c.add_argument("dir")
    c.add_argument("--contrast-models", required=True, metavar="CDIR",
                   help="a `counterpoint contrast-models` directory (positive/, negative/, contrast.json)")
    c.add_argument("--no-search", action="store_true", help="contrastive scores only: no rollout search")
    c.add_argument("--k", type=int, default=None, metavar="N", help="rollouts per search probe")
    c.add_argument("--ban-rollouts", type=int, default=None, metavar="N", help="continuations per ban test (0: none)")
    c.add_argument("--top-k", type=int, default=None, metavar="N", help="top contrastive positions kept")
    c.add_argument("--tokenizer", default=None, help="the policy's tokenizer (default: the run's model)")


def command(args, extra) -> int:
    """Runs :func:`add_critical_tokens` for parsed arguments and prints its figures on one line."""
    f = add_critical_tokens(args.dir, contrast_models=args.contrast_models, search=False if args.no_search else None,
                            k=args.k, ban_rollouts=args.ban_rollouts, top_k=args.top_k, tokenizer=args.tokenizer,
                            runner_options=extra or None)

    def rate(key):
        return "-" if f[key] is None else f"{f[key]:.3f}"

    print(f"critical tokens: {f['rows']} incorrect trajectories scored, {f['found']}/{f['searched']} critical tokens "
          f"found by rollouts ({f['search_rollouts']} rollouts); success after banning it {rate('banned_success_rate')}"
          f", the top contrastive token {rate('contrast_ban_success_rate')}, a random token "
          f"{rate('random_ban_success_rate')}; published into {args.dir}")
    return 0
