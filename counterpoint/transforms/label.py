"""The labelling stages: OmegaPRM (or per-step MC) step labels, values and step pairs for a batch of problems.

* :class:`SampleAndLabelDoFn` (what a labelled run uses, issue 18): a thin Beam wrapper around
  :func:`counterpoint.labeling.stream.sample_and_label` — ONE request stream per bundle: every
  problem is sampled, verified, cleaned and labelled by one scheduler run, so a tree starts as soon
  as its own samples are verified and the engine stays full. Input: new states. Output: states with
  verified ``trajectories``, ``step_labels``, ``step_values``, step / first-pit ``preferences`` and
  row-level rejects (the same rows as sample -> verify -> clean -> label).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import apache_beam as beam
from apache_beam.utils import shared

from counterpoint import corpus, progress
from counterpoint.generators.base import SamplingParams
from counterpoint.transforms.stages import EngineSpec, ProblemBatchDoFn, acquire_verifier_suite

log = logging.getLogger(__name__)


def labelled_state(s, r, tokens: Dict[str, float], n: int):
    """``s`` with the rows of its labelling result ``r``; the batch's rollout tokens spread evenly."""
    numeric = {k: v for k, v in r.stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra = {f"label_{k}": v for k, v in numeric.items()}
    if "screening" in r.stats:
        extra[f"screened_{r.stats['screening']}"] = 1
    # Engine-level token counts belong to the batch; spread evenly for the summary.
    extra.update(rollout_generated_tokens=tokens["generated"] / n, rollout_prompt_tokens=tokens["prompt"] / n,
                 rollout_cached_prompt_tokens=tokens["cached"] / n)
    return s.evolve(
        step_labels=list(r.step_labels), step_values=list(r.step_values),
        preferences=list(s.preferences) + list(r.preferences),
        rejects=list(s.rejects) + list(r.rejects),
    ).add_stats(**extra)


class SampleAndLabelDoFn(ProblemBatchDoFn):
    """Sampling, verification, cleaning and labelling of a bundle through one engine stream (issue 18).

    Input: a batch of new states. Output: the states as ``Sample -> Verify -> CleanTrajectories ->
    Label`` would leave them (same rows; stats ``generated_tokens`` / ``prompt_tokens`` for the
    samples, ``label_*`` and ``rollout_*`` for the labelling). A final failure is charged to
    ``sample`` when the problem's samples never came back, else to ``label``.
    """

    stage = "label"

    def __init__(self, engine: EngineSpec, verifier, verifier_handle: shared.Shared, retry, *, labeling,
                 sampling: SamplingParams, samples_per_problem: int, system_prompt: Optional[str],
                 segmentation: str, run_seed: int, dedup=None, consensus=None):
        super().__init__(retry, engine)
        self.consensus = consensus  # a ConsensusConfig: judge in the stream (the judge is the run's model)
        self.verifier = verifier
        self._verifier_handle = verifier_handle
        self.labeling = labeling
        self.sampling = sampling
        self.samples_per_problem = samples_per_problem
        self.system_prompt = system_prompt
        self.segmentation = segmentation
        self.run_seed = run_seed
        self.dedup = dedup
        self._sampled: set = set()

    def setup(self):
        super().setup()
        self.suite = acquire_verifier_suite(self._verifier_handle, self.verifier)

    def failure_stage(self, state) -> str:
        return "label" if state.problem_id in self._sampled else "sample"

    def process_problems(self, states):
        from counterpoint.labeling import ProblemForLabeling
        from counterpoint.labeling.stream import sample_and_label

        problems = [s.problem for s in states]
        requests = [corpus.sample_request(p, system_prompt=self.system_prompt, n=self.samples_per_problem,
                                          params=self.sampling, run_seed=self.run_seed) for p in problems]
        trajectories: Dict[int, tuple] = {}
        tokens: Dict[str, float] = {"generated": 0, "prompt": 0, "cached": 0}

        def on_sampled(i, sampled):
            p = problems[i]
            verifier = self.suite.verifier(p["answer_type"])
            rows = corpus.trajectory_rows(p, sampled.completions, request=requests[i],
                                          model_id=self.generator.model_id, segmentation=self.segmentation)
            rows = corpus.apply_verdicts(rows, sampled.verdicts, verifier_name=verifier.name,
                                         verifier_version=verifier.version)
            rows, clean_stats = corpus.clean_trajectories(rows, self.dedup)
            comps = sampled.completions
            trajectories[i] = (rows, clean_stats, sum(c.num_tokens for c in comps),
                               sum(c.num_prompt_tokens for c in comps[:1]))
            self._sampled.add(p["problem_id"])
            if len(trajectories) == len(problems) and hasattr(self.generator, "flush"):
                self.generator.flush()  # all sampled: cached now, so a kill mid-search resumes without resampling
            progress.report("sample", problems=1, samples=len(comps), tokens=trajectories[i][2])
            progress.report("verify", problems=1, **_verdict_counts(rows))
            return ProblemForLabeling(problem=p, trajectories=rows, system_prompt=self.system_prompt,
                                      segmentation_mode=self.segmentation)

        def on_round(stats):
            tokens["generated"] += stats.get("generated_tokens", 0)
            tokens["prompt"] += stats.get("prompt_tokens", 0)
            tokens["cached"] += stats.get("cached_prompt_tokens", 0)
            progress.report("label", rollouts=stats.get("samples", 0), tokens=stats.get("generated_tokens", 0))

        targets: Dict[int, list] = {}

        def judge_requests_of(i, result):
            from counterpoint.labeling.consensus import judge_requests, solution_targets

            targets[i] = solution_targets(result.step_labels, result.step_values)
            return judge_requests(targets[i], {problems[i]["problem_id"]: problems[i]}, None, config=self.consensus)

        results = sample_and_label(problems, requests, self.generator, self.suite.judge, self.labeling,
                                   sampling=self.sampling, on_sampled=on_sampled, system_prompt=self.system_prompt,
                                   segmentation_mode=self.segmentation, on_round=on_round,
                                   on_problem_done=lambda r: self.report_problem(r.problem_id),
                                   judge_requests_of=judge_requests_of if self.consensus is not None else None)
        if hasattr(self.generator, "flush"):
            self.generator.flush()
        out = []
        for i, (s, (_, result, judged)) in enumerate(zip(states, results)):
            rows, clean_stats, generated, prompt = trajectories[i]
            sampled = s.evolve(trajectories=rows).add_stats(generated_tokens=generated, prompt_tokens=prompt,
                                                             **clean_stats)
            state = labelled_state(sampled, result, tokens, len(states))
            if self.consensus is not None:
                state = self._judged(state, targets.get(i, []), judged)
            out.append(state)
        return out

    def _judged(self, state, targets, judged):
        """Consensus on one problem from its judge answers (as the Judge stage would)."""
        from counterpoint.labeling.consensus import judgements_from
        from counterpoint.transforms.judge import judged_state

        replies = [a.completions[0].text if a.completions else None for a in judged]
        tokens = {str(t["id"]): sum(c.num_tokens for c in a.completions) for t, a in zip(targets, judged)}
        state = judged_state(state, targets, judgements_from(targets, replies), tokens, self.consensus)
        progress.report("judge", problems=1, rows=state.stats.get("judge_judged", 0))
        return state


def _verdict_counts(rows) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for t in rows:
        out[f"verdict_{t['verdict']}"] = out.get(f"verdict_{t['verdict']}", 0) + 1
    return out


class SampleAndLabel(beam.PTransform):
    """New states -> bundles -> sampled, verified, cleaned and labelled by one engine stream each
    (-> judged, with consensus on). A bundle is one scheduler run: the bigger it is, the less the
    engine idles on a bundle's last trees."""

    def __init__(self, stream: SampleAndLabelDoFn, batch_size: int, judge=None):
        super().__init__()
        self.stream = stream
        self.batch_size = batch_size
        self.judge = judge

    def expand(self, states):
        labelled = (
            states
            | "BatchForStream" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "SampleAndLabel" >> beam.ParDo(self.stream)
        )
        if self.judge is not None:
            labelled = labelled | "Judge" >> beam.ParDo(self.judge)
        return labelled
