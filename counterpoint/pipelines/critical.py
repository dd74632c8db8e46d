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

from apache_beam.utils import shared

from counterpoint import storage
from counterpoint.config import RunConfig, from_dict
from counterpoint.dataset import publish
from counterpoint.errors import UsageError
from counterpoint.pipelines.corrections import labelled_live, problem_states, publish_added, staged_rows, write_stage
from counterpoint.schemas import records
from counterpoint.transforms.critical import check, critical_stage
from counterpoint.transforms.stages import EngineSpec

log = logging.getLogger(__name__)
CONFIG = "critical_tokens"


def _has_incorrect(trajectories: List[Dict[str, Any]], _labels) -> bool:
    return any(t["verdict"] == records.VERDICT_INCORRECT for t in trajectories)


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
        live, trajectories, step_labels = labelled_live(target, "critical tokens")
        states = problem_states(trajectories, step_labels, _has_incorrect)
        if not states:
            raise UsageError(f"{output} has no incorrect trajectory to score: critical tokens are found in "
                             "verified-incorrect samples; run with more samples per problem or harder problems")
        cfg = _config(storage.read_json(live.config_path) or {}, contrast_models, search, k, ban_rollouts, top_k,
                      tokenizer)
        check(cfg)  # before anything is staged
        staging = target.staging(publish.new_version_id())
        stage = critical_stage(cfg, EngineSpec(cfg.generator, shared.Shared(), target.cache_dir(CONFIG)), shared.Shared())
        write_stage(stage, states, CONFIG, staging.config_dir(CONFIG), max(1, cfg.labeling_batch_size or 16),
                    runner_options)
        rows = staged_rows(staging, CONFIG)
        figures = summarize(rows)
        publish_added(target, live, staging, CONFIG, figures, len(rows), cfg, runner_options,
                      empty_reason="no incorrect trajectory could be scored (see rejects of stage critical)")
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
