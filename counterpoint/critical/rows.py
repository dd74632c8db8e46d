"""``critical_tokens`` rows: contrastive scores, the rollout search and the ban tests of one batch of problems.

Input: per problem its row (question, gold answer), its ``trajectories`` and ``step_labels`` rows; a loaded
:class:`~counterpoint.critical.scorer.ContrastScorer`; the policy's engine and a verifier callback.
Output: per problem one ``critical_tokens`` row per incorrect trajectory (schema
``counterpoint.schemas.critical``), and a ``rejects`` row (stage ``critical``) for each incorrect
trajectory that got none (``critical_duplicate``: a duplicate of a kept one; ``critical_empty_completion``;
``critical_too_long``: prompt + completion over ``max_length`` tokens, whose weights would not line up).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from counterpoint.critical import contrast
from counterpoint.critical.config import CriticalTokensConfig
from counterpoint.critical.search import BanAsk, SearchResult, ban_tests, random_position, run_searches, step_bounds
from counterpoint.generators.base import Generator, SamplingParams
from counterpoint.labeling.scheduler import VerifyFn
from counterpoint.schemas.records import VERDICT_INCORRECT, make_reject, trajectory_id


@dataclasses.dataclass
class CriticalInput:
    """One problem: its row, its trajectories and its step labels."""

    problem: Dict[str, Any]
    trajectories: Sequence[Dict[str, Any]]
    step_labels: Sequence[Dict[str, Any]] = ()


@dataclasses.dataclass
class CriticalOutput:
    rows: List[Dict[str, Any]]
    rejects: List[Dict[str, Any]]
    stats: Dict[str, float]


def step_token_starts(offsets: Sequence[Tuple[int, int]], steps: Sequence[str]) -> List[int]:
    """Per step, the first token that starts at or after the step's first character (a token that
    straddles a boundary stays with the earlier step, so ``tokens[:start]`` never reaches into the step)."""
    starts, char, t = [], 0, 0
    for step in steps:
        while t < len(offsets) and offsets[t][0] < char:
            t += 1
        starts.append(t)
        char += len(step)
    return starts


def step_of(starts: Sequence[int], position: int) -> int:
    return max(i for i, s in enumerate(starts) if s <= position) if starts and starts[0] <= position else 0


def _selected(item: CriticalInput, stats: Dict[str, float]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    keep, rejects = [], []
    for t in sorted(item.trajectories, key=lambda t: t["sample_index"]):
        if t["verdict"] != VERDICT_INCORRECT:
            continue
        why = ("critical_duplicate" if t.get("duplicate_of") else
               "critical_empty_completion" if not t["completion"].strip() else None)
        if why:
            rejects.append(make_reject(stage="critical", reason=why, problem_id=t["problem_id"], scope="row",
                                       detail=f"sample {t['sample_index']}", key=t["sample_index"]))
            stats[why] = stats.get(why, 0) + 1
        else:
            keep.append(t)
    return keep, rejects


def critical_rows(items: Sequence[CriticalInput], scorer, generator: Optional[Generator], verify: Optional[VerifyFn],
                  cfg: CriticalTokensConfig, *, sampling: SamplingParams, system_prompt: Optional[str],
                  model_id: str, seed: int = 0, segmentation: str = "paragraph") -> List[CriticalOutput]:
    """Scores, searches and ban-tests every incorrect trajectory of ``items`` (aligned outputs).

    ``generator``/``verify`` may be None when neither the search nor the ban test runs.
    """
    outs, work = [], []
    for item in items:
        stats: Dict[str, float] = {}
        keep, rejects = _selected(item, stats)
        outs.append(CriticalOutput([], rejects, stats))
        first = {r["sample_index"]: r.get("first_error_index") for r in item.step_labels}
        work += [(len(outs) - 1, item.problem, t, first.get(t["sample_index"])) for t in keep]
    scored = scorer.score([(t["prompt"], t["completion"]) for _, _, t, _ in work])
    jobs = []
    for (i, problem, t, fws), sc in zip(work, scored):
        if sc.truncated:
            outs[i].rejects.append(make_reject(stage="critical", reason="critical_too_long", problem_id=t["problem_id"],
                                               scope="row", detail=f"sample {t['sample_index']}: over "
                                               f"{cfg.max_length} tokens", key=t["sample_index"]))
            outs[i].stats["critical_too_long"] = outs[i].stats.get("critical_too_long", 0) + 1
            continue
        starts = step_token_starts(sc.offsets, t["steps"])
        if fws is not None and not 0 <= fws < len(starts):
            fws = None
        jobs.append((i, problem, t, fws, sc, starts))
    searches = _search(jobs, generator, verify, cfg, sampling, system_prompt, scorer, seed, segmentation)
    rates = _bans(jobs, searches, generator, verify, cfg, sampling, system_prompt, scorer, seed)
    for job, found, rate in zip(jobs, searches, rates):
        i = job[0]
        row = _row(job, found, rate, cfg, scorer.contrast_models, model_id)
        outs[i].rows.append(row)
        st = outs[i].stats
        st["critical_rows"] = st.get("critical_rows", 0) + 1
        st["critical_search_rollouts"] = st.get("critical_search_rollouts", 0) + row["search_rollouts"]
        st["critical_found"] = st.get("critical_found", 0) + (row["rollout_critical_position"] is not None)
    return outs


def _search(jobs, generator, verify, cfg, sampling, system_prompt, scorer, seed, segmentation
            ) -> List[Optional[SearchResult]]:
    todo = [n for n, j in enumerate(jobs) if cfg.search and j[3] is not None]
    found: List[Optional[SearchResult]] = [None] * len(jobs)
    if not todo:
        return found
    results = run_searches([(jobs[n][1], jobs[n][4].token_ids, jobs[n][5], jobs[n][3]) for n in todo], generator,
                           verify, k=cfg.k, params=sampling, system_prompt=system_prompt,
                           decode=scorer.tokenizer.decode, seed=seed, segmentation=segmentation)
    for n, r in zip(todo, results):
        found[n] = r
    return found


def _bans(jobs, searches, generator, verify, cfg, sampling, system_prompt, scorer, seed) -> List[Dict[str, Any]]:
    """Per job: the three ban tests' success rates and the random position (one engine call for all)."""
    asks, where = [], []
    out = []
    for n, ((_, problem, t, _, sc, _), found) in enumerate(zip(jobs, searches)):
        ids = tuple(sc.token_ids)
        rand = random_position(problem["problem_id"], t["sample_index"], len(ids), seed) if ids else None
        out.append({"random_ban_position": rand})
        if not cfg.ban_rollouts or not ids:
            continue
        positions = {"banned_success_rate": found.position if found else None,
                     "contrast_ban_success_rate": contrast.top_positions(sc.scores, 1)[0],
                     "random_ban_success_rate": rand}
        for name, pos in positions.items():
            if pos is not None:
                asks.append(BanAsk(problem, ids, pos))
                where.append((n, name))
    rates = ban_tests(asks, generator, verify, n=cfg.ban_rollouts, params=sampling, system_prompt=system_prompt,
                      decode=scorer.tokenizer.decode, seed=seed) if asks else []
    for (n, name), r in zip(where, rates):
        out[n][name] = r
    return out


