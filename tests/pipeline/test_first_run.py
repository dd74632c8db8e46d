"""First-run experience: help that helps, errors at the door, thin runs that succeed, visible progress,
publishing only what passed, and the optional stages (consensus judge, trainer exports) wired into a run."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from counterpoint import cli, progress, storage
from counterpoint.config import FLAGS, RunConfig, default_of, from_dict
from counterpoint.pipelines.finalize import AccountingError, ValidationFailed
from counterpoint.pipelines.generate_corpus import check_config, resolve_config, run
from counterpoint.progress import LiveProgress
from counterpoint.testing.chain import CHAIN_JUDGE

IN_PROCESS = ["--runner=FnApiRunner"]


def _live(out) -> Path:
    """The live version's folder (the manifest names it)."""
    return Path(storage.DatasetLayout(str(out)).dataset_dir)


def _published(out) -> dict:
    """Every file of the output folder outside its working area: the dataset as readers see it."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(Path(out).rglob("*"))
            if p.is_file() and not p.relative_to(out).as_posix().startswith(("_work/", "quarantine/"))}


# ---------------------------------------------------------------------------
# Help that helps
# ---------------------------------------------------------------------------
def test_run_help_lists_every_option_with_its_default_grouped(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["run", "--help"])
    assert excinfo.value.code == 0
    text = capsys.readouterr().out
    for group in ("source:", "generator:", "sampling:", "labelling:", "output:"):
        assert f"\n{group}\n" in text, group
    defaults = RunConfig()
    for flag in FLAGS:
        assert flag.names[0] in text, flag.names[0]
        if flag.paths and flag.action not in ("true", "false"):
            shown = default_of(flag, defaults)
            shown = "none" if shown in (None, [], {}) else shown
            # argparse wraps help text: compare with whitespace collapsed
            block = " ".join(text.split())
            assert re.search(re.escape(flag.names[0]) + r".*?\(default: " + re.escape(str(shown)) + r"\)", block), flag
    assert "Beam pipeline options pass through" in text and "--runner=DataflowRunner" in text


# ---------------------------------------------------------------------------
# Fail at the door: every bad setting is refused in the driver, naming the key and the fix
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--generator", "vllmm"], "invalid choice: 'vllmm'"),
    (["--seed-mode", "random"], "invalid choice: 'random'"),
    (["--dtype", "bf16"], "invalid choice: 'bf16'"),
    (["--labeler", "prm800k"], "invalid choice: 'prm800k'"),
    (["--num-problem", "5"], "unknown option(s): --num-problem (did you mean --num-problems?)"),
    (["--min-rows", "preferences"], "--min-rows takes CONFIG=N"),
])
def test_bad_flags_fail_before_anything_runs(argv, message, capsys, tmp_path):
    try:
        code = cli.main(["run", "--output", str(tmp_path / "o"), *argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("data, message", [
    ({"generator": {"kind": "vllmm"}}, "generator.kind: unknown generator 'vllmm'"),
    ({"generator": {"seed_mode": "random"}}, "generator.seed_mode: 'random' is not one of"),
    ({"generator": {"compile": "yes"}}, "generator.compile: 'yes' is not one of"),
    ({"generator": {"dtype": "bf16"}}, "generator.dtype: 'bf16' is not one of"),
    ({"generator": {"kind": "openai"}}, "needs generator.base_urls: pass --server-url"),
    ({"segmentation": "sentence"}, "segmentation: unknown mode 'sentence'"),
    ({"verifier": {"name": "sympy"}}, "verifier.name: unknown verifier 'sympy'"),
    ({"labeler": "prm"}, "labeler: unknown labeller 'prm'"),
    ({"sampling": {"temperature": -1}}, "sampling.temperature must be >= 0"),
    ({"sampling": {"top_p": 0}}, "sampling.top_p must be in (0, 1]"),
    ({"samples_per_problem": 0}, "samples_per_problem must be >= 1"),
    ({"min_rows": {"prefs": 3}}, "min_rows: unknown config 'prefs'"),
    ({"consensus": {"mode": "annotate"}}, "consensus needs a labeller"),
])
def test_bad_configs_are_refused_when_built(data, message):
    with pytest.raises(ValueError) as excinfo:
        from_dict(data)
    assert message in str(excinfo.value)


@pytest.mark.parametrize("data, message", [
    ({"generator": {"kind": "scripted"}}, "solves chain problems only"),
    ({"source": {"kind": "file"}}, "needs at least one path: --input"),
    ({"source": {"kind": "hf"}}, "needs source.hf_name or a preset"),
    ({"source": {"kind": "procedural", "num_problems": None}}, "needs source.num_problems"),
    ({"source": {"kind": "chain", "num_problems": 3, "min_ops": 4, "max_ops": 2}}, "1 <= min_ops <= max_ops"),
    ({"generator": {"kind": "scripted", "scripted": {"policy": "mystery"}}, "source": {"kind": "chain", "num_problems": 2}},
     "policy"),
    ({"exports": ["trl-stepwise"]}, "only a labelling run writes: add --labeler"),
    ({"exports": ["parquet"]}, "unknown format"),
])
def test_incomplete_or_inconsistent_configs_fail_at_the_door(data, message):
    with pytest.raises(ValueError) as excinfo:
        check_config(from_dict(data))
    assert message in str(excinfo.value)


def test_cli_reports_door_errors_without_a_traceback(tmp_path, capsys):
    assert cli.main(["run", "--generator", "scripted", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("counterpoint run: ") and "--source chain" in err and "Traceback" not in err


def test_sampling_flags_reach_rollouts_unless_rollouts_are_set():
    from apache_beam.options.pipeline_options import PipelineOptions

    cfg = resolve_config(PipelineOptions(["--labeler", "omegaprm", "--temperature", "0.3", "--max-tokens", "77"]))
    effective = cfg.labeling.omegaprm.effective_rollout_params(cfg.sampling)
    assert (effective.temperature, effective.max_tokens) == (0.3, 77)
    assert '"max_tokens": 77' in cfg.labeling_config.labeler_params(cfg.sampling)


def test_input_on_the_default_job_reads_every_problem_of_the_files():
    from apache_beam.options.pipeline_options import PipelineOptions

    cfg = resolve_config(PipelineOptions(["--input", "a.jsonl"]))
    assert (cfg.source.kind, cfg.source.paths, cfg.source.num_problems) == ("file", ["a.jsonl"], None)
    cfg = resolve_config(PipelineOptions(["--input", "a.jsonl", "--num-problems", "7"]))
    assert cfg.source.num_problems == 7


# ---------------------------------------------------------------------------
# Thin is not broken; publish only what passed
# ---------------------------------------------------------------------------
def _chain(out, **overrides):
    cfg = {"source": {"kind": "chain", "num_problems": 6, "min_ops": 3, "max_ops": 4},
           "generator": {"kind": "scripted", "scripted": {"policy": "chain", "step_error_rate": 0.2}},
           "samples_per_problem": 4, "report": True, "quiet": True, "output": str(out)}
    cfg.update(overrides)
    return from_dict(cfg)


def test_a_run_that_can_form_no_pair_succeeds_and_says_why(tmp_path, capsys):
    out = tmp_path / "out"
    # One sample per problem can never form a pair, nor pass labelling screening.
    config = tmp_path / "thin.json"
    config.write_text(json.dumps(_chain(out, samples_per_problem=1, labeler="omegaprm").to_dict()))
    # A stored config names no local folder: the output is given again.
    assert cli.main(["run", "--config", str(config), "--output", str(out), "--runner=FnApiRunner"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((_live(out) / "run_summary.json").read_text())
    c = summary["counts"]
    assert (c["pairs"], c["rows_step_labels"], c["rows_step_values"]) == (0, 0, 0)
    assert summary["validation"]["success"] is True
    why = summary["empty_configs"]
    assert why["preferences"].startswith("0 of 6 problems had both a correct and an incorrect sample")
    assert why["step_labels"].startswith("0 of 6 problems passed labelling screening")
    q = c["qualification"]
    assert q["all_correct"] + q["all_incorrect"] + q["no_verdict"] == 6 and q["pairable"] == 0
    assert "empty preferences" in printed and why["preferences"] in printed
    card = (out / "README.md").read_text()
    assert why["preferences"] in card and "a thin run, not a defect" in card
    assert why["preferences"] in (_live(out) / "report.html").read_text()


def test_a_floor_makes_a_thin_run_fail_and_the_published_data_stays(tmp_path):
    out = tmp_path / "out"
    first = run(IN_PROCESS, config=_chain(out))
    assert first["validation"]["success"]
    published = _published(out)
    assert "counterpoint.json" in published and any(p.endswith(".parquet") for p in published)
    with pytest.raises(ValidationFailed) as excinfo:
        run(IN_PROCESS, config=_chain(out, min_rows={"preferences": 1000}, generator={
            "kind": "scripted", "seed": 5, "scripted": {"policy": "chain", "step_error_rate": 0.2}}))
    assert "expect_table_row_count_to_be_between" in str(excinfo.value)
    assert "the published dataset was left as it was" in str(excinfo.value)
    assert _published(out) == published  # data, verdict, card, summary and manifest byte-identical
    # The failed run left its record (summary and gate results), and no staged shard anywhere.
    records_ = sorted((out / "_work" / "runs").iterdir())
    assert len(records_) == 2
    failed = json.loads((records_[-1] / "run_summary.json").read_text())
    assert failed["validation"]["success"] is False
    gate = json.loads((records_[-1] / "validation" / "summary.json").read_text())
    assert gate["configs"]["preferences"]["min_rows"] == 1000 and not gate["configs"]["preferences"]["success"]
    assert not list((out / "_work" / "staging").rglob("*.parquet"))


def test_an_accounting_failure_publishes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(IN_PROCESS, config=_chain(out))
    published = _published(out)
    from counterpoint.pipelines import finalize

    real = finalize.read_run_stats

    def lose_one(staging):
        stats = real(staging)
        stats["with_output"] -= 1  # a problem silently lost somewhere
        return stats

    monkeypatch.setattr(finalize, "read_run_stats", lose_one)
    with pytest.raises(AccountingError, match=r"problems in \(6\) != problems with output \(5\)"):
        run(IN_PROCESS, config=_chain(out, generator={"kind": "scripted", "seed": 3, "scripted": {"policy": "chain"}}))
    assert _published(out) == published


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_live_progress_line_on_a_terminal_with_counts_rate_and_eta():
    stream = _Tty()
    with LiveProgress(total=10, stages=("sample", "verify", "label"), stream=stream, interval_s=0.01) as live:
        progress.report("sample", problems=10, samples=40, tokens=4000)
        progress.report("verify", problems=10)
        progress.report("label", problems=4, rollouts=120, tokens=2000)
        line = live.line()
    assert line.startswith("sample 10/10 · verify 10/10 · label 4/10 · 40 samples · 120 rollouts · 6,000 tokens · ")
    assert re.search(r"· [\d,]+ tok/s · \d+s · ETA \d+s$", line), line
    written = stream.getvalue()
    assert written.startswith("\r") and written.endswith("\n") and "label 4/10" in written
    # Outside the context nothing is displayed any more (workers still count Beam metrics).
    progress.report("sample", problems=1)
    assert "label 4/10" in live.line()


def test_engine_tokens_move_the_line_before_any_problem_completes():
    """While a batch decodes no problem is done yet: the engine's live count carries the token figure."""
    with LiveProgress(total=24, stages=("sample", "verify"), stream=io.StringIO(), enabled=False) as live:
        progress.report("engine", tokens=5000)
        assert live.line().startswith("sample 0/24 · verify 0/24 · 0 samples · 5,000 tokens · ")
        assert live.line().endswith("ETA ?")  # no token budget given
        live.sampling_token_budget = 15000
        live.first_seen["engine"] -= 10  # 5,000 tokens in 10 s: 10,000 left take at most 20 s
        assert re.search(r"· 5,000 tokens · (49\d|500) tok/s · \d+s · ETA ≤ (19|20)s$", live.line()), live.line()
        progress.report("sample", problems=3, samples=24, tokens=900)  # part of what the engine counted
        progress.report("engine", tokens=1000)
        assert live.line().startswith("sample 3/24 · verify 0/24 · 24 samples · 6,000 tokens · ")


