"""Per-problem trajectory dedup: exact (normalised text) and near-duplicate (MinHash + LSH banding), number-aware.

Input: one problem's trajectory rows (verdicts filled). Output: the same rows with ``duplicate_of`` set to
the id of the kept row of its cluster (null on kept rows); rows are never removed, so sampling statistics
(``problem_stats``, rewards) stay honest, while pairing, unpaired rows, labelling and exports skip rows
whose ``duplicate_of`` is set.

* **exact**: equal :func:`counterpoint.clean.text.normalize` text (case, whitespace, punctuation, number
  formats).
* **near**: MinHash (Broder 1997) of word ``shingle``-grams with ``num_perm`` hash functions, banded
  (LSH, Indyk & Motwani 1998; as in ``datasketch.MinHashLSH``) into ``bands`` bands: rows sharing a band are
  candidates, confirmed by their exact shingle Jaccard >= ``threshold``. Beam-free and dependency-free
  (stable crc32 hashes, so every worker finds the same candidates).
* **number-aware**: a duplicate must also have the same sequence of numbers, the same verdict and the same
  final answer — two solutions that differ in one number are a near-miss pair, never duplicates.

The kept row of a cluster is the lowest ``sample_index``.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from counterpoint.clean import text as T

_PRIME = (1 << 31) - 1


@dataclasses.dataclass
class DedupConfig:
    """``dedup:`` in the run config. ``near: false`` keeps only the exact rule."""

    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    shingle: int = 3
    num_perm: int = 64
    bands: int = 16

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1], got {self.threshold}")
        if self.shingle < 1:
            raise ValueError(f"dedup.shingle must be >= 1, got {self.shingle}")
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(f"dedup.num_perm ({self.num_perm}) must be a positive multiple of dedup.bands "
                             f"({self.bands})")


def _perms(num_perm: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(1)  # fixed: every worker uses the same hash functions
    return (rng.randint(1, _PRIME, size=num_perm, dtype=np.int64), rng.randint(0, _PRIME, size=num_perm, dtype=np.int64))


_PERM_CACHE: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}


def shingles(toks: List[str], k: int) -> frozenset:
    return frozenset(T.word_ngrams(toks, k))


def minhash(sh: frozenset, num_perm: int) -> np.ndarray:
    """MinHash signature of a shingle set (all-max for an empty set)."""
    if num_perm not in _PERM_CACHE:
        _PERM_CACHE[num_perm] = _perms(num_perm)
    a, b = _PERM_CACHE[num_perm]
    if not sh:
        return np.full(num_perm, _PRIME, dtype=np.int64)
    x = np.fromiter((zlib.crc32(s.encode()) & 0x7FFFFFFF for s in sh), dtype=np.int64, count=len(sh))
    return ((np.outer(x, a) + b) % _PRIME).min(axis=0)


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _guard_key(row: Dict[str, Any], toks: List[str]) -> Tuple[Any, ...]:
    """What duplicates must share exactly: numbers (in order), verdict, final answer, truncation."""
    return (T.numbers(toks), row.get("verdict"), T.normalize(row.get("final_answer") or ""),
            row.get("finish_reason") == "length")


def dedup_rows(rows: Sequence[Dict[str, Any]], config: DedupConfig) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """``rows`` of one problem with ``duplicate_of`` filled; counts ``{"exact": n, "near": n}``."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["sample_index"])
    dup_of: Dict[int, str] = {}
    counts = {"exact": 0, "near": 0}
    exact_seen: Dict[str, int] = {}
    kept: List[int] = []
    toks = {i: T.tokens(rows[i]["completion"]) for i in order}
    for i in order:
        key = " ".join(toks[i])
        if config.exact and key in exact_seen:
            dup_of[i] = rows[exact_seen[key]]["id"]
            counts["exact"] += 1
            continue
        exact_seen.setdefault(key, i)
        kept.append(i)
    if config.near:
        near = _near_duplicates(rows, kept, toks, config)
        for i, j in near.items():
            dup_of[i] = rows[j]["id"]
        counts["near"] = len(near)
    out = [dict(r, duplicate_of=dup_of.get(i)) for i, r in enumerate(rows)]
    return out, counts


def _near_duplicates(rows, kept: List[int], toks, config: DedupConfig) -> Dict[int, int]:
    """Row index -> index of the earlier kept row it nearly duplicates (LSH candidates, exact Jaccard check)."""
    r = config.num_perm // config.bands
    buckets: Dict[Tuple[int, bytes], List[int]] = {}
    sh = {i: shingles(toks[i], config.shingle) for i in kept}
    guard = {i: _guard_key(rows[i], toks[i]) for i in kept}
    found: Dict[int, int] = {}
    for i in kept:  # in sample order: a row can only point to an earlier, itself kept, row
        sig = minhash(sh[i], config.num_perm)
        candidates = set()
        for band in range(config.bands):
            key = (band, sig[band * r:(band + 1) * r].tobytes())
            candidates.update(buckets.get(key, ()))
        best = None
        for j in sorted(candidates):
            if j in found or guard[j] != guard[i]:
                continue
            if jaccard(sh[i], sh[j]) >= config.threshold:
                best = j
                break
        if best is not None:
            found[i] = best
            continue  # a duplicate is never the kept row of another
        for band in range(config.bands):
            buckets.setdefault((band, sig[band * r:(band + 1) * r].tobytes()), []).append(i)
    return found
