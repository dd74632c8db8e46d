"""What a person sees when something is wrong (issue 17, items 2, 5, 6, 7).

Each case drives ``counterpoint.cli.main`` (or the console script in a subprocess, for Ctrl-C) and
asserts the exit code, the one-line message on stderr, that no traceback is shown, and the files on
disk afterwards: a refused run writes nothing, and a good dataset in the output folder stays
byte-identical. Runs use the scripted engine on chain problems, in process on the FnApiRunner.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pyarrow.parquet as pq
import pytest
import yaml

from counterpoint import cli, storage
from counterpoint.config import API_KEY_REDACTED, ConfigError, from_dict
from counterpoint.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from counterpoint.sources.validate import validate_problem
from counterpoint.testing.faults import faults

from _paths import REPO  # noqa: E402
IN_PROCESS = ["--runner=FnApiRunner"]
CHAIN_JOB = ["--source", "chain", "--num-problems", "4", "--generator", "scripted", "--samples", "4", "-q"]


def _snapshot(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _published(root: Path) -> Dict[str, bytes]:
    """The dataset a user would push (everything but the work folder)."""
    return {k: v for k, v in _snapshot(root).items() if not k.startswith("_work")}


def _one_line_error(capsys, command: str = "run") -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"counterpoint {command}: "), err
    return lines[0]


@pytest.fixture(scope="module")
def good_output(tmp_path_factory):
    """A finished, validated dataset (the thing a typo must never replace)."""
    out = tmp_path_factory.mktemp("good") / "out"
    assert cli.main(["run", *CHAIN_JOB, "--output", str(out), *IN_PROCESS]) == 0
    return out


# ---------------------------------------------------------------------------
# Item 2: nothing to read is refused at the door
# ---------------------------------------------------------------------------
def _missing_inputs(tmp: Path) -> Dict[str, List[str]]:
    (tmp / "empty.jsonl").write_bytes(b"")
    return {
        "typo": ["--input", str(tmp / "typo.jsonl")],
        "glob_matches_nothing": ["--input", str(tmp / "nothing-*.jsonl")],
        "only_empty_files": ["--input", str(tmp / "empty.jsonl")],
        "a_folder": ["--input", str(tmp)],
    }


@pytest.mark.parametrize("case, message", [
    ("typo", "typo.jsonl: no such file (nothing matches)"),
    ("glob_matches_nothing", "nothing-*.jsonl: no such file (nothing matches)"),
    ("only_empty_files", "every matching file is empty"),
    ("a_folder", "is a folder: name its files"),
])
def test_an_input_that_reads_nothing_is_refused_and_the_dataset_stays(good_output, tmp_path, capsys, case, message):
    before = _snapshot(good_output)
    argv = ["run", *_missing_inputs(tmp_path)[case], "--generator", "scripted", "--output", str(good_output)]
    assert cli.main([*argv, *IN_PROCESS]) == EXIT_USAGE
    line = _one_line_error(capsys)
    assert line.startswith("counterpoint run: --input ") and message in line, line
    assert _snapshot(good_output) == before


def test_num_problems_zero_is_refused_and_the_dataset_stays(good_output, capsys):
    before = _snapshot(good_output)
    argv = ["--source", "chain", "--num-problems", "0", "--generator", "scripted", "-q"]
    assert cli.main(["run", *argv, "--output", str(good_output), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == (
        "counterpoint run: source.num_problems is 0 (--num-problems 0): a run needs at least one problem; "
        "give N >= 1, or leave it out to read the whole input")
    assert _snapshot(good_output) == before


def test_inputs_are_matched_through_beam_filesystems(tmp_path):
    from counterpoint.sources import ProblemSourceConfig

    (tmp_path / "a.jsonl").write_text('{"question": "Q?", "answer": "1"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_bytes(b"")  # an empty file next to a good one is read (an empty_file reject)
    ProblemSourceConfig(kind="file", paths=[str(tmp_path / "*.jsonl")]).check()
    ProblemSourceConfig(kind="file", paths=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]).check()
    with pytest.raises(ConfigError, match=r"--input .*c\.jsonl: no such file"):
        ProblemSourceConfig(kind="file", paths=[str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")]).check()
    # HF sources resolve their own files (no driver-side match here).
    ProblemSourceConfig(kind="hf", hf_name="org/none").check()


# ---------------------------------------------------------------------------
# Item 5: strict config at the door
# ---------------------------------------------------------------------------
STRICT_CASES = [
    ("samples_per_problem: 2.0", "config.samples_per_problem: expected an integer, got 2.0 (float)"),
    ("validate: 'no'", "config.validate: expected true or false, got 'no' (str)"),
    ("report: 'false'", "config.report: expected true or false, got 'false' (str)"),
    ("sampling: {temperature: .nan}", "config.sampling.temperature: expected a finite number, got nan (float)"),
    ("sampling: {top_p: .inf}", "config.sampling.top_p: expected a finite number, got inf (float)"),
    ("retry: {max_attempts: 3.5}", "config.retry.max_attempts: expected an integer, got 3.5 (float)"),
    ("num_shards: auto", "config.num_shards: expected an integer or null, got 'auto' (str)"),
    ("source: {kind: file, paths: [a.jsonl, 7]}", "config.source.paths[1]: expected a string, got 7 (int)"),
    ("min_rows: {preferences: 1.0}", "config.min_rows[preferences]: expected an integer, got 1.0 (float)"),
    ("labeling: {omegaprm: {k: true}}", "config.labeling.omegaprm.k: expected an integer, got True (bool)"),
    ("consensus: {mode: off}", "config.consensus.mode: expected a string, got False (bool); YAML reads a bare "
                               "off/no as false and on/yes as true: quote the word, e.g. \"off\""),
]


@pytest.mark.parametrize("text, message", STRICT_CASES, ids=[c[0].split(":")[0] for c in STRICT_CASES])
def test_wrong_types_are_refused_naming_the_key_and_the_type(text, message):
    with pytest.raises(ConfigError) as excinfo:
        from_dict(yaml.safe_load(text))
    assert str(excinfo.value) == message


@pytest.mark.parametrize("text, message", STRICT_CASES[:4], ids=[c[0].split(":")[0] for c in STRICT_CASES[:4]])
def test_a_wrong_type_in_a_config_file_fails_the_run_at_the_door(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["run", "--config", str(path), "--output", str(out), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == f"counterpoint run: --config {path}: {message}"
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "nan", "--temperature: sampling.temperature: expected a finite number, got nan (float)"),
    ("--temperature", "inf", "--temperature: sampling.temperature: expected a finite number, got inf (float)"),
    ("--top-p=-inf", None, "--top-p: sampling.top_p: expected a finite number, got -inf (float)"),
])
def test_non_finite_flags_are_refused(tmp_path, capsys, flag, value, message):
    out = tmp_path / "out"
    given = [flag] if value is None else [flag, value]
    assert cli.main(["run", *CHAIN_JOB, *given, "--output", str(out), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == f"counterpoint run: {message}"
    assert not out.exists()


def test_the_right_types_still_load():
    cfg = from_dict(yaml.safe_load(
        "samples_per_problem: 3\nvalidate: false\nsampling: {temperature: 1, top_p: 0.5}\n"
        "source: {kind: file, paths: one.jsonl}\nretry: {call_timeout_s: null}"))
    assert (cfg.samples_per_problem, cfg.validate, cfg.sampling.temperature, cfg.sampling.top_p) == (3, False, 1, 0.5)
    assert cfg.source.paths == ["one.jsonl"] and cfg.retry.call_timeout_s is None


@pytest.mark.parametrize("content, message", [
    (b"source: [unclosed\n", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 2, column 1); "
                             "fix the file"),
    (b"samples_per_problem: 4\n\xff\xfe oops\n", "not UTF-8 text (byte 23); save the file as UTF-8 YAML"),
    (b"- a\n- b\n", "expected a YAML mapping of config keys (source:, generator:, ...), got list"),
])
def test_a_config_file_that_is_not_yaml_names_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    out = tmp_path / "out"
    assert cli.main(["run", "--config", str(path), "--output", str(out), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == f"counterpoint run: --config {path}: {message}"
    assert not out.exists()


def test_a_missing_config_file(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    assert cli.main(["run", "--config", str(path), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == f"counterpoint run: --config {path}: file not found; check the path"


def test_an_output_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_bytes(b"mine")
    assert cli.main(["run", *CHAIN_JOB, "--output", str(target), *IN_PROCESS]) == EXIT_USAGE
    assert _one_line_error(capsys) == (
        f"counterpoint run: --output {target} is a file, not a folder: choose a folder (a new one, or a "
        "Counterpoint output to update)")
    assert target.read_bytes() == b"mine"
    inside = target / "out"
    assert cli.main(["run", *CHAIN_JOB, "--output", str(inside), *IN_PROCESS]) == EXIT_USAGE
    assert f"is inside {target}, which is a file" in _one_line_error(capsys)


def test_a_read_only_output_folder_is_refused(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: show the check what a user without the right sees
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    try:
        out = locked / "out"
        assert cli.main(["run", *CHAIN_JOB, "--output", str(out), *IN_PROCESS]) == EXIT_USAGE
        assert _one_line_error(capsys) == (
            f"counterpoint run: --output {out}: {locked} is not writable (permission denied): choose a writable "
            "folder or change its permissions")
        assert not out.exists()
    finally:
        locked.chmod(0o755)


def test_control_characters_in_ids_and_text_are_rejects():
    row = {"problem_id": "a\x00b", "question": "What is 2 + 3?", "gold_answer": "5", "answer_type": "numeric",
           "source": "toy", "difficulty": None, "metadata": None}
    rej = validate_problem(row, key="k1")
    assert (rej["stage"], rej["reason"], rej["problem_id"], rej["scope"], rej["detail"]) == (
        "validate_problem", "control_characters", None, "problem",
        "control character in problem_id: U+0000 at 1; remove it from the input")
    assert "\x00" not in rej["payload"] and "\\u0000" in rej["payload"]
    rej = validate_problem(dict(row, problem_id="q2", question="What is\x07 2 + 3?"), key="k2")
    assert (rej["reason"], rej["problem_id"], rej["detail"]) == (
        "control_characters", "q2", "control character in question: U+0007 at 7; remove it from the input")
    rej = validate_problem(dict(row, problem_id="q3", gold_answer="5\x1b"), key="k3")
    assert (rej["reason"], rej["detail"]) == ("control_characters",
                                              "control character in gold_answer: U+001B at 1; remove it from the input")
    # Tabs, newlines and carriage returns are text.
    assert validate_problem(dict(row, problem_id="q4", question="What is\t2 +\r\n3?"), key="k4") is None


# ---------------------------------------------------------------------------
# Item 6 (and NUL bytes end to end): secrets and local paths are never written
# ---------------------------------------------------------------------------
SECRETS = ("sk-TEST-SECRET-123", "pa55w0rd", "hf_SECRETTOKEN", "xyzzy-query-key")


def _all_text(path: Path) -> str:
    """A file's bytes as text, decompressed (gzip) and, for Parquet, every cell as well."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    text = data.decode("utf-8", "replace")
    if path.suffix == ".parquet":
        text += json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    return text


