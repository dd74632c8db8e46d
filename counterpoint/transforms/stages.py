"""Beam stages over batches of problem states.

Following Beam's ``RunInference`` split, engines (generators, verifier pools)
are separate from the transforms that batch, share and count: a stage loads
its engine in ``DoFn.setup`` through ``shared.Shared`` (one engine per worker
process, whatever the number of threads), and :class:`ProblemBatchDoFn` does
the rest — retries with backoff, engine restarts, timeouts, isolating a poison
request by splitting the batch, turning a final failure into a problem-level
reject with a snake_case reason (also a Beam counter), per-stage timing and
progress. Subclasses implement one hook, :meth:`ProblemBatchDoFn.process_problems`,
which returns new states (inputs are never changed: Beam forbids it, and a
timed-out attempt that still runs can then never touch what the retry works on).

Each DoFn receives only its slice of the run config.

Long: the DoFns of the generating stages share their engine and verifier handles, batching and retries.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from counterpoint import corpus, progress
from counterpoint.cache import CachedGenerator, ProblemCheckpoints, RequestCache
from counterpoint.generators import build_generator
from counterpoint.generators.base import EngineDeadError, GenerationError, Generator, SamplingParams
from counterpoint.generators.config import GeneratorConfig
from counterpoint.state import ProblemState
from counterpoint.transforms.clean import CleanTrajectoriesDoFn

log = logging.getLogger(__name__)
NAMESPACE = progress.NAMESPACE


class _Holder:
    """Weak-referenceable box for objects kept in ``shared.Shared``."""

    def __init__(self, value):
        self.value = value


@dataclasses.dataclass
class EngineSpec:
    """What a stage needs to get its engine: the generator config, the per-worker handle, the cache folder."""

    generator: GeneratorConfig
    handle: shared.Shared
    cache_root: Optional[str] = None  # OutputLayout.cache_dir(...): None = no request cache

    def tag(self) -> str:
        g = self.generator
        return f"generator:{g.kind}:{g.model}:{g.seed}:{g.seed_mode}:{g.dtype}:{g.compile}:{g.max_num_seqs}"

    def acquire(self) -> Generator:
        def build():
            gen = build_generator(self.generator)
            gen.load()
            return _Holder(gen)

        inner = self.handle.acquire(build, tag=self.tag()).value
        if self.cache_root:
            return CachedGenerator(inner, RequestCache(self.cache_root, inner.model_fingerprint))
        return inner


def acquire_verifier_suite(handle: shared.Shared, v):
    """One verifier suite (so one math-verify process pool) per worker process, shared by stages."""
    from counterpoint.verifiers.suite import VerifierSuite

    return handle.acquire(
        lambda: VerifierSuite(v.name, timeout_s=v.timeout_s, pool_size=v.pool_size, fault_injector=v.fault_injector),
        tag=f"verifier:{v.name}:{v.timeout_s}:{v.pool_size}:{v.fault_injector}")


class ProblemBatchDoFn(beam.DoFn):
    """Base stage: input and output are batches (lists) of :class:`ProblemState`.

    ``stage`` names the stage in rejects, counters and the progress line. Failed states
    pass through untouched, so a problem dropped early still reaches the rejects sink.
    """

    stage = "base"

    def __init__(self, retry, engine: Optional[EngineSpec] = None):
        self.retry = retry
        self.engine = engine
        self.generator: Optional[Generator] = None

    def setup(self):
        if self.engine is not None:
            self.generator = self.engine.acquire()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cp-{self.stage}")
        self._reported: set = set()

    def start_bundle(self):
        self._reported = set()

    def report_problem(self, problem_id: str, **values: float) -> None:
        """Progress for one problem as soon as it is done (a hook may call it mid-batch); once per problem."""
        if problem_id in self._reported:
            return
        self._reported.add(problem_id)
        progress.report(self.stage, problems=1, **values)

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _restart_engine(self) -> None:
        if self.generator is None:
            return
        inner = self.generator.inner if isinstance(self.generator, CachedGenerator) else self.generator
        log.warning("%s: restarting the engine", self.stage)
        inner.close()
        inner.load()

    # -- the hook -----------------------------------------------------------------
    def process_problems(self, states: List[ProblemState]) -> List[ProblemState]:
        """Returns the new states, aligned with ``states``. Raise ``GenerationError`` to retry / reject."""
        raise NotImplementedError

    def failure_stage(self, state: ProblemState) -> str:
        """The stage a final failure of ``state`` is charged to (a stage that does several: the one it was in)."""
        return self.stage

    def progress_values(self, states: Sequence[ProblemState]) -> Dict[str, float]:
        """Extra progress figures of a finished batch (problems are counted by the base)."""
        return {}

    # -- batching, retries, rejects ---------------------------------------------------
    def _call_with_timeout(self, states):
        timeout = self.retry.call_timeout_s
        if not timeout:
            return self.process_problems(states)
        future = self._pool.submit(self.process_problems, states)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            # The call may still be running in its thread (on its own new objects): a fresh pool
            # and engine take over, and whatever it returns later is dropped.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            raise EngineDeadError(f"{self.stage} call timed out after {timeout}s") from None

    def _run_with_retries(self, states) -> Tuple[Optional[List[ProblemState]], Optional[GenerationError]]:
        attempts = max(1, self.retry.max_attempts)
        last: Optional[GenerationError] = None
        for attempt in range(attempts):
            try:
                out = self._call_with_timeout(states)
                if len(out) != len(states):
                    raise RuntimeError(f"{self.stage} returned {len(out)} states for {len(states)}")
                return out, None
            except GenerationError as e:
                last = e
                Metrics.counter(NAMESPACE, f"{self.stage}_retries").inc()
                log.warning("%s attempt %d/%d failed: %s", self.stage, attempt + 1, attempts, e)
                if isinstance(e, EngineDeadError):
                    self._restart_engine()
                if not e.retriable:
                    break
                if attempt + 1 < attempts:
                    time.sleep(self.retry.backoff_s * (2 ** attempt))
        return None, last

    def _process_isolating(self, states: List[ProblemState]) -> List[ProblemState]:
        out, error = self._run_with_retries(states)
        if error is None:
            return out
        if len(states) > 1:
            # One bad request must not sink its neighbours: retry the batch one by one.
            Metrics.counter(NAMESPACE, f"{self.stage}_batch_splits").inc()
            return [s for one in states for s in self._process_isolating([one])]
        Metrics.counter(NAMESPACE, f"reject_{error.reason}").inc()
        return [states[0].fail(stage=self.failure_stage(states[0]), reason=error.reason, detail=str(error))]

    def process(self, batch):
        batch = list(batch)
        live_idx = [i for i, s in enumerate(batch) if not s.failed]
        if not live_idx:
            yield batch
            return
        cache = self.generator.cache if isinstance(self.generator, CachedGenerator) else None
        before = (cache.hits, cache.tokens_saved) if cache else (0, 0)
        start = time.perf_counter()
        done = self._process_isolating([batch[i] for i in live_idx])
        elapsed = time.perf_counter() - start
        after = (cache.hits, cache.tokens_saved) if cache else (0, 0)
        n = len(done)
        out = list(batch)
        for i, s in zip(live_idx, done):
            out[i] = s.add_stats(**{f"seconds_{self.stage}": elapsed / n,
                                    "cache_hits": (after[0] - before[0]) / n,
                                    "cache_tokens_saved": (after[1] - before[1]) / n})
        unreported = [s for s in done if s.problem_id not in self._reported]
        for s in unreported:
            self._reported.add(s.problem_id)
        ok = [s for s in unreported if not s.failed]
        progress.report(self.stage, problems=len(unreported), failed=len(unreported) - len(ok),
                        **self.progress_values(ok))
        yield out


class SampleDoFn(ProblemBatchDoFn):
    """Samples ``samples_per_problem`` trajectories per problem, one engine call per batch.

    Input: states with ``problem``. Output: ``trajectories`` rows (steps segmented,
    not yet verified) with model, sampling parameters, seed and token counts.
    """

    stage = "sample"

    def __init__(self, engine: EngineSpec, retry, *, sampling: SamplingParams, samples_per_problem: int,
                 system_prompt: Optional[str], segmentation: str, run_seed: int):
        super().__init__(retry, engine)
        self.sampling = sampling
        self.samples_per_problem = samples_per_problem
        self.system_prompt = system_prompt
        self.segmentation = segmentation
        self.run_seed = run_seed

    def process_problems(self, states):
        requests = [
            corpus.sample_request(s.problem, system_prompt=self.system_prompt, n=self.samples_per_problem,
                                  params=self.sampling, run_seed=self.run_seed)
            for s in states
        ]
        start = time.perf_counter()
        results = self._generate(requests, [s.problem_id for s in states])
        elapsed = time.perf_counter() - start
        tokens = sum(c.num_tokens for comps in results for c in comps)
        out = []
        for s, req, comps in zip(states, requests, results):
            rows = corpus.trajectory_rows(s.problem, comps, request=req, model_id=self.generator.model_id,
                                          segmentation=self.segmentation)
            out.append(s.evolve(trajectories=rows).add_stats(
                generated_tokens=sum(c.num_tokens for c in comps),
                prompt_tokens=sum(c.num_prompt_tokens for c in comps[:1])))
        log.debug("sampled %d problems, %d tokens in %.1fs (%.0f tok/s)", len(states), tokens, elapsed,
                  tokens / max(elapsed, 1e-9))
        return out

    def _generate(self, requests, problem_ids):
        """One engine call; a streaming engine reports each problem as soon as its samples are back."""
        if not getattr(self.generator, "streaming", False):
            return self.generator.generate(requests)
        results = [None] * len(requests)
        pending = {h: i for i, h in enumerate(self.generator.submit(requests))}
        while pending:
            finished = self.generator.poll()
            if not finished:
                raise GenerationError(f"engine returned nothing for {len(pending)} pending request(s)")
            for handle, comps in finished:
                i = pending.pop(handle, None)
                if i is None:
                    continue  # left over from an earlier, failed attempt
                if len(comps) != requests[i].n:
                    raise GenerationError(f"engine returned {len(comps)} samples, asked for {requests[i].n}")
                results[i] = comps
                tokens = sum(c.num_tokens for c in comps)
                progress.distribution("sample_tokens_per_problem", tokens)
                self.report_problem(problem_ids[i], samples=len(comps), tokens=tokens)
        if hasattr(self.generator, "flush"):
            self.generator.flush()
        return results

    def progress_values(self, states):
        tokens = sum(t["num_generated_tokens"] for s in states for t in s.trajectories)
        progress.distribution("sample_tokens_per_problem", tokens / max(1, len(states)))
        return {"samples": sum(len(s.trajectories) for s in states), "tokens": tokens}


class VerifyDoFn(ProblemBatchDoFn):
    """Judges every trajectory: ``final_answer``, ``verdict``, ``verdict_reason``, verifier name/version.

    Verification runs in the verifier's own process pool (math-verify's
    ``signal.alarm`` cannot run in Beam's worker threads); one pool per worker.
    """

    stage = "verify"

    def __init__(self, verifier, handle: shared.Shared, retry):
        super().__init__(retry)
        self.verifier = verifier
        self._handle = handle

    def setup(self):
        super().setup()
        self.suite = acquire_verifier_suite(self._handle, self.verifier)

    def process_problems(self, states):
        items = [(row["completion"], s.problem["gold_answer"], row["finish_reason"] == "length",
                  s.problem["answer_type"]) for s in states for row in s.trajectories]
        judged = iter(self.suite.verify(items))
        out = []
        for s in states:
            rows = []
            for row in s.trajectories:
                verdict, verifier = next(judged)
                rows.extend(corpus.apply_verdicts([row], [verdict], verifier_name=verifier.name,
                                                  verifier_version=verifier.version))
            out.append(s.evolve(trajectories=rows))
        return out

    def progress_values(self, states):
        values: Dict[str, float] = {}
        for s in states:
            for t in s.trajectories:
                values[f"verdict_{t['verdict']}"] = values.get(f"verdict_{t['verdict']}", 0) + 1
        return values


class OutcomePairsDoFn(beam.DoFn):
    """Outcome preference pairs and unpaired rows from the verified trajectories (see ``corpus.outcome_rows``).

    With ``pairing.reference_chosen``, a problem with no positive sample gets its source's reference
    solution as the chosen side, verified against gold by the run's verifier and claim-checked first
    (``corpus.reference_trajectory``).
    """

    def __init__(self, pairing, verifier=None, verifier_handle: Optional[shared.Shared] = None,
                 segmentation: str = "paragraph"):
        self.pairing = pairing
        self.verifier = verifier
        self._handle = verifier_handle
        self.segmentation = segmentation
        self.suite = None

    def setup(self):
        if self.pairing.reference_chosen and self._handle is not None:
            self.suite = acquire_verifier_suite(self._handle, self.verifier)

    def process(self, batch):
        references = self._references(batch) if self.suite is not None else {}
        yield [s if s.failed else corpus.outcome_rows(
            s, max_pairs_per_problem=self.pairing.max_pairs_per_problem,
            truncated_as_rejected=self.pairing.truncated_as_rejected, strategy=self.pairing.strategy,
            reference=references.get(s.problem_id)) for s in batch]

    def _references(self, batch) -> Dict[str, dict]:
        rows = [corpus.reference_trajectory(s, self.segmentation) for s in batch
                if not s.failed and not any(corpus.positive(t) for t in s.trajectories)]
        rows = [r for r in rows if r is not None]
        if not rows:
            return {}
        verdicts = self.suite.verify([(r["completion"], r["gold_answer"], False, r["answer_type"]) for r in rows])
        out = {}
        for r, (verdict, verifier) in zip(rows, verdicts):
            r = corpus.apply_verdicts([r], [verdict], verifier_name=verifier.name, verifier_version=verifier.version)[0]
            if corpus.positive(r):
                out[r["problem_id"]] = r
        return out


class CheckpointDoFn(beam.DoFn):
    """Saves each batch of finished problem states as one object, so a rerun can skip them.

    Input: a batch of states. Output: the states, one by one.
    """

    def __init__(self, root: str):
        self.root = root

    def setup(self):
        self.store = ProblemCheckpoints(self.root)

    def process(self, batch):
        # Transient failures (engine died, timeouts) are not checkpointed: a rerun retries them.
        keep = [s for s in batch if not s.failed or all(r["reason"] not in TRANSIENT_REASONS for r in s.rejects)]
        if keep:
            self.store.save(keep)
            Metrics.counter(NAMESPACE, "checkpoint_objects").inc()
        progress.report("write", problems=len(batch))
        yield from batch


TRANSIENT_REASONS = {"engine_dead", "generation_failed"}


class DedupeAndResume(beam.DoFn):
    """Per problem id: the first-read problem is kept, later ones are rejected (``duplicate_problem_id``);
    a problem with a checkpoint of an earlier run goes to ``finished`` instead of being worked on again.

    Input: ``(problem_id, {"problems": [(order_key, row)], "checkpoints": [ProblemState]})``.
    Outputs: main = new :class:`ProblemState` to work on, ``finished`` = loaded states, ``rejects``.
    """

    def process(self, element):
        problem_id, grouped = element
        read = sorted(grouped["problems"], key=lambda t: t[0])
        if read:  # (a checkpoint of a problem that is not in this run's input yields nothing)
            yield from self._split(problem_id, read, list(grouped["checkpoints"]))

    def _split(self, problem_id, read, checkpoints):
        first_key, problem = read[0]
        for key, dup in read[1:]:
            yield beam.pvalue.TaggedOutput("rejects", corpus.schemas.make_reject(
                stage="dedupe", reason="duplicate_problem_id", problem_id=problem_id, scope="problem",
                detail=f"problem id {problem_id!r} already read (item {list(first_key)}); this is item {list(key)}",
                payload={"question": dup["question"][:500]}, key=list(key)))
        if checkpoints:
            state = checkpoints[0]
            # Per-run counters (cache hits, stage seconds) belong to the run that made the
            # checkpoint; this run did no such work for the problem.
            stats = {k: v for k, v in state.stats.items()
                     if k not in ("cache_hits", "cache_tokens_saved") and not k.startswith("seconds_")}
            Metrics.counter(NAMESPACE, "resumed_problems").inc()
            progress.report("resume", problems=1)
            yield beam.pvalue.TaggedOutput("finished", state.evolve(resumed=True, stats=stats))
        else:
            yield corpus.new_state(problem)


# ---------------------------------------------------------------------------
# Composite transforms (what build_pipeline reads as)
# ---------------------------------------------------------------------------
class DedupeAndResumeProblems(beam.PTransform):
    """Problems ``(order_key, row)`` + earlier checkpoints -> work to do, finished states, duplicate rejects.

    One join by problem id (``CoGroupByKey``): no per-problem lookup of the checkpoint store.
    Output: ``{"todo": ProblemState, "finished": ProblemState, "rejects": reject rows}``.
    """

    def __init__(self, checkpoints_root: str):
        super().__init__()
        self.checkpoints_root = checkpoints_root

    def expand(self, problems):
        from counterpoint.cache import ReadCheckpoints

        checkpoints = problems.pipeline | "ReadCheckpoints" >> ReadCheckpoints(self.checkpoints_root)
        keyed = problems | "KeyByProblemId" >> beam.Map(lambda kv: (kv[1]["problem_id"], kv))
        split = (
            {"problems": keyed, "checkpoints": checkpoints}
            | "JoinCheckpoints" >> beam.CoGroupByKey()
            | "DedupeAndResume" >> beam.ParDo(DedupeAndResume()).with_outputs("finished", "rejects", main="todo")
        )
        return {"todo": split.todo, "finished": split.finished, "rejects": split.rejects}


class SampleAndVerify(beam.PTransform):
    """New problem states -> batches of states with verified ``trajectories`` (one engine call per batch)."""

    def __init__(self, engine: EngineSpec, verifier, verifier_handle: shared.Shared, retry, *, batch_size: int,
                 sampling: SamplingParams, samples_per_problem: int, system_prompt: Optional[str],
                 segmentation: str, run_seed: int, dedup=None):
        super().__init__()
        self.batch_size = batch_size
        self.dedup = dedup
        self.sample = SampleDoFn(engine, retry, sampling=sampling, samples_per_problem=samples_per_problem,
                                 system_prompt=system_prompt, segmentation=segmentation, run_seed=run_seed)
        self.verify = VerifyDoFn(verifier, verifier_handle, retry)

    def expand(self, states):
        return (
            states
            | "BatchForSampling" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "Sample" >> beam.ParDo(self.sample)
            | "Verify" >> beam.ParDo(self.verify)
            | "CleanTrajectories" >> beam.ParDo(CleanTrajectoriesDoFn(self.dedup))
        )


class PairAndCheckpoint(beam.PTransform):
    """Batches of finished states -> outcome pairs added, each batch checkpointed as one object -> states."""

    def __init__(self, pairing, checkpoints_root: str, outcome: Optional[OutcomePairsDoFn] = None):
        super().__init__()
        self.pairing = pairing
        self.checkpoints_root = checkpoints_root
        self.outcome = outcome or OutcomePairsDoFn(pairing)

    def expand(self, batches):
        return (
            batches
            | "OutcomePairs" >> beam.ParDo(self.outcome)
            | "Checkpoint" >> beam.ParDo(CheckpointDoFn(self.checkpoints_root))
        )
