"""MathVerifier: math-verify run in a small, owned pool of ``spawn``-ed processes.

Why processes: math-verify's own timeout uses ``signal.alarm``, which only works
on the main thread, and Beam runs DoFns in threads; sympy can also hang or blow
up on adversarial input. Each worker runs math-verify on its own main thread
with math-verify's timeouts disabled, and the parent enforces a hard per-item
timeout: a worker that does not answer within ``timeout_s`` is killed and
replaced, and the item is ``unknown``/``verifier_timeout``; a worker that dies on
an item gives ``unknown``/``verifier_crash``.

What a worker decides (``_worker._Judge``): a number gold and a number answer (units dropped,
``extract.parse_quantity``) are compared by ``extract.quantities_match`` — the numeric verifier's
rule, so the two verifiers agree on numbers; anything else goes to math-verify with its leaf
equality replaced by the exact check of ``exact.py`` (no float closeness between exact
expressions; an equality it cannot confirm is ``unknown``/``unconfirmed_equivalence``) and with
math-verify's own unit removal off (it drops a trailing "c", "s", "ab", "more", ...).

Workers are started with the ``spawn`` context (never ``fork``: the parent may
hold a vLLM engine and threads), lazily on first use; :meth:`MathVerifier.close`
stops them. Like any ``spawn`` user, the program's ``__main__`` must be
import-safe (``if __name__ == "__main__":`` guard).
"""

from __future__ import annotations

import collections
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from counterpoint.verifiers import _worker, base
from counterpoint.verifiers.base import Verdict, Verifier
from counterpoint.verifiers.extract import extract_final_answer

log = logging.getLogger(__name__)


def _math_verify_version() -> str:
    try:
        return f"math-verify=={importlib.metadata.version('math-verify')} {base.RULES_VERSION}"
    except importlib.metadata.PackageNotFoundError:
        return f"math-verify==missing {base.RULES_VERSION}"


class VerifierStartupError(RuntimeError):
    """A worker could not start (math-verify missing, bad fault_injector, ...)."""


