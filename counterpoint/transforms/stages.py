"""Beam stages over batches of problem states.

Following Beam's ``RunInference`` split, engines (generators, verifier pools)
are separate from the transforms that batch, share and count: a stage loads
its engine in ``DoFn.setup`` through ``shared.Shared`` (one engine per worker
process, whatever the number of threads), and :class:`ProblemBatchDoFn` does
the rest — retries with backoff, engine restarts, timeouts, isolating a poison
request by splitting the batch, turning a final failure into a problem-level
reject with a snake_case reason (also a Beam counter), and per-stage timing.
Subclasses implement one hook, :meth:`ProblemBatchDoFn.process_problems`.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import time
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from counterpoint import corpus
from counterpoint.cache import CachedGenerator, ProblemCheckpoints, RequestCache
from counterpoint.generators import build_generator
from counterpoint.generators.base import EngineDeadError, GenerationError, Generator

log = logging.getLogger(__name__)
NAMESPACE = "counterpoint"


class _Holder:
    """Weak-referenceable box for objects kept in ``shared.Shared``."""

    def __init__(self, value):
        self.value = value


def _acquire_verifier_suite(handle: shared.Shared, v):
    """One verifier suite (so one math-verify process pool) per worker process, shared by stages."""
    from counterpoint.verifiers.suite import VerifierSuite

    return handle.acquire(
        lambda: VerifierSuite(v.name, timeout_s=v.timeout_s, pool_size=v.pool_size, fault_injector=v.fault_injector),
        tag=f"verifier:{v.name}:{v.timeout_s}:{v.pool_size}:{v.fault_injector}")


class ProblemBatchDoFn(beam.DoFn):
    """Base stage: input and output are batches (lists) of problem states.

    ``stage`` names the stage in rejects and counters. Failed states pass through
    untouched, so a problem dropped early still reaches the rejects sink.
    """

    stage = "base"
    uses_generator = False

    def __init__(self, cfg, shared_engine: Optional[shared.Shared] = None, output_dir: Optional[str] = None):
        self.cfg = cfg
        self._shared_engine = shared_engine
        self.output_dir = output_dir
        self.generator: Optional[Generator] = None

    # -- engine -----------------------------------------------------------------
    def _engine_tag(self) -> str:
        g = self.cfg.generator
        return f"generator:{g.kind}:{g.model}:{g.seed}:{g.dtype}"

    def _load_generator(self) -> Generator:
        def build():
            gen = build_generator(self.cfg.generator)
            gen.load()
            return _Holder(gen)

        inner = self._shared_engine.acquire(build, tag=self._engine_tag()).value
        if self.output_dir:
            return CachedGenerator(inner, RequestCache(self.output_dir, inner.model_fingerprint))
        return inner

    def setup(self):
        if self.uses_generator:
            self.generator = self._load_generator()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cp-{self.stage}")

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _restart_engine(self) -> None:
        inner = self.generator.inner if isinstance(self.generator, CachedGenerator) else self.generator
        log.warning("%s: restarting the engine", self.stage)
        inner.close()
        inner.load()

    # -- the hook -----------------------------------------------------------------
    def process_problems(self, states: List[Dict[str, Any]]) -> None:
        """Updates ``states`` in place. Raise ``GenerationError`` to retry / reject."""
        raise NotImplementedError

    # -- batching, retries, rejects ---------------------------------------------------
    def _call_with_timeout(self, states):
        timeout = self.cfg.retry.call_timeout_s
        if not timeout:
            return self.process_problems(states)
        future = self._pool.submit(self.process_problems, states)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            # The call may still be running in its thread: a fresh pool and engine take over.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            raise EngineDeadError(f"{self.stage} call timed out after {timeout}s") from None

    def _attempt(self, states) -> None:
        # Each attempt works on copies: a failed (or timed-out, still running) attempt can never
        # leave half its updates in the states that the retry or the reject path goes on with.
        work = copy.deepcopy(states)
        self._call_with_timeout(work)
        for s, w in zip(states, work):
            s.clear()
            s.update(w)

    def _run_with_retries(self, states) -> Optional[GenerationError]:
        attempts = max(1, self.cfg.retry.max_attempts)
        last: Optional[GenerationError] = None
        for attempt in range(attempts):
            try:
                self._attempt(states)
                return None
            except GenerationError as e:
                last = e
                Metrics.counter(NAMESPACE, f"{self.stage}_retries").inc()
                log.warning("%s attempt %d/%d failed: %s", self.stage, attempt + 1, attempts, e)
                if isinstance(e, EngineDeadError):
                    self._restart_engine()
                if not e.retriable:
                    break
                if attempt + 1 < attempts:
                    time.sleep(self.cfg.retry.backoff_s * (2 ** attempt))
        return last

    def _process_isolating(self, states) -> None:
        error = self._run_with_retries(states)
        if error is None:
            return
        if len(states) > 1:
            # One bad request must not sink its neighbours: retry the batch one by one.
            Metrics.counter(NAMESPACE, f"{self.stage}_batch_splits").inc()
            for s in states:
                self._process_isolating([s])
            return
        corpus.fail_state(states[0], stage=self.stage, reason=error.reason, detail=str(error))
        Metrics.counter(NAMESPACE, f"reject_{error.reason}").inc()

    def process(self, batch):
        live = [s for s in batch if not s["failed"]]
        if live:
            cache = self.generator.cache if isinstance(self.generator, CachedGenerator) else None
            before = (cache.hits, cache.tokens_saved) if cache else (0, 0)
            start = time.perf_counter()
            self._process_isolating(live)
            elapsed = time.perf_counter() - start
            after = (cache.hits, cache.tokens_saved) if cache else (0, 0)
            for s in live:
                corpus.add_stats(s, **{f"seconds_{self.stage}": elapsed / len(live),
                                       "cache_hits": (after[0] - before[0]) / len(live),
                                       "cache_tokens_saved": (after[1] - before[1]) / len(live)})
            Metrics.counter(NAMESPACE, f"{self.stage}_problems").inc(len(live))
        yield batch


class SampleDoFn(ProblemBatchDoFn):
    """Samples ``samples_per_problem`` trajectories per problem, one engine call per batch.

    Input: states with ``problem``. Output: ``trajectories`` rows (steps segmented,
    not yet verified) with model, sampling parameters, seed and token counts.
    """

    stage = "sample"
    uses_generator = True

    def process_problems(self, states):
        cfg = self.cfg
        requests = [
            corpus.sample_request(s["problem"], system_prompt=cfg.system_prompt, n=cfg.samples_per_problem,
                                  params=cfg.sampling, run_seed=cfg.generator.seed)
            for s in states
        ]
        start = time.perf_counter()
        results = self.generator.generate(requests)
        elapsed = time.perf_counter() - start
        tokens = sum(c.num_tokens for comps in results for c in comps)
        for s, req, comps in zip(states, requests, results):
            s["trajectories"] = corpus.trajectory_rows(
                s["problem"], comps, request=req, model_id=self.generator.model_id, segmentation=cfg.segmentation)
            corpus.add_stats(s, generated_tokens=sum(c.num_tokens for c in comps),
                             prompt_tokens=sum(c.num_prompt_tokens for c in comps[:1]))
        Metrics.counter(NAMESPACE, "generated_tokens").inc(tokens)
        log.info("sampled %d problems, %d tokens in %.1fs (%.0f tok/s)", len(states), tokens, elapsed,
                 tokens / max(elapsed, 1e-9))


class VerifyDoFn(ProblemBatchDoFn):
    """Judges every trajectory: ``final_answer``, ``verdict``, ``verdict_reason``, verifier name/version.

    Verification runs in the verifier's own process pool (math-verify's
    ``signal.alarm`` cannot run in Beam's worker threads); one pool per worker.
    """

    stage = "verify"

    def __init__(self, cfg, shared_verifier: shared.Shared):
        super().__init__(cfg)
        self._shared_verifier = shared_verifier

    def setup(self):
        super().setup()
        self.suite = _acquire_verifier_suite(self._shared_verifier, self.cfg.verifier)

    def process_problems(self, states):
        items, owners = [], []
        for s in states:
            p = s["problem"]
            for row in s["trajectories"]:
                items.append((row["completion"], p["gold_answer"], row["finish_reason"] == "length", p["answer_type"]))
                owners.append(row)
        for row, (verdict, verifier) in zip(owners, self.suite.verify(items)):
            corpus.apply_verdicts([row], [verdict], verifier_name=verifier.name, verifier_version=verifier.version)
            Metrics.counter(NAMESPACE, f"verdict_{verdict.verdict}").inc()


class LabelDoFn(ProblemBatchDoFn):
    """Step labels, per-step values and step/first-pit pairs (OmegaPRM or per-step MC).

    All trees of the batch advance together; each round is one engine call
    (see ``counterpoint.labeling``). Output: ``step_labels``, ``step_values``,
    ``preferences`` (pair types "step" and "first_pit") and row-level rejects.
    """

    stage = "label"
    uses_generator = True

    def __init__(self, cfg, shared_engine, shared_verifier, output_dir=None):
        super().__init__(cfg, shared_engine, output_dir)
        self._shared_verifier = shared_verifier

    def setup(self):
        super().setup()
        self.suite = _acquire_verifier_suite(self._shared_verifier, self.cfg.verifier)

    def process_problems(self, states):
        import dataclasses

        from counterpoint.labeling import ProblemForLabeling, label_problems

        cfg = self.cfg
        labeling = dataclasses.replace(cfg.labeling, labeler=cfg.labeler, seed=cfg.generator.seed)
        items = [ProblemForLabeling(problem=s["problem"], trajectories=s["trajectories"],
                                    system_prompt=cfg.system_prompt, segmentation_mode=cfg.segmentation)
                 for s in states]
        tokens = {"generated": 0, "prompt": 0, "cached": 0}

        def on_round(stats):
            tokens["generated"] += stats.get("generated_tokens", 0)
            tokens["prompt"] += stats.get("prompt_tokens", 0)
            tokens["cached"] += stats.get("cached_prompt_tokens", 0)
            log.info("label round %d: %d trees active, %d requests, %d rollouts, %d tokens (%d cached prompt)",
                     stats.get("round", 0), stats.get("active", 0), stats.get("requests", 0),
                     stats.get("samples", 0), stats.get("generated_tokens", 0), stats.get("cached_prompt_tokens", 0))

        results = label_problems(items, self.generator, self.suite.verdicts, labeling, on_round=on_round)
        by_id = {r.problem_id: r for r in results}
        for s in states:
            r = by_id[s["problem"]["problem_id"]]
            s["step_labels"] = list(r.step_labels)
            s["step_values"] = list(r.step_values)
            s["preferences"] = list(s["preferences"]) + list(r.preferences)
            s["rejects"] = list(s["rejects"]) + list(r.rejects)
            numeric = {k: v for k, v in r.stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            corpus.add_stats(s, **{f"label_{k}": v for k, v in numeric.items()})
            if "screening" in r.stats:
                corpus.add_stats(s, **{f"screened_{r.stats['screening']}": 1})
        # Round-level token counts belong to the batch; spread evenly for the summary.
        for s in states:
            corpus.add_stats(s, rollout_generated_tokens=tokens["generated"] / len(states),
                             rollout_prompt_tokens=tokens["prompt"] / len(states),
                             rollout_cached_prompt_tokens=tokens["cached"] / len(states))
        Metrics.counter(NAMESPACE, "rollout_generated_tokens").inc(tokens["generated"])


class CheckpointDoFn(beam.DoFn):
    """Saves each finished problem state so a rerun can skip it (see ``counterpoint.cache``)."""

    def __init__(self, output_dir: str, fingerprint: str):
        self.output_dir = output_dir
        self.fingerprint = fingerprint

    def setup(self):
        self.store = ProblemCheckpoints(self.output_dir, self.fingerprint)

    def process(self, state):
        if not state["failed"] or all(r["reason"] not in _TRANSIENT_REASONS for r in state["rejects"]):
            # Transient failures (engine died, timeouts) are not checkpointed: a rerun retries them.
            self.store.save(state)
        yield state


_TRANSIENT_REASONS = {"engine_dead", "generation_failed"}


class SplitFinished(beam.DoFn):
    """Routes problems with a checkpoint to ``finished`` (loaded) and the rest to ``todo``."""

    def __init__(self, output_dir: str, fingerprint: str):
        self.output_dir = output_dir
        self.fingerprint = fingerprint

    def setup(self):
        self.store = ProblemCheckpoints(self.output_dir, self.fingerprint)
        self.listing = self.store.finished_paths()

    def process(self, problem):
        if self.store.is_finished(problem["problem_id"], self.listing):
            state = self.store.load(problem["problem_id"])
            if state is not None:
                Metrics.counter(NAMESPACE, "resumed_problems").inc()
                state["resumed"] = True
                # Per-run counters (cache hits, stage seconds) belong to the run that made the
                # checkpoint; this run did no such work for the problem.
                state["stats"] = {k: v for k, v in state.get("stats", {}).items()
                                  if k not in ("cache_hits", "cache_tokens_saved") and not k.startswith("seconds_")}
                yield beam.pvalue.TaggedOutput("finished", state)
                return
        yield corpus.new_state(problem)
