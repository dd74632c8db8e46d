"""Real training steps on the exports: every trainer accepts its config and consumes every row.

A tiny 2-layer Llama (hidden 64) with the embedded SmolLM2 tokenizer trains one
epoch (a few optimizer steps) on a validated corpus exported with
``export_output``; each test asserts finite losses and that the trainer's data
collator saw every row of the dataset it was given.

* TRL 1.16 ``DPOTrainer`` on ``preferences`` and on ``step_dpo`` (rendered with
  ``step_dpo_text``), ``KTOTrainer`` on ``unpaired``.
* TRL 1.13 ``trl.experimental.prm.PRMTrainer`` on ``trl_stepwise``, in a
  subprocess with ``PYTHONPATH=<venv>/trl-1.13`` (``make install`` puts TRL 1.13
  there with ``pip install --no-deps --target``; TRL 1.16 has no PRMTrainer).
* ``openrlhf_prm``: tokenized the way OpenRLHF's ``ProcessRewardDataset`` does,
  exactly one label position per step (OpenRLHF itself is not installed).
* TRL 1.16 ``GRPOTrainer`` on ``grpo_prompts`` with ``counterpoint.rewards.trl_reward``; an NPO
  step (``counterpoint.rl.npo.npo_loss``) on ``npo_forget``.
* Token-weighted DPO (cDPO, ``counterpoint.training.token_weighted_dpo_loss``) on ``token_weighted_pairs``
  exported from planted ``critical_tokens`` rows; a misaligned weight list is refused.

Each test prints its trainer, version, rows consumed and losses (``pytest -rP``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny_model import build_tiny_model, train_counted, write_validated_output

from _paths import TESTS as HERE  # noqa: E402  (_tiny_model.py lives there)
TRL_113 = Path(sys.prefix) / "trl-1.13"
PLACEHOLDER = "<empty_output>"  # an unused added token of the SmolLM2 tokenizer: one id wherever it stands
N_PROBLEMS = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from counterpoint import storage
    from counterpoint.dataset.export import export_output

    out = tmp_path_factory.mktemp("corpus") / "out"
    out.mkdir()
    rows = write_validated_output(out, n_problems=N_PROBLEMS)
    export_output(storage.DatasetLayout(str(out)), ["trl-stepwise", "openrlhf-prm", "step-dpo"], placeholder=PLACEHOLDER)
    return out, rows


def _load(out: Path, config: str):
    import datasets

    return datasets.load_dataset(str(out), config, split="train")


def _args(config_cls, tmp_path, batch_size, **kw):
    return config_cls(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=batch_size, num_train_epochs=1,
        learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        dataloader_num_workers=0, seed=0, disable_tqdm=True, max_length=512, **kw,
    )


def _check_run(name: str, version: str, rows: int, batch_size: int, result: dict) -> None:
    print(f"{name} (trl {version}): {result['rows_consumed']}/{rows} rows, {result['steps']} optimizer steps, "
          f"train loss {result['train_loss']:.4f}, step losses {[round(x, 4) for x in result['step_losses']]}")
    assert result["rows_consumed"] == rows
    assert result["steps"] == result["batches"] == math.ceil(rows / batch_size) >= 2
    assert len(result["step_losses"]) == result["steps"]
    assert all(math.isfinite(x) for x in result["step_losses"]) and math.isfinite(result["train_loss"])


def test_dpo_trains_on_preferences(corpus, model_dir, tokenizer, tmp_path):
    import trl
    from trl import DPOConfig, DPOTrainer

    out, rows = corpus
    ds = _load(out, "preferences")
    assert ds.num_rows == len(rows["preferences"]) == 18
    assert {r["pair_type"] for r in ds} == {"outcome", "step", "first_pit"}
    trainer = DPOTrainer(model=str(model_dir), args=_args(DPOConfig, tmp_path, 6), train_dataset=ds,
                         processing_class=tokenizer)
    _check_run("DPOTrainer on preferences", trl.__version__, ds.num_rows, 6, train_counted(trainer))
    assert trl.__version__ == "1.16.0"


def test_step_dpo_rows_render_as_step_dpo_and_train(corpus, model_dir, tokenizer, tmp_path):
    import trl
    from trl import DPOConfig, DPOTrainer

    from counterpoint.dataset.export import step_dpo_text

    out, _ = corpus
    raw = _load(out, "step_dpo")
    ds = raw.map(step_dpo_text, fn_kwargs={"tokenizer": tokenizer})
    trainer = DPOTrainer(model=str(model_dir), args=_args(DPOConfig, tmp_path, 2), train_dataset=ds,
                         processing_class=tokenizer)
    # What DPOTrainer trains on: the question and the prefix in one open assistant turn, then only the step.
    by_id = {r["id"]: r for r in raw}
    for ids_row, text_row in zip(trainer.train_dataset, ds):
        src = by_id[text_row["id"]]
        prompt = tokenizer.decode(ids_row["prompt_ids"])
        assert prompt == text_row["prompt"]  # TRL kept the whole prompt: a clean token boundary
        assert prompt.endswith("<|im_start|>assistant\n" + src["prefix"].rstrip())
        separator = src["prefix"][len(src["prefix"].rstrip()):]
        assert tokenizer.decode(ids_row["chosen_ids"]) == separator + src["chosen"][0]["content"] + "<|im_end|>"
        assert tokenizer.decode(ids_row["rejected_ids"]) == separator + src["rejected"][0]["content"] + "<|im_end|>"
    assert any(r["prefix"] for r in raw) and any(not r["prefix"] for r in raw)
    _check_run("DPOTrainer on step_dpo", trl.__version__, ds.num_rows, 2, train_counted(trainer))


def test_trl_renders_a_raw_partial_assistant_prompt_as_a_closed_turn(corpus, model_dir, tokenizer, tmp_path):
    """Why step_dpo_text exists: TRL 1.16 closes the prefix's turn and starts a new one for the step."""
    from trl import DPOConfig, DPOTrainer

    out, _ = corpus
    raw = _load(out, "step_dpo").filter(lambda r: bool(r["prefix"])).select(range(1))
    trainer = DPOTrainer(model=str(model_dir), args=_args(DPOConfig, tmp_path, 1), train_dataset=raw,
                         processing_class=tokenizer)
    row, src = trainer.train_dataset[0], raw[0]
    prompt = tokenizer.decode(row["prompt_ids"])
    assert prompt.endswith(src["prefix"] + "<|im_end|>\n<|im_start|>assistant\n")


