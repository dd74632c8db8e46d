"""Nothing lost, nothing unverified published: ownership, empty runs, tampering, concurrency, kills.

Every case asserts the files on disk after the command (the user's files and the previous dataset
byte-identical, the manifest unchanged), the exit code and the message. Runs use the scripted
engine on a few chain problems.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pyarrow.parquet as pq
import pytest

from counterpoint import cli, storage
from counterpoint.config import from_dict
from counterpoint.dataset import publish
from counterpoint.dataset.verdicts import Verdict
from counterpoint.errors import CounterpointError
from counterpoint.pipelines.generate_corpus import run
from counterpoint.schemas import records

IN_PROCESS = ["--runner=FnApiRunner"]
from _paths import REPO as ROOT  # noqa: E402


def _config(out, seed: int = 3, **overrides) -> Dict:
    cfg = {"source": {"kind": "chain", "num_problems": 3, "min_ops": 3, "max_ops": 4},
           "generator": {"kind": "scripted", "seed": seed, "scripted": {"policy": "chain", "step_error_rate": 0.3}},
           "samples_per_problem": 4, "report": False, "quiet": True, "output": str(out)}
    cfg.update(overrides)
    return cfg


def _write_config(tmp_path: Path, name: str, cfg: Dict) -> str:
    path = tmp_path / f"{name}.json"
    from_dict(cfg)  # a valid config; written as given (a stored config shortens local paths)
    path.write_text(json.dumps(cfg))
    return str(path)


def _cli(capsys, *argv) -> Tuple[int, str]:
    """``counterpoint ARGV`` as a person runs it: the exit code, and what it printed on stderr.

    A :class:`CounterpointError` becomes its exit code and one line, as ``cli.main`` reports it.
    """
    try:
        code = cli.main(list(argv))
    except CounterpointError as e:
        code = e.exit_code
        print(f"counterpoint {argv[0]}: {e}", file=sys.stderr)
    return code, capsys.readouterr().err


def _files(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _published(out: Path) -> Dict[str, bytes]:
    """What readers of the output see: everything outside its working area."""
    return {k: v for k, v in _files(out).items() if not k.startswith(("_work/", "quarantine/"))}


def _assert_whole(out: Path) -> Verdict:
    """The live version is internally consistent: one run's summary, config, card and verdict, every
    shard the bytes the verdict bound, and the root card pointing at it."""
    manifest = storage.read_manifest(str(out))
    live = storage.OutputLayout(str(out)).live_version()
    summary = json.loads(Path(live.summary_path).read_text())
    assert summary["run_id"] == manifest.live
    verdict = Verdict.require(live, "test")
    for config in verdict.configs:
        verdict.read_verified(config)
    assert set(verdict.configs) == set(live.present_configs()) == set(summary["configs"])
    assert f"versions/{manifest.live}/data/" in (out / "README.md").read_text()
    assert "## Validation" in Path(live.card_path).read_text()
    return verdict


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A published output (one run)."""
    out = tmp_path_factory.mktemp("good") / "out"
    run(IN_PROCESS, config=from_dict(_config(out)))
    return out