class _FakeDetokenizer:
    def __init__(self, n):
        self.n = n

    def num_output_tokens(self):
        return self.n


def test_the_vllm_token_meter_counts_in_flight_and_finished_tokens_once():
    from types import SimpleNamespace

    from counterpoint.generators.vllm_local import _LiveTokenMeter

    def seq(n):
        return SimpleNamespace(detokenizer=_FakeDetokenizer(n))

    def output(n):
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * n)])

    # one request with two children ("0_r", "1_r") and a plain request "s"
    states = {"0_r": seq(30), "1_r": seq(12), "s": seq(5)}
    engine = SimpleNamespace(output_processor=SimpleNamespace(request_states=states))
    meter = _LiveTokenMeter()
    with LiveProgress(total=1, stages=("sample",), stream=io.StringIO(), enabled=False) as live:
        meter.maybe_report(engine, force=True)
        assert live.counts["engine_tokens"] == 47
        states["1_r"].detokenizer.n = 40
        meter.maybe_report(engine)  # within a second of the last report: nothing new
        assert live.counts["engine_tokens"] == 47
        # child "0_r" finished at 31 tokens and left; its request has not returned yet (its sibling decodes)
        del states["0_r"]
        meter.maybe_report(engine, force=True)
        assert live.counts["engine_tokens"] == 30 + 40 + 5
        # everything finished: the exact counts of the outputs win over the last-seen ones
        states.clear()
        meter.finished(output(31 + 44))
        meter.finished(output(6))
        meter.maybe_report(engine, force=True)
        assert live.counts["engine_tokens"] == 81
        # a vLLM without these internals: finished outputs still count, nothing raises
        meter.finished(output(9))
        meter.maybe_report(SimpleNamespace(), force=True)
        assert live.counts["engine_tokens"] == 90 and not meter.live


