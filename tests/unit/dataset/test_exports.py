"""Trainer-ready exports: row transforms (pure) and ``export_output`` (validated, Hub layout, card).

The corpus comes from ``_tiny_model.corpus_rows`` (rows shaped like the labeller's,
written with ``rows_to_table``); one validated copy per module, copied per test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from _tiny_model import corpus_rows, write_validated_output
from counterpoint import storage
from counterpoint.dataset import export
from counterpoint.dataset.export import ExportError, export_output, formats
from counterpoint.dataset.publish import GateOptions, ValidationFailed, revalidate
from counterpoint.dataset.verdicts import NotValidated
from counterpoint.errors import UsageError, VerdictMismatch
from counterpoint.schemas import exports, records

ALL_FORMATS = ["trl-stepwise", "openrlhf-prm", "step-dpo", "weighted-pairs"]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    out = tmp_path_factory.mktemp("validated") / "out"
    out.mkdir()
    rows = write_validated_output(out)
    return out, rows


@pytest.fixture
def output(validated, tmp_path):
    src, rows = validated
    out = tmp_path / "out"
    shutil.copytree(src, out)
    return out, rows


def _by_id(rows):
    return {r["id"]: r for r in rows}


def _read(out: Path, config: str):
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def _layout(out: Path) -> storage.DatasetLayout:
    return storage.DatasetLayout(str(out))


def _live(out: Path) -> Path:
    """The live version's folder (the manifest names it)."""
    return Path(_layout(out).dataset_dir)


def _front_matter(out: Path) -> dict:
    text = (out / "README.md").read_text()
    return yaml.safe_load(text.split("---")[1])


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------
def test_export_specs_are_registered_for_the_gate_and_card():
    for spec in exports.EXPORT_TABLES:
        assert records.table(spec.name) is spec
        assert spec.trainer and spec.doc
    assert exports.EXPORT_CONFIGS[:4] == ("trl_stepwise", "openrlhf_prm", "step_dpo", "weighted_pairs")
    assert {"correction_sft", "correction_dpo"} <= set(exports.EXPORT_CONFIGS)  # issue 22 (appended)
    assert {"grpo_prompts", "verl_rl", "npo_forget", "npo_retain", "grouped_negatives", "sft_positives"} \
        <= set(exports.EXPORT_CONFIGS)
    assert set(export.FORMAT_CONFIG.values()) | {c for cs in export.FORMAT_EXTRA_CONFIGS.values() for c in cs} \
        == set(exports.EXPORT_CONFIGS)
    # weighted_pairs follows preferences by name: every preference column, then weight and its source
    assert exports.WEIGHTED_PAIRS.column_names == records.PREFERENCES.column_names + ["weight", "weight_source"]
    assert exports.WEIGHTED_PAIRS.must_differ == records.PREFERENCES.must_differ
    assert "clip(-A, 0, 1)" in exports.WEIGHTED_PAIRS.doc and "mc_gap" in exports.WEIGHTED_PAIRS.doc
    assert "PRMTrainer" in exports.TRL_STEPWISE.trainer and "1.16" in exports.TRL_STEPWISE.doc
    with pytest.raises(ValueError, match="already taken"):
        exports.register({"step_dpo": records.PREFERENCES})


# ---------------------------------------------------------------------------
# Row transforms
# ---------------------------------------------------------------------------
def test_trl_stepwise_projects_step_labels():
    rows = corpus_rows()
    built = formats.trl_stepwise_rows(rows["step_labels"] + [dict(rows["step_labels"][0], id="empty", completions=[],
                                                                  labels=[], mc_values=[], mc_measured=[],
                                                                  n_rollouts_per_step=[])])
    assert built.config == "trl_stepwise"
    assert [r["reason"] for r in built.rejects] == ["export_no_steps"]
    got = _by_id(built.rows)
    assert len(got) == len(rows["step_labels"])
    assert got["arith-000/s2/omegaprm"] == {
        "id": "arith-000/s2/omegaprm",
        "prompt": "Tom has 3 apples, buys 4 more and eats 2. How many apples does he have left?",
        "completions": ["Tom starts with 3 apples.", "After buying 4 more he has 3 + 4 = 8.",
                        "After eating 2 he has 8 - 2 = 6.", "The answer is \\boxed{6}."],
        "labels": [True, False, False, False],
    }
    assert [r["id"] for r in built.rows] == sorted(got)