def test_kto_trains_on_unpaired(corpus, model_dir, tokenizer, tmp_path):
    import trl
    from trl import KTOConfig, KTOTrainer

    assert KTOTrainer.__module__ == "trl.trainer.kto_trainer"  # stable API in TRL 1.16 (trl.experimental.kto is a shim)
    out, rows = corpus
    ds = _load(out, "unpaired")
    assert ds.num_rows == len(rows["unpaired"]) == 12 and set(ds["label"]) == {True, False}
    trainer = KTOTrainer(model=str(model_dir), args=_args(KTOConfig, tmp_path, 4), train_dataset=ds,
                         processing_class=tokenizer)
    _check_run("KTOTrainer on unpaired", trl.__version__, ds.num_rows, 4, train_counted(trainer))


def test_prm_trainer_of_trl_1_13_trains_on_trl_stepwise(corpus, model_dir, tmp_path):
    with pytest.raises(ImportError):  # TRL 1.16 removed it: the export documents TRL <= 1.13
        import trl.experimental.prm  # noqa: F401
    assert (TRL_113 / "trl" / "experimental" / "prm" / "prm_trainer.py").is_file(), (
        f"TRL 1.13 is not installed in {TRL_113}: run `make install` "
        f"(pip install --no-deps --target {TRL_113} trl==1.13.0)")
    out, rows = corpus
    result_json = tmp_path / "prm.json"
    env = dict(os.environ, PYTHONPATH=str(TRL_113), TRL_EXPERIMENTAL_SILENCE="1")
    proc = subprocess.run(
        [sys.executable, str(HERE / "_tiny_model.py"), "prm", str(model_dir), str(out), str(result_json)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(result_json.read_text())
    assert result["trl"] == "1.13.0" and result["trainer"] == "trl.experimental.prm.PRMTrainer"
    assert result["rows"] == len(rows["step_labels"]) == 6
    # one supervised token per step: the tokenized dataset carries every step label
    assert result["steps_labelled"] == result["step_count"] == sum(len(r["completions"]) for r in rows["step_labels"])
    _check_run("PRMTrainer on trl_stepwise", result["trl"], result["rows"], 4, result)


def test_openrlhf_prm_rows_label_every_step_exactly_once(corpus, tokenizer):
    from counterpoint.dataset.export import check_openrlhf_prm, openrlhf_label_positions, placeholder_token_id

    out, rows = corpus
    ds = _load(out, "openrlhf_prm")
    assert set(ds["placeholder"]) == {PLACEHOLDER}
    report = check_openrlhf_prm(ds.to_list(), tokenizer)
    assert report["mismatches"] == []
    assert report["rows"] == ds.num_rows == 6
    assert report["label_positions"] == report["steps"] == sum(len(r["completions"]) for r in rows["step_labels"])
    # each label position is the token right after its step (what OpenRLHF's PRMLoss reads the reward from)
    steps = {r["id"]: r["completions"] for r in rows["step_labels"]}
    ph = placeholder_token_id(tokenizer, PLACEHOLDER)
    for r in ds:
        ids = tokenizer(r["input"], add_special_tokens=False)["input_ids"]
        positions = openrlhf_label_positions(r["input"], tokenizer, PLACEHOLDER)
        assert len(positions) == len(r["label"]) == len(r["soft_label"])
        for step, pos in zip(steps[r["id"]], positions):
            assert ids[pos] == ph and tokenizer.decode(ids[:pos]).endswith(step + " ")
        assert all(t in ("+", "-") for t in r["label"]) and all(0.0 <= v <= 1.0 for v in r["soft_label"])
    # Math-Shepherd's own tag is two tokens for this byte-level BPE tokenizer: OpenRLHF would refuse it
    with pytest.raises(ValueError, match="encodes to 2 tokens"):
        check_openrlhf_prm([dict(ds[0], placeholder="ки")], tokenizer)
    # the reward tokens are single tokens here, as OpenRLHF asserts
    assert [len(tokenizer.encode(t, add_special_tokens=False)) for t in ("+", "-")] == [1, 1]
    print(f"openrlhf_prm: {report['rows']} rows, {report['steps']} steps, {report['label_positions']} label "
          f"positions, placeholder {PLACEHOLDER!r}")


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    """A scripted run (answer-key policy, p_correct 0.75) exported as grpo-prompts and npo-forget-retain."""
    from counterpoint.config import from_dict
    from counterpoint.dataset.export import export_output
    from counterpoint.pipelines.generate_corpus import run
    from counterpoint.sources.procedural import procedural_problem
    from counterpoint.storage import DatasetLayout

    tmp = tmp_path_factory.mktemp("rl-run")
    problems = [procedural_problem(11, i) for i in range(6)]
    (tmp / "p.jsonl").write_text("".join(json.dumps({"id": p["problem_id"], "question": p["question"],
                                                     "answer": p["gold_answer"]}) + "\n" for p in problems))
    cfg = from_dict({
        "source": {"kind": "file", "paths": [str(tmp / "p.jsonl")],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 1, "scripted": {
            "policy": "answer_key", "answer_key": {p["question"]: p["gold_answer"] for p in problems},
            "p_correct": 0.75}},
        "sampling": {"max_tokens": 64}, "samples_per_problem": 4, "num_shards": 1, "output": str(tmp / "out"),
    })
    run(["--runner=FnApiRunner"], config=cfg)
    export_output(DatasetLayout(str(tmp / "out")), ["grpo-prompts", "npo-forget-retain"])
    return tmp / "out", DatasetLayout(str(tmp / "out")).read_table("problem_stats").to_pylist()


def test_grpo_step_with_counterpoint_reward_on_the_grpo_prompts_export(rl_run, model_dir, tokenizer, tmp_path):
    """TRL 1.16 GRPOTrainer, one step, on the ``grpo_prompts`` export (problems a scripted run solved
    sometimes: 0 < pass rate < 1) with ``counterpoint.rewards.trl_reward`` as its reward function."""
    import trl
    from trl import GRPOConfig, GRPOTrainer

    from counterpoint import rewards
    from counterpoint.verifiers import NumericVerifier

    out, stats = rl_run
    ds = _load(out, "grpo_prompts")
    band = sorted(s["problem_id"] for s in stats if s["pass_rate"] is not None and 0.0 < s["pass_rate"] < 1.0)
    assert 0 < len(band) < len(stats) == 6 and sorted(ds["problem_id"]) == band
    calls = []

    def counterpoint_reward(completions, **kwargs):
        scores = rewards.trl_reward(completions, **kwargs)
        calls.append({"completions": completions, "kwargs": kwargs, "scores": scores})
        return scores

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, num_generations=2,
                      per_device_train_batch_size=2, max_completion_length=8, learning_rate=1e-3, logging_steps=1,
                      save_strategy="no", report_to=[], use_cpu=True, bf16=False, use_vllm=False, seed=0,
                      disable_tqdm=True, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[counterpoint_reward], args=args, train_dataset=ds,
                          processing_class=tokenizer)
    trainer.train()
    assert trl.__version__ == "1.16.0" and trainer.state.global_step == 1
    assert len(calls) == 1
    call = calls[0]
    completions, golds = call["completions"], call["kwargs"]["answer"]
    assert len(completions) == len(golds) == 2 and golds[0] == golds[1] in set(ds["answer"])
    assert all(isinstance(c, list) and c[-1]["role"] == "assistant" for c in completions)  # conversational
    assert call["kwargs"]["verifier"] == ["numeric"] * 2
    assert call["kwargs"]["verifier_version"] == [ds["verifier_version"][0]] * 2
    assert len(call["scores"]) == 2 and all(isinstance(x, float) and x in (0.0, 1.0) for x in call["scores"])
    # The scores are the verifier's on those very completions, and what the trainer logged as its reward.
    expected = [1.0 if NumericVerifier().verify(c[-1]["content"], g).verdict == "correct" else 0.0
                for c, g in zip(completions, golds)]
    assert call["scores"] == expected
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert logged and math.isfinite(logged[0]["reward"]) and logged[0]["reward"] == pytest.approx(sum(expected) / 2)
    print(f"GRPOTrainer (trl {trl.__version__}) on grpo_prompts: {len(band)}/{len(stats)} problems in the pass band "
          f"(pass rates {sorted(s['pass_rate'] for s in stats)}), "
          f"1 step, rewards {call['scores']}, loss {[h.get('loss') for h in trainer.state.log_history]}")


# ---------------------------------------------------------------------------
# Issue 22: self-correction data (correction-sft / correction-dpo)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def correction_rows():
    """``corrections`` rows of a planted chain world (scripted corrector), and the two exports built from them."""
    from counterpoint.dataset.export import correction_dpo_rows, correction_sft_rows
    from counterpoint.generators.base import SamplingParams
    from counterpoint.generators.scripted import ScriptedGenerator, chain_problem
    from counterpoint.labeling import LabelerConfig, OmegaPRMConfig, label_problems
    from counterpoint.labeling import corrections as C
    from counterpoint.testing.chain import chain_verify
    from counterpoint.testing.corrections import ChainCorrectorPolicy
    from counterpoint.testing.worlds import sampled_chain_items

    sampling = SamplingParams(temperature=0.8, max_tokens=256)
    policy = ChainCorrectorPolicy(step_error_rate=0.15, recover_rate=0.5, revise_share=0.5, restart_share=0.25)
    items = sampled_chain_items(policy, [chain_problem(4, i, num_steps=4) for i in range(4)], 6)
    labelled = label_problems(items, ScriptedGenerator(policy), chain_verify,
                              LabelerConfig(omegaprm=OmegaPRMConfig(k=4, parallel_searches=1)), sampling=sampling)
    by_id = {r.problem_id: r.step_labels for r in labelled}
    results = C.correct_problems([C.CorrectionItem(it.problem, it.trajectories, by_id[it.problem["problem_id"]])
                                  for it in items], ScriptedGenerator(policy), chain_verify,
                                 C.CorrectionsConfig(enabled=True, samples_per_cue=2), sampling=sampling,
                                 system_prompt="Solve step by step.", run_seed=0)
    rows = [r for res in results for r in res.rows]
    return correction_sft_rows(rows).rows, correction_dpo_rows(rows).rows


def test_sft_trainer_on_correction_sft_trains_only_on_the_correction(correction_rows, model_dir, tokenizer, tmp_path):
    import datasets
    import trl
    from trl import SFTConfig, SFTTrainer

    from counterpoint.dataset.export import correction_sft_text

    sft, _ = correction_rows
    assert len(sft) >= 4
    raw = datasets.Dataset.from_list(sft[:4])
    ds = raw.map(correction_sft_text, fn_kwargs={"tokenizer": tokenizer}, remove_columns=raw.column_names)
    trainer = SFTTrainer(model=str(model_dir), args=_args(SFTConfig, tmp_path, 2, completion_only_loss=True),
                         train_dataset=ds, processing_class=tokenizer)
    for tok_row, text_row, src in zip(trainer.train_dataset, ds, sft):
        # TRL 1.16 turns the completion mask into labels: -100 (no loss) on every prompt token
        ids = tok_row["input_ids"]
        mask = tok_row["completion_mask"] if "completion_mask" in tok_row else [int(x != -100) for x in tok_row["labels"]]
        n_prompt = mask.index(1)
        assert all(m == 0 for m in mask[:n_prompt]) and all(m == 1 for m in mask[n_prompt:])
        prompt_text = tokenizer.decode(ids[:n_prompt])
        # the mistake (the wrong step) and the cue are in the masked prompt, in one open assistant turn
        assert prompt_text == text_row["prompt"] and prompt_text.endswith(src["prompt"][-1]["content"])
        assert prompt_text.count("<|im_start|>assistant") == 1 and not prompt_text.endswith("<|im_end|>\n")
        assert tokenizer.decode(ids[n_prompt:]).startswith(src["completion"][0]["content"])
    _check_run("SFTTrainer on correction_sft", trl.__version__, ds.num_rows, 2, train_counted(trainer))


def test_dpo_trainer_on_correction_dpo(correction_rows, model_dir, tokenizer, tmp_path):
    import datasets
    import trl
    from trl import DPOConfig, DPOTrainer

    from counterpoint.dataset.export import step_dpo_text

    _, dpo = correction_rows
    assert len(dpo) >= 2
    raw = datasets.Dataset.from_list(dpo[:4])
    ds = raw.map(step_dpo_text, fn_kwargs={"tokenizer": tokenizer})
    trainer = DPOTrainer(model=str(model_dir), args=_args(DPOConfig, tmp_path, 2), train_dataset=ds,
                         processing_class=tokenizer)
    for ids_row, src in zip(trainer.train_dataset, raw):
        assert tokenizer.decode(ids_row["prompt_ids"]).endswith(src["prompt"][-1]["content"])
        assert tokenizer.decode(ids_row["chosen_ids"]) == src["chosen"][0]["content"] + "<|im_end|>"
    _check_run("DPOTrainer on correction_dpo", trl.__version__, ds.num_rows, 2, train_counted(trainer))
def test_npo_loss_step_on_npo_forget(rl_run, model_dir, tokenizer):
    """A few-line NPO step (Zhang et al. 2024) on ``npo_forget``: finite loss, parameters move."""
    import torch
    from transformers import AutoModelForCausalLM

    from counterpoint.rl.npo import npo_loss, sequence_logps

    out, _ = rl_run
    forget = _load(out, "npo_forget")
    assert forget.num_rows > 0 and set(forget.column_names) >= {"question", "answer"}
    batch = forget.select(range(min(4, forget.num_rows)))
    prompts = [f"Question: {q}\nAnswer: " for q in batch["question"]]
    prompt_lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "right"
    enc = tokenizer([p + a for p, a in zip(prompts, batch["answer"])], return_tensors="pt", padding=True,
                    truncation=True, max_length=256)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    before = [p.detach().clone() for p in policy.parameters()]
    with torch.no_grad():
        ref_logps = sequence_logps(ref, enc["input_ids"], enc["attention_mask"], prompt_lengths)
    policy_logps = sequence_logps(policy, enc["input_ids"], enc["attention_mask"], prompt_lengths)
    loss = npo_loss(policy_logps, ref_logps, beta=0.1)
    # At the start policy == reference: log ratio 0, loss = -(2/β) log σ(0) = (2/β) log 2.
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)
    loss.backward()
    torch.optim.SGD(policy.parameters(), lr=1e-2).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    with torch.no_grad():
        after = npo_loss(sequence_logps(policy, enc["input_ids"], enc["attention_mask"], prompt_lengths), ref_logps)
    assert math.isfinite(after.item()) and after.item() < loss.item()  # the step lowered the forget likelihood
    print(f"NPO on npo_forget: {batch.num_rows} rows, loss {loss.item():.4f} -> {after.item():.4f}")