def test_the_vllm_token_meter_weighs_engine_occupancy_by_step_time():
    from types import SimpleNamespace

    from counterpoint.generators.vllm_local import _LiveTokenMeter

    # two children of one request and a plain request: 3 sequences in the engine
    engine = SimpleNamespace(output_processor=SimpleNamespace(request_states={"0_r": 1, "1_r": 1, "s": 1}))
    meter = _LiveTokenMeter()
    assert meter.unfinished_sequences(engine) == 3
    assert meter.unfinished_sequences(SimpleNamespace()) is None  # vLLM's internals moved
    meter.stepped(3, 128, 0.5)
    meter.stepped(200, 128, 1.5)  # 72 waiting: only the engine's 128 slots decode
    meter.stepped(None, 128, 9.0)  # unknown occupancy: the step is not counted at all
    assert (meter.step_seconds, meter.running_seconds) == (2.0, 3 * 0.5 + 128 * 1.5)


def test_progress_is_a_log_line_when_not_a_terminal_and_nothing_when_quiet(caplog):
    caplog.set_level(logging.INFO, logger="counterpoint.progress")
    with LiveProgress(total=2, stages=("sample",), stream=io.StringIO(), log_every_s=0):
        progress.report("sample", problems=2, samples=8, tokens=100)
    assert any(m.startswith("progress: sample 2/2 · 8 samples") for m in caplog.messages), caplog.messages
    caplog.clear()
    quiet = io.StringIO()
    with LiveProgress(total=2, stages=("sample",), stream=quiet, enabled=False):
        progress.report("sample", problems=2)
    assert quiet.getvalue() == "" and not caplog.messages