def test_openrlhf_rows_put_one_placeholder_after_each_step():
    rows = corpus_rows()
    source = rows["step_labels"]
    tricky = dict(source[1], id="tricky", sample_index=9, completions=["I write ки here."] + source[1]["completions"][1:])
    built = formats.openrlhf_prm_rows(source + [tricky])
    assert [(r["reason"], json.loads(r["payload"])["id"]) for r in built.rejects] == [
        ("export_placeholder_in_text", "tricky")]
    got = _by_id(built.rows)["arith-000/s3/omegaprm"]  # first error at step 0
    assert got == {
        "id": "arith-000/s3/omegaprm", "problem_id": "arith-000", "sample_index": 3,
        "input": ("Tom has 3 apples, buys 4 more and eats 2. How many apples does he have left?\n"
                  "Tom starts with 4 apples. ки\nAfter buying 4 more he has 3 + 4 = 7. ки\n"
                  "After eating 2 he has 4. ки\nThe answer is \\boxed{4}. ки"),
        "label": ["-", "-", "-", "-"], "soft_label": [0.0, 0.0, 0.0, 0.0], "placeholder": "ки",
    }
    two = _by_id(built.rows)["arith-001/s3/omegaprm"]  # first error at step 2
    assert two["label"] == ["+", "+", "-", "-"] and two["soft_label"] == [0.875, 0.625, 0.0, 0.0]
    for r in built.rows:
        assert r["input"].count("ки") == len(r["label"]) == len(r["soft_label"])
    custom = formats.openrlhf_prm_rows(source[:1], placeholder="<step>")
    assert custom.rows[0]["input"].endswith("\\boxed{6}. <step>") and custom.rows[0]["placeholder"] == "<step>"
    for bad in ("", " ки", "+"):
        with pytest.raises(ValueError, match="placeholder"):
            formats.openrlhf_prm_rows(source, placeholder=bad)


def test_step_dpo_moves_the_prefix_into_the_prompt():
    rows = corpus_rows()
    prefs = rows["preferences"]
    step_pairs = [p for p in prefs if p["pair_type"] == "step"]
    base = step_pairs[0]
    broken = [
        dict(base, id="mismatch", chosen=[{"role": "assistant", "content": "Something else. 3 + 4 = 7."}]),
        dict(base, id="equal", chosen=base["rejected"]),
        dict(base, id="two-messages", chosen=base["chosen"] * 2),
        dict(base, id="empty-step", chosen=[{"role": "assistant", "content": base["prefix"] + "  "}]),
    ]
    built = formats.step_dpo_rows(prefs + broken)
    assert built.not_applicable == len(prefs) - len(step_pairs)
    assert sorted((json.loads(r["payload"])["id"], r["reason"]) for r in built.rejects) == [
        ("empty-step", "export_step_pair_empty_step"),
        ("equal", "export_step_pair_chosen_equals_rejected"),
        ("mismatch", "export_step_pair_prefix_mismatch"),
        ("two-messages", "export_step_pair_malformed"),
    ]
    got = _by_id(built.rows)
    assert len(got) == len(step_pairs)
    system, user = base["prompt"]
    assert got["arith-000/step/omegaprm/s2"] == {
        "id": "arith-000/step/omegaprm/s2", "problem_id": "arith-000",
        "prompt": [system, user, {"role": "assistant", "content": "Tom starts with 3 apples.\n\n"}],
        "chosen": [{"role": "assistant", "content": "After buying 4 more he has 3 + 4 = 7."}],
        "rejected": [{"role": "assistant", "content": "After buying 4 more he has 3 + 4 = 8."}],
        "prefix": "Tom starts with 3 apples.\n\n", "step_index": 1, "chosen_sample_index": None,
        "rejected_sample_index": 2, "labeler": "omegaprm", "metadata": base["metadata"],
    }
    first = got["arith-000/step/omegaprm/s3"]  # the first step is wrong: nothing to continue
    assert first["prompt"] == [system, user] and first["prefix"] == ""
    assert first["chosen"] == [{"role": "assistant", "content": "Tom starts with 3 apples."}]
    assert first["rejected"] == [{"role": "assistant", "content": "Tom starts with 4 apples."}]
    for r in built.rows:  # the prefix plus the step is the source pair's completion, character for character
        src = _by_id(prefs)[r["id"]]
        assert r["prefix"] + r["chosen"][0]["content"] == src["chosen"][0]["content"]
        assert r["prefix"] + r["rejected"][0]["content"] == src["rejected"][0]["content"]