def test_npo_loss_by_hand():
    import torch

    from counterpoint.rl.npo import npo_loss

    pol, ref = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0])
    beta = 0.5
    want = sum(-2 / beta * math.log(1 / (1 + math.exp(beta * (p - r)))) for p, r in [(-3.0, -2.0), (-1.0, -2.0)]) / 2
    assert npo_loss(pol, ref, beta).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError):
        npo_loss(pol, ref, 0.0)


# ---------------------------------------------------------------------------
# Issue 21: token-weighted DPO (cDPO) on the token-weighted-pairs export
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_pairs(tmp_path_factory, model_dir, tokenizer):
    """The ``token_weighted_pairs`` export of a validated corpus with planted ``critical_tokens`` rows whose
    weights are aligned to the tiny model's (the policy's) tokenizer: 1.0 on the first wrong step, 0.25 elsewhere."""
    from counterpoint import storage
    from counterpoint.dataset.export import export_output

    from _tiny_model import corpus_rows, critical_token_rows

    rows = corpus_rows(N_PROBLEMS)
    for t in rows["trajectories"]:
        t["reward"] = 1.0 if t["verdict"] == "correct" else 0.0
    rows["critical_tokens"] = critical_token_rows(rows, tokenizer, model_id=str(model_dir))
    out = tmp_path_factory.mktemp("critical") / "out"
    out.mkdir()
    write_validated_output(out, rows=rows)
    export_output(storage.DatasetLayout(str(out)), "token-weighted-pairs")  # tokenizer: the rows' model_id
    return _load(out, "token_weighted_pairs")