def test_a_run_reports_every_stage_to_the_live_display(tmp_path, monkeypatch):
    seen = []
    real_exit = LiveProgress.__exit__

    def spy(self, *exc):
        seen.append((self.line(), dict(self.counts)))
        return real_exit(self, *exc)

    monkeypatch.setattr(LiveProgress, "__exit__", spy)
    summary = run(IN_PROCESS, config=_chain(tmp_path / "out", labeler="omegaprm", report=False))
    (line, counts), = seen
    assert line.startswith("sample 6/6 · verify 6/6 · label 6/6 · 24 samples · ")
    assert counts["sample_tokens"] == summary["counts"]["generated_tokens"]
    assert counts["label_rollouts"] > 0 and counts["write_problems"] == 6


# ---------------------------------------------------------------------------
# Optional stages of a run
# ---------------------------------------------------------------------------
def test_consensus_judge_stage_annotates_and_filters(tmp_path):
    base = dict(labeler="omegaprm", samples_per_problem=6, report=False,
                labeling={"omegaprm": {"k": 4, "search_limit": 6}},
                judge={"kind": "scripted", "model": "scripted/judge", "scripted": {"policy": CHAIN_JUDGE}})
    annotated = run(IN_PROCESS, config=_chain(tmp_path / "a", consensus={"mode": "annotate"}, **base))
    rows = storage.DatasetLayout(str(tmp_path / "a")).read_table("step_labels").to_pylist()
    assert rows and all(r["judge_agrees"] is not None and r["judge_first_error_index"] is not None for r in rows)
    c = annotated["consensus"]
    # every labelled solution with training rows is judged (step labels, and negatives with values only)
    assert c["judged"] >= len(rows) and c["agreed"] + c["disagreed"] + c["unparsable"] == c["judged"]
    assert c["not_judged"] == 0 and c["judge_model"] == "scripted/judge" and c["prompt"] == "processbench"
    assert c["agreement_rate"] == pytest.approx(c["agreed"] / (c["agreed"] + c["disagreed"]))
    kept = run(IN_PROCESS, config=_chain(tmp_path / "k", consensus={"mode": "keep-agreeing"}, **base))
    kept_rows = storage.DatasetLayout(str(tmp_path / "k")).read_table("step_labels").to_pylist()
    assert {r["id"] for r in kept_rows} == {r["id"] for r in rows if r["judge_agrees"] is True}
    assert kept["rejects_by_reason"].get("consensus_disagreement", 0) == c["disagreed"]
    assert kept["rejects_by_reason"].get("consensus_unparsable", 0) == c["unparsable"]
    assert kept["consensus"]["kept_share"] == pytest.approx(len(kept_rows) / len(rows))
    card = (tmp_path / "k" / "README.md").read_text()
    assert "agreement" in card.lower() and "rows kept" in card