def test_pair_weight_formula():
    pair = {"pair_type": "step", "problem_id": "p", "rejected_sample_index": 1, "step_index": 2,
            "labeler": "omegaprm", "metadata": json.dumps({"prefix_mc": 0.4})}
    value = {"problem_id": "p", "sample_index": 1, "step_index": 2, "labeler": "omegaprm", "advantage": -0.3}
    label = {"problem_id": "p", "sample_index": 1, "labeler": "omegaprm", "mc_values": [0.9, 0.7, 0.2, 0.0]}
    values = {("p", 1, 2): [value]}
    labels = {("p", 1): [label]}
    assert formats.pair_weight(pair, values, labels) == (0.3, "advantage")
    assert formats.pair_weight(pair, {("p", 1, 2): [dict(value, advantage=0.2)]}, labels) == (0.0, "advantage")
    weight, source = formats.pair_weight(pair, {}, labels)  # V_1 - V_2 = 0.7 - 0.2
    assert (round(weight, 12), source) == (0.5, "mc_gap")
    # another labeller's measurements do not count for this pair
    other = {("p", 1, 2): [dict(value, labeler="mc")]}
    assert formats.pair_weight(pair, other, {("p", 1): [dict(label, labeler="mc")]}, 0.7) == (0.7, "default")
    first = dict(pair, step_index=0)
    assert formats.pair_weight(first, {}, labels) == (0.0, "mc_gap")  # V_-1 = prefix_mc 0.4 < V_0 = 0.9
    weight, source = formats.pair_weight(first, {}, {("p", 1): [dict(label, mc_values=[0.1, 0.0])]})
    assert (round(weight, 12), source) == (0.3, "mc_gap")  # 0.4 - 0.1
    assert formats.pair_weight(dict(first, metadata=None), {}, {("p", 1): [label]}) == (1.0, "default")
    assert formats.pair_weight(dict(pair, pair_type="outcome", step_index=None), values, labels, 0.8) == \
        (0.8, "default")
    with pytest.raises(ValueError, match="default_weight"):
        formats.weighted_pair_rows([], default_weight=1.5)


def test_weighted_pairs_from_the_corpus():
    rows = corpus_rows()
    built = formats.weighted_pair_rows(rows["preferences"], rows["step_values"], rows["step_labels"],
                                       default_weight=0.9)
    assert built.rejects == [] and len(built.rows) == len(rows["preferences"])
    got = _by_id(built.rows)
    for src in rows["preferences"]:
        row = got[src["id"]]
        assert {k: row[k] for k in src} == records.PREFERENCES.conform(src)
    step = lambda p, s: got[f"arith-{p:03d}/step/omegaprm/s{s}"]  # noqa: E731
    assert (step(0, 2)["weight"], step(0, 2)["weight_source"]) == (0.875, "advantage")  # Q1 - Q0 = 0 - 0.875
    assert (step(0, 3)["weight"], step(0, 3)["weight_source"]) == (0.5, "advantage")  # first step: Q0 - Q_root
    assert (step(1, 3)["weight"], step(1, 3)["weight_source"]) == (0.625, "mc_gap")  # no value at the error step
    assert (step(2, 3)["weight"], step(2, 3)["weight_source"]) == (0.625, "advantage")
    assert (step(5, 2)["weight"], step(5, 2)["weight_source"]) == (0.9, "default")  # nothing measured
    assert got["arith-000/first_pit/omegaprm/s2-s0"]["weight"] == 0.875
    sources = {}
    for r in built.rows:
        sources.setdefault(r["pair_type"], set()).add(r["weight_source"])
    assert sources == {"outcome": {"default"}, "step": {"advantage", "mc_gap", "default"},
                       "first_pit": {"advantage", "mc_gap", "default"}}
    assert all(r["weight"] == 0.9 for r in built.rows if r["pair_type"] == "outcome")


