"""The dataset layer's parts on their own: the manifest and layout resolution, the lock, the typed verdict.

No pipeline runs here: datasets are published from rows written directly (``_tiny_model``), through
the one publish procedure.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from _tiny_model import write_validated_output
from counterpoint import storage
from counterpoint.dataset import verdicts
from counterpoint.dataset.verdicts import NotValidated, Verdict
from counterpoint.errors import OutputLocked, VerdictMismatch
from counterpoint.schemas import records


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "out"
    rows = write_validated_output(out, n_problems=3)
    return out, rows


def test_a_published_output_has_a_manifest_and_one_version(published):
    out, rows = published
    manifest = json.loads((out / "counterpoint.json").read_text())
    assert manifest["format"] == storage.FORMAT and manifest["format_version"] == storage.FORMAT_VERSION
    assert manifest["previous"] is None and manifest["created_by"].startswith("counterpoint ")
    live = out / "versions" / manifest["live"]
    assert sorted(p.name for p in (out / "versions").iterdir()) == [manifest["live"]]
    assert sorted(p.name for p in live.iterdir()) == ["README.md", "data", "run_summary.json", "validation"]
    layout = storage.DatasetLayout(str(out))
    assert layout.dataset_dir == str(live) and layout.data_dir == str(live / "data")
    assert layout.read_table("preferences").to_pylist() == records.rows_to_table(
        "preferences", rows["preferences"]).to_pylist()
    # a version folder (no manifest) resolves to itself
    assert storage.DatasetLayout(str(live)).dataset_dir == str(live)
    # the root card points `datasets` at the live version's shards
    root_card = (out / "README.md").read_text()
    assert f"path: versions/{manifest['live']}/data/preferences/train-*.parquet" in root_card
    assert "path: data/preferences/train-*.parquet" in (live / "README.md").read_text()


def test_a_manifest_naming_a_path_outside_the_folder_is_not_followed(tmp_path):
    (tmp_path / "counterpoint.json").write_text(json.dumps({"format": storage.FORMAT, "live": "../../evil"}))
    assert storage.read_manifest(str(tmp_path)) is None
    assert storage.DatasetLayout(str(tmp_path)).dataset_dir == str(tmp_path)


def test_the_lock_is_exclusive_names_its_holder_and_is_released_only_by_it(tmp_path):
    layout = storage.OutputLayout(str(tmp_path))
    with storage.OutputLock(layout.lock_path, layout.root, "run") as held:
        with pytest.raises(OutputLocked) as excinfo:
            storage.OutputLock(layout.lock_path, layout.root, "export").acquire()
        message = str(excinfo.value)
        assert f"{tmp_path} is being written by `run` (pid {os.getpid()} on {socket.gethostname()}" in message
        assert f"delete {layout.lock_path} if that process is gone" in message
        other = storage.OutputLock(layout.lock_path, layout.root, "export")
        other.release()  # not its lock: nothing happens
        assert json.loads(Path(layout.lock_path).read_text())["token"] == held.holder["token"]
    assert not Path(layout.lock_path).exists()


def test_a_lock_left_by_a_dead_process_of_this_host_is_broken_and_others_are_not(tmp_path):
    layout = storage.OutputLayout(str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = Path(layout.lock_path)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "command": "run",
                                "started_at": "2026-01-01T00:00:00+00:00", "token": "old"}))
    with storage.OutputLock(layout.lock_path, layout.root, "run") as held:
        assert json.loads(lock.read_text())["token"] == held.holder["token"]
    remote = {"host": "another-host", "pid": int(dead.stdout), "command": "run", "started_at": "x", "token": "old"}
    lock.write_text(json.dumps(remote))
    with pytest.raises(OutputLocked, match="pid .* on another-host"):
        storage.OutputLock(layout.lock_path, layout.root, "run").acquire()
    assert json.loads(lock.read_text()) == remote


def test_exclusive_create_on_local_disk_never_shows_a_partial_file(tmp_path):
    path = str(tmp_path / "a" / "x.json")
    assert storage.create_exclusive(path, b"first")
    assert not storage.create_exclusive(path, b"second")
    assert Path(path).read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json"]


def _swap_chosen_rejected(path: Path) -> None:
    table = pq.read_table(path)
    rows = table.to_pylist()
    for r in rows:
        r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    buf = io.BytesIO()
    pq.write_table(records.rows_to_table("preferences", rows), buf, compression="zstd")
    path.write_bytes(buf.getvalue())


def test_the_verdict_binds_every_shard_to_its_bytes(published, tmp_path):
    import shutil

    src, rows = published
    out = tmp_path / "out"
    shutil.copytree(src, out)
    live = storage.DatasetLayout(str(out))
    verdict = Verdict.require(live, "test", ["preferences"])
    entries = verdict.configs["preferences"].published
    assert [e.path for e in entries] == ["preferences/train-00000-of-00002.parquet",
                                         "preferences/train-00001-of-00002.parquet"]
    for e in entries:
        data = (Path(live.data_dir) / e.path).read_bytes()
        assert (e.size, e.sha256, e.rows) == (len(data), verdicts.sha256(data), pq.read_metadata(
            io.BytesIO(data)).num_rows)
    assert verdict.read_verified("preferences").num_rows == len(rows["preferences"])

    # same rows, chosen and rejected swapped: refused
    shard = Path(live.data_dir) / entries[0].path
    _swap_chosen_rejected(shard)
    assert pq.read_metadata(shard).num_rows == entries[0].rows
    with pytest.raises(VerdictMismatch, match="preferences/train-00000-of-00002.parquet .* changed since validation"):
        verdict.read_verified("preferences")
    # a deleted shard: refused
    shard.unlink()
    with pytest.raises(VerdictMismatch, match=r"validated but missing: \['preferences/train-00000-of-00002"):
        verdict.check_file_set("preferences")
    # no verdict at all
    (Path(live.validation_summary)).unlink()
    with pytest.raises(NotValidated, match="has not been validated"):
        Verdict.require(live, "test")
