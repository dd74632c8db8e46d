"""Moving failed shards out of the dataset, so the publishable data folder holds only shards that passed.

Input: one config's result (:class:`counterpoint.validation.cross_shard.ValidateConfigDoFn`) and
where each shard lives. Output: the shards moved to ``<quarantine_dir>/<config>/`` (a same-named
earlier one is kept: the newcomer gets a timestamp), each with a ``<file>.failures.json`` sidecar
naming why. For a cross-shard failure (an id in two shards) every shard holding an offending
row is moved. Every file operation goes through :mod:`counterpoint.storage`.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, List, Optional

from counterpoint import storage


def bad_shards(part: Dict[str, Any]) -> List[str]:
    """The shards (relative to the dataset folder) of a config result that failed a check, sorted."""
    return sorted({s["shard"] for s in part["shards"] if s["failures"]} | set(part.get("offending_shards", [])))


def quarantine_shard(src: str, quarantine_dir: str, config: str, root: str,
                     failures: List[Dict[str, Any]]) -> Optional[Dict[str, str]]:
    """Moves ``src`` to ``<quarantine_dir>/<config>/``; ``{"config", "from", "to"}`` (None if already gone).

    ``from`` and ``to`` are relative to ``root`` (the dataset folder) when below it.
    """
    if not storage.exists(src):
        return None
    name = storage.basename(src)
    dest = storage.join(quarantine_dir, config, name)
    if storage.exists(dest):
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        stem, dot, suffix = name.rpartition(".")
        dest = storage.join(quarantine_dir, config, f"{stem}.{stamp}{dot}{suffix}")
    storage.move_file(src, dest)
    storage.write_json(dest + ".failures.json", failures)
    return {"config": config, "from": _rel(src, root), "to": _rel(dest, root)}


def quarantine_config(part: Dict[str, Any], uris: Dict[str, str], quarantine_dir: str, root: str,
                      ) -> List[Dict[str, str]]:
    """Quarantines every failed shard of one config result; the moves made (see :func:`quarantine_shard`).

    ``uris``: shard (relative to the dataset folder) -> its full path. Each sidecar holds the
    shard's own failures and the config-level ones.
    """
    config = part["config"]
    failures = [f for s in part["shards"] for f in s["failures"]] + part["failures"]
    moved = []
    for rel in bad_shards(part):
        why = [f for f in failures if f["shard"] in (rel, None)]
        q = quarantine_shard(uris.get(rel, storage.join(root, *rel.split("/"))), quarantine_dir, config, root, why)
        if q:
            moved.append(q)
    return moved


def _rel(path: str, root: str) -> str:
    try:
        return storage.relpath(path, root)
    except ValueError:
        return path
