"""Pay once per generation: per-problem request ledgers and batched problem checkpoints.

Both live under ``<output>/_work/`` (see :mod:`counterpoint.storage`) and go
through Beam's ``FileSystems``, so local disk, ``gs://`` and ``s3://`` all work.
Object stores bill per request, so neither writes one object per request:

* :class:`RequestCache` — one **ledger** object per problem (requests are grouped by
  their prompt: system + user messages) holding every finished request of that problem:
  key = hash of (model fingerprint, messages, sampling parameters, seed, n), value = the
  ``n`` completions. A stage flushes the ledgers it changed once per engine call (and
  every ``flush_every_s`` while a long labelling call streams), so a retried bundle or a
  resumed run reuses finished generations byte for byte. About one object per problem.
* :class:`ProblemCheckpoints` — finished problem states, one gzipped JSON-lines object
  per batch of problems (each engine call's batch). A rerun into the same output folder
  reads them *inside the pipeline* (:class:`ReadCheckpoints`) and joins them with the
  problems by id, so finished problems are skipped without any per-problem lookup.

Writes are atomic (a reader sees a whole object or none), so a killed worker never
leaves a torn entry that a resumed run would trust.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam

from counterpoint import storage
from counterpoint.generators.base import Completion, GenerationRequest, Generator, PicklableLock
from counterpoint.schemas import content_id
from counterpoint.state import ProblemState

log = logging.getLogger(__name__)

WORK_DIR = storage.WORK_DIR


def request_group(request: GenerationRequest) -> str:
    """The ledger a request belongs to: its problem, named by the prompt (every message but the assistant's)."""
    prompt = [m for m in request.messages if m[0] != "assistant"]
    return content_id("ledger", prompt, length=24)


class RequestCache(PicklableLock):
    """Finished completions by request key, one ledger object per problem.

    ``root`` is the cache folder of one model (``OutputLayout.cache_dir``). Loaded ledgers stay in
    memory while their problem is being worked on (at most ``max_ledgers``, least recently used go).
    """

    def __init__(self, root: str, model_fingerprint: str, *, flush_every_s: float = 60.0, max_ledgers: int = 2048):
        self.root = root
        self.model_fingerprint = model_fingerprint
        self.flush_every_s = flush_every_s
        self.max_ledgers = max_ledgers
        self.hits = 0
        self.misses = 0
        self.tokens_saved = 0
        self.objects_written = 0
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._ledgers: "collections.OrderedDict[str, Dict[str, dict]]" = collections.OrderedDict()
        self._dirty: set = set()
        self._last_flush = time.monotonic()

    def __getstate__(self):
        state = super().__getstate__()
        for k in ("_ledgers", "_dirty", "_last_flush"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def _path(self, group: str) -> str:
        return storage.join(self.root, group[:2], f"{group}.json")

    def _ledger(self, group: str) -> Dict[str, dict]:
        ledger = self._ledgers.get(group)
        if ledger is None:
            data = storage.read_json(self._path(group))
            ledger = data.get("entries", {}) if isinstance(data, dict) else {}
            self._ledgers[group] = ledger
            self._evict()
        else:
            self._ledgers.move_to_end(group)
        return ledger

    def _evict(self) -> None:
        while len(self._ledgers) > self.max_ledgers:
            victim = next((g for g in self._ledgers if g not in self._dirty), None)
            if victim is None:
                return
            del self._ledgers[victim]

    def get(self, request: GenerationRequest) -> Optional[List[Completion]]:
        with self._lock:
            entry = self._ledger(request_group(request)).get(request.cache_key(self.model_fingerprint))
        if entry is None:
            return None
        try:
            comps = [Completion.from_dict(d) for d in entry["completions"]]
        except (TypeError, KeyError):  # an entry from another version: regenerate
            log.warning("ignoring unreadable cache entry for %s", request.request_id)
            return None
        return comps if len(comps) == request.n else None

    def put(self, request: GenerationRequest, completions: Sequence[Completion]) -> None:
        group = request_group(request)
        with self._lock:
            self._ledger(group)[request.cache_key(self.model_fingerprint)] = {
                "request_id": request.request_id, "completions": [c.to_dict() for c in completions]}
            self._dirty.add(group)

    def flush(self, force: bool = True) -> int:
        """Writes every changed ledger (with ``force=False`` only if ``flush_every_s`` has passed)."""
        with self._lock:
            if not self._dirty or (not force and time.monotonic() - self._last_flush < self.flush_every_s):
                return 0
            todo = [(g, dict(self._ledgers[g])) for g in self._dirty if g in self._ledgers]
            self._dirty.clear()
            self._last_flush = time.monotonic()
        for group, entries in todo:
            storage.write_json(self._path(group), {"model": self.model_fingerprint, "entries": entries}, indent=None)
        with self._lock:
            self.objects_written += len(todo)
            self._evict()
        return len(todo)

    def lookup(self, requests: Sequence[GenerationRequest]) -> List[Optional[List[Completion]]]:
        """Cached completions per request (None for a miss); counts hits, misses and tokens saved."""
        results = [self.get(r) for r in requests]
        with self._lock:
            self.hits += sum(r is not None for r in results)
            self.misses += sum(r is None for r in results)
            self.tokens_saved += sum(c.num_tokens for r in results if r for c in r)
        return results

    def generate(self, generator: Generator, requests: Sequence[GenerationRequest]) -> List[List[Completion]]:
        """Serves hits from the cache and sends only the misses to the engine, in one call."""
        results = self.lookup(requests)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fresh = generator.generate([requests[i] for i in missing])
            for i, comps in zip(missing, fresh):
                self.put(requests[i], comps)
                results[i] = comps
            self.flush()
        return results  # type: ignore[return-value]


class CachedGenerator(Generator):
    """A generator seen through a :class:`RequestCache`: finished requests are never paid for twice."""

    kind = "cached"

    def __init__(self, inner: Generator, cache: RequestCache):
        super().__init__()
        self.inner = inner
        self.cache = cache

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def model_fingerprint(self) -> str:
        return self.inner.model_fingerprint

    @property
    def capacity(self) -> Optional[int]:
        return self.inner.capacity

    def load(self) -> "CachedGenerator":
        self.inner.load()
        return self

    def _generate(self, requests):
        return self.cache.generate(self.inner, requests)

    @property
    def streaming(self) -> bool:
        return self.inner.streaming

    @property
    def speculation_capacity(self) -> Optional[int]:
        return self.inner.speculation_capacity

    @property
    def priorities(self) -> bool:
        return bool(getattr(self.inner, "priorities", False))

    @property
    def unfinished_sequences(self) -> Optional[int]:
        return getattr(self.inner, "unfinished_sequences", None)

    def submit(self, requests, priority: int = 0):
        """Cache hits are ready at the next poll; misses go to the inner engine (with ``priority`` where
        it takes one)."""
        self.load()
        ready = self.__dict__.setdefault("_ready", [])
        routed = self.__dict__.setdefault("_routed", {})
        handles, misses = [], []
        for req, hit in zip(requests, self.cache.lookup(requests)):
            self._next_handle = getattr(self, "_next_handle", 0) + 1
            handle = self._next_handle
            handles.append(handle)
            if hit is not None:
                ready.append((handle, hit))
            else:
                misses.append((handle, req))
        if misses:
            reqs = [r for _, r in misses]
            inner_handles = self.inner.submit(reqs, priority=priority) if self.priorities else self.inner.submit(reqs)
            for (handle, req), inner_handle in zip(misses, inner_handles):
                routed[inner_handle] = (handle, req)
        return handles

    def poll(self):
        ready, self._ready = self.__dict__.get("_ready", []), []
        if ready:
            return ready
        routed = self.__dict__.get("_routed", {})
        out = []
        for inner_handle, comps in self.inner.poll():
            entry = routed.pop(inner_handle, None)
            if entry is None:
                continue  # a request of an earlier, failed attempt
            handle, req = entry
            self.cache.put(req, comps)
            out.append((handle, comps))
        self.cache.flush(force=False)
        return out

    def flush(self) -> int:
        return self.cache.flush()

    def abort(self, handles) -> None:
        """Cancels requests: cache hits are dropped, misses are aborted in the inner engine."""
        drop = set(handles)
        self._ready = [(h, c) for h, c in self.__dict__.get("_ready", []) if h not in drop]
        routed = self.__dict__.get("_routed", {})
        inner = [ih for ih, (h, _) in routed.items() if h in drop]
        for ih in inner:
            routed.pop(ih)
        if inner and hasattr(self.inner, "abort"):
            self.inner.abort(inner)

    def describe(self):
        return self.inner.describe()


class ProblemCheckpoints:
    """Finished problem states, one ``ckpt-<hash>.jsonl.gz`` object per batch, under ``root``.

    ``root`` is ``OutputLayout.checkpoints_dir(fingerprint)``: the fingerprint names everything
    that shapes a problem's rows (model, sampling, prompt, verifier, labeller, pairing), so a
    rerun with other settings starts afresh instead of silently reusing old results.
    """

    PATTERN = "ckpt-*.jsonl.gz"

    def __init__(self, root: str):
        self.root = root
        self.objects_written = 0

    def save(self, states: Sequence[ProblemState]) -> Optional[str]:
        if not states:
            return None
        ids = sorted(s.problem_id for s in states)
        path = storage.join(self.root, f"ckpt-{content_id(ids, length=24)}.jsonl.gz")
        storage.write_jsonl_gz(path, (s.to_json() for s in states))
        self.objects_written += 1
        return path

    def load_all(self) -> Iterable[ProblemState]:
        """Every checkpointed state (tests and tools; the pipeline reads them with :class:`ReadCheckpoints`)."""
        for path in storage.match(storage.join(self.root, self.PATTERN)):
            for row in storage.read_jsonl_gz(path):
                yield ProblemState.from_json(row)


def _read_checkpoint_object(path: str):
    for row in storage.read_jsonl_gz(path):
        state = ProblemState.from_json(row)
        yield state.problem_id, state


class ReadCheckpoints(beam.PTransform):
    """``(problem_id, ProblemState)`` for every checkpointed problem under ``root`` (none on a first run)."""

    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def expand(self, pbegin):
        return (
            pbegin
            | "CheckpointPattern" >> beam.Create([storage.join(self.root, ProblemCheckpoints.PATTERN)])
            | "MatchCheckpoints" >> beam.FlatMap(storage.match)
            | "SpreadCheckpoints" >> beam.Reshuffle()
            | "ReadCheckpointObjects" >> beam.FlatMap(_read_checkpoint_object)
        )