class _Worker:
    __slots__ = ("proc", "conn", "ready", "job", "deadline", "start_deadline")

    def __init__(self, proc, conn, start_deadline: float):
        self.proc = proc
        self.conn = conn
        self.ready = False
        self.job = None  # (index, completion, answer, gold) in flight
        self.deadline = 0.0
        self.start_deadline = start_deadline

    def kill(self) -> None:
        try:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=5)
        except (OSError, ValueError, AssertionError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            self.proc.close()
        except (ValueError, AttributeError):
            pass

    def stop(self, grace_s: float = 1.0) -> None:
        try:
            if self.proc.is_alive() and self.job is None:
                self.conn.send(None)
                self.proc.join(timeout=grace_s)
        except (OSError, ValueError, AssertionError):
            pass
        self.kill()


class MathVerifier(Verifier):
    """Equivalence of LaTeX / symbolic answers with the ``math_verify`` library.

    Args:
        timeout_s: hard wall-clock limit per item (parse gold + parse answer + verify).
        pool_size: number of worker processes; a batch's items are spread over them.
        fault_injector: ``"module:function"`` called in the worker as
            ``function(completion, gold)`` before each item is verified (tests use it
            to inject hangs and crashes). Must be importable in a fresh process.
        start_timeout_s: how long a worker may take to start (import + warm-up).
        mp_context: ``"spawn"`` (default) or ``"forkserver"``; never ``"fork"``.

    Thread-safe: calls from several threads are serialized on one pool; use
    :meth:`verify_batch` for throughput.
    """

    name = "math"

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        pool_size: int = 2,
        fault_injector: Optional[str] = None,
        start_timeout_s: float = 120.0,
        mp_context: str = "spawn",
    ):
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError("mp_context must be 'spawn' or 'forkserver' (never fork)")
        if fault_injector is not None and ":" not in fault_injector:
            raise ValueError(f"fault_injector must be 'module:function', got {fault_injector!r}")
        self.timeout_s = float(timeout_s)
        self.pool_size = int(pool_size)
        self.fault_injector = fault_injector
        self.start_timeout_s = float(start_timeout_s)
        self.mp_context = mp_context
        self.version = _math_verify_version()
        self._init_runtime()

    # --- pickling: configuration only, never process handles ------------------
    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._workers: List[_Worker] = []
        self._owner_pid = os.getpid()
        self._seq = 0
        self.stats = collections.Counter()  # items, timeouts, crashes, restarts

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_lock", "_workers", "_owner_pid", "_seq", "stats"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    # --- public API -------------------------------------------------------------
    def verify(self, completion: str, gold: str, *, truncated: bool = False) -> Verdict:
        return self.verify_batch([(completion, gold, truncated)])[0]

    def verify_batch(self, items: Sequence[Tuple[str, str, bool]]) -> List[Verdict]:
        verdicts: List[Optional[Verdict]] = [None] * len(items)
        answers: List[Optional[str]] = [None] * len(items)
        jobs = []
        for i, (completion, gold, truncated) in enumerate(items):
            answer = extract_final_answer(completion or "")
            answers[i] = answer
            if truncated:
                verdicts[i] = base.incorrect(base.REASON_TRUNCATED, answer)
            elif answer is None:
                verdicts[i] = base.incorrect(base.REASON_NO_FINAL_ANSWER, None)
            else:
                jobs.append((i, completion, answer, gold))
        if jobs:
            with self._lock:
                results = self._run(jobs)
            for i, (verdict, reason) in results.items():
                verdicts[i] = base.Verdict(verdict, reason, answers[i])
        return verdicts  # type: ignore[return-value]

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            workers, self._workers = self._workers, []
            if os.getpid() != self._owner_pid:
                return  # inherited handles (forked copy): not ours to stop
            for w in workers:
                w.stop()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def worker_pids(self) -> List[int]:
        return [w.proc.pid for w in self._workers]

    # --- pool ----------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        ctx = multiprocessing.get_context(self.mp_context)
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_worker.worker_main,
            args=(child_conn, self.fault_injector, os.getpid()),
            name="counterpoint-math-verify",
            # a daemonic process may not have children; fall back to non-daemon
            # (workers still exit on their own when the parent goes away).
            daemon=not multiprocessing.current_process().daemon,
        )
        proc.start()
        child_conn.close()
        self.stats["starts"] += 1
        return _Worker(proc, parent_conn, time.monotonic() + self.start_timeout_s)

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = self._start_worker()
        self.stats["restarts"] += 1

    def _ensure_pool(self, n: int) -> None:
        if os.getpid() != self._owner_pid:  # forked copy: never touch the parent's workers
            self._workers = []
            self._owner_pid = os.getpid()
        while len(self._workers) < min(n, self.pool_size):
            self._workers.append(self._start_worker())

    def _startup_failed(self, slot: int, why: str) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []
        raise VerifierStartupError(f"math-verify worker {slot} failed to start: {why}")

    def _run(self, jobs: List[Tuple[int, str, str, str]]) -> Dict[int, Tuple[str, Optional[str]]]:
        """Long: the worker-process protocol (start, timeout, crash, restart) is handled in one loop."""
        self._ensure_pool(len(jobs))
        pending = collections.deque(jobs)
        results: Dict[int, Tuple[str, Optional[str]]] = {}
        workers = self._workers

        while pending or any(w.job is not None for w in workers):
            now = time.monotonic()
            # 1. hand out work to idle, ready workers
            for w in workers:
                if w.ready and w.job is None and pending:
                    job = pending.popleft()
                    self._seq += 1
                    try:
                        w.conn.send((self._seq,) + job[1:])
                    except (OSError, ValueError):
                        # died while idle: the item was never taken; retry it elsewhere
                        pending.appendleft(job)
                        self._replace(workers.index(w))
                        continue
                    w.job = (self._seq, job[0])
                    w.deadline = now + self.timeout_s

            # 2. wait for a message, a death, or the nearest deadline
            deadlines = [w.deadline if w.ready else w.start_deadline for w in workers if w.job is not None or not w.ready]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            handles = [h for w in workers for h in (w.conn, w.proc.sentinel)]
            multiprocessing.connection.wait(handles, timeout=wait_s)

            # 3. collect messages, then deaths, then timeouts
            now = time.monotonic()
            for slot in range(len(workers)):
                w = workers[slot]
                dead = False
                try:
                    while w.conn.poll():
                        msg = w.conn.recv()
                        kind = msg[0]
                        if kind == "ready":
                            w.ready = True
                        elif kind == "fatal":
                            self._startup_failed(slot, msg[1])
                        elif kind == "result":
                            _, seq, verdict, reason, detail = msg
                            if w.job is not None and w.job[0] == seq:
                                results[w.job[1]] = (verdict, reason)
                                if detail:
                                    log.warning("math-verify error on batch item %d: %s", w.job[1], detail)
                                w.job = None
                                self.stats["items"] += 1
                except (EOFError, OSError):
                    dead = True
                if not dead and not w.proc.is_alive():
                    dead = True
                if dead:
                    if not w.ready:
                        self._startup_failed(slot, f"exited with code {w.proc.exitcode} before ready")
                    if w.job is not None:
                        results[w.job[1]] = (base.VERDICT_UNKNOWN, base.REASON_VERIFIER_CRASH)
                        self.stats["crashes"] += 1
                        log.warning("math-verify worker pid %s died (exitcode %s) on an item", w.proc.pid, w.proc.exitcode)
                        w.job = None
                    self._replace(slot)
                    continue
                if w.job is not None and now >= w.deadline:
                    results[w.job[1]] = (base.VERDICT_UNKNOWN, base.REASON_VERIFIER_TIMEOUT)
                    self.stats["timeouts"] += 1
                    log.warning("math-verify item exceeded %.1fs; killing worker pid %s", self.timeout_s, w.proc.pid)
                    w.job = None
                    self._replace(slot)
                elif not w.ready and now >= w.start_deadline:
                    self._startup_failed(slot, f"not ready after {self.start_timeout_s:.0f}s")
        return results