def test_secrets_and_local_paths_never_reach_a_written_file(tmp_path, capsys):
    rows = [{"id": "nul\x00id", "question": "What is 2 + 3?", "answer": "5"},
            {"id": "q-nul", "question": "What is 4 + 4?\x00", "answer": "8"}]
    rows += [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 5)]
    inp = tmp_path / "in" / "problems.jsonl"
    inp.parent.mkdir()
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    key = {r["question"]: r["answer"] for r in rows}
    config = {
        "source": {"kind": "file", "paths": [str(inp)], "hf_kwargs": {"token": SECRETS[2]},
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "api_key": SECRETS[0],
                      "base_urls": [f"http://user:{SECRETS[1]}@127.0.0.1:9/v1?api_key={SECRETS[3]}"],
                      "scripted": {"policy": "answer_key", "answer_key": key}},
        "samples_per_problem": 4, "quiet": True,
    }
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["run", "--config", str(cfg_path), "--output", str(out), *IN_PROCESS]) == 0
    capsys.readouterr()

    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert written
    for path in written:
        text = _all_text(path)
        assert not [s for s in SECRETS if s in text], path
    # The stored config says where the key is read from; URLs keep their host, not their credentials.
    layout = storage.DatasetLayout(str(out))
    stored = json.loads(Path(layout.config_path).read_text(encoding="utf-8"))
    assert stored["generator"]["api_key"] == API_KEY_REDACTED
    assert API_KEY_REDACTED == "<redacted: give the key as $OPENAI_API_KEY or $COUNTERPOINT_API_KEY>"
    assert stored["generator"]["base_urls"] == ["http://<redacted>@127.0.0.1:9/v1?api_key=<redacted>"]
    assert stored["source"]["hf_kwargs"] == {"token": "<redacted>"}
    assert stored["source"]["paths"] == ["<local>/problems.jsonl"] and stored["output"] == "<local>/out"

    # Published files name no local folder (the push plan is what leaves the machine).
    from counterpoint.dataset.hub import planned_files

    published = [Path(layout.dataset_dir) / p for p, _ in planned_files(layout)]
    assert {"report.html", "README.md"} <= {p.name for p in published}
    for path in published:
        assert str(tmp_path) not in _all_text(path), path

    # NUL bytes never reach the engine or an id column: both rows are control_characters rejects.
    rejects = layout.read_table("rejects").to_pylist()
    assert sorted(((r["reason"], r["problem_id"], r["detail"]) for r in rejects), key=lambda t: t[2]) == [
        ("control_characters", None, "control character in problem_id: U+0000 at 3; remove it from the input"),
        ("control_characters", "q-nul", "control character in question: U+0000 at 14; remove it from the input"),
    ]
    for config_dir in Path(layout.data_dir).iterdir():
        for shard in config_dir.glob("*.parquet"):
            for record in pq.read_table(shard).to_pylist():
                assert "\x00" not in json.dumps(record, ensure_ascii=False, default=str), shard