@pytest.fixture
def output(good, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(good, out)
    return out


# ---------------------------------------------------------------------------
# Ownership
# ---------------------------------------------------------------------------
def _users_folder(folder: Path) -> Dict[str, bytes]:
    (folder / "data").mkdir(parents=True)
    pq.write_table(records.rows_to_table("rejects", []), folder / "data" / "mine.parquet")
    (folder / "README.md").write_text("# my notes\n")
    (folder / "validation").mkdir()
    (folder / "validation" / "keep.txt").write_text("mine")
    return _files(folder)


def test_run_export_and_validate_refuse_a_folder_that_is_not_theirs(tmp_path, output, capsys):
    users = tmp_path / "users"
    before = _users_folder(users)
    config = _write_config(tmp_path, "run", _config(users))
    code, err = _cli(capsys, "run", "--config", config, "--runner=FnApiRunner")
    assert code == 2
    assert f"{users} is not empty and is not a Counterpoint output (found README.md, data, validation" in err
    assert _files(users) == before  # nothing deleted, overwritten or added

    source = _published(output)
    code, err = _cli(capsys, "export", str(output), "--format", "step-dpo", "--output", str(users))
    assert code == 2 and f"{users} is not empty and is not a Counterpoint output" in err
    assert _files(users) == before and _published(output) == source

    code, err = _cli(capsys, "validate", str(users))
    assert code == 2 and f"{users} is not empty and is not a Counterpoint output" in err
    code, err = _cli(capsys, "push", str(users), "--repo-id", "o/n", "--dry-run")
    assert code == 2 and "is not a Counterpoint output" in err
    assert _files(users) == before


def test_an_output_of_the_earlier_layout_is_refused_with_the_way_out(tmp_path, capsys):
    legacy = tmp_path / "legacy"
    (legacy / "data" / "rejects").mkdir(parents=True)
    pq.write_table(records.rows_to_table("rejects", []), legacy / "data" / "rejects" / "train-00000-of-00001.parquet")
    (legacy / "run_summary.json").write_text("{}")
    (legacy / "validation").mkdir()
    (legacy / "validation" / "summary.json").write_text('{"success": true}')
    before = _files(legacy)
    code, err = _cli(capsys, "run", "--config", _write_config(tmp_path, "run", _config(legacy)),
                     "--runner=FnApiRunner")
    assert code == 2
    assert f"{legacy} holds an output of an earlier Counterpoint (data/, run_summary.json, no counterpoint.json): " \
           "write to a new folder, or move that folder aside first" in err
    assert _files(legacy) == before


def test_an_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "out.txt"
    path.write_text("mine")
    code, err = _cli(capsys, "run", "--config", _write_config(tmp_path, "run", _config(path)), "--runner=FnApiRunner")
    assert code == 2 and f"{path} is a file, not a folder" in err
    assert path.read_text() == "mine"


# ---------------------------------------------------------------------------
# A run that read nothing replaces nothing
# ---------------------------------------------------------------------------
def test_a_run_that_reads_no_problem_fails_and_replaces_nothing(tmp_path, output, capsys):
    before = _published(output)
    mapping = {"question": "question", "answer": "answer", "id": "id"}
    # An empty input file is refused at the door (exit 2), before any work.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = _config(output, source={"kind": "file", "paths": [str(empty)], "mapping": mapping})
    code, err = _cli(capsys, "run", "--config", _write_config(tmp_path, "empty", cfg), "--runner=FnApiRunner")
    assert code == 2 and f"--input {empty}: every matching file is empty" in err
    assert _published(output) == before

    # A file that is not empty but holds no problem gets through the door; the run reads 0 problems and
    # publishes nothing (exit 1).
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    cfg = _config(output, source={"kind": "file", "paths": [str(blank)], "mapping": mapping})
    code, err = _cli(capsys, "run", "--config", _write_config(tmp_path, "blank", cfg), "--runner=FnApiRunner")
    assert code == 1
    assert f"the run read 0 problems (source: {blank}; " in err
    assert f"nothing was published and the dataset in {output} was left as it was" in err
    assert _published(output) == before
    assert not (output / "_work" / "lock.json").exists() and not list((output / "_work" / "staging").glob("*"))

    # --num-problems 0 is refused at the door as well
    code, err = _cli(capsys, "run", "--config", _write_config(tmp_path, "zero", _config(output)),
                     "--num-problems", "0", "--runner=FnApiRunner")
    assert code == 2 and "source.num_problems is 0 (--num-problems 0)" in err
    assert _published(output) == before


# ---------------------------------------------------------------------------
# Tampering: validate, export and push all refuse
# ---------------------------------------------------------------------------
def _swap_chosen_rejected(path: Path) -> None:
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    buf = io.BytesIO()
    pq.write_table(records.rows_to_table("preferences", rows), buf, compression="zstd")
    path.write_bytes(buf.getvalue())


def _refused_everywhere(capsys, out: Path, export_fmt: str, expect: List[str]) -> None:
    """Export, push --dry-run and validate (twice: the refusal does not wear off) all exit 1."""
    manifest = (out / "counterpoint.json").read_bytes()
    for argv in (["export", str(out), "--format", export_fmt], ["push", str(out), "--repo-id", "o/n", "--dry-run"],
                 ["validate", str(out)], ["validate", str(out)],
                 ["export", str(out), "--format", export_fmt], ["push", str(out), "--repo-id", "o/n", "--dry-run"]):
        code, err = _cli(capsys, *argv)
        assert code == 1, (argv, err)
        assert any(e in err for e in expect), (argv, err)
    assert (out / "counterpoint.json").read_bytes() == manifest  # nothing was published


def test_a_shard_rewritten_with_the_same_rows_is_refused(output, capsys):
    prefs = storage.DatasetLayout(str(output)).shards("preferences")
    assert len(prefs) == 1 and pq.read_metadata(prefs[0]).num_rows > 0
    _swap_chosen_rejected(Path(prefs[0]))
    _refused_everywhere(capsys, output, "step-dpo", ["changed since validation", "validation failed for preferences"])
    verdict = Verdict.read(storage.DatasetLayout(str(output)))
    assert [f["reason"] for f in verdict.raw["configs"]["preferences"]["failed_expectations"]] == [
        "changed_since_written"]


def test_a_deleted_shard_is_refused_until_accepted(output, capsys):
    layout = storage.DatasetLayout(str(output))
    Path(layout.shards("preferences")[0]).unlink()
    _refused_everywhere(capsys, output, "step-dpo", ["validated but missing", "validation failed for preferences"])
    failures = Verdict.read(layout).raw["configs"]["preferences"]["failed_expectations"]
    assert [(f["rule"], f["expectation_type"], f["detail"]) for f in failures] == [
        ("written_shards", "expect_written_shards_present",
         "observed_value=0: the run wrote 1 shard(s); rerun it or restore the missing shard(s)"),
        ("written_rows", "expect_written_rows_present",
         "observed_value=0: the run wrote 4 row(s); rerun it or restore the missing shard(s)"),
    ]
    # The user accepts the data as it is now: recorded in the verdict, and push goes ahead.
    code, _ = _cli(capsys, "validate", str(output), "--accept-current")
    assert code == 0
    accepted = Verdict.read(layout).raw["accepted_current"]
    assert accepted["found"]["preferences"] == {"shards": 0, "rows": 0}
    assert accepted["expected"]["preferences"]["shards"] == 1
    assert _cli(capsys, "validate", str(output))[0] == 0  # later validations expect the accepted counts
    assert _cli(capsys, "push", str(output), "--repo-id", "o/n", "--dry-run")[0] == 0
    assert "accept-current" in (Path(layout.dataset_dir) / "README.md").read_text()


def test_a_quarantined_shard_is_refused(output, capsys):
    layout = storage.DatasetLayout(str(output))
    shard = Path(layout.shards("trajectories")[0])
    shard.write_bytes(b"PAR1 not a parquet file")
    code, err = _cli(capsys, "validate", str(output))
    assert code == 1 and not shard.exists()
    assert (output / "quarantine" / "trajectories" / shard.name).read_bytes() == b"PAR1 not a parquet file"
    # The quarantine emptied the config: the next validation still fails, and so do export and push.
    _refused_everywhere(capsys, output, "step-dpo", ["validated but missing", "validation failed for trajectories"])


# ---------------------------------------------------------------------------
# One writer: two runs started together
# ---------------------------------------------------------------------------
RUNNER = textwrap.dedent("""\
    import sys
    from counterpoint import cli
    from counterpoint.errors import CounterpointError
    try:
        sys.exit(cli.main(sys.argv[1:]))
    except CounterpointError as e:
        print(f"counterpoint: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    """)


def _race(tmp_path: Path, out: str, trial: int, options: List[str]) -> Tuple[Dict[int, int], Dict[int, str]]:
    """Starts two runs (seeds 100+2t and 101+2t) into ``out`` at once; returns {seed: rc}, {seed: stderr}."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    procs = {}
    for seed in (100 + 2 * trial, 101 + 2 * trial):
        config = _write_config(tmp_path, f"run-{seed}", _config("unused", seed=seed))
        procs[seed] = subprocess.Popen([sys.executable, str(script), "run", "--config", config, "--output", out,
                                        "--runner=FnApiRunner", *options],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    errs = {seed: p.communicate(timeout=600)[1] for seed, p in procs.items()}
    return {seed: p.returncode for seed, p in procs.items()}, errs


def _winner(codes: Dict[int, int], errs: Dict[int, str]) -> int:
    assert sorted(codes.values()) == [0, 1], (codes, errs)
    loser = next(s for s, c in codes.items() if c == 1)
    assert "is being written by `run` (pid" in errs[loser], errs[loser]
    return next(s for s, c in codes.items() if c == 0)


def test_two_runs_into_one_folder_one_publishes_the_other_is_locked_out(tmp_path):
    out = tmp_path / "out"
    trials = 10
    started = time.monotonic()
    for trial in range(trials):
        codes, errs = _race(tmp_path, str(out), trial, [])
        seed = _winner(codes, errs)
        _assert_whole(out)
        live = storage.OutputLayout(str(out)).live_version()
        assert json.loads(Path(live.config_path).read_text())["generator"]["seed"] == seed
        assert json.loads(Path(live.summary_path).read_text())["provenance"]["generator"]["seed"] == seed
        assert len(list((out / "_work" / "runs").iterdir())) == trial + 1  # the loser never started
        assert len(list((out / "versions").iterdir())) == min(trial + 1, 2)  # live + the one it replaced
    print(f"\n[concurrency] {trials} local trials in {time.monotonic() - started:.1f} s: "
          "every time one run published and the other was locked out")


# ---------------------------------------------------------------------------
# Kill at every step of publishing
# ---------------------------------------------------------------------------
class _Crash(Exception):
    pass


def test_a_crash_after_any_file_operation_of_publishing_leaves_a_whole_dataset(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(IN_PROCESS, config=from_dict(_config(out, seed=1)))
    run(IN_PROCESS, config=from_dict(_config(out, seed=2)))  # from now on a publish also cleans a version
    steps: List[str] = []
    monkeypatch.setattr(publish, "FAULT_HOOK", steps.append)
    run(IN_PROCESS, config=from_dict(_config(out, seed=3)))
    assert {"gate", "summary", "card", "install", "switch", "root_card", "clean"} <= set(steps)
    for k in range(len(steps)):
        old = storage.read_manifest(str(out)).live
        old_files = _files(out / "versions" / old)
        calls = iter(range(len(steps)))

        def crash(step, k=k):
            if next(calls) == k:
                raise _Crash(step)

        monkeypatch.setattr(publish, "FAULT_HOOK", crash)
        with pytest.raises(_Crash):
            run(IN_PROCESS, config=from_dict(_config(out, seed=10 + k)))
        live = storage.read_manifest(str(out)).live
        verdict = _assert_whole(out) if steps[k] not in ("switch",) else None
        if live == old:  # the old dataset, byte-identical
            assert _files(out / "versions" / old) == old_files, steps[k]
        else:  # the new one, whole (a crash after the switch)
            assert k >= steps.index("switch"), steps[k]
            live_layout = storage.OutputLayout(str(out)).live_version()
            verdict = Verdict.require(live_layout, "test")
            for config in verdict.configs:
                verdict.read_verified(config)
        monkeypatch.setattr(publish, "FAULT_HOOK", None)
        run(IN_PROCESS, config=from_dict(_config(out, seed=10 + k)))  # a rerun completes
        _assert_whole(out)
    print(f"\n[kill] a crash after each of the {len(steps)} file operations of publishing: {steps}")


# ---------------------------------------------------------------------------
# The same on S3 (moto's server on loopback: conditional PutObject, If-None-Match: "*")
# ---------------------------------------------------------------------------
from test_distributed import BUCKET, s3  # noqa: E402,F401 - the loopback S3 server fixture


def _assert_whole_remote(out: str, seed: int) -> None:
    manifest = storage.read_manifest(out)
    live = storage.OutputLayout(out).live_version()
    summary = storage.read_json(live.summary_path)
    assert summary["run_id"] == manifest.live and summary["provenance"]["generator"]["seed"] == seed
    assert storage.read_json(live.config_path)["generator"]["seed"] == seed
    verdict = Verdict.require(live, "test")
    for config in verdict.configs:
        verdict.read_verified(config)
    assert set(verdict.configs) == set(live.present_configs())
    assert f"versions/{manifest.live}/data/" in storage.read_text(storage.join(out, "README.md"))


def test_the_s3_lock_is_a_conditional_create(s3):
    from apache_beam.options.pipeline_options import PipelineOptions

    url, client, options = s3
    storage.configure(PipelineOptions(options))
    layout = storage.OutputLayout(f"s3://{BUCKET}/locks/a")
    with storage.OutputLock(layout.lock_path, layout.root, "run") as held:
        with pytest.raises(CounterpointError, match="is being written by `run`"):
            storage.OutputLock(layout.lock_path, layout.root, "export").acquire()
        body = json.loads(client.get_object(Bucket=BUCKET, Key="locks/a/_work/lock.json")["Body"].read())
        assert body["token"] == held.holder["token"]
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix="locks/a/")


def test_two_runs_into_one_s3_folder_one_publishes_the_other_is_locked_out(tmp_path, s3):
    from apache_beam.options.pipeline_options import PipelineOptions

    url, client, options = s3
    storage.configure(PipelineOptions(options))
    out = f"s3://{BUCKET}/race/out"
    trials = 3  # each trial runs two jobs against the S3 server: ~25 s a trial on 2 cores
    started = time.monotonic()
    for trial in range(trials):
        codes, errs = _race(tmp_path, out, trial, options)
        seed = _winner(codes, errs)
        _assert_whole_remote(out, seed)
    print(f"\n[concurrency] {trials} S3 trials in {time.monotonic() - started:.1f} s: "
          "every time one run published and the other was locked out")
