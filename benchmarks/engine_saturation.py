"""Engine saturation of the whole labelled job: one engine stream (issue 18) vs plain batch sampling.

How close does a labelled run — sampling, verifying, screening, OmegaPRM rollouts and value
estimates of every problem, all through ONE scheduler run (``counterpoint.labeling.stream``, what
``SampleAndLabel`` does per bundle) — come to the throughput the same engine gives plain batch
sampling with a full queue? On one engine in one process (engine start excluded):

1. **the job**: every problem through ``sample_and_label`` (one bundle, as the pipeline's auto
   labelling batch), timed from the first request to the last row; a progress line every few
   seconds (problems done, tokens, sequences in flight);
2. **plain**, before AND after the job: sampling with a full queue, same sampling parameters, fresh
   prompts: on vLLM a sliding window keeps 1.5x the engine's capacity in sequences submitted and the
   engine's own token count is read over ``--plain-seconds`` (steady state: no batch tail); on the
   scripted engine, batches of 1.5x the capacity of at least ``--plain-tokens`` tokens. The reference
   is both measurements pooled: this machine's rate drifts by up to 20% within a job (230.7 tok/s
   before a 64-problem job, 187.6 after; a fresh engine between them 211.8), and one side alone would
   charge the schedule (or credit it) with the drift; all three ratios are reported;
3. **the workload replay** (vLLM): the job's own requests from its midpoint on, same seeds, with a
   full queue and no dependencies — what a perfect schedule of exactly this work reaches on this
   engine (its ``ceiling`` against plain, and the job's second half against it). The window walks
   the whole second half (``--replay-segments`` segments, a few consecutive requests of each in turn).

Sequences running are counted twice: per poll from whole requests in flight (``mean_running_sequences``:
a request of 8 samples holds 8 places until its longest sample ends), and by the engine itself, step by
step (``engine_running_sequences``: vLLM's unfinished sequences, at most its capacity, weighted by step time).

Reports: saturation = job tokens/s ÷ plain tokens/s (target ≥ 0.95), per phase tokens (sampling
vs rollouts; when the last problem finished sampling), the poll-time-weighted mean of sequences in
flight vs the engine's capacity, wasted speculative rollouts / tokens and aborted speculative
samples, rollout tokens per kept tree, and the prefix-cache hit share. Writes
``benchmarks/results/engine_saturation.json`` (``--out``).

``--defaults`` takes every knob from the CLI defaults (``counterpoint run --labeler omegaprm``);
``--problems`` still sets the workload size. ``--generator scripted`` runs the same job on the
scripted chain engine (a cheap smoke test of the benchmark itself; its figures mean nothing).

    python benchmarks/engine_saturation.py --defaults [--problems 64] [--scheduling-policy priority]
    python benchmarks/engine_saturation.py [--problems 48] [--samples 8] [--k 4] [--search-limit 16]
                                           [--parallel-searches auto] [--adaptive] [--compile off|on]

Long: one benchmark script: argument table, the job, the baseline and the report, read top to bottom.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defaults", action="store_true",
                        help="every knob at its CLI default (the workload size --problems may still be given)")
    parser.add_argument("--problems", type=int, default=None, help="problems (default: 48; the CLI's with --defaults)")
    parser.add_argument("--samples", type=int, default=8, help="K_f screening samples per problem")
    parser.add_argument("--k", type=int, default=4, help="rollouts per prefix")
    parser.add_argument("--search-limit", type=int, default=16)
    parser.add_argument("--parallel-searches", default="auto", help="speculative searches per tree (auto, or 1)")
    parser.add_argument("--adaptive", action="store_true", help="adaptive rollout budgets (--adaptive-rollouts on)")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--min-ops", type=int, default=1)
    parser.add_argument("--max-ops", type=int, default=2)
    parser.add_argument("--compile", default="off", choices=("off", "on"))
    parser.add_argument("--block-size", type=int, default=None,
                        help="vLLM KV-cache block size (prefix caching hits whole blocks; default: the generator's)")
    parser.add_argument("--scheduling-policy", default=None, choices=("fcfs", "priority"),
                        help="vLLM scheduling policy (priority: problems' sampling queued ahead of tree rollouts)")
    parser.add_argument("--generator", default="vllm", choices=("vllm", "scripted"))
    parser.add_argument("--progress-s", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--plain-tokens", type=int, default=30000,
                        help="tokens of plain batch sampling to measure (at least one batch)")
    parser.add_argument("--plain-seconds", type=float, default=90.0,
                        help="vLLM: seconds of steady-state plain sampling measured (after --plain-warmup-s)")
    parser.add_argument("--plain-warmup-s", type=float, default=20.0)
    parser.add_argument("--replay-segments", type=int, default=8,
                        help="segments of the job's second half the replay window takes requests from in turn")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_saturation.json"))
    return parser.parse_args(argv)


def _config(args):
    from counterpoint.config import RunConfig
    from counterpoint.generators.config import GeneratorConfig
    from counterpoint.labeling import OmegaPRMConfig

    cfg = RunConfig(labeler="omegaprm")
    if args.defaults:
        n, min_ops, max_ops = args.problems or cfg.source.num_problems, cfg.source.min_ops, cfg.source.max_ops
    else:
        n, min_ops, max_ops = args.problems or 48, args.min_ops, args.max_ops
        parallel = args.parallel_searches if args.parallel_searches == "auto" else int(args.parallel_searches)
        cfg = dataclasses.replace(
            cfg, samples_per_problem=args.samples,
            sampling=dataclasses.replace(cfg.sampling, max_tokens=args.max_tokens),
            labeling=dataclasses.replace(cfg.labeling, omegaprm=dataclasses.replace(
                OmegaPRMConfig(), k=args.k, search_limit=args.search_limit, parallel_searches=parallel)))
    if args.adaptive:
        cfg = dataclasses.replace(cfg, labeling=dataclasses.replace(
            cfg.labeling, omegaprm=dataclasses.replace(cfg.labeling.omegaprm, adaptive=True)))
    if args.generator == "scripted":
        gen_cfg = GeneratorConfig(kind="scripted", scripted={"policy": "chain", "step_error_rate": 0.1})
    else:
        gen_cfg = dataclasses.replace(cfg.generator, compile=args.compile)
        if args.block_size:
            gen_cfg = dataclasses.replace(gen_cfg, engine_kwargs={**gen_cfg.engine_kwargs,
                                                                  "block_size": args.block_size})
        if args.scheduling_policy:
            gen_cfg = dataclasses.replace(gen_cfg, engine_kwargs={**gen_cfg.engine_kwargs,
                                                                  "scheduling_policy": args.scheduling_policy})
    return dataclasses.replace(cfg, generator=gen_cfg), n, min_ops, max_ops


def _problems(args, n, min_ops, max_ops):
    if args.generator == "scripted":
        from counterpoint.generators.scripted import chain_problem

        return [chain_problem(11, i, num_steps=8) for i in range(n)]
    from counterpoint.sources.procedural import procedural_problem

    return [procedural_problem(11, i, min_ops, max_ops) for i in range(n)]


class _Meter:
    """Engine-side figures of the job: poll time, sequences in flight at each poll, the engine's own
    token count over time (vLLM: every decoded token, aborted requests' included), progress lines."""

    def __init__(self, gen, n_problems: int, every_s: float):
        self.gen, self.n, self.every = gen, n_problems, every_s
        self.real_poll, self.real_submit = gen.poll, gen.submit
        self.submitted = []  # (seconds, request, extra prompt ids): the job's requests, for the replay
        self.t0 = self.last_print = time.perf_counter()
        self.in_engine = self.weighted_inflight = self.weighted_running = 0.0
        self.rounds, self.done, self.sampled = [], 0, 0
        self.sampled_at: Dict[str, float] = {}  # problem id -> seconds its samples were back (its tree starts)
        self.trees: List[dict] = []  # one record per searched tree, in the order they ended
        self.last_sample_t = None
        self.poll_s = 0.0
        self.budget = None  # the stream's in-flight budget (from the round records)
        # (seconds, engine tokens so far, sequences in flight during the poll, poll seconds, engine occupancy so far)
        self.timeline = []
        self.base_tokens = self.engine_tokens()
        self.base_occupancy = self.occupancy()

    def engine_tokens(self):
        meter, llm = getattr(self.gen, "_token_meter", None), getattr(self.gen, "_llm", None)
        if meter is None or llm is None:
            return None
        return max(meter.finished_tokens, meter._seen_total(llm.llm_engine))

    def occupancy(self):
        """``(seconds in engine steps, sequence-seconds decoding)`` so far, from vLLM's own scheduler state
        step by step (``_LiveTokenMeter.stepped``); None on an engine without it. Counting whole requests
        overstates a tail: a request of 8 samples holds 8 places until its longest sample ends."""
        meter = getattr(self.gen, "_token_meter", None)
        if meter is None or not hasattr(meter, "step_seconds") or getattr(self.gen, "_llm", None) is None:
            return None
        return meter.step_seconds, meter.running_seconds

    def submit(self, requests, extra_ids=None, **priority):
        now = time.perf_counter() - self.t0
        for i, req in enumerate(requests):
            self.submitted.append((now, req, None if extra_ids is None else extra_ids[i]))
        if extra_ids is None:
            return self.real_submit(requests, **priority)
        return self.real_submit(requests, extra_ids=extra_ids, **priority)

    def poll(self):
        t = time.perf_counter()
        try:
            return self.real_poll()
        finally:
            self.poll_s = time.perf_counter() - t
            self.in_engine += self.poll_s

    def on_round(self, rec):
        # In flight while the engine stepped: what is still out + what this poll finished.
        finished = rec["samples"] + rec.get("sample_samples", 0)
        at_poll = rec["inflight_samples"] + finished
        self.budget = rec.get("capacity")
        self.weighted_inflight += at_poll * self.poll_s
        # running = what the engine can decode at once of it (more is queued, not faster)
        self.weighted_running += min(at_poll, self.gen.capacity or at_poll) * self.poll_s
        now = time.perf_counter()
        tokens = self.engine_tokens()
        self.timeline.append((now - self.t0, None if tokens is None else tokens - self.base_tokens,
                              min(at_poll, self.gen.capacity or at_poll), self.poll_s, self.occupancy()))
        self.rounds.append(dict(rec, inflight_at_poll=at_poll, t=round(now - self.t0, 3)))
        if rec.get("sample_samples"):
            self.last_sample_t = now - self.t0
        if now - self.last_print >= self.every:
            self.last_print = now
            done = sum(r["generated_tokens"] + r.get("sample_tokens", 0) for r in self.rounds)
            live = "" if tokens is None else f", engine {tokens - self.base_tokens}"
            rate = (tokens - self.base_tokens if tokens is not None else done) / (now - self.t0)
            print(f"[{now - self.t0:7.1f}s] problems done {self.done}/{self.n}, sampled {self.sampled}, "
                  f"tokens {done}{live}, {rate:.0f}"
                  f" tok/s, in flight {rec['inflight_samples']}/{rec.get('capacity')}, in the engine "
                  f"{getattr(self.gen, 'unfinished_sequences', None)}", flush=True)

    def window(self, start: float, end: float, plain_tps: float):
        """Engine tokens/s, its share of plain, the poll-weighted sequences in flight (whole requests) and
        the engine's own step-weighted sequences decoding in [start, end]."""
        pts = [p for p in self.timeline if p[1] is not None]
        if not pts or end <= start:
            return None
        before = [p for p in pts if p[0] <= start]
        t_a, tok_a, occ_a = (before[-1][0], before[-1][1], before[-1][4]) if before else (0.0, 0, self.base_occupancy)
        inside = [p for p in pts if start < p[0] <= end]
        if not inside:
            return None
        t_b, tok_b, occ_b = inside[-1][0], inside[-1][1], inside[-1][4]
        w = sum(p[3] for p in inside)
        tps = (tok_b - tok_a) / (t_b - t_a) if t_b > t_a else 0.0
        return {"start_s": round(t_a, 1), "end_s": round(t_b, 1), "engine_tokens": tok_b - tok_a,
                "tokens_per_s": round(tps, 1), "saturation": round(tps / plain_tps, 3) if plain_tps else None,
                "mean_running_sequences": round(sum(p[2] * p[3] for p in inside) / w, 1) if w else None,
                "engine_running_sequences": _mean_running(occ_a, occ_b)}


def _mean_running(a, b):
    """Step-weighted sequences the engine decoded between two occupancy readings (None if unknown)."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    return round((b[1] - a[1]) / (b[0] - a[0]), 1)


def _job(cfg, gen, suite, problems, meter):
    """Long: the whole job's bookkeeping (requests, per-problem callbacks, stats) in one place."""
    from counterpoint import corpus
    from counterpoint.labeling import ProblemForLabeling
    from counterpoint.labeling.stream import sample_and_label

    requests = [corpus.sample_request(p, system_prompt=cfg.system_prompt, n=cfg.samples_per_problem,
                                      params=cfg.sampling, run_seed=0) for p in problems]

    def on_sampled(i, sampled):
        p = problems[i]
        verifier = suite.verifier(p["answer_type"])
        rows = corpus.trajectory_rows(p, sampled.completions, request=requests[i], model_id=gen.model_id,
                                      segmentation=cfg.segmentation)
        rows = corpus.apply_verdicts(rows, sampled.verdicts, verifier_name=verifier.name,
                                     verifier_version=verifier.version)
        rows, _ = corpus.clean_trajectories(rows, cfg.dedup)
        meter.sampled += 1
        meter.sampled_at[p["problem_id"]] = time.perf_counter() - meter.t0
        return ProblemForLabeling(problem=p, trajectories=rows, system_prompt=cfg.system_prompt,
                                  segmentation_mode=cfg.segmentation)

    def on_done(result):
        meter.done += 1
        st = result.stats
        if st.get("selections"):
            start = meter.sampled_at.get(result.problem_id, 0.0)
            end = time.perf_counter() - meter.t0
            meter.trees.append({"problem_id": result.problem_id, "start_s": round(start, 1),
                                "end_s": round(end, 1), "seconds": round(end - start, 1),
                                **{k: int(st.get(k, 0)) for k in ("trajectories", "selections", "rollouts",
                                                                   "rollout_tokens", "requests",
                                                                   "step_label_rows")}})

    gen.poll, gen.submit = meter.poll, meter.submit
    t = time.perf_counter()
    try:
        results = sample_and_label(problems, requests, gen, suite.judge, cfg.labeling_config, sampling=cfg.sampling,
                                   on_sampled=on_sampled, system_prompt=cfg.system_prompt,
                                   segmentation_mode=cfg.segmentation, on_round=meter.on_round,
                                   on_problem_done=on_done)
    finally:
        gen.poll, gen.submit = meter.real_poll, meter.real_submit
    return [r for _, r, _ in results], time.perf_counter() - t


def _plain(args, cfg, gen, n_problems: int, target_tokens: int, seed_base: int = 0, by_engine: bool = True):
    """Plain batch sampling with a full queue: ``(tokens, seconds, engine's mean sequences decoding)``.

    vLLM: a sliding window keeps 1.5x the engine's capacity in sequences queued (the engine always full,
    no batch tail) — counted by the engine itself (``by_engine``, the reference), or by the samples of
    requests in flight (how this benchmark counted before 2026-12-05: the engine then decoded about 100
    of 128 sequences) — and the engine's own token count is read over ``--plain-seconds`` after a
    warm-up: the engine's steady-state throughput, the highest bar. Scripted: batches of 1.5x the
    capacity until ``target_tokens`` are generated."""
    from counterpoint.generators.base import GenerationRequest

    if args.generator == "scripted":
        from counterpoint.generators.scripted import chain_problem as make

        question = lambda i: make(99, i, num_steps=8)["question"]  # noqa: E731
    else:
        from counterpoint.sources.procedural import procedural_problem as make

        question = lambda i: make(99, i)["question"]  # noqa: E731

    def request(i):
        # Fresh prompts for each measurement (seed_base apart): no prefix-cache hits from an earlier one.
        return GenerationRequest.chat(cfg.system_prompt, question(i + seed_base), n=cfg.samples_per_problem,
                                      params=cfg.sampling, seed=i + seed_base)

    probe = _Meter(gen, 0, args.progress_s)
    if probe.engine_tokens() is not None:
        queued = n_problems * cfg.samples_per_problem
        tokens, seconds, _, running = _plain_window(gen, lambda i: (request(i), None), queued, probe,
                                                    args.plain_warmup_s, args.plain_seconds, args.progress_s,
                                                    by_engine=by_engine)
        return tokens, seconds, running
    tokens, seconds, i = 0, 0.0, 0
    while tokens < target_tokens:
        batch = [request(i + j) for j in range(n_problems)]
        i += n_problems
        print(f"plain batch of {len(batch) * cfg.samples_per_problem} sequences ...", flush=True)
        t = time.perf_counter()
        out = _generate_with_progress(gen, batch, args.progress_s) if gen.streaming else gen.generate(batch)
        seconds += time.perf_counter() - t
        tokens += sum(c.num_tokens for x in out for c in x)
    return tokens, seconds, None


def _plain_window(gen, source, queued: int, meter, warmup_s: float, seconds: float, every_s: float,
                  label: str = "plain", by_engine: bool = False):
    """Steady-state throughput: ``queued`` sequences always submitted (a request joins as soon as one
    leaves); ``(engine tokens, seconds, requests submitted, engine's mean sequences decoding)`` over
    ``seconds`` after ``warmup_s``. ``by_engine``: ``queued`` counts the engine's own unfinished sequences
    (``generator.unfinished_sequences``), not the samples of requests in flight — a request holds its
    ``n`` places until its longest sample ends, so counted by requests the engine is not kept full.
    ``source(i)`` is the i-th request as ``(request, extra prompt ids or None)``; ``None`` when there
    are no more: the window then ends at the last moment the queue was still full."""
    inflight, i, t0, mark, last = {}, 0, time.perf_counter(), None, time.perf_counter()
    occupancy_at_mark = None
    exhausted = False
    while True:
        while not exhausted:
            item = source(i)
            if item is None:
                exhausted = True
                break
            req, extra = item
            held = gen.unfinished_sequences if by_engine else None
            if held is None:
                held = sum(inflight.values())
            if inflight and held + req.n > queued:
                break
            (h,) = gen.submit([req]) if extra is None else gen.submit([req], extra_ids=[extra])
            inflight[h], i = req.n, i + 1
        for h, _ in gen.poll():
            inflight.pop(h, None)
        now = time.perf_counter()
        if mark is None and now - t0 >= warmup_s:
            mark, occupancy_at_mark = (now, meter.engine_tokens()), meter.occupancy()
        if now - last >= every_s:
            last = now
            print(f"[{label} {now - t0:7.1f}s] {meter.engine_tokens() - meter.base_tokens} engine tokens", flush=True)
        done = mark is not None and now - mark[0] >= seconds
        if done or (exhausted and sum(inflight.values()) < queued * 2 // 3):
            gen.abort(list(inflight))  # nothing of this measurement may run into the next one
            if mark is None:
                return 0, 0.0, i, None
            return meter.engine_tokens() - mark[1], now - mark[0], i, _mean_running(occupancy_at_mark,
                                                                                     meter.occupancy())


def _replay(args, gen, meter, job_s: float):
    """The job's own requests with a full queue: its workload at the engine's steady-state rate, no
    dependencies between requests (what a perfect schedule of exactly this work could reach).

    Replays the requests submitted from the job's midpoint on, same seeds (same samples, same
    lengths), 1.5x the capacity queued, for ``--plain-seconds`` after the warm-up. A window holds far
    fewer requests than a second half, and the work changes along it (the last trees probe deeper
    prefixes), so the window walks the whole second half: cut into ``--replay-segments`` equal
    segments, it takes :data:`REPLAY_RUN` consecutive requests of each in turn (submission order within
    a segment keeps the job's prefix-cache locality). ``(tokens, seconds, requests replayed, engine's
    mean sequences decoding)``; ``None`` on an engine without a token count."""
    if meter.engine_tokens() is None or not meter.submitted:
        return None
    start = next((i for i, (t, _, _) in enumerate(meter.submitted) if t >= job_s / 2), 0)
    order = _interleaved_segments(len(meter.submitted) - start, args.replay_segments, REPLAY_RUN)
    tail = [meter.submitted[start + j] for j in order]
    queued = (gen.capacity or 256) * 3 // 2
    print(f"replay: the job's {len(tail)} requests from {job_s / 2:.0f}s on, {args.replay_segments} segments taken "
          f"{REPLAY_RUN} requests at a time, {queued} sequences queued", flush=True)
    source = lambda i: (tail[i][1], tail[i][2]) if i < len(tail) else None  # noqa: E731
    return _plain_window(gen, source, queued, meter, args.plain_warmup_s, args.plain_seconds, args.progress_s,
                         label="replay", by_engine=True)


#: Consecutive requests the replay takes from one segment of the job's second half before the next.
REPLAY_RUN = 4


def _interleaved_segments(n: int, segments: int, run: int):
    """Indices ``0 .. n-1`` cut into ``segments`` equal, contiguous segments and visited ``run`` at a
    time, segment after segment, round after round: every prefix of the order spreads over the whole
    range (each index exactly once)."""
    segments = max(1, min(segments, n))
    bounds = [n * s // segments for s in range(segments + 1)]
    cursors, order = bounds[:-1], []
    while len(order) < n:
        for s in range(segments):
            take = range(cursors[s], min(cursors[s] + run, bounds[s + 1]))
            order.extend(take)
            cursors[s] += len(take)
    return order


def _generate_with_progress(gen, batch, every_s: float):
    """``generate`` through submit/poll (the same full queue), printing a progress line every ``every_s``."""
    pending = {h: i for i, h in enumerate(gen.submit(batch))}
    out, t0, last, tokens = [None] * len(batch), time.perf_counter(), time.perf_counter(), 0
    while pending:
        for handle, comps in gen.poll():
            if handle in pending:
                out[pending.pop(handle)] = comps
                tokens += sum(c.num_tokens for c in comps)
        if time.perf_counter() - last >= every_s:
            last = time.perf_counter()
            print(f"[plain {last - t0:7.1f}s] {len(batch) - len(pending)}/{len(batch)} requests, {tokens} tokens",
                  flush=True)
    return out


def _rate(measured):
    return measured[0] / measured[1] if measured and measured[1] else 0.0


def _block_size(gen):
    """The engine's KV-cache block size (vLLM), else None."""
    try:
        return int(gen._llm.llm_engine.vllm_config.cache_config.block_size)
    except AttributeError:
        return None


def _cpu_summary():
    """The CPU the figures were measured on: the model name and the vector units that decide them."""
    try:
        from counterpoint.generators.vllm_local import CPU_NATIVE_BF16_FLAGS, _cpu_flags

        flags = _cpu_flags()
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), None)
    except OSError:
        return None
    return {"model": model, "avx512f": "avx512f" in flags, "native_bf16": sorted(flags & CPU_NATIVE_BF16_FLAGS)}


def _report(args, cfg, gen, load_s, results, job_s, meter, plain, plain_after=None, replay=None):
    rounds = meter.rounds
    sample_tokens = sum(r.get("sample_tokens", 0) for r in rounds)
    rollout_tokens = sum(r["generated_tokens"] for r in rounds)
    prompt = sum(r["prompt_tokens"] for r in rounds)
    cached = sum(r["cached_prompt_tokens"] for r in rounds)
    stat = lambda k: sum(int(r.stats.get(k, 0)) for r in results)  # noqa: E731
    screened = {}
    for r in results:
        screened[r.stats.get("screening")] = screened.get(r.stats.get("screening"), 0) + 1
    kept = screened.get("kept", 0)
    job_tokens = sample_tokens + rollout_tokens
    job_tps = job_tokens / job_s if job_s else 0.0
    # The reference is plain measured before AND after the job (pooled): the machine's rate drifts over
    # a long job, and one side alone would charge (or credit) the schedule with that drift.
    both = [m for m in (plain, plain_after) if m and m[1]]
    plain_tps = sum(m[0] for m in both) / sum(m[1] for m in both) if both else 0.0
    replay_tps = _rate(replay)
    capacity = gen.capacity
    mean_inflight = meter.weighted_inflight / meter.in_engine if meter.in_engine else 0.0
    mean_running = meter.weighted_running / meter.in_engine if meter.in_engine else 0.0
    o = cfg.labeling_config.omegaprm
    wasted_tokens = stat("prefetch_wasted_tokens")
    engine_tokens = meter.timeline[-1][1] if meter.timeline and meter.timeline[-1][1] is not None else None
    budget = meter.budget or capacity
    last_sample = meter.last_sample_t or 0.0
    engine_running = _mean_running(meter.base_occupancy, meter.timeline[-1][4] if meter.timeline else None)
    return {
        "generator": args.generator, "model": gen.model_id, "defaults": args.defaults,
        "compile": getattr(cfg.generator, "compile", None), "engine_load_s": round(load_s, 2),
        "dtype": getattr(gen, "resolved_dtype", None), "cpu": _cpu_summary(), "kv_block_size": _block_size(gen),
        "engine_capacity": capacity, "problems": len(results), "samples": cfg.samples_per_problem, "k": o.k,
        "search_limit": o.search_limit, "parallel_searches": o.parallel_searches, "adaptive": o.adaptive,
        "max_tokens": cfg.sampling.max_tokens, "screening": screened,
        "job": {"seconds": round(job_s, 2), "generated_tokens": job_tokens, "tokens_per_s": round(job_tps, 2),
                "polls": len(rounds), "engine_share_of_time": round(meter.in_engine / job_s, 3) if job_s else None,
                "mean_inflight_sequences": round(mean_inflight, 1),
                "mean_running_sequences": round(mean_running, 1),
                "inflight_share_of_capacity": round(mean_running / capacity, 3) if capacity else None,
                # The engine's own count, step by step (a finished sample frees its slot at once).
                "engine_running_sequences": engine_running,
                "engine_running_share_of_capacity": round(engine_running / capacity, 3)
                if engine_running is not None and capacity else None,
                "stream_budget": budget,
                "inflight_share_of_budget": round(min(mean_inflight, budget) / budget, 3) if budget else None,
                "engine_tokens": engine_tokens,
                "engine_tokens_per_s": round(engine_tokens / job_s, 2) if engine_tokens and job_s else None,
                "useful_tokens": job_tokens - wasted_tokens,
                "useful_saturation": round((job_tokens - wasted_tokens) / job_s / plain_tps, 3)
                if plain_tps and job_s else None},
        "phases": {"sampling_tokens": sample_tokens, "rollout_tokens": rollout_tokens,
                   "last_sample_back_s": round(meter.last_sample_t or 0.0, 2),
                   "rollout_tokens_per_kept_tree": round(rollout_tokens / kept, 1) if kept else None,
                   "rollouts": stat("rollouts"), "label_rollouts": stat("label_rollouts"),
                   "value_rollouts": stat("value_rollouts"), "step_label_rows": stat("step_label_rows"),
                   # While problems are still sampling / once only tree searches are left (the labelling phase
                   # alone): engine tokens per second over each window, against plain.
                   "sampling_window": meter.window(0.0, last_sample, plain_tps),
                   "labelling_only_window": meter.window(last_sample, job_s + 1.0, plain_tps)},
        "speculation": {k: stat(k) for k in ("prefetched", "prefetch_used", "prefetch_wasted",
                                              "prefetch_wasted_tokens", "speculative_aborted")},
        "plain": {"generated_tokens": sum(m[0] for m in both), "seconds": round(sum(m[1] for m in both), 2),
                  "tokens_per_s": round(plain_tps, 2), "before_tokens_per_s": round(_rate(plain), 2),
                  "after_tokens_per_s": round(_rate(plain_after), 2) if plain_after else None,
                  "engine_running_sequences": [m[2] for m in both]},
        "saturation": round(job_tps / plain_tps, 3) if plain_tps else None,
        "saturation_vs_plain_before": round(job_tps / _rate(plain), 3) if _rate(plain) else None,
        "saturation_vs_plain_after": round(job_tps / _rate(plain_after), 3) if _rate(plain_after) else None,
        # The job's own requests (second half) replayed with a full queue: the workload's ceiling on this
        # engine. ceiling = replay / plain; schedule_efficiency = the job's second half / replay.
        "workload_replay": None if not replay else {
            "engine_tokens": replay[0], "seconds": round(replay[1], 2), "requests": replay[2],
            "tokens_per_s": round(replay_tps, 2), "segments": args.replay_segments,
            "engine_running_sequences": replay[3],
            "ceiling": round(replay_tps / plain_tps, 3) if plain_tps else None,
            "job_second_half": meter.window(job_s / 2, job_s + 1.0, replay_tps),
        },
        "prefix_cache_hit_share": round(cached / prompt, 3) if prompt else None,
        "targets": {"saturation": 0.95, "inflight_share_of_capacity": 0.90},
        # Each searched tree: when its samples were back (it starts) and when it ended, and its work: a job's
        # tail is its last trees, and whether they are long because they started late or hold much work.
        "trees": meter.trees,
        "timeline": _timeline(meter.timeline, 300),
        "rounds_sampled": rounds[:: max(1, len(rounds) // 200)],
    }


def _timeline(points, most: int):
    """At most ``most`` timeline points: seconds, engine tokens, sequences in flight (whole requests) and
    the engine's own sequences decoding since the point before (step-weighted)."""
    out, prev = [], None
    for t, tok, run, _, occ in points[:: max(1, len(points) // most)]:
        out.append({"t": round(t, 1), "engine_tokens": tok, "running": run,
                    "engine_running": _mean_running(prev, occ)})
        prev = occ
    return out


def main(argv=None):
    args = _args(argv)
    from counterpoint.generators import build_generator
    from counterpoint.verifiers.suite import VerifierSuite

    cfg, n, min_ops, max_ops = _config(args)
    t0 = time.perf_counter()
    gen = build_generator(cfg.generator)
    gen.load()
    load_s = time.perf_counter() - t0
    suite = VerifierSuite("auto")
    problems = _problems(args, n, min_ops, max_ops)
    print(f"engine up in {load_s:.1f}s (capacity {gen.capacity}); job: {n} problems x {cfg.samples_per_problem} "
          f"samples, k={cfg.labeling_config.omegaprm.k}", flush=True)
    # The baseline first (its size does not depend on the job): a timed-out job still leaves it printed.
    per_batch = max(1, -(-(gen.capacity or 256) * 3 // (2 * cfg.samples_per_problem)))
    plain = _plain(args, cfg, gen, per_batch, args.plain_tokens)
    print(f"plain: {plain[0]} tokens in {plain[1]:.1f}s = {plain[0] / plain[1]:.1f} tok/s "
          f"({plain[2]} sequences decoding)", flush=True)
    by_requests = None
    if args.generator != "scripted":
        by_requests = _plain(args, cfg, gen, per_batch, args.plain_tokens, seed_base=2_000_000, by_engine=False)
        print(f"plain, queue counted by requests: {_rate(by_requests):.1f} tok/s ({by_requests[2]} sequences "
              f"decoding)", flush=True)
    meter = _Meter(gen, n, args.progress_s)
    results, job_s = _job(cfg, gen, suite, problems, meter)
    job_tokens = sum(r["generated_tokens"] + r.get("sample_tokens", 0) for r in meter.rounds)
    print(f"job done in {job_s:.1f}s ({job_tokens} tokens)", flush=True)
    replay = _replay(args, gen, meter, job_s)
    if replay:
        print(f"replay: {replay[0]} tokens in {replay[1]:.1f}s = {_rate(replay):.1f} tok/s", flush=True)
    plain_after = _plain(args, cfg, gen, per_batch, args.plain_tokens, seed_base=1_000_000)
    print(f"plain after: {plain_after[0]} tokens in {plain_after[1]:.1f}s = {_rate(plain_after):.1f} tok/s",
          flush=True)
    result = _report(args, cfg, gen, load_s, results, job_s, meter, plain, plain_after, replay)
    if by_requests:
        result["plain_counted_by_requests"] = {
            "tokens_per_s": round(_rate(by_requests), 2), "engine_running_sequences": by_requests[2],
            "saturation_against_it": round(result["job"]["tokens_per_s"] / _rate(by_requests), 3)}
    suite.close()
    j, ph, sp = result["job"], result["phases"], result["speculation"]
    print(f"{'':<24}{'tokens':>10}{'seconds':>10}{'tok/s':>10}")
    print(f"{'whole job (stream)':<24}{j['generated_tokens']:>10}{j['seconds']:>10.1f}{j['tokens_per_s']:>10.1f}")
    pl = result["plain"]
    print(f"{'plain (before + after)':<24}{pl['generated_tokens']:>10}{pl['seconds']:>10.1f}{pl['tokens_per_s']:>10.1f}"
          f"   (before {pl['before_tokens_per_s']}, after {pl['after_tokens_per_s']})")
    print(f"saturation {result['saturation']} (target 0.95); mean in flight {j['mean_inflight_sequences']} "
          f"(running {j['mean_running_sequences']} of {result['engine_capacity']}: {j['inflight_share_of_capacity']}; "
          f"the engine's own count {j['engine_running_sequences']}); polls {j['polls']}; "
          f"phases: sampling {ph['sampling_tokens']} tok (last back at {ph['last_sample_back_s']}s), rollouts "
          f"{ph['rollout_tokens']} tok, {ph['rollout_tokens_per_kept_tree']} per kept tree; screening "
          f"{result['screening']}; speculation {sp}; prefix-cache hit share {result['prefix_cache_hit_share']}")
    print(f"engine tokens (aborted included) {j['engine_tokens']} = {j['engine_tokens_per_s']} tok/s; "
          f"useful tokens (wasted speculation out) {j['useful_tokens']}: useful saturation {j['useful_saturation']}; "
          f"in flight vs the stream's budget {j['stream_budget']}: {j['inflight_share_of_budget']}")
    for name in ("sampling_window", "labelling_only_window"):
        print(f"{name}: {ph[name]}")
    if result["workload_replay"]:
        w = result["workload_replay"]
        print(f"workload replay: {w['tokens_per_s']} tok/s = {w['ceiling']} of plain (the ceiling of this work); "
              f"the job's second half: {w['job_second_half']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
