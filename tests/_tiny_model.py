"""Test helpers for the exports and the training tests: a small validated corpus and a tiny Llama.

* :func:`corpus_rows` / :func:`write_validated_output`: a realistic output
  directory (every pipeline config, rows shaped like the labeller's) written with
  ``rows_to_table`` + Parquet and published through the validation gate; no pipeline run.
* :func:`build_tiny_model`: a 2-layer Llama (hidden 64) with the embedded
  SmolLM2 tokenizer, saved to a folder (trainers load it, and their reference
  models, by path).
* :class:`CountingCollator`: wraps a trainer's collator and counts the rows it
  batches, so a test can assert that the trainer consumed every row.
* Run as a script (``python tests/_tiny_model.py prm MODEL_DIR DATA_DIR RESULT_JSON``)
  it trains TRL 1.13's ``trl.experimental.prm.PRMTrainer`` on ``trl_stepwise``;
  ``tests/test_training.py`` runs it with ``PYTHONPATH=<venv>/trl-1.13`` because
  TRL 1.13 and TRL 1.16 cannot share one environment. This file imports neither
  counterpoint nor torch at module level, so that subprocess stays light.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

SYSTEM = "Solve the problem step by step. Put each step in its own paragraph."


# ---------------------------------------------------------------------------
# A small validated corpus
# ---------------------------------------------------------------------------
def _problem(p: int):
    a, b, c = 3 + p, 4 + 2 * p, 2 + p % 3
    question = f"Tom has {a} apples, buys {b} more and eats {c}. How many apples does he have left?"
    gold = a + b - c
    good = [f"Tom starts with {a} apples.\n\n", f"After buying {b} more he has {a} + {b} = {a + b}.\n\n",
            f"After eating {c} he has {a + b} - {c} = {gold}.\n\n", f"The answer is \\boxed{{{gold}}}."]
    return question, gold, good, (a, b, c)


def corpus_rows(n_problems: int = 6) -> Dict[str, List[dict]]:
    """Rows of every pipeline config for ``n_problems`` problems (4 samples each: 2 right, 2 wrong).

    Wrong sample 2 errs at step 1 (the sum), wrong sample 3 at step 0 on problem 0 (empty
    prefix) and at step 2 otherwise. ``step_values`` leave out the error step of sample 3
    on odd problems (its weight falls back to the MC gap); problem 5's sample 2 has no
    ``step_labels`` row and no error-step value (default weight). Step prefix values are
    0.875, 0.625 before the error and 0 from it; the question's value is 0.5.
    """
    from counterpoint.schemas import records
    from counterpoint.schemas.records import content_id, dumps, make_reject, messages, trajectory_id

    rows: Dict[str, List[dict]] = {c: [] for c in (*records.OUTCOME_CONFIGS, *records.STEP_CONFIGS)}
    for p in range(n_problems):
        pid = f"arith-{p:03d}"
        question, gold, good, (a, b, c) = _problem(p)
        prompt = messages(("system", SYSTEM), ("user", question))
        root_q = 0.5
        trajs = []
        for s in range(4):
            steps = list(good)
            error = None
            if s == 2:
                error = 1
                wrong_sum = a + b + 1 + p
                wrong = wrong_sum - c
                steps[1] = f"After buying {b} more he has {a} + {b} = {wrong_sum}.\n\n"
                steps[2] = f"After eating {c} he has {wrong_sum} - {c} = {wrong}.\n\n"
                steps[3] = f"The answer is \\boxed{{{wrong}}}."
            elif s == 3:
                error = 0 if p == 0 else 2
                wrong = gold - 1
                if error == 0:
                    steps[0] = f"Tom starts with {wrong} apples.\n\n"
                steps[2] = f"After eating {c} he has {wrong}.\n\n"
                steps[3] = f"The answer is \\boxed{{{wrong}}}."
            completion = "".join(steps)
            verdict = records.VERDICT_CORRECT if error is None else records.VERDICT_INCORRECT
            t = {
                "id": trajectory_id(pid, s), "problem_id": pid, "sample_index": s, "source": "procedural",
                "question": question, "prompt": prompt, "completion": completion, "steps": steps,
                "num_steps": len(steps), "final_answer": steps[3].split("{")[1].rstrip("}."),
                "gold_answer": str(gold), "verdict": verdict,
                "verdict_reason": None if error is None else "answer_mismatch", "verifier": "numeric",
                "verifier_version": "1", "finish_reason": "stop", "num_prompt_tokens": 40, "num_generated_tokens": 60,
                "cumulative_logprob": -12.0 - s, "model_id": "embedded:smollm2-135m-instruct",
                "sampling": dumps({"temperature": 0.8}), "seed": 100 * p + s,
                "duplicate_of": None, "process_error": False,
            }
            t["_error"] = error
            trajs.append(t)
            rows["unpaired"].append({"id": t["id"], "problem_id": pid, "sample_index": s, "prompt": prompt,
                                     "completion": messages(("assistant", completion)),
                                     "label": error is None})
        right = [t for t in trajs if t["_error"] is None]
        for t in trajs:
            e = t.pop("_error")
            rows["trajectories"].append(t)
            if e is None:
                continue
            s = t["sample_index"]
            mc = [0.875 - 0.25 * i if i < e else 0.0 for i in range(4)]
            if not (p == 5 and s == 2):
                rows["step_labels"].append({
                    "id": f"{t['id']}/omegaprm", "problem_id": pid, "sample_index": s, "prompt": question,
                    "completions": [x.strip() for x in t["steps"]], "labels": [i < e for i in range(4)],
                    "mc_values": mc, "mc_measured": [True] * 4, "n_rollouts_per_step": [4, 4, 4, 0],
                    "first_error_index": e, "first_error_source": "search", "n_rollouts": 12, "labeler": "omegaprm",
                    "labeler_params": dumps({"k": 4}),
                })
            prev = root_q
            for i, q in enumerate(mc):
                skip = i == e and ((s == 3 and p % 2 == 1) or (p == 5 and s == 2))
                if not skip:
                    rows["step_values"].append({
                        "id": f"{t['id']}/omegaprm/t{i}", "problem_id": pid, "sample_index": s, "step_index": i,
                        "step": t["steps"][i].strip(), "q_value": q, "advantage": q - prev,
                        "n_rollouts": 0 if i == 3 else 4, "n_correct": int(q * 4), "is_first_pit": i == e,
                        "within_noise": False, "best_of_k_value": None, "labeler": "omegaprm", "measured": True,
                    })
                prev = q
            prefix = "".join(t["steps"][:e])
            correct_step = right[0]["steps"][e].strip()
            rows["preferences"].append({
                "id": f"{pid}/step/omegaprm/s{s}", "problem_id": pid, "prompt": prompt,
                "chosen": messages(("assistant", prefix + correct_step)),
                "rejected": messages(("assistant", prefix + t["steps"][e].strip())),
                "pair_type": records.PAIR_STEP, "chosen_source": "policy", "chosen_sample_index": None, "rejected_sample_index": s,
                "step_index": e, "prefix": prefix, "labeler": "omegaprm",
                "metadata": dumps({"policy": "step_dpo_first_error", "prefix_mc": mc[e - 1] if e else root_q}),
            })
            rows["preferences"].append({
                "id": f"{pid}/first_pit/omegaprm/s{s}-s0", "problem_id": pid, "prompt": prompt,
                "chosen": messages(("assistant", right[0]["completion"])),
                "rejected": messages(("assistant", "".join(t["steps"][:e + 1]).rstrip())),
                "pair_type": records.PAIR_FIRST_PIT, "chosen_source": "policy", "chosen_sample_index": 0, "rejected_sample_index": s,
                "step_index": e, "prefix": None, "labeler": "omegaprm", "metadata": dumps({"policy": "first_pit"}),
            })
            rows["preferences"].append({
                "id": content_id("outcome", right[s - 2]["id"], t["id"]), "problem_id": pid, "prompt": prompt,
                "chosen": messages(("assistant", right[s - 2]["completion"])),
                "rejected": messages(("assistant", t["completion"])), "pair_type": records.PAIR_OUTCOME,
                "chosen_source": "policy",
                "chosen_sample_index": right[s - 2]["sample_index"], "rejected_sample_index": s,
                "step_index": None, "prefix": None, "labeler": None, "metadata": dumps({"policy": "all_pairs"}),
            })
    rows["rejects"].append(make_reject(stage="verify", reason="unparseable_answer", problem_id="arith-000",
                                       scope="row", detail="no answer", payload={"sample_index": 9}, key=9))
    return rows


def write_output(out: Path, rows: Dict[str, List[dict]]) -> None:
    """Writes ``rows`` as a Counterpoint output directory (two shards per config) plus run_summary.json."""
    import pyarrow.parquet as pq

    from counterpoint.schemas.records import rows_to_table

    for config, config_rows in rows.items():
        folder = out / "data" / config
        folder.mkdir(parents=True, exist_ok=True)
        half = (len(config_rows) + 1) // 2
        for i, chunk in enumerate((config_rows[:half], config_rows[half:])):
            pq.write_table(rows_to_table(config, chunk), folder / f"train-{i:05d}-of-00002.parquet",
                           compression="zstd")
    summary = {"configs": list(rows), "counts": {f"rows_{c}": len(r) for c, r in rows.items()},
               "provenance": {"model": "embedded:smollm2-135m-instruct", "labeler": {"name": "omegaprm"},
                              "counterpoint_version": "test"}}
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2))


def critical_token_rows(rows: Dict[str, List[dict]], tokenizer, model_id: str = "embedded:smollm2-135m-instruct",
                        skip: int = 0) -> List[dict]:
    """Planted ``critical_tokens`` rows for the incorrect trajectories of ``rows`` (issue 21), tokenized with
    ``tokenizer`` (the policy's): weight 1.0 on the tokens of OmegaPRM's first wrong step (from ``step_labels``,
    else step 1), 0.25 elsewhere; the most critical position is the wrong step's first token. The first
    ``skip`` incorrect trajectories get no row."""
    from counterpoint.schemas.records import dumps

    first_error = {(r["problem_id"], r["sample_index"]): r["first_error_index"] for r in rows["step_labels"]}
    out = []
    wrong = [t for t in rows["trajectories"] if t["verdict"] == "incorrect"][skip:]
    for t in wrong:
        enc = tokenizer(t["completion"], add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        char_starts = [sum(len(x) for x in t["steps"][:i]) for i in range(len(t["steps"]))]
        starts = [next(j for j, (a, _) in enumerate(offsets) if a >= c) for c in char_starts]
        e = first_error.get((t["problem_id"], t["sample_index"]))
        wrong_step = 1 if e is None else e
        end = starts[wrong_step + 1] if wrong_step + 1 < len(starts) else len(ids)
        weights = [1.0 if starts[wrong_step] <= j < end else 0.25 for j in range(len(ids))]
        top = [starts[wrong_step]] + [j for j in range(starts[wrong_step] + 1, end)][:2]
        out.append({
            "id": f"{t['id']}/critical", "problem_id": t["problem_id"], "sample_index": t["sample_index"],
            "prompt": t["prompt"], "completion": t["completion"], "token_ids": ids,
            "tokens": [tokenizer.decode([i]) for i in ids],
            "logp_positive": [-2.0 - w for w in weights], "logp_negative": [-2.0 + w for w in weights],
            "contrastive_score": [-2.0 * w for w in weights], "token_weights": weights,
            "score_form": "full_distribution", "top_critical_positions": top, "first_wrong_step": e,
            "step_token_starts": starts, "rollout_critical_position": starts[wrong_step] if e is not None else None,
            "rollout_critical_step": e, "contrast_in_first_wrong_step": None if e is None else True,
            "search_rollouts": 12 if e is not None else 0,
            "banned_success_rate": 0.75 if e is not None else None, "contrast_ban_success_rate": 0.5,
            "random_ban_position": 0, "random_ban_success_rate": 0.0, "ban_rollouts": 4,
            "contrast_models": dumps({"positive": "pos", "negative": "neg"}), "model_id": model_id,
        })
    return out


def write_validated_output(out: Path, n_problems: int = 6,
                           rows: Optional[Dict[str, List[dict]]] = None) -> Dict[str, List[dict]]:
    """A Counterpoint output folder (manifest, one live version) holding ``rows`` (default ``corpus_rows``),
    published through the one publish procedure (gate against the rows written, then the version switch)."""
    from counterpoint import storage
    from counterpoint.dataset import publish
    from counterpoint.dataset.summary import RunSummary

    rows = rows if rows is not None else corpus_rows(n_problems)
    layout = storage.OutputLayout(str(out))
    with publish.claim(layout, "test"):
        staging = layout.staging(publish.new_version_id())
        write_output(Path(staging.root), rows)
        summary = RunSummary.read(staging)
        summary.written = {c: {"shards": len(staging.shards(c)), "rows": len(r)} for c, r in rows.items()}
        publish.publish(layout, publish.Publication(staging=staging, staged=publish.Staged(dict(summary.written)),
                                                    summary=summary, report=False), publish.GateOptions())
    return rows


# ---------------------------------------------------------------------------
# The tiny model
# ---------------------------------------------------------------------------
def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 64, 4 heads) with the embedded SmolLM2 tokenizer, saved into ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from counterpoint.generators.embedded import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class CountingCollator:
    """Counts the rows a trainer's data collator batches (``rows``) and the batches (``batches``)."""

    def __init__(self, inner):
        self.inner = inner
        self.rows = 0
        self.batches = 0

    def __call__(self, features):
        self.rows += len(features)
        self.batches += 1
        return self.inner(features)


def train_counted(trainer) -> Dict[str, Any]:
    """Runs ``trainer.train()`` with a counting collator; returns rows, steps and losses."""
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    output = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"rows_consumed": counter.rows, "batches": counter.batches, "steps": trainer.state.global_step,
            "train_loss": output.training_loss, "step_losses": losses}


