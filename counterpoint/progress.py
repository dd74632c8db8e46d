"""Progress people expect: one live line on stderr, and the same figures as Beam metrics.

Stages call :func:`report` (``report("sample", problems=32, samples=256, tokens=24000)``).
Every value becomes a Beam counter ``counterpoint/<stage>_<name>`` — what the
Dataflow and Flink UIs show — and, when the driver runs a :class:`LiveProgress` in
the same process (Beam's in-process FnApiRunner, the default local runner), it
updates the live display directly. On runners whose ``run()`` returns while the
job runs (portable/Flink/Dataflow), the driver polls the job's metrics into the
same display (:meth:`LiveProgress.poll`).

The display is one line, rewritten in place on a terminal::

    sample 24/24 · verify 24/24 · label 9/24 · 1,536 samples · 4,210 rollouts · 30,052 tokens · 231 tok/s · 2m10s · ETA 3m05s

Not on a terminal (CI, log files) it prints the same line at most every 30 s through
logging; ``--quiet`` silences both.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Dict, Optional

from apache_beam.metrics import Metrics

log = logging.getLogger("counterpoint.progress")

NAMESPACE = "counterpoint"
STAGES = ("read", "sample", "verify", "label", "judge", "write")
_ACTIVE: Optional["LiveProgress"] = None
_ACTIVE_LOCK = threading.Lock()


def report(stage: str, **values: float) -> None:
    """Adds ``values`` to the stage's counters (Beam metrics, and the live display if one runs here)."""
    for name, value in values.items():
        if value:
            Metrics.counter(NAMESPACE, f"{stage}_{name}").inc(int(round(value)))
    live = _ACTIVE
    if live is not None:
        live.add(stage, values)


def distribution(name: str, value: float) -> None:
    """A Beam distribution (min / max / mean in the runner's UI), e.g. tokens per problem."""
    Metrics.distribution(NAMESPACE, name).update(int(round(value)))


def _fmt_int(n: float) -> str:
    return f"{int(n):,}"


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class LiveProgress:
    """The driver's progress line. Use as a context manager around the pipeline run.

    ``total``: problems expected (None while unknown: then the read count stands in).
    ``stages``: the problem stages this run has, in order (e.g. ``("sample", "verify", "label")``).
    """

    def __init__(self, *, total: Optional[int], stages, enabled: bool = True, stream=None,
                 interval_s: float = 0.5, log_every_s: float = 30.0, sampling_token_budget: Optional[int] = None):
        self.total = total
        # Most tokens the sampling stage can generate (problems x samples x max_tokens): an upper-bound
        # ETA while a batch decodes and no problem has completed yet.
        self.sampling_token_budget = sampling_token_budget
        self.stages = tuple(stages)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s
        self.log_every_s = log_every_s
        self.counts: Dict[str, float] = {}
        self.first_seen: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = time.monotonic()
        self._last_log = 0.0
        self._width = 0

    # -- feeding -----------------------------------------------------------------------
    def add(self, stage: str, values: Dict[str, float]) -> None:
        now = time.monotonic()
        with self._lock:
            for name, value in values.items():
                key = f"{stage}_{name}"
                self.counts[key] = self.counts.get(key, 0) + (value or 0)
            self.first_seen.setdefault(stage, now)

    def set_counts(self, counts: Dict[str, float]) -> None:
        """Replaces the figures with committed/attempted metric values polled from a running job."""
        now = time.monotonic()
        with self._lock:
            for key, value in counts.items():
                if value and key not in self.counts:
                    self.first_seen.setdefault(key.split("_", 1)[0], now)
                self.counts[key] = value

    def poll(self, result, stop_when_done: bool = True, every_s: float = 2.0) -> None:
        """Polls ``result.metrics()`` of a job that runs elsewhere until it reaches a terminal state."""
        from apache_beam.metrics.metric import MetricsFilter
        from apache_beam.runners.runner import PipelineState

        while True:
            state = getattr(result, "state", None)  # read first: the query below then sees at least as much
            if getattr(result, "_metrics", None) is not None:
                result._metrics = None  # the portable runner caches its first (mid-run) answer forever
            try:
                query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
                counts = {}
                for c in query.get("counters", []):
                    value = c.committed if c.committed is not None else c.attempted
                    counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + (value or 0)
                if counts:
                    self.set_counts(counts)
            except Exception:  # noqa: BLE001 - some runners report metrics only at the end
                pass
            if not stop_when_done or state is None or PipelineState.is_terminal(state):
                return
            time.sleep(every_s)

    # -- rendering ---------------------------------------------------------------------
    def _get(self, key: str) -> float:
        return self.counts.get(key, 0)

    def line(self) -> str:
        with self._lock:
            total = self.total if self.total is not None else int(self._get("read_problems")) or None
            parts = []
            etas = []
            now = time.monotonic()
            resumed = self._get("resume_problems")  # finished by an earlier run: done for every stage
            for stage in self.stages:
                done = self._get(f"{stage}_problems") + resumed
                parts.append(f"{stage} {_fmt_int(done)}/{_fmt_int(total) if total else '?'}")
                started = self.first_seen.get(stage)
                worked = done - resumed
                if total and started is not None and worked > 0 and done < total:
                    rate = worked / max(now - started, 1e-6)
                    etas.append((total - done) / rate)
            samples = self._get("sample_samples")
            rollouts = self._get("label_rollouts")
            elapsed = now - self._started
            # The engine's own count moves while requests decode; stages count tokens only when a
            # problem completes. Rate over the time since tokens started flowing (not engine load).
            engine_tokens = self._get("engine_tokens")
            if engine_tokens:
                tokens, since = engine_tokens, self.first_seen.get("engine", self._started)
            else:
                tokens = self._get("sample_tokens") + self._get("label_tokens") + self._get("judge_tokens")
                since = self._started
            parts.append(f"{_fmt_int(samples)} samples")
            if "label" in self.stages:
                parts.append(f"{_fmt_int(rollouts)} rollouts")
            rate = tokens / max(now - since, 1e-6)
            parts.append(f"{_fmt_int(tokens)} tokens")
            parts.append(f"{rate:,.0f} tok/s")
            parts.append(_fmt_duration(elapsed))
            all_done = total and all(self._get(f"{s}_problems") + resumed >= total for s in self.stages)
            if etas:
                parts.append(f"ETA {_fmt_duration(max(etas))}")
            elif not all_done and engine_tokens and self.sampling_token_budget and not self._get("sample_problems"):
                # nothing completed yet: at most the budget's remaining tokens at the current rate
                left = max(self.sampling_token_budget - engine_tokens, 0) / max(rate, 1e-6)
                parts.append(f"ETA ≤ {_fmt_duration(left)}")
            elif not all_done:
                parts.append("ETA ?")
            return " · ".join(parts)

    def render(self, final: bool = False) -> None:
        if not self.enabled:
            return
        text = self.line()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self.stream.flush()
            self._width = len(text)
        else:
            now = time.monotonic()
            if final or now - self._last_log >= self.log_every_s:
                self._last_log = now
                log.info("progress: %s", text)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s if self.tty else 1.0):
            self.render()

    def __enter__(self) -> "LiveProgress":
        global _ACTIVE
        with _ACTIVE_LOCK:
            _ACTIVE = self
        self._started = time.monotonic()
        self._last_log = self._started
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="counterpoint-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        global _ACTIVE
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.render(final=True)
        with _ACTIVE_LOCK:
            if _ACTIVE is self:
                _ACTIVE = None
        return False