# ---------------------------------------------------------------------------
# Item 7: one line, exit 2 for usage, 1 for failures, 130 on Ctrl-C, traceback with --debug
# ---------------------------------------------------------------------------
def test_a_failed_validation_exits_1_and_names_files_that_exist(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", *CHAIN_JOB, "--min-rows", "preferences=100000", "--output", str(out), *IN_PROCESS]
    assert cli.main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("counterpoint run: Validation FAILED for "), err
    summary = [line.split("summary: ", 1)[1] for line in err.splitlines() if line.strip().startswith("summary: ")]
    assert summary and all(Path(p).is_file() for p in summary), err
    layout = storage.OutputLayout(str(out))
    assert layout.live_version() is None and layout.version_ids() == []  # nothing was published


def test_an_accounting_failure_exits_1_in_one_line(tmp_path, capsys, monkeypatch):
    from counterpoint.pipelines import finalize

    real = finalize.read_run_stats

    def lose_one(staging):
        stats = real(staging)
        stats["with_output"] -= 1
        return stats

    monkeypatch.setattr(finalize, "read_run_stats", lose_one)
    assert cli.main(["run", *CHAIN_JOB, "--output", str(tmp_path / "out"), *IN_PROCESS]) == EXIT_FAILED
    assert _one_line_error(capsys).startswith("counterpoint run: problems in (4) != problems with output (3)")


def test_a_push_refusal_is_one_line_and_exit_1(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", *CHAIN_JOB, "--no-validate", "--output", str(out), *IN_PROCESS]) == 0
    capsys.readouterr()
    assert cli.main(["push", str(out), "--repo-id", "org/name", "--dry-run"]) == EXIT_FAILED
    assert _one_line_error(capsys, "push").startswith(f"counterpoint push: refusing to publish {out}")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path, capsys, where):
    argv = ["run", "--temperature", "nan", "--output", str(tmp_path / "o"), *IN_PROCESS]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.splitlines()[-1].startswith("counterpoint run: --temperature: sampling.temperature: expected")


def test_ctrl_c_exits_130_with_one_line_and_keeps_the_dataset(good_output, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it, while the engine is mid-call."""
    before = _published(good_output)
    problems = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 9)]
    inp = tmp_path / "problems.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in problems), encoding="utf-8")
    config = {"source": {"kind": "file", "paths": [str(inp)],
                         "mapping": {"question": "question", "answer": "answer", "id": "id"}},
              "generator": {"kind": "scripted", "scripted": {
                  "policy": "answer_key", "answer_key": {r["question"]: r["answer"] for r in problems},
                  **faults(hang_every=1, hang_s=1.0)}},
              "samples_per_problem": 2, "batch_size": 1, "quiet": True}
    cfg_path = tmp_path / "slow.yaml"
    cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cache = good_output / "_work" / "cache"
    cached_before = {p for p in cache.rglob("*") if p.is_file()}
    proc = subprocess.Popen([sys.executable, "-m", "counterpoint.cli", "run", "--config", str(cfg_path),
                             "--output", str(good_output), *IN_PROCESS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        # Wait until the sampling stage has cached its first engine call: the job is mid-run.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if {p for p in cache.rglob("*") if p.is_file()} - cached_before:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    err = err.decode("utf-8", "replace")
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip() == ("counterpoint run: interrupted (Ctrl-C); nothing new was published, rerun the same "
                           "command to resume"), err
    assert _published(good_output) == before