# ---------------------------------------------------------------------------
# TRL 1.13 PRMTrainer (run in its own process: see the module docstring)
# ---------------------------------------------------------------------------
def train_prm_trl113(model_dir: str, data_dir: str, work_dir: str, batch_size: int = 4) -> Dict[str, Any]:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from trl.experimental.prm import PRMConfig, PRMTrainer

    dataset = datasets.load_dataset(data_dir, "trl_stepwise", split="train")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)  # the token-classification head is new: initialise it reproducibly
    model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=2)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = PRMConfig(
        output_dir=work_dir, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False,
        dataloader_num_workers=0, seed=0, disable_tqdm=True, max_length=512,
    )
    trainer = PRMTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    labelled = sum(sum(1 for x in row if x != -100) for row in trainer.train_dataset["labels"])
    result = train_counted(trainer)
    result.update({"trainer": "trl.experimental.prm.PRMTrainer", "trl": trl.__version__, "rows": dataset.num_rows,
                   "steps_labelled": labelled, "step_count": sum(len(c) for c in dataset["completions"])})
    return result


def main(argv: List[str]) -> int:
    if len(argv) != 5 or argv[1] != "prm":
        print("usage: _tiny_model.py prm MODEL_DIR DATA_DIR RESULT_JSON", file=sys.stderr)
        return 2
    _, _, model_dir, data_dir, result_json = argv
    result = train_prm_trl113(model_dir, data_dir, str(Path(result_json).parent / "prm-run"))
    assert all(math.isfinite(x) for x in result["step_losses"]), result
    Path(result_json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
