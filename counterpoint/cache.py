"""Pay once per generation: a request cache and per-problem checkpoints on the output filesystem.

Both live under ``<output>/_work/`` and go through Beam's ``FileSystems`` so they
work on local disk, ``gs://`` and ``s3://`` alike. Every file is written under a
temporary name and renamed into place, so a killed worker leaves either a whole
entry or none — never a torn one that a resumed run would trust.

* :class:`RequestCache` — key: hash of (model fingerprint, messages, sampling
  parameters, seed, n) from :meth:`GenerationRequest.cache_key`; value: the
  ``n`` completions. A retried bundle or a resumed run reuses them.
* :class:`ProblemCheckpoints` — the finished state of one problem (all its
  output rows). A rerun into the same output directory skips finished problems.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from counterpoint.generators.base import Completion, GenerationRequest, Generator, PicklableLock
from counterpoint.schemas import content_id

log = logging.getLogger(__name__)

WORK_DIR = "_work"


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as f:
        f.write(data)
    try:
        FileSystems.rename([tmp], [path])
    except Exception:
        # Another worker wrote the same entry first: equal content by construction.
        FileSystems.delete([tmp])
        if not FileSystems.exists(path):
            raise


def _read(path: str) -> Optional[bytes]:
    try:
        with FileSystems.open(path) as f:
            return f.read()
    except Exception:
        return None


def _ensure_dir(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except Exception:  # exists already, or an object store without directories
        pass


class RequestCache(PicklableLock):
    """Completions by request key under ``<root>/cache/<k[:2]>/<k>.json``."""

    def __init__(self, output_dir: str, model_fingerprint: str):
        self.root = _join(output_dir, WORK_DIR, "cache")
        self.model_fingerprint = model_fingerprint
        self.hits = 0
        self.misses = 0
        self.tokens_saved = 0
        self._lock = threading.Lock()

    def _path(self, key: str) -> str:
        return _join(self.root, key[:2], f"{key}.json")

    def get(self, request: GenerationRequest) -> Optional[List[Completion]]:
        raw = _read(self._path(request.cache_key(self.model_fingerprint)))
        if raw is None:
            return None
        try:
            comps = [Completion.from_dict(d) for d in json.loads(raw)["completions"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable cache entry for %s", request.request_id)
            return None
        return comps if len(comps) == request.n else None

    def put(self, request: GenerationRequest, completions: Sequence[Completion]) -> None:
        key = request.cache_key(self.model_fingerprint)
        _ensure_dir(_join(self.root, key[:2]))
        body = {"request_id": request.request_id, "completions": [c.to_dict() for c in completions]}
        _atomic_write(self._path(key), json.dumps(body, ensure_ascii=False).encode("utf-8"))

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
        return results  # type: ignore[return-value]


class ProblemCheckpoints:
    """One JSON file per finished problem under ``<output>/_work/problems/<fingerprint>/``.

    ``fingerprint`` identifies everything that shapes a problem's rows (model, sampling,
    prompt, verifier, labeller, pairing): a rerun with other settings starts afresh
    instead of silently reusing results made under the old ones.
    """

    def __init__(self, output_dir: str, fingerprint: str):
        self.root = _join(output_dir, WORK_DIR, "problems", fingerprint)

    def _path(self, problem_id: str) -> str:
        return _join(self.root, f"{content_id(problem_id, length=24)}.json")

    def save(self, state: Dict[str, Any]) -> None:
        _ensure_dir(self.root)
        _atomic_write(self._path(state["problem"]["problem_id"]), json.dumps(state, ensure_ascii=False).encode("utf-8"))

    def load(self, problem_id: str) -> Optional[Dict[str, Any]]:
        raw = _read(self._path(problem_id))
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        return state if state.get("problem", {}).get("problem_id") == problem_id else None

    def finished_paths(self) -> Dict[str, str]:
        """Maps checkpoint file names to paths (cheap listing, no reads)."""
        try:
            matches = FileSystems.match([_join(self.root, "*.json")])[0].metadata_list
        except Exception:
            return {}
        return {m.path.rsplit("/", 1)[-1]: m.path for m in matches}

    def is_finished(self, problem_id: str, listing: Dict[str, str]) -> bool:
        return f"{content_id(problem_id, length=24)}.json" in listing


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

    def load(self) -> "CachedGenerator":
        self.inner.load()
        return self

    def _generate(self, requests):
        return self.cache.generate(self.inner, requests)

    @property
    def streaming(self) -> bool:
        return self.inner.streaming

    def submit(self, requests):
        """Cache hits are ready at the next poll; misses go to the inner engine."""
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
            for (handle, req), inner_handle in zip(misses, self.inner.submit([r for _, r in misses])):
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
        return out

    def describe(self):
        return self.inner.describe()