def test_export_stage_publishes_validated_trainer_configs(tmp_path):
    import datasets

    out = tmp_path / "out"
    summary = run(IN_PROCESS, config=_chain(out, labeler="omegaprm", samples_per_problem=6, report=False,
                                            exports=["trl-stepwise", "step-dpo", "weighted-pairs"]))
    assert summary["exports"]["trl-stepwise"]["rows"]["trl_stepwise"] == summary["counts"]["rows_step_labels"]
    validation = json.loads((_live(out) / "validation" / "summary.json").read_text())
    for config in ("trl_stepwise", "weighted_pairs"):
        assert validation["configs"][config]["success"] is True
        assert datasets.load_dataset(str(out), config, split="train").num_rows > 0
    card = (out / "README.md").read_text()
    assert "config_name: trl_stepwise" in card and "config_name: weighted_pairs" in card


def test_compile_auto_is_chosen_from_the_cpu_and_the_job_size(monkeypatch):
    import dataclasses

    from counterpoint.generators import vllm_local

    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: True)
    default = RunConfig()
    big = dataclasses.replace(default, labeler="omegaprm")
    unknown = dataclasses.replace(default, source=dataclasses.replace(default.source, kind="file", paths=["x"],
                                                                      num_problems=None))
    amx, no_amx = {"avx512f", "amx_bf16"}, {"avx512f", "avx512_bf16"}
    # ~24.6k tokens: 102 s eager against 80 s + 40 s compiled -> eager; labelled (x4 tokens) -> compiled.
    assert vllm_local.expected_tokens(default) == 24 * 8 * 256 * 0.5
    assert [vllm_local.choose_compile(c, amx) for c in (default, big, unknown)] == ["off", "on", "off"]
    # Without AMX compiled decoding was measured slower than eager: never compile.
    assert [vllm_local.choose_compile(c, no_amx) for c in (default, big, unknown)] == ["off", "off", "off"]
    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: False)
    assert vllm_local.choose_compile(default, no_amx) == "on"
    # The pipeline resolves "auto" before any worker sees the config.
    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: True)
    resolved = check_config(big)
    assert resolved.generator.compile in ("on", "off")