def _row(job, found: Optional[SearchResult], rate: Dict[str, Any], cfg: CriticalTokensConfig, contrast_models: str,
         model_id: str) -> Dict[str, Any]:
    _, problem, t, fws, sc, starts = job
    top = contrast.top_positions(sc.scores, cfg.top_k)
    in_step = None
    if fws is not None and top:
        lo, hi = step_bounds(starts, fws, len(sc.token_ids))
        in_step = lo <= top[0] < hi
    pos = found.position if found else None
    return {
        "id": trajectory_id(t["problem_id"], t["sample_index"]) + "/critical",
        "problem_id": t["problem_id"], "sample_index": t["sample_index"], "prompt": list(t["prompt"]),
        "completion": t["completion"], "token_ids": list(sc.token_ids),
        "tokens": list(sc.tokens),
        "logp_positive": sc.logp_positive, "logp_negative": sc.logp_negative, "contrastive_score": sc.scores,
        "token_weights": contrast.token_weights(sc.scores), "score_form": sc.score_form,
        "top_critical_positions": top, "first_wrong_step": fws, "step_token_starts": starts,
        "rollout_critical_position": pos, "rollout_critical_step": None if pos is None else step_of(starts, pos),
        "contrast_in_first_wrong_step": in_step, "search_rollouts": found.rollouts if found else 0,
        "banned_success_rate": rate.get("banned_success_rate"),
        "contrast_ban_success_rate": rate.get("contrast_ban_success_rate"),
        "random_ban_position": rate.get("random_ban_position"),
        "random_ban_success_rate": rate.get("random_ban_success_rate"),
        "ban_rollouts": cfg.ban_rollouts, "contrast_models": contrast_models, "model_id": model_id,
    }