def _token_dpo_batch(model, ref, tokenizer, ds, weights=None):
    """Everything token_weighted_dpo_loss takes, for the rows of ``ds`` (weights: override per row)."""
    import torch

    from counterpoint.training import completion_token_logps, tokenize_pair

    enc = [tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"],
                         r["rejected_weights"] if weights is None else weights(r)) for r in ds]
    prompts = [e["prompt_ids"] for e in enc]
    pad = tokenizer.pad_token_id or 0

    def logps(m, key, w=None):
        return completion_token_logps(m, prompts, [e[key] for e in enc], pad, w)

    chosen, chosen_mask = logps(model, "chosen_ids")
    rejected, rejected_mask, w = logps(model, "rejected_ids", [e["rejected_weights"] for e in enc])
    with torch.no_grad():
        ref_chosen, _ = logps(ref, "chosen_ids")
        ref_rejected, _ = logps(ref, "rejected_ids")
    return dict(policy_chosen_logps=(chosen * chosen_mask).sum(-1), ref_chosen_logps=(ref_chosen * chosen_mask).sum(-1),
                policy_rejected_token_logps=rejected, ref_rejected_token_logps=ref_rejected, rejected_weights=w,
                rejected_mask=rejected_mask)


def test_token_weighted_dpo_step_on_the_token_weighted_pairs_export(token_pairs, model_dir, tokenizer):
    """One optimizer step of token-weighted DPO (cDPO) on the export: finite loss, the weights change the loss
    and its gradient, and the step moves the parameters and lowers the loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from counterpoint.training import token_weighted_dpo_loss

    ds = token_pairs
    assert ds.num_rows == 2 * N_PROBLEMS
    batch = ds.select(range(4))
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    before = [p.detach().clone() for p in policy.parameters()]
    inputs = _token_dpo_batch(policy, ref, tokenizer, batch)
    assert inputs["rejected_weights"].shape == inputs["policy_rejected_token_logps"].shape
    assert set(inputs["rejected_weights"][inputs["rejected_mask"].bool()].tolist()) == {0.25, 1.0}
    loss = token_weighted_dpo_loss(**inputs, beta=0.1)
    # policy == reference: every log-ratio is 0 and the loss is -log σ(0) = log 2, whatever the weights
    assert torch.isfinite(loss) and loss.item() == pytest.approx(math.log(2), rel=1e-5)
    loss.backward()
    grads = [p.grad.detach().clone() for p in policy.parameters()]
    # the weights change the gradient: all-ones weights (plain DPO) give another one
    policy.zero_grad()
    token_weighted_dpo_loss(**_token_dpo_batch(policy, ref, tokenizer, batch,
                                               lambda r: [1.0] * len(r["rejected_weights"])), beta=0.1).backward()
    assert any(not torch.allclose(a, b.grad) for a, b in zip(grads, policy.parameters()))
    for p, g in zip(policy.parameters(), grads):
        p.grad = g
    torch.optim.SGD(policy.parameters(), lr=1.0).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    with torch.no_grad():
        after = token_weighted_dpo_loss(**_token_dpo_batch(policy, ref, tokenizer, batch), beta=0.1)
        unweighted = token_weighted_dpo_loss(**_token_dpo_batch(policy, ref, tokenizer, batch,
                                                                lambda r: [1.0] * len(r["rejected_weights"])), beta=0.1)
    assert math.isfinite(after.item()) and after.item() < loss.item()
    assert after.item() != pytest.approx(unweighted.item(), abs=1e-6)  # the weights change the loss
    print(f"token-weighted DPO on token_weighted_pairs: {batch.num_rows} pairs, loss {loss.item():.5f} -> "
          f"{after.item():.5f} (all-ones weights: {unweighted.item():.5f})")


def test_a_misaligned_weight_list_is_refused(token_pairs, tokenizer):
    from counterpoint.training import MisalignedWeights, tokenize_pair

    r = token_pairs[0]
    n = len(r["rejected_token_ids"])
    assert len(tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"], r["rejected_weights"])
               ["rejected_ids"]) == n
    with pytest.raises(MisalignedWeights, match=f"rejected: {n - 1} weight\\(s\\) for {n} token\\(s\\) of .*made with "
                                                "another tokenizer.*--tokenizer"):
        tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"], r["rejected_weights"][:-1])


def test_token_weighted_dpo_loss_by_hand():
    import torch

    from counterpoint.training import MisalignedWeights, token_weighted_dpo_loss

    pc, rc = torch.tensor([-3.0]), torch.tensor([-4.0])
    pr, rr = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    w, mask = torch.tensor([[2.0, 0.5, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    beta = 0.5
    margin = beta * ((-3.0 + 4.0) - (2.0 * 0.5 + 0.5 * -1.0))  # the padded third token counts for nothing
    want = -math.log(1 / (1 + math.exp(-margin)))
    assert token_weighted_dpo_loss(pc, rc, pr, rr, w, mask, beta).item() == pytest.approx(want, rel=1e-6)
    # all-ones weights: plain DPO on the sequence log-probabilities
    dpo = -math.log(1 / (1 + math.exp(-beta * ((-3.0 + 4.0) - (-3.5 + 3.0)))))
    ones = torch.ones(1, 3)
    assert token_weighted_dpo_loss(pc, rc, pr, rr, ones, None, beta).item() == pytest.approx(dpo, rel=1e-6)
    with pytest.raises(MisalignedWeights):
        token_weighted_dpo_loss(pc, rc, pr, rr, torch.ones(1, 2), None, beta)