def test_dtype_auto_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    import pickle

    from counterpoint.generators import build_generator, vllm_local
    from counterpoint.generators.config import GeneratorConfig

    flags = {"avx512f", "avx2"}
    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: True)
    monkeypatch.setattr(vllm_local, "_cpu_flags", lambda: flags)
    # Emulated bf16 decodes 4x slower than float32 on an AVX2/AVX-512 CPU without bf16 units.
    assert vllm_local.resolve_dtype("auto") == "float32"
    for native in ("avx512_bf16", "amx_bf16", "bf16"):  # x86 AVX512_BF16, AMX; Arm BF16
        flags = {"avx2", native}
        assert vllm_local.resolve_dtype("auto") == "bfloat16"
    flags = {"avx2"}
    assert vllm_local.resolve_dtype("float16") == "float16"  # an explicit dtype is never changed
    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: False)
    assert vllm_local.resolve_dtype("auto") == "bfloat16"  # GPU

    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: True)
    gen = build_generator(GeneratorConfig())
    assert (gen.dtype, gen.resolved_dtype) == ("auto", "float32")
    assert gen.model_fingerprint.endswith("|float32")  # cached samples of one dtype never serve another
    # A pickled generator resolves again on the machine that loads it (a driver's CPU is not a worker's).
    worker = pickle.loads(pickle.dumps(gen))
    monkeypatch.setattr(vllm_local, "_on_cpu", lambda: False)
    assert worker.resolved_dtype == "bfloat16"


def test_cpu_engine_uses_32_token_kv_blocks_unless_the_config_says(monkeypatch):
    """Prefix caching hits whole KV blocks: with vLLM's CPU default of 128 each of a request's n samples
    recomputes up to 127 prompt tokens. The block size is decided where the engine loads."""
    import types

    from counterpoint.generators import build_generator, embedded, vllm_local
    from counterpoint.generators.config import GeneratorConfig

    engines = []

    class RecordingLLM:
        def __init__(self, **kwargs):
            engines.append(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm_local, "_import_vllm", lambda: types.SimpleNamespace(LLM=RecordingLLM))
    monkeypatch.setattr(embedded, "resolve_model", lambda model, cache_dir=None: "/models/" + model)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.setattr(vllm_local, "_cpu_flags", lambda: {"avx2"})

    def engine_kwargs(on_cpu, **cfg):
        monkeypatch.setattr(vllm_local, "_on_cpu", lambda: on_cpu)
        build_generator(GeneratorConfig(kind="vllm", model="m", seed_mode="engine", compile="off", **cfg)).load()
        return engines.pop()

    cpu = engine_kwargs(True)
    assert (cpu["block_size"], cpu["max_num_seqs"], cpu["dtype"], cpu["model"]) == (32, 128, "float32", "/models/m")
    assert "block_size" not in engine_kwargs(False)  # a GPU keeps vLLM's own default
    assert engine_kwargs(True, engine_kwargs={"block_size": 128})["block_size"] == 128  # the config wins
