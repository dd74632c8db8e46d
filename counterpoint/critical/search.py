"""Rollout-verified critical tokens: a binary search inside OmegaPRM's first wrong step, and the ban test.

Papers: "Critical Tokens Matter" (cDPO, arXiv 2411.19943) defines a critical token as one whose
decoding sends every continuation to a wrong answer, and tests it by decoding something else there;
OmegaPRM (Luo et al. 2024) locates the first wrong step ``e`` of a solution by binary search over step
prefixes (MC(steps[:e]) > 0, MC(steps[:e+1]) = 0). Its public code scores tokens but never checks one.

**Search** (:func:`critical_search`, a coroutine of :class:`counterpoint.labeling.scheduler.RoundScheduler`,
answered from the problem's evidence store): the token boundaries of step ``e`` run from ``lo`` (the
step's first token) to ``hi`` (the next step's first token). Both ends are probed first (``k``
rollouts each): ``tokens[:lo]`` must still succeed (a correct rollout) and ``tokens[:hi]`` must fail
in every rollout (resolved, MC = 0); then the interval is halved until ``hi = lo + 1``: the token at
``lo`` is critical (the prefix without it succeeds, with it fails). About ``(2 + log2(tokens in
step)) × k`` rollouts. Prefixes are the policy tokenizer's decoded token prefixes. An end that does not
hold (another tokenization of the step boundary, an unresolved probe) gives no position.

**Ban test** (:func:`ban_tests`, the paper's own experiment): ``ban_rollouts`` continuations from just
before a token with that token banned as the first generated token
(``GenerationRequest.ban_first_tokens``), for the rollout-found token, the top contrastive token and a
random token position of the same trajectory (seeded by problem and sample): three success rates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from counterpoint.generators.base import GenerationRequest, Generator, SamplingParams
from counterpoint.labeling.scheduler import ProblemContext, RolloutAsk, RoundScheduler, VerifyFn, as_verdict
from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_UNKNOWN

#: ``decode(token_ids) -> text``: the policy tokenizer's decoder (prefixes are decoded token prefixes).
Decode = Callable[[Sequence[int]], str]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Where the search ended: ``position`` (None: not found, ``why`` says) and the rollouts it spent."""

    position: Optional[int]
    rollouts: int
    probes: Tuple[Tuple[int, Optional[float]], ...] = ()  # (token boundary, MC) in probe order
    why: Optional[str] = None


def step_bounds(step_token_starts: Sequence[int], step: int, n_tokens: int) -> Tuple[int, int]:
    """Token boundaries ``[lo, hi)`` of ``step``."""
    lo = step_token_starts[step]
    hi = step_token_starts[step + 1] if step + 1 < len(step_token_starts) else n_tokens
    return lo, hi


def critical_search(token_ids: Sequence[int], step_token_starts: Sequence[int], first_wrong_step: int,
                    k: int, decode: Decode):
    """The binary search (see the module docstring) as a scheduler coroutine; returns a :class:`SearchResult`."""
    lo, hi = step_bounds(step_token_starts, first_wrong_step, len(token_ids))
    spent, probes = 0, []

    def ask(p: int) -> RolloutAsk:
        return RolloutAsk(decode(list(token_ids[:p])), k)

    if hi <= lo:
        return SearchResult(None, 0, (), "empty_step")
    ends = yield [ask(lo), ask(hi)]
    spent += sum(e.n_new for e in ends)
    probes += [(lo, ends[0].value), (hi, ends[1].value)]
    if not ends[0].positive:
        return SearchResult(None, spent, tuple(probes), "step_start_fails")
    if not ends[1].zero:
        return SearchResult(None, spent, tuple(probes), "step_end_succeeds")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        (est,) = yield [ask(mid)]
        spent += est.n_new
        probes.append((mid, est.value))
        if est.positive:
            lo = mid
        elif est.zero:
            hi = mid
        else:
            return SearchResult(None, spent, tuple(probes), "unresolved_probe")
    return SearchResult(lo, spent, tuple(probes))


