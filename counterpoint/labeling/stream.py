"""One request stream per worker for a labelled run (issue 18): sampling, verifying, screening and the
tree search of every problem of a bundle, all driven by ONE :class:`RoundScheduler` run.

Input: problems (``records.PROBLEMS`` rows), each with its own sampling request (seeded from the
run seed and the problem id by the caller, so its samples never depend on what else is in
flight). Output, per problem: its trajectory rows (built by the caller's ``on_sampled``) and its
:class:`~counterpoint.labeling.labeler.LabelingResult`.

Each problem is one coroutine: it yields ``[SampleAsk(request)]``; as soon as its own samples are
back and verified (in the scheduler's one verifier call per poll) the caller turns them into
trajectory rows (``on_sampled``: verdict fields, dedup, process-error flags), and the same
coroutine goes on with the problem's labelling (:func:`labeler.problem_task`: screen, search,
values, rows; then, with consensus judging on the run's own model, its judge requests) while other
problems are still sampling. The scheduler's sliding window admits a
new problem as soon as the in-flight samples fall under the engine's capacity, so the engine
stays full from the first request to the last: no stage barrier, no per-batch drain inside the
bundle. On an engine with priorities (vLLM with ``scheduling_policy="priority"``) the whole
bundle's sampling is queued at once, ahead of the searches' rollouts: every problem is sampled as
early as the engine allows, so every tree starts early and the trees left at the end are many
enough to keep the engine full. Rows are the ones
:func:`~counterpoint.labeling.labeler.label_problems` makes from the
same trajectories (same seeds, same evidence), whatever the capacity or the bundle.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from counterpoint.generators.base import GenerationRequest, Generator, SamplingParams
from counterpoint.labeling.labeler import (
    ENGINE_STATS_KEYS,
    LabelerConfig,
    LabelingResult,
    ProblemForLabeling,
    make_context,
    problem_task,
)
from counterpoint.labeling.scheduler import RoundScheduler, SampleAsk, Sampled, VerifyFn

#: ``on_sampled(index, sampled) -> ProblemForLabeling``: the problem's verified trajectory rows.
OnSampled = Callable[[int, Sampled], ProblemForLabeling]


#: ``judge_requests_of(index, result) -> requests``: the judge requests of a labelled problem (none: [] ).
JudgeRequests = Callable[[int, LabelingResult], List[GenerationRequest]]


def _stream_task(index: int, request: GenerationRequest, ctx, on_sampled: OnSampled, config: LabelerConfig,
                 sampling: Optional[SamplingParams], judge_requests_of: Optional[JudgeRequests]):
    """Coroutine: sample (one request), hand the samples to ``on_sampled``, label the problem, then
    send its judge requests (unverified); returns ``(item, result, judge answers)``."""
    (sampled,) = yield [SampleAsk(request)]
    item = on_sampled(index, sampled)
    result = yield from problem_task(item, ctx, config, sampling)
    judged: List[Sampled] = []
    requests = judge_requests_of(index, result) if judge_requests_of is not None else []
    if requests:
        judged = yield [SampleAsk(r, verify=False) for r in requests]
    return item, result, judged


def sample_and_label(
    problems: Sequence[Dict[str, Any]],
    requests: Sequence[GenerationRequest],
    generator: Generator,
    verify: VerifyFn,
    config: LabelerConfig,
    *,
    sampling: Optional[SamplingParams],
    on_sampled: OnSampled,
    system_prompt: Optional[str] = None,
    segmentation_mode: str = "paragraph",
    max_inflight_samples: Optional[int] = None,
    on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
    on_problem_done: Optional[Callable[[LabelingResult], None]] = None,
    judge_requests_of: Optional[JudgeRequests] = None,
) -> List[Tuple[ProblemForLabeling, LabelingResult, List[Sampled]]]:
    """Samples and labels every problem through one scheduler; returns ``(item, result, judge answers)``
    per problem (judge answers: one :class:`Sampled` per request of ``judge_requests_of``, else none).

    ``requests[i]`` samples ``problems[i]``; ``verify`` is the scheduler's verifier callback (it
    also judges the samples). ``max_inflight_samples`` overrides the stream's capacity (default:
    ``omegaprm.max_inflight_samples``, else the engine's). Generator errors propagate (the caller
    retries the bundle; seeds make the retry produce the same rows).
    """
    o = config.omegaprm
    params = o.effective_rollout_params(sampling)
    contexts = [make_context(ProblemForLabeling(p, [], system_prompt, segmentation_mode), o.min_known,
                             config.rollout_format_failures) for p in problems]

    def sync(i: int, result) -> None:
        for key in ENGINE_STATS_KEYS:
            result[1].stats[key] = contexts[i].stats[key]

    def done(i: int, result) -> None:
        sync(i, result)
        if on_problem_done is not None:
            on_problem_done(result[1])

    scheduler = RoundScheduler(generator, verify, params, seed=config.seed, max_active=o.tree_cap,
                               max_inflight_samples=max_inflight_samples or o.max_inflight_samples,
                               on_round=on_round, on_done=done)
    tasks = [(ctx, _stream_task(i, req, ctx, on_sampled, config, sampling, judge_requests_of))
             for i, (req, ctx) in enumerate(zip(requests, contexts))]
    results = scheduler.run(tasks)
    for i, res in enumerate(results):
        sync(i, res)
        res[1].stats["rounds"] = len(scheduler.rounds)
    return results
