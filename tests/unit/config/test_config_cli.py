"""Run configs (YAML, overrides) and the ``counterpoint`` command line, end to end.

The end-to-end test drives ``counterpoint.cli.main`` exactly as the console
script does (run -> validate -> report -> push --dry-run) on a scripted
answer-key generator, in process on the FnApiRunner.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from counterpoint import cli, storage
from counterpoint.config import (
    GeneratorConfig,
    PairingConfig,
    RetryConfig,
    RunConfig,
    VerifierConfig,
    dumps_config,
    from_dict,
    load_config,
)
from counterpoint.generators.base import SamplingParams
from counterpoint.labeling import LabelerConfig, OmegaPRMConfig
from counterpoint.pipelines.generate_corpus import resolve_config
from counterpoint.sources import ProblemSourceConfig
from counterpoint.sources.mapping import FieldMapping
from counterpoint.sources.procedural import procedural_problem

from _paths import REPO  # noqa: E402

NESTED_YAML = """\
source:
  kind: procedural
  num_problems: 12
  seed: 4
  min_ops: 1
  max_ops: 2
  mapping: {question: problem, answer: solution, id: uid, gold_format: boxed, answer_type: math}
generator: {kind: scripted, model: tiny, seed: 4, scripted: {policy: chain, step_error_rate: 0.1}}
sampling:
  temperature: 0.6
  top_p: 0.9
  max_tokens: 128
  stop: ["\\n\\n\\n", "</s>"]
samples_per_problem: 6
segmentation: step
labeler: omegaprm
labeling:
  seed: 2
  omegaprm:
    k: 3
    search_limit: 5
    rollout_params: {temperature: 0.5, top_p: 1.0, max_tokens: 96, stop: [END]}