@dataclasses.dataclass(frozen=True)
class BanAsk:
    """Ban the token at ``position`` of a trajectory as the first token after ``tokens[:position]``."""

    problem: Dict[str, Any]
    token_ids: Tuple[int, ...]
    position: int


def random_position(problem_id: str, sample_index: int, n_tokens: int, seed: int) -> int:
    """The control's token position: uniform over the trajectory, seeded by (run seed, problem, sample)."""
    blob = repr(("random_ban", seed, problem_id, sample_index)).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")).randrange(max(1, n_tokens))


def ban_tests(asks: Sequence[BanAsk], generator: Generator, verify: VerifyFn, *, n: int, params: SamplingParams,
              system_prompt: Optional[str], decode: Decode, seed: int = 0) -> List[Optional[float]]:
    """Success rate of ``n`` continuations per ask (correct / known verdicts; None when none is known).

    One engine call for all asks; a truncated continuation counts as incorrect (as in the labeller).
    """
    if not asks or n < 1:
        return [None] * len(asks)
    requests, prefixes = [], []
    for a in asks:
        prefix = decode(list(a.token_ids[:a.position]))
        rseed = int.from_bytes(hashlib.sha256(repr(("ban", seed, a.problem["problem_id"], prefix,
                                                    a.token_ids[a.position])).encode()).digest()[:4], "big")
        kw = dict(n=n, params=params, seed=rseed & 0x7FFFFFFF, ban_first_tokens=(int(a.token_ids[a.position]),))
        q = a.problem["question"]
        requests.append(GenerationRequest.continuation(system_prompt, q, prefix, **kw) if prefix
                        else GenerationRequest.chat(system_prompt, q, **kw))
        prefixes.append(prefix)
    outputs = generator.generate(requests)
    items = [(p + c.text, a.problem["gold_answer"], c.truncated, a.problem.get("answer_type") or "numeric")
             for a, p, comps in zip(asks, prefixes, outputs) for c in comps]
    verdicts = [as_verdict(v)[0] for v in verify(items)] if items else []
    truncated = [it[2] for it in items]
    rates: List[Optional[float]] = []
    for i in range(len(asks)):
        chunk = [("incorrect" if t else v) for v, t in zip(verdicts[i * n:(i + 1) * n], truncated[i * n:(i + 1) * n])]
        known = [v for v in chunk if v != VERDICT_UNKNOWN]
        rates.append(sum(v == VERDICT_CORRECT for v in known) / len(known) if known else None)
    return rates


def run_searches(jobs: Sequence[Tuple[Dict[str, Any], Sequence[int], Sequence[int], int]], generator: Generator,
                 verify: VerifyFn, *, k: int, params: SamplingParams, system_prompt: Optional[str],
                 decode: Decode, seed: int = 0, segmentation: str = "paragraph") -> List[SearchResult]:
    """Runs :func:`critical_search` for every ``(problem, token_ids, step_token_starts, first_wrong_step)``
    through one :class:`RoundScheduler` (one evidence store per problem: searches of one problem share
    rollouts of equal prefixes)."""
    contexts: Dict[str, ProblemContext] = {}
    tasks = []
    for problem, ids, starts, step in jobs:
        pid = problem["problem_id"]
        ctx = contexts.get(pid)
        if ctx is None:
            ctx = contexts[pid] = ProblemContext(
                problem_id=pid, question=problem["question"], gold_answer=problem["gold_answer"],
                answer_type=problem.get("answer_type") or "numeric", system_prompt=system_prompt,
                segmentation_mode=segmentation)
        tasks.append((ctx, critical_search(ids, starts, step, k, decode)))
    if not tasks:
        return []
    return RoundScheduler(generator, verify, params, seed=seed).run(tasks)