# ---------------------------------------------------------------------------
# export_output
# ---------------------------------------------------------------------------
def test_export_every_format_next_to_the_other_configs(output, tmp_path):
    import datasets

    out, rows = output
    before = json.loads((_live(out) / "validation" / "summary.json").read_text())
    before_version = _live(out)
    result = export_output(_layout(out), ALL_FORMATS, placeholder="<step>")
    assert result.target_dir == result.source_dir == str(out)
    assert _live(out) != before_version and before_version.is_dir()  # a new version; the previous one is kept
    assert result.rows == {"trl_stepwise": 11, "openrlhf_prm": 11, "step_dpo": 12, "weighted_pairs": 36}
    assert result.rejects == [] and result.not_applicable["step_dpo"] == 24
    for config, paths in result.paths.items():
        assert [Path(p).name for p in paths] == ["train-00000-of-00001.parquet"]
        assert pq.ParquetFile(paths[0]).metadata.row_group(0).column(0).compression == "ZSTD"

    expected = {
        "trl_stepwise": formats.trl_stepwise_rows(rows["step_labels"]).rows,
        "openrlhf_prm": formats.openrlhf_prm_rows(rows["step_labels"], placeholder="<step>").rows,
        "step_dpo": formats.step_dpo_rows(rows["preferences"]).rows,
        "weighted_pairs": formats.weighted_pair_rows(rows["preferences"], rows["step_values"],
                                                     rows["step_labels"]).rows,
    }
    cache = tmp_path / "hf"
    for config, want in expected.items():
        ds = datasets.load_dataset(str(out), config, split="train", cache_dir=str(cache))
        assert ds.column_names == records.table(config).column_names
        assert sorted(ds.to_list(), key=lambda r: r["id"]) == want, config

    summary = json.loads((_live(out) / "validation" / "summary.json").read_text())
    assert summary["success"] is True
    for config in expected:
        assert summary["configs"][config]["success"] and summary["configs"][config]["rows"] == len(expected[config])
        assert summary["exports"][config]["source"] == str(out)
    for config, entry in before["configs"].items():  # the pipeline configs' results are kept as they were
        assert summary["configs"][config] == entry
    assert (_live(out) / summary["data_docs"]).is_file()
    assert not list((out / "_work" / "staging").glob("*"))
    declared = {c["config_name"] for c in _front_matter(out)["configs"]}
    assert set(expected) <= declared
    assert "### `step_dpo`" in (out / "README.md").read_text()

    # A later full validation (`counterpoint validate OUT`, against the counts written) covers the exports
    # too, and passes.
    report, verdict = revalidate(storage.OutputLayout(str(out)), GateOptions())
    assert report.success and verdict.success, report.message()
    assert set(expected) <= set(report.configs)


def test_export_into_a_separate_dataset(output, tmp_path):
    import datasets

    out, rows = output
    target = tmp_path / "step-dpo-ds"
    manifest = (out / "counterpoint.json").read_bytes()
    first = export_output(_layout(out), "step-dpo", target=storage.OutputLayout(str(target)))
    assert first.target_dir == str(target) and first.rows == {"step_dpo": 12}
    assert _layout(target).present_configs() == ["step_dpo"]
    assert "step_dpo" not in _layout(out).present_configs()  # the source is left alone
    assert (out / "counterpoint.json").read_bytes() == manifest
    second = export_output(_layout(out), "weighted-pairs", target=storage.OutputLayout(str(target)),
                           default_weight=0.5)
    assert _layout(target).present_configs() == ["step_dpo", "weighted_pairs"]
    run_summary = json.loads((_live(target) / "run_summary.json").read_text())
    assert run_summary["configs"] == ["step_dpo", "weighted_pairs"]
    assert run_summary["provenance"]["model"] == "embedded:smollm2-135m-instruct"
    assert run_summary["provenance"]["export"]["formats"] == ["step-dpo", "weighted-pairs"]
    summary = json.loads((_live(target) / "validation" / "summary.json").read_text())
    assert summary["success"] and sorted(summary["configs"]) == ["step_dpo", "weighted_pairs"]
    meta = _front_matter(target)
    assert [c["config_name"] for c in meta["configs"]] == ["step_dpo", "weighted_pairs"]
    ds = datasets.load_dataset(str(target), "weighted_pairs", split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == second.rows["weighted_pairs"] == len(rows["preferences"])
    assert {r["weight"] for r in ds if r["pair_type"] == "outcome"} == {0.5}


def _patch_summary(out: Path, **changes):
    path = _live(out) / "validation" / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))
    return summary