pairing: {max_pairs_per_problem: 2, truncated_as_rejected: false}
retry: {max_attempts: 5, backoff_s: 0.0}
verifier: {name: numeric, timeout_s: 2.5}
output: /tmp/counterpoint-nowhere
"""

NESTED_EXPECTED = RunConfig(
    source=ProblemSourceConfig(
        kind="procedural", num_problems=12, seed=4, min_ops=1, max_ops=2,
        mapping=FieldMapping(question="problem", answer="solution", id="uid", gold_format="boxed",
                             answer_type="math")),
    generator=GeneratorConfig(kind="scripted", model="tiny", seed=4,
                              scripted={"policy": "chain", "step_error_rate": 0.1}),
    sampling=SamplingParams(temperature=0.6, top_p=0.9, max_tokens=128, stop=("\n\n\n", "</s>")),
    samples_per_problem=6,
    segmentation="step",
    labeler="omegaprm",
    labeling=LabelerConfig(seed=2, omegaprm=OmegaPRMConfig(
        k=3, search_limit=5, rollout_params=SamplingParams(temperature=0.5, top_p=1.0, max_tokens=96,
                                                           stop=("END",)))),
    pairing=PairingConfig(max_pairs_per_problem=2, truncated_as_rejected=False),
    retry=RetryConfig(max_attempts=5, backoff_s=0.0),
    verifier=VerifierConfig(name="numeric", timeout_s=2.5),
    output="/tmp/counterpoint-nowhere",
)


@pytest.fixture
def nested_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(NESTED_YAML, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------
# config.py
# ---------------------------------------------------------------------------
def test_yaml_nested_keys_load_into_the_dataclasses(nested_yaml):
    cfg = load_config(nested_yaml)
    assert cfg == NESTED_EXPECTED
    assert isinstance(cfg.source.mapping, FieldMapping)
    assert isinstance(cfg.labeling.omegaprm, OmegaPRMConfig)
    assert isinstance(cfg.labeling.omegaprm.rollout_params, SamplingParams)
    # Stop lists become tuples (SamplingParams is hashable / a cache key part).
    assert cfg.sampling.stop == ("\n\n\n", "</s>") and isinstance(cfg.sampling.stop, tuple)
    assert cfg.labeling.omegaprm.rollout_params.stop == ("END",)
    # Unset fields keep their defaults.
    assert cfg.batch_size == RunConfig().batch_size == 32
    assert cfg.labeling.omegaprm.alpha == 0.5


def test_defaults_and_empty_yaml(tmp_path):
    assert load_config(None) == RunConfig()
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    assert load_config(str(empty)) == RunConfig()
    assert from_dict(None) == from_dict({}) == RunConfig()


@pytest.mark.parametrize("data, cls, names", [
    ({"samples": 3, "outptu": "x"}, "RunConfig", ["outptu", "samples"]),
    ({"source": {"kind": "file", "path": "a.jsonl"}}, "ProblemSourceConfig", ["path"]),
    ({"source": {"mapping": {"questoin": "q"}}}, "FieldMapping", ["questoin"]),
    ({"sampling": {"temprature": 0.1}}, "SamplingParams", ["temprature"]),
    ({"generator": {"urls": ["http://x"]}}, "GeneratorConfig", ["urls"]),
    ({"labeling": {"omegaprm": {"kk": 2}}}, "OmegaPRMConfig", ["kk"]),
    ({"labeling": {"omegaprm": {"rollout_params": {"max_token": 5}}}}, "SamplingParams", ["max_token"]),
    ({"pairing": {"max_pairs": 1}}, "PairingConfig", ["max_pairs"]),
])
def test_unknown_keys_raise_naming_them(data, cls, names):
    with pytest.raises(ValueError) as excinfo:
        from_dict(data)
    message = str(excinfo.value)
    assert f"unknown {cls} key(s) {names}" in message


def test_unknown_keys_in_a_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("source: {kind: procedural, num_problems: 2}\nlabeling: {omegaprm: {k: 2, depth: 3}}\n")
    with pytest.raises(ValueError, match=r"config.labeling.omegaprm: unknown OmegaPRMConfig key\(s\) \['depth'\]"):
        load_config(str(path))


@pytest.mark.parametrize("text, where", [
    ("sampling:\n  # temperature: 0.1\n", "config.sampling"),
    ("source: procedural\n", "config.source"),
    ("labeling: {omegaprm: 4}\n", "config.labeling.omegaprm"),
])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path, text, where):
    path = tmp_path / "section.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{re.escape(where)} must be a mapping"):
        load_config(str(path))


def test_to_dict_from_dict_round_trip(nested_yaml):
    # A stored config keeps only the last part of a local absolute path (published files name no
    # local folders); everything else loads back as it was.
    for cfg in (RunConfig(), load_config(nested_yaml)):
        d = cfg.to_dict()
        stored = dataclasses.replace(cfg, output="<local>/counterpoint-nowhere" if cfg.output.startswith("/")
                                     else cfg.output)
        assert from_dict(d) == stored
        assert json.loads(dumps_config(cfg)) == d
        assert from_dict(json.loads(json.dumps(d))) == stored
    d = NESTED_EXPECTED.to_dict()
    assert d["sampling"] == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 128, "stop": ["\n\n\n", "</s>"]}
    assert d["labeling"]["omegaprm"]["rollout_params"]["stop"] == ["END"]
    assert d["source"]["mapping"]["id"] == "uid"
    assert d["labeler"] == "omegaprm" and d["output"] == "<local>/counterpoint-nowhere"


def test_shipped_configs_load():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"default.yaml", "gsm8k-gpu.yaml", "omegaprm-cpu.yaml"}
    for path in paths:
        cfg = load_config(str(path))
        assert isinstance(cfg, RunConfig), path
        assert from_dict(cfg.to_dict()) == cfg, path
    # default.yaml spells out exactly what a run without a config does.
    assert load_config(str(REPO / "configs" / "default.yaml")) == RunConfig()

    gpu = load_config(str(REPO / "configs" / "gsm8k-gpu.yaml"))
    assert (gpu.source.kind, gpu.source.preset) == ("hf", "gsm8k")
    assert gpu.generator == GeneratorConfig(kind="vllm", model="Qwen/Qwen2.5-Math-1.5B-Instruct", seed=0,
                                            seed_mode="request", max_model_len=4096)
    assert gpu.sampling == SamplingParams(temperature=0.7, top_p=0.95, max_tokens=1024)
    assert (gpu.samples_per_problem, gpu.labeler, gpu.num_shards) == (16, "omegaprm", 8)

    cpu = load_config(str(REPO / "configs" / "omegaprm-cpu.yaml"))
    assert cpu.source == ProblemSourceConfig(kind="procedural", num_problems=16, min_ops=1, max_ops=2)
    assert cpu.labeling.omegaprm == OmegaPRMConfig(k=4, search_limit=8)
    # Throughput knobs on auto; rollouts inherit the run's sampling.
    assert (cpu.labeling.omegaprm.parallel_searches, cpu.labeling.omegaprm.max_trees) == ("auto", "auto")
    assert cpu.labeling.omegaprm.effective_rollout_params(cpu.sampling) == cpu.sampling
    assert cpu.labeler == "omegaprm" and cpu.labeling.compute_values is True
    assert cpu.labeling.overlap_values is True
    assert (cpu.samples_per_problem, cpu.labeling_batch_size) == (8, None)


# ---------------------------------------------------------------------------
# Command-line overrides (generate_corpus.resolve_config)
# ---------------------------------------------------------------------------
def _resolve(*flags):
    return resolve_config(PipelineOptions(list(flags)))


def test_no_flags_is_the_yaml(nested_yaml):
    assert _resolve("--config", nested_yaml) == NESTED_EXPECTED


def test_scalar_overrides(nested_yaml):
    cfg = _resolve("--config", nested_yaml, "--num-problems", "5", "--samples", "3", "--max-tokens", "77",
                   "--no-validate", "--output", "/tmp/elsewhere")
    base = NESTED_EXPECTED
    assert cfg == dataclasses.replace(
        base,
        source=dataclasses.replace(base.source, num_problems=5),
        sampling=dataclasses.replace(base.sampling, max_tokens=77),
        samples_per_problem=3, validate=False, output="/tmp/elsewhere",
    )
    assert cfg.sampling.stop == ("\n\n\n", "</s>")  # the rest of sampling is the YAML's
    # Underscore spellings are accepted too.
    assert _resolve("--config", nested_yaml, "--num_problems", "6", "--max_tokens", "9") == dataclasses.replace(
        base, source=dataclasses.replace(base.source, num_problems=6),
        sampling=dataclasses.replace(base.sampling, max_tokens=9))


def test_validate_is_the_yaml_value_without_the_flag(tmp_path):
    path = tmp_path / "novalidate.yaml"
    path.write_text("validate: false\nsamples_per_problem: 2\n")
    assert _resolve("--config", str(path)).validate is False
    assert _resolve().validate is True
    assert _resolve("--no-validate").validate is False


def test_labeler_override(nested_yaml, tmp_path):
    assert _resolve("--config", nested_yaml, "--labeler", "none") == dataclasses.replace(NESTED_EXPECTED, labeler=None)
    assert _resolve("--config", nested_yaml, "--labeler", "mc").labeler == "mc"
    plain = tmp_path / "plain.yaml"
    plain.write_text("samples_per_problem: 2\n")
    assert _resolve("--config", str(plain)).labeler is None
    assert _resolve("--config", str(plain), "--labeler", "omegaprm") == from_dict(
        {"samples_per_problem": 2, "labeler": "omegaprm"})
    with pytest.raises(SystemExit):
        _resolve("--labeler", "prm800k")


def test_input_switches_the_source_to_files(nested_yaml):
    cfg = _resolve("--config", nested_yaml, "--input", "a.jsonl", "--input", "gs://bucket/b-*.parquet")
    assert cfg == dataclasses.replace(NESTED_EXPECTED, source=dataclasses.replace(
        NESTED_EXPECTED.source, kind="file", paths=["a.jsonl", "gs://bucket/b-*.parquet"]))
    # The YAML's field mapping is kept for the files.
    assert cfg.source.mapping.question == "problem"


def test_preset_override(nested_yaml):
    cfg = _resolve("--config", nested_yaml, "--preset", "gsm8k")
    # A procedural source with a preset becomes an HF source.
    assert cfg.source == dataclasses.replace(NESTED_EXPECTED.source, kind="hf", preset="gsm8k")
    assert cfg.source.hf_args() == ("openai/gsm8k", "main", "test")
    # A file source keeps reading files, with the preset's mapping.
    files = _resolve("--config", nested_yaml, "--input", "x.jsonl", "--preset", "math")
    assert (files.source.kind, files.source.preset, files.source.paths) == ("file", "math", ["x.jsonl"])
    assert _resolve("--preset", "math500").source.kind == "hf"


def test_server_url_switches_the_generator_to_openai(nested_yaml):
    cfg = _resolve("--config", nested_yaml, "--server-url", "http://10.0.0.1:8000/v1",
                   "--server_url", "http://10.0.0.2:8000/v1")
    assert cfg == dataclasses.replace(NESTED_EXPECTED, generator=dataclasses.replace(
        NESTED_EXPECTED.generator, kind="openai", base_urls=["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]))
    assert cfg.generator.model == "tiny"
    # --server-url wins over an explicit --generator.
    assert _resolve("--generator", "vllm", "--server-url", "http://h/v1").generator.kind == "openai"
    assert _resolve("--generator", "scripted", "--model", "m").generator == GeneratorConfig(kind="scripted", model="m")


def test_seed_overrides_source_and_generator(nested_yaml):
    cfg = _resolve("--config", nested_yaml, "--seed", "123")
    assert cfg == dataclasses.replace(
        NESTED_EXPECTED,
        source=dataclasses.replace(NESTED_EXPECTED.source, seed=123),
        generator=dataclasses.replace(NESTED_EXPECTED.generator, seed=123),
    )


def test_explicit_config_object_takes_the_flags():
    base = from_dict({"samples_per_problem": 2, "generator": {"kind": "scripted"}})
    cfg = resolve_config(PipelineOptions(["--samples", "7", "--temperature", "0.1", "--batch-size", "4",
                                          "--num-shards", "3", "--no-report", "--source", "file"]), base)
    assert cfg == dataclasses.replace(
        base, samples_per_problem=7, sampling=dataclasses.replace(base.sampling, temperature=0.1),
        batch_size=4, num_shards=3, report=False, source=dataclasses.replace(base.source, kind="file"))


# ---------------------------------------------------------------------------
# counterpoint.cli end to end
# ---------------------------------------------------------------------------
def _write_run_inputs(tmp_path):
    problems = [procedural_problem(3, i) for i in range(4)]
    lines = [json.dumps({"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]})
             for p in problems]
    (tmp_path / "problems.jsonl").write_text("\n".join(lines + ["{not json"]) + "\n", encoding="utf-8")
    config = {
        "source": {"kind": "file", "paths": [str(tmp_path / "problems.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 2,
                      "scripted": {"policy": "answer_key", "p_correct": 0.5,
                                   "answer_key": {p["question"]: p["gold_answer"] for p in problems}}},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64},
        "samples_per_problem": 4,
        "batch_size": 2,
        "pairing": {"max_pairs_per_problem": 2},
        # Overridden on the command line: the run must write to --output.
        "output": str(tmp_path / "not-here"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return problems, str(path)


def _table_value(printed: str, label: str) -> str:
    m = re.search(rf"^{re.escape(label)}\s{{2,}}(.*)$", printed, re.MULTILINE)
    assert m, (label, printed)
    return m.group(1)


def test_cli_run_validate_report_push(tmp_path, capsys):
    problems, config_path = _write_run_inputs(tmp_path)
    out = tmp_path / "out"

    assert cli.main(["run", "--config", config_path, "--output", str(out), "--runner=FnApiRunner"]) == 0
    printed = capsys.readouterr().out
    assert not (tmp_path / "not-here").exists()
    assert "Counterpoint run summary" in printed
    assert "accounting: 5 in = 4 with output + 1 rejected  [ok]" in printed
    layout = storage.DatasetLayout(str(out))
    live = Path(layout.dataset_dir)  # the version the manifest names
    assert live.parent == out / "versions"
    traj = layout.read_table("trajectories").to_pylist()
    prefs = layout.read_table("preferences").to_pylist()
    rejects = layout.read_table("rejects").to_pylist()
    assert len(traj) == 16 and {t["problem_id"] for t in traj} == {p["problem_id"] for p in problems}
    assert [(r["stage"], r["reason"], r["scope"]) for r in rejects] == [("read", "malformed_json", "problem")]
    n_correct = sum(t["verdict"] == "correct" for t in traj)
    n_incorrect = sum(t["verdict"] == "incorrect" for t in traj)
    assert n_correct and n_incorrect
    assert _table_value(printed, "problems in") == "5"
    assert _table_value(printed, "problems with output") == "4"
    assert _table_value(printed, "problems rejected") == "1"
    assert _table_value(printed, "trajectories") == "16"
    assert _table_value(printed, "  correct / incorrect / unknown") == f"{n_correct} / {n_incorrect} / 0"
    assert _table_value(printed, "preference pairs") == f"{len(prefs)} {{'outcome': {len(prefs)}}}"
    # Every verified sample but the duplicates (counterpoint.clean.dedup: duplicate_of set) is one unpaired row.
    kept = sum(t["duplicate_of"] is None for t in traj)
    assert _table_value(printed, "unpaired rows") == str(kept)
    assert _table_value(printed, "rejects (rows)") == "1 {'malformed_json': 1}"
    assert _table_value(printed, "validation") == "passed"
    summary = json.loads((live / "run_summary.json").read_text())
    assert summary["counts"]["trajectories"] == 16 and summary["counts"]["pairs"] == len(prefs)
    # The resolved config (with the --output override) is recorded next to the data, naming no local folder.
    assert json.loads((live / "run_config.json").read_text())["output"] == "<local>/out"

    assert cli.main(["validate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Validation passed for {live}" in printed or f"Validation passed for {live.resolve()}" in printed
    assert "5 config(s)" in printed

    assert cli.main(["report", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed in (str(live / "report.html"), str(live.resolve() / "report.html"))
    assert (live / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    assert cli.main(["push", str(out), "--repo-id", "org/name", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Would create public dataset repo org/name") == 1, printed
    listed = re.findall(r"^  (\S+)  (\d+)$", printed, re.MULTILINE)
    paths = [p for p, _ in listed]
    shards = sorted(str(p.relative_to(live)) for p in (live / "data").rglob("*.parquet"))
    assert [p for p in paths if p.startswith("data/")] == shards
    assert shards == [f"data/{c}/train-00000-of-00001.parquet"
                      for c in ("preferences", "problem_stats", "rejects", "trajectories", "unpaired")]
    assert "README.md" in paths and "report.html" in paths
    assert not [p for p in paths if p.startswith(("_work", "quarantine")) or p == "run_summary.json"]
    for path, size in listed:
        assert int(size) == (live / path).stat().st_size, path


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main([])
    assert excinfo.value.code == 2
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["push", "somewhere", "--dry-run"])
    assert excinfo.value.code == 2
    assert "--repo-id" in capsys.readouterr().err


def test_console_script_help():
    script = Path(sys.executable).parent / "counterpoint"
    assert script.exists(), script
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: counterpoint")
    for command in ("run", "validate", "report", "push", "export"):
        assert command in proc.stdout


def test_the_package_never_imports_its_test_scaffolding():
    """counterpoint/testing plugs in by 'module:Class' paths in configs; nothing else imports it."""
    import ast

    package = REPO / "counterpoint"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if (package / "testing") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n == "counterpoint.testing" or n.startswith("counterpoint.testing.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
    assert (package / "testing" / "worlds.py").is_file() and not (package / "labeling" / "worlds.py").exists()
    assert not (package / "local_services.py").exists()