def test_export_refuses_what_it_cannot_vouch_for(output):
    out, rows = output
    with pytest.raises(ExportError, match="unknown export format.*choose from trl-stepwise"):
        export_output(_layout(out), "trl")
    with pytest.raises(ExportError, match="placeholder"):
        export_output(_layout(out), "openrlhf-prm", placeholder=" ")
    manifest = (out / "counterpoint.json").read_bytes()

    # an output whose configs changed since validation
    prefs = Path(_layout(out).config_dir("preferences"))
    extra = prefs / "train-00002-of-00002.parquet"
    pq.write_table(records.rows_to_table("preferences", rows["preferences"][:1]), extra)
    with pytest.raises(VerdictMismatch, match="'preferences' changed since validation.*train-00002-of-00002"):
        export_output(_layout(out), "step-dpo")
    extra.unlink()

    # a validated output without step pairs has nothing to export as step-dpo (the user accepted
    # the outcome-only preferences with `counterpoint validate --accept-current`)
    outcome = [p for p in rows["preferences"] if p["pair_type"] == "outcome"]
    for p in prefs.glob("*.parquet"):
        p.unlink()
    pq.write_table(records.rows_to_table("preferences", outcome), prefs / "train-00000-of-00001.parquet")
    with pytest.raises(VerdictMismatch, match="'preferences' changed since validation"):
        export_output(_layout(out), "step-dpo")
    _, verdict = revalidate(storage.OutputLayout(str(out)), GateOptions(), accept_current=True)
    assert verdict.success and verdict.raw["accepted_current"]["found"]["preferences"] == {
        "shards": 1, "rows": len(outcome)}
    with pytest.raises(ExportError, match="nothing to export for 'step-dpo': 12 source row"):
        export_output(_layout(out), "step-dpo")

    # an output without step labels (here: removed, and accepted as it is now) has none to export
    shutil.rmtree(_layout(out).config_dir("step_labels"))
    with pytest.raises(VerdictMismatch, match="'step_labels' changed since validation"):
        export_output(_layout(out), "trl-stepwise")
    revalidate(storage.OutputLayout(str(out)), GateOptions(), accept_current=True)
    with pytest.raises(ExportError, match="needs the 'step_labels' config.*--labeler"):
        export_output(_layout(out), "trl-stepwise")

    # failed or missing validation
    _patch_summary(out, success=False)
    with pytest.raises(NotValidated, match="validation failed"):
        export_output(_layout(out), "weighted-pairs")
    (_live(out) / "validation" / "summary.json").unlink()
    with pytest.raises(NotValidated, match="has not been validated.*counterpoint validate"):
        export_output(_layout(out), "weighted-pairs")
    assert not {"weighted_pairs", "step_dpo"} & set(_layout(out).present_configs())
    assert (out / "counterpoint.json").read_bytes() == manifest


def test_export_refuses_an_unvalidated_config(output):
    out, _ = output
    summary = json.loads((_live(out) / "validation" / "summary.json").read_text())
    del summary["configs"]["step_values"]
    (_live(out) / "validation" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(NotValidated, match=r"\['step_values'\] .* were not validated"):
        export_output(_layout(out), "weighted-pairs")


def test_an_export_that_fails_the_gate_is_not_published(output, monkeypatch):
    out, rows = output
    real = formats.trl_stepwise_rows

    def duplicated(step_labels):
        built = real(step_labels)
        built.rows.append(dict(built.rows[0]))  # the same id twice: the gate's uniqueness check fails
        return built

    monkeypatch.setattr(formats, "trl_stepwise_rows", duplicated)
    manifest = (out / "counterpoint.json").read_bytes()
    with pytest.raises(ValidationFailed, match="the published dataset was left as it was") as excinfo:
        export_output(_layout(out), "trl-stepwise")
    assert "expect_column_values_to_be_unique" in str(excinfo.value)
    assert (out / "counterpoint.json").read_bytes() == manifest
    assert "trl_stepwise" not in _layout(out).present_configs()
    assert "trl_stepwise" not in json.loads((_live(out) / "validation" / "summary.json").read_text())["configs"]
    assert not list((out / "_work" / "staging").glob("*"))
    # the failing shard is kept for inspection in the quarantine
    assert [p.name for p in (out / "quarantine").rglob("*.parquet")] == ["train-00000-of-00001.parquet"]


def test_export_command_line(output, tmp_path, capsys):
    import argparse

    from counterpoint.dataset.export.command import add_export_parser, cmd_export

    parser = argparse.ArgumentParser(prog="counterpoint")
    add_export_parser(parser.add_subparsers(dest="command"))
    out, rows = output
    target = tmp_path / "prm"
    args = parser.parse_args(["export", str(out), "--format", "trl-stepwise", "--format", "openrlhf-prm",
                              "--output", str(target), "--placeholder", "<step>"])
    assert cmd_export(args) == 0
    printed = capsys.readouterr().out
    assert "trl_stepwise     11 row(s) in 1 shard(s)" in printed and "openrlhf_prm     11 row(s)" in printed
    assert _layout(target).present_configs() == ["openrlhf_prm", "trl_stepwise"]
    assert {r["placeholder"] for r in _read(target, "openrlhf_prm")} == {"<step>"}
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(out), "--format", "dpo"])
    with pytest.raises(UsageError, match="holds no Counterpoint output"):
        cmd_export(parser.parse_args(["export", str(tmp_path / "missing"), "--format", "step-dpo"]))
