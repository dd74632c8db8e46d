"""Reliability of the corpus pipeline, end to end on the scripted generator.

* kill -9 mid-run (a subprocess on the multi_processing runner), resume into the same
  output folder, and get exactly the rows of an uninterrupted run;
* pay once: finished problems come from checkpoints, generated samples from the
  request cache (a generator that fails every call must not be needed);
* engine faults (transient and terminal errors, dead engines, hung calls, poison
  requests, over-long prompts): the run completes and every problem is accounted for;
* verifier crashes / hangs give ``unknown`` with a reason, never a negative;
* a corpus full of bad input: one reject per bad item, good rows untouched;
* determinism across runs and batch sizes; seed sensitivity;
* atomic outputs: ``data/`` is never partial, and a corrupt shard is reported.

Most runs use the in-process FnApiRunner with validation and report off.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
from apache_beam.utils import shared

from counterpoint import corpus
from counterpoint.config import from_dict
from counterpoint.pipelines.generate_corpus import run
from counterpoint.schemas import records
from counterpoint.sources.procedural import procedural_problem
from counterpoint import storage
from counterpoint.testing.faults import faults
from counterpoint.transforms.stages import EngineSpec, SampleDoFn

IN_PROCESS = ["--runner=FnApiRunner"]
MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
OUTCOME_CONFIGS = list(records.OUTCOME_CONFIGS)
ALL_CONFIGS = OUTCOME_CONFIGS + list(records.STEP_CONFIGS)
N_PROBLEMS = 10
SAMPLES = 4


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _problems(n: int = N_PROBLEMS, seed: int = 11) -> List[Dict]:
    return [procedural_problem(seed, i) for i in range(n)]


def _records_in(problems) -> List[Dict]:
    return [{"id": p["problem_id"], "question": p["question"], "answer": p["gold_answer"]} for p in problems]


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _answer_key(problems) -> Dict[str, str]:
    return {p["question"]: p["gold_answer"] for p in problems}


def _config(out: Path, paths, answer_key, *, scripted=None, **overrides) -> Dict:
    """A run config as a dict (JSON-able, so a subprocess can load it too)."""
    cfg = {
        "source": {"kind": "file", "paths": [str(p) for p in paths],
                   "mapping": {"question": "question", "answer": "answer", "id": "id"}},
        "generator": {"kind": "scripted", "seed": 0,
                      "scripted": {"policy": "answer_key", "answer_key": answer_key, "p_correct": 0.5,
                                   **(scripted or {})}},
        "samples_per_problem": SAMPLES,
        "batch_size": 2,
        "retry": {"max_attempts": 3, "backoff_s": 0.01},
        "validate": False,
        "report": False,
        "output": str(out),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def _run(cfg: Dict, argv=IN_PROCESS) -> Dict:
    summary = run(list(argv), config=from_dict(cfg))
    on_disk = json.loads((_live(cfg["output"]) / "run_summary.json").read_text(encoding="utf-8"))
    assert on_disk["counts"] == summary["counts"]
    return summary


def _rows(out: Path, config: str) -> List[Dict]:
    return storage.DatasetLayout(str(out)).read_table(config).to_pylist()


def _live(out) -> Path:
    """The live version's folder (the manifest names it)."""
    return Path(storage.DatasetLayout(str(out)).dataset_dir)


def _published(out: Path) -> Dict[str, bytes]:
    """The manifest and the live version's data/: what a reader of the output gets."""
    return {"counterpoint.json": (out / "counterpoint.json").read_bytes(), **_snapshot(_live(out) / "data")}


def _canon(rows) -> List[str]:
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)


def _dataset(out: Path, configs=OUTCOME_CONFIGS) -> Dict[str, List[str]]:
    """Every config as a sorted list of whole records (nothing excluded)."""
    data = {}
    for config in configs:
        rows = _rows(out, config)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), f"{out}: duplicate ids in {config}"
        data[config] = _canon(rows)
    return data


def _only(data: Dict[str, List[str]], problem_ids) -> Dict[str, List[str]]:
    keep = set(problem_ids)
    return {c: [r for r in rows if json.loads(r)["problem_id"] in keep] for c, rows in data.items()}


def _assert_accounting(out: Path, summary: Dict) -> None:
    """problems in == problems with output + problem-level rejects, from the Parquet files themselves."""
    c = summary["counts"]
    traj_ids = {r["problem_id"] for r in _rows(out, "trajectories")}
    problem_rejects = [r for r in _rows(out, "rejects") if r["scope"] == "problem"]
    assert c["problems_with_output"] == len(traj_ids)
    assert c["problems_rejected"] == len(problem_rejects)
    assert c["problems_in"] == len(traj_ids) + len(problem_rejects)
    # A duplicate's reject carries the id of the problem kept; any other rejected problem has no output.
    rejected_ids = {r["problem_id"] for r in problem_rejects if r["problem_id"] is not None and r["stage"] != "dedupe"}
    assert not traj_ids & rejected_ids, "a problem both has output and was rejected"


def _snapshot(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpointed_ids(out: Path) -> set:
    """Problem ids in the batched checkpoint objects (<settings fingerprint>/ckpt-*.jsonl.gz)."""
    ids = set()
    for path in (out / "_work" / "problems").glob("*/ckpt-*.jsonl.gz"):
        try:
            lines = gzip.decompress(path.read_bytes()).splitlines()
        except (OSError, EOFError):  # being written right now (a reader of a live run)
            continue
        ids.update(json.loads(line)["problem"]["problem_id"] for line in lines if line.strip())
    return ids


def _cache_entries(out: Path) -> List[Dict]:
    """Every cached request ({"request_id", "completions"}) of the per-problem ledgers."""
    entries = []
    for path in (out / "_work" / "cache").glob("*/*/*.json"):  # <model>/<xx>/<problem ledger>.json
        try:
            ledger = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        entries.extend(ledger["entries"].values())
    return entries


def _cache_objects(out: Path) -> int:
    return len(list((out / "_work" / "cache").glob("*/*/*.json")))


# ---------------------------------------------------------------------------
# A clean baseline: 10 problems, outcome configs, seed 0
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_in(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    problems = _problems()
    path = _write_jsonl(tmp / "input" / "problems.jsonl", _records_in(problems))
    return problems, path, _answer_key(problems)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, corpus_in):
    problems, path, key = corpus_in
    out = tmp_path_factory.mktemp("baseline") / "out"
    summary = _run(_config(out, [path], key))
    c = summary["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (N_PROBLEMS, N_PROBLEMS, 0)
    assert c["trajectories"] == N_PROBLEMS * SAMPLES and c["correct"] > 0 and c["incorrect"] > 0
    return out, summary, _dataset(out)


# ---------------------------------------------------------------------------
# 1. kill -9 and resume (+ 7. data/ is never partial)
# ---------------------------------------------------------------------------
CHILD_SCRIPT = """\
import json
import sys

if __name__ == "__main__":
    from counterpoint.config import from_dict
    from counterpoint.pipelines.generate_corpus import run

    with open(sys.argv[1], encoding="utf-8") as f:
        config = from_dict(json.load(f))
    run(sys.argv[2:], config=config)
"""


def _group_gone(pgid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _kill_midway(script: Path, cfg_path: Path, log_path: Path, out: Path, first: int, settle_s: float = 0.25):
    """Run the child; kill -9 its process group once more than ``first`` problems are checkpointed and one
    sampled problem has stayed cached but unfinished for ``settle_s``. Returns (killed, log tail)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(cfg_path), *MULTI_PROCESS],
                                cwd=out.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed = False
    unfinished_since: Dict[str, float] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            done = _checkpointed_ids(out)
            cached = {e["request_id"] for e in _cache_entries(out) if e["request_id"]}
            now = time.monotonic()
            unfinished_since = {pid: unfinished_since.get(pid, now) for pid in cached - done}
            if len(done) > first and any(now - since >= settle_s for since in unfinished_since.values()):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert _group_gone(proc.pid), "processes of the killed run are still alive"
    return killed, log_path.read_text(errors="replace")[-3000:]


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    problems = _problems()
    key = _answer_key(problems)
    first = 4
    labeled = dict(labeler="mc", labeling={"omegaprm": {"k": 2}}, labeling_batch_size=2)

    # Reference: one uninterrupted run over all problems (other labelling batches: labels must not care).
    clean_in = _write_jsonl(tmp_path / "clean_in" / "problems.jsonl", _records_in(problems))
    clean = _run(_config(tmp_path / "clean", [clean_in], key, **{**labeled, "labeling_batch_size": 5}))
    cc = clean["counts"]
    assert cc["problems_with_output"] == N_PROBLEMS and cc["rows_step_labels"] > 0
    # Rollout tokens, spread over a labelling batch as floats, still add up to what was generated.
    rollouts = [e for e in _cache_entries(tmp_path / "clean") if not e["request_id"]]
    assert cc["rollout_generated_tokens"] == sum(c["num_tokens"] for e in rollouts for c in e["completions"]) > 0
    assert cc["rollout_prompt_tokens"] == sum(e["completions"][0]["num_prompt_tokens"] for e in rollouts)

    # A: a complete earlier run over the first problems publishes data/ in the output dir.
    out = tmp_path / "out"
    inp = _write_jsonl(tmp_path / "in" / "problems.jsonl", _records_in(problems[:first]))
    _run(_config(out, [inp], key, **labeled))
    published = _published(out)
    assert len(published) > 1 and all(name.endswith(".parquet") for name in published if name != "counterpoint.json")

    # B: the full input, every engine call slowed down; kill -9 the whole process group midway,
    # once new problems are checkpointed and some sampled problem is cached but not finished.
    _write_jsonl(inp, _records_in(problems))
    slow = _config(out, [inp], key, scripted=faults(hang_every=1, hang_s=0.3), **labeled)
    cfg_path = tmp_path / "slow.json"
    cfg_path.write_text(json.dumps(slow), encoding="utf-8")
    script = tmp_path / "child_run.py"
    script.write_text(CHILD_SCRIPT, encoding="utf-8")
    # The files are read while the run writes them, so "cached, not checkpointed" can be stale by the time
    # the kill lands (a labelling batch's problems are checkpointed milliseconds apart). Kill only on a
    # problem unfinished for a while (its next engine call hangs 0.3 s); if it still finished in between,
    # the killed run is resumed and killed again: every attempt is a real kill -9.
    for attempt in range(3):
        killed, tail = _kill_midway(script, cfg_path, tmp_path / f"child{attempt}.log", out, first)
        assert killed, f"the run ended before it could be killed midway:\n{tail}"
        done = _checkpointed_ids(out)
        entries = _cache_entries(out)
        unfinished_cached = [e for e in entries if e["request_id"] and e["request_id"] not in done]
        if unfinished_cached:
            break

    # The live dataset is exactly the previous complete one: same manifest, no partial or extra shard.
    assert _published(out) == published
    assert {p["problem_id"] for p in problems[:first]} <= done and first < len(done) < N_PROBLEMS
    assert unfinished_cached
    tokens_unfinished = sum(c["num_tokens"] for e in unfinished_cached for c in e["completions"])

    # C: rerun into the same folder, no faults: completes and equals the uninterrupted run.
    resumed = _run(_config(out, [inp], key, **labeled))
    c = resumed["counts"]
    assert c["problems_resumed"] == len(done)
    # Every sampled-but-unfinished problem is served from the cache (rollouts may add hits).
    assert len(unfinished_cached) <= c["cache_hits"] <= len(entries)
    assert c["cache_tokens_saved"] >= tokens_unfinished > 0
    _assert_accounting(out, resumed)
    assert resumed["configs"] == ALL_CONFIGS
    got, want = _dataset(out, ALL_CONFIGS), _dataset(tmp_path / "clean", ALL_CONFIGS)
    for config in ALL_CONFIGS:
        assert got[config] == want[config], config
    traj = _rows(out, "trajectories")
    assert Counter(r["problem_id"] for r in traj) == {p["problem_id"]: SAMPLES for p in problems}
    # Per-run counters differ by design; rollout tokens are batch averages (batches differ after a kill).
    def comparable(counts):
        return {k: v for k, v in counts.items()
                if k not in ("problems_resumed", "cache_hits", "cache_tokens_saved") and not k.startswith("rollout_")}

    assert comparable(c) == comparable(cc)


# ---------------------------------------------------------------------------
# 2. pay once
# ---------------------------------------------------------------------------
def test_reruns_pay_nothing_twice(tmp_path, corpus_in, baseline):
    problems, path, key = corpus_in
    base_out, base_summary, base_data = baseline
    out = tmp_path / "out"
    shutil.copytree(base_out, out)
    n_cache = len(_cache_entries(out))
    assert n_cache == N_PROBLEMS
    # This generator fails every engine call: any call would turn into a generation_failed reject.
    broken = _config(out, [path], key, scripted=faults(fail_every=1))

    # A finished run, rerun: every problem comes from its checkpoint.
    s = _run(broken)
    c = s["counts"]
    assert (c["problems_resumed"], c["problems_with_output"], c["rejects"]) == (N_PROBLEMS, N_PROBLEMS, 0)
    assert (c["cache_hits"], c["cache_tokens_saved"]) == (0, 0)
    assert _dataset(out) == base_data

    # Checkpoints gone, request cache kept: every sampling request is a cache hit.
    shutil.rmtree(out / "_work" / "problems")
    s = _run(broken)
    c = s["counts"]
    assert c["problems_resumed"] == 0 and c["rejects"] == 0
    assert c["cache_hits"] == N_PROBLEMS  # one sampling request per problem
    assert c["cache_tokens_saved"] == base_summary["counts"]["generated_tokens"] == \
        sum(r["num_generated_tokens"] for r in _rows(base_out, "trajectories"))
    assert _dataset(out) == base_data
    assert _checkpointed_ids(out) == {p["problem_id"] for p in problems}

    # And once more: all resumed, and the cache hits of the previous run are not reported again.
    s = _run(broken)
    c = s["counts"]
    assert (c["problems_resumed"], c["cache_hits"], c["cache_tokens_saved"]) == (N_PROBLEMS, 0, 0)
    assert _dataset(out) == base_data
    assert len(_cache_entries(out)) == n_cache


# ---------------------------------------------------------------------------
# 3. engine faults
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("scripted,retry,fault", [
    (faults(fail_every=3), {}, "scripted failure on call 3"),
    (faults(die_every=2), {}, "scripted engine died on call 2"),
    (faults(hang_every=2, hang_s=1.5), {"call_timeout_s": 0.5}, "sample call timed out after 0.5s"),
], ids=["fail_every_3", "die_every_2", "hang_every_2_with_timeout"])
def test_recoverable_engine_faults_leave_no_trace(tmp_path, caplog, corpus_in, baseline, scripted, retry, fault):
    problems, path, key = corpus_in
    out = tmp_path / "out"
    s = _run(_config(out, [path], key, scripted=scripted, retry=retry))
    # The fault did happen, and was retried.
    assert any("sample attempt 1/3 failed" in m and fault in m for m in caplog.messages), caplog.messages
    c = s["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["rejects"]) == (N_PROBLEMS, N_PROBLEMS, 0)
    _assert_accounting(out, s)
    assert _dataset(out) == baseline[2]


@pytest.mark.parametrize("scripted,retry,reason,detail", [
    (faults(fail_every=1), {}, "generation_failed", "scripted failure on call"),
    (faults(die_every=1), {}, "engine_dead", "scripted engine"),
    (faults(hang_every=1, hang_s=5.0), {"call_timeout_s": 0.25, "max_attempts": 2}, "engine_dead", "timed out after 0.25s"),
], ids=["fail_every_1", "die_every_1", "hang_every_1_with_timeout"])
def test_terminal_engine_faults_become_rejects_and_are_retried_on_rerun(
        tmp_path, corpus_in, baseline, scripted, retry, reason, detail):
    problems = corpus_in[0][:3]
    key = corpus_in[2]
    inp = _write_jsonl(tmp_path / "in" / "problems.jsonl", _records_in(problems))
    out = tmp_path / "out"
    s = _run(_config(out, [inp], key, scripted=scripted, retry=retry))
    _assert_accounting(out, s)
    assert s["rejects_by_reason"] == {reason: 3}
    rejects = _rows(out, "rejects")
    assert sorted(r["problem_id"] for r in rejects) == sorted(p["problem_id"] for p in problems)
    by_id = {p["problem_id"]: p for p in problems}
    for r in rejects:
        assert (r["stage"], r["reason"], r["scope"]) == ("sample", reason, "problem")
        assert detail in r["detail"]
        assert json.loads(r["payload"]) == {"question": by_id[r["problem_id"]]["question"]}
    assert all(_rows(out, c) == [] for c in ("trajectories", "preferences", "unpaired"))
    # Transient failures are not checkpointed: a rerun with a healthy engine retries them.
    assert _checkpointed_ids(out) == set()
    s = _run(_config(out, [inp], key))
    assert s["counts"]["problems_with_output"] == 3 and s["counts"]["rejects"] == 0
    assert _dataset(out) == _only(baseline[2], by_id)


POISON_ID, LONG_ID = "poison-1", "long-1"


def _poison_problems(problems):
    poison = {"id": POISON_ID, "question": "POISON: " + problems[0]["question"], "answer": "3"}
    long_q = "Count the words. " + " ".join(["word"] * 400) + " How many words?"
    return _records_in(problems[:5]) + [poison, {"id": LONG_ID, "question": long_q, "answer": "400"}] \
        + _records_in(problems[5:])


def test_poison_request_and_too_long_prompt_do_not_sink_their_batch(tmp_path, corpus_in, baseline):
    problems, _, key = corpus_in
    recs = _poison_problems(problems)
    inp = _write_jsonl(tmp_path / "in" / "problems.jsonl", recs)
    out = tmp_path / "out"
    scripted = {"fail_on_substring": "POISON", "prompt_token_limit": 300}
    s = _run(_config(out, [inp], key, scripted=scripted, batch_size=4))
    c = s["counts"]
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (N_PROBLEMS + 2, N_PROBLEMS, 2)
    _assert_accounting(out, s)
    rejects = {r["problem_id"]: r for r in _rows(out, "rejects")}
    assert sorted(rejects) == [LONG_ID, POISON_ID]
    p, l = rejects[POISON_ID], rejects[LONG_ID]
    assert (p["stage"], p["reason"], p["scope"]) == ("sample", "poison_request", "problem")
    assert "poison request" in p["detail"]
    assert (l["stage"], l["reason"], l["scope"]) == ("sample", "prompt_too_long", "problem")
    assert "over the model's limit of 300" in l["detail"]
    # Every good problem, batched with the bad ones, has exactly its fault-free rows.
    got = _dataset(out)
    assert {k: v for k, v in got.items() if k != "rejects"} == \
        {k: v for k, v in baseline[2].items() if k != "rejects"}


def test_sample_stage_isolates_bad_requests_within_one_batch(tmp_path, corpus_in, baseline):
    """The same, deterministic at the stage level: one batch holding good and bad problems."""
    problems, path, key = corpus_in
    recs = {r["id"]: r for r in _poison_problems(problems)}
    cfg = from_dict(_config(tmp_path / "out", [path], key,
                            scripted={"fail_on_substring": "POISON", "prompt_token_limit": 300}))
    ids = [problems[0]["problem_id"], POISON_ID, problems[1]["problem_id"], LONG_ID, problems[2]["problem_id"]]
    states = [corpus.new_state({"problem_id": i, "source": "problems", "question": recs[i]["question"],
                                "gold_answer": recs[i]["answer"], "answer_type": "numeric",
                                "difficulty": None, "metadata": None}) for i in ids]
    layout = storage.OutputLayout(str(tmp_path / "out"))
    engine = EngineSpec(cfg.generator, shared.Shared(), layout.cache_dir("scripted"))
    stage = SampleDoFn(engine, cfg.retry, sampling=cfg.sampling, samples_per_problem=cfg.samples_per_problem,
                       system_prompt=cfg.system_prompt, segmentation=cfg.segmentation, run_seed=cfg.generator.seed)
    before = [s.to_json() for s in states]
    stage.setup()
    try:
        (out,) = list(stage.process(states))
    finally:
        stage.teardown()
    assert [s.to_json() for s in states] == before  # the stage returns new states
    assert [s.problem_id for s in out] == ids
    by_id = {s.problem_id: s for s in out}
    assert [r["reason"] for r in by_id[POISON_ID].rejects] == ["poison_request"]
    assert [r["reason"] for r in by_id[LONG_ID].rejects] == ["prompt_too_long"]
    base = {(r["problem_id"], r["sample_index"]): r["completion"] for r in _rows(baseline[0], "trajectories")}
    for pid in ids[0::2]:
        s = by_id[pid]
        assert not s.failed and s.rejects == []
        assert [(t["id"], t["completion"]) for t in s.trajectories] == \
            [(records.trajectory_id(pid, i), base[(pid, i)]) for i in range(SAMPLES)]
    assert by_id[POISON_ID].failed and by_id[POISON_ID].trajectories == []
    assert by_id[LONG_ID].failed and by_id[LONG_ID].trajectories == []
    # Only the good requests were generated (and cached).
    assert sorted(e["request_id"] for e in _cache_entries(tmp_path / "out")) == sorted(ids[0::2])


# ---------------------------------------------------------------------------
# 4. verifier crash / hang
# ---------------------------------------------------------------------------
FAULT_MODULE = "cp_reliability_verifier_faults"
FAULT_CODE = '''\
"""Runs in math-verify workers: crash / hang on the WRONG samples of two marked problems."""
import os
import time


def inject(completion, gold):
    if "The answer is " + gold + "." in completion:
        return
    if gold == "1313":
        os._exit(7)
    if gold == "4242":
        time.sleep(120)
'''
CRASH_GOLD, HANG_GOLD = "1313", "4242"


def test_verifier_crash_and_hang_are_unknown_never_negative(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / f"{FAULT_MODULE}.py").write_text(FAULT_CODE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(mods))  # spawn-ed verifier workers inherit sys.path
    recs = [
        {"id": "math-ok-1", "question": "What is 7 + 5?", "answer": "12"},
        {"id": "math-ok-2", "question": "What is 6 times 5?", "answer": "30"},
        {"id": "math-crash", "question": "What is 1300 + 13?", "answer": CRASH_GOLD},
        {"id": "math-hang", "question": "How much is 4200 + 42?", "answer": HANG_GOLD},
    ]
    inp = _write_jsonl(tmp_path / "in" / "problems.jsonl", recs)
    out = tmp_path / "out"
    cfg = _config(out, [inp], {r["question"]: r["answer"] for r in recs},
                  verifier={"timeout_s": 3.0, "pool_size": 2, "fault_injector": f"{FAULT_MODULE}:inject"})
    cfg["source"]["mapping"]["answer_type"] = "math"
    s = _run(cfg)
    _assert_accounting(out, s)
    assert s["counts"]["problems_with_output"] == 4 and s["counts"]["rejects"] == 0

    gold = {r["id"]: r["answer"] for r in recs}
    traj = _rows(out, "trajectories")
    assert len(traj) == 4 * SAMPLES
    expected_reason = {CRASH_GOLD: "verifier_crash", HANG_GOLD: "verifier_timeout"}
    seen = Counter()
    for t in traj:
        g = gold[t["problem_id"]]
        right = f"The answer is {g}." in t["completion"]
        if right:
            want = ("correct", None)
        elif g in expected_reason:
            want = ("unknown", expected_reason[g])
        else:
            want = ("incorrect", "answer_mismatch")
        assert (t["verdict"], t["verdict_reason"], t["verifier"]) == (*want, "math"), t["id"]
        assert t["final_answer"] == t["completion"].rsplit("The answer is ", 1)[1].rstrip(".")
        seen[want] += 1
    # The seeded samples hit every branch (deterministic; guards the test itself).
    assert seen[("unknown", "verifier_crash")] and seen[("unknown", "verifier_timeout")]
    assert seen[("correct", None)] and seen[("incorrect", "answer_mismatch")]
    unknown = {t["id"] for t in traj if t["verdict"] == "unknown"}
    assert s["counts"]["unknown"] == len(unknown)

    verdict = {t["id"]: t["verdict"] for t in traj}
    prefs = _rows(out, "preferences")
    assert prefs
    for pair in prefs:
        assert verdict[records.trajectory_id(pair["problem_id"], pair["rejected_sample_index"])] == "incorrect"
        assert verdict[records.trajectory_id(pair["problem_id"], pair["chosen_sample_index"])] == "correct"
    unpaired = {r["id"]: r["label"] for r in _rows(out, "unpaired")}
    # Every verified sample that is no duplicate (counterpoint.clean.dedup) is one unpaired row.
    assert unpaired == {t["id"]: t["verdict"] == "correct" for t in traj
                        if t["verdict"] != "unknown" and t["duplicate_of"] is None}


# ---------------------------------------------------------------------------
# 5. bad input
# ---------------------------------------------------------------------------
def test_bad_input_corpus_rejects_each_bad_item_and_keeps_good_rows_intact(tmp_path):
    good = [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
         "answer": "He has 3 + 4 = 7 apples.\n#### 7"},
        {"question": "🍎 Mia has 12 🍏 and eats 5 😋. How many are left? 🤔 (naïve café — 日本語)",
         "answer": "12 - 5 = 7\n#### 7"},
        {"question": r"Let $f(x)=\frac{x^{2}+2x}{\sqrt{x}}\cdot\left(\int_0^1 t\,dt\right)$ and "
                     r"$\mathbb{E}[X]=\sum_{k=1}^{3}\binom{3}{k}$. Compute $2^{3}+\lfloor\pi\rfloor$.",
         "answer": "8 + 3 = 11\n#### 1,1"},
    ]
    max_chars = 300
    lines: List[bytes] = []
    expect: Dict[int, tuple] = {}  # line number -> (stage, reason)

    def add(raw, reason=None, stage="read"):
        lines.append(raw if isinstance(raw, bytes) else raw.encode("utf-8"))
        if reason:
            expect[len(lines)] = (stage, reason)

    add(json.dumps(good[0]))
    add(json.dumps(good[1], ensure_ascii=False))
    add(b'{"question": "caf\xe9 costs 3 euros, two caf\xe9s cost?", "answer": "#### 6"}', "invalid_utf8")
    add(json.dumps(good[2]))
    add("")  # blank line: skipped, no reject
    add('{"question": "Half a line", "answer": ', "malformed_json")
    add(json.dumps({"question": "Where is the answer field?"}), "missing_field")
    add('{"question": "lone \\ud800 surrogate?", "answer": "#### 2"}', "invalid_utf8")
    add(json.dumps([1, 2, 3]), "not_an_object")
    add(json.dumps({"question": "   \t ", "answer": "#### 5"}), "empty_question", "validate_problem")
    add(json.dumps({"question": "x" * (max_chars + 1) + "?", "answer": "#### 5"}), "question_too_long",
        "validate_problem")
    add(json.dumps({"question": "What is 2 + 2?", "answer": "It is 4, obviously."}), "unparsable_gold")
    add(json.dumps({"question": good[0]["question"], "answer": "Same problem, other words.\n#### 7"}),
        "duplicate_problem_id", "dedupe")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (inp / "b.jsonl").write_bytes(b"")

    golds = ["7", "7", "11"]
    ids = [records.content_id(g["question"], gold) for g, gold in zip(good, golds)]
    key = {g["question"]: gold for g, gold in zip(good, golds)}
    out = tmp_path / "out"
    cfg = _config(out, [inp / "*.jsonl"], key)
    cfg["source"] = {"kind": "file", "paths": [str(inp / "*.jsonl")], "preset": "gsm8k",
                     "max_question_chars": max_chars}
    s = _run(cfg)
    _assert_accounting(out, s)
    c = s["counts"]
    n_items = 3 + len(expect) + 1  # good rows + bad lines + the empty file
    assert (c["problems_in"], c["problems_with_output"], c["problems_rejected"]) == (n_items, 3, n_items - 3)
    assert c["row_rejects"] == 0

    rejects = _rows(out, "rejects")
    assert all(r["scope"] == "problem" for r in rejects)
    assert Counter(r["reason"] for r in rejects) == Counter(
        [reason for _, reason in expect.values()] + ["empty_file"])
    a_path = "<local>/a.jsonl"  # published rows name the file, not the local folder
    for lineno, (stage, reason) in expect.items():
        where = f"{a_path}:{lineno}"
        if stage == "read":
            hits = [r for r in rejects if r["reason"] == reason and r["detail"].startswith(where + ":")]
            assert len(hits) == 1 and hits[0]["stage"] == "read", (lineno, reason)
    (empty,) = [r for r in rejects if r["reason"] == "empty_file"]
    assert empty["stage"] == "read" and "<local>/b.jsonl" in empty["detail"] and str(tmp_path) not in empty["detail"]
    (dup,) = [r for r in rejects if r["reason"] == "duplicate_problem_id"]
    assert (dup["stage"], dup["problem_id"]) == ("dedupe", ids[0])
    (too_long,) = [r for r in rejects if r["reason"] == "question_too_long"]
    assert too_long["stage"] == "validate_problem" and f"> limit {max_chars}" in too_long["detail"]
    (blank,) = [r for r in rejects if r["reason"] == "empty_question"]
    assert blank["stage"] == "validate_problem"

    # Good rows: byte-for-byte questions, extracted golds, every sample present.
    traj = _rows(out, "trajectories")
    assert Counter(t["problem_id"] for t in traj) == {i: SAMPLES for i in ids}
    want = {i: (g["question"], gold) for i, g, gold in zip(ids, good, golds)}
    for t in traj:
        question, gold = want[t["problem_id"]]
        assert t["question"].encode("utf-8") == question.encode("utf-8")
        assert t["prompt"][-1] == {"role": "user", "content": question}
        assert (t["gold_answer"], t["source"]) == (gold, "gsm8k")
        assert t["verdict"] in ("correct", "incorrect")
    assert {r["problem_id"] for r in _rows(out, "unpaired")} == set(ids)


# ---------------------------------------------------------------------------
# 6. determinism
# ---------------------------------------------------------------------------
def test_same_seed_same_rows_other_seed_other_rows(tmp_path, corpus_in, baseline):
    problems, path, key = corpus_in
    # Same seed, different batching and output folder: identical datasets.
    s = _run(_config(tmp_path / "same", [path], key, batch_size=3))
    assert _dataset(tmp_path / "same") == baseline[2]
    assert s["counts"] == baseline[1]["counts"]
    # Another seed: same problems and shape, different samples.
    other = _config(tmp_path / "other", [path], key)
    other["generator"]["seed"] = 1
    _run(other)
    base_traj = {r["id"]: r for r in _rows(baseline[0], "trajectories")}
    other_traj = {r["id"]: r for r in _rows(tmp_path / "other", "trajectories")}
    assert sorted(other_traj) == sorted(base_traj)
    assert all(other_traj[i]["seed"] != base_traj[i]["seed"] for i in base_traj)
    changed = sum(other_traj[i]["completion"] != base_traj[i]["completion"] for i in base_traj)
    assert changed > len(base_traj) // 4
    assert _dataset(tmp_path / "other")["unpaired"] != baseline[2]["unpaired"]


# ---------------------------------------------------------------------------
# 7. atomic outputs: a corrupt shard is reported
# ---------------------------------------------------------------------------
def test_validation_reports_truncated_and_corrupt_shards(tmp_path, baseline):
    out = tmp_path / "out"
    shutil.copytree(baseline[0], out)
    from counterpoint.dataset.publish import GateOptions, revalidate

    def validate():  # as `counterpoint validate OUT` does: the live version, against the counts written
        return revalidate(storage.OutputLayout(str(out)), GateOptions(runner_options=IN_PROCESS))[0]

    report = validate()
    assert report.success, report.message()

    traj = Path(storage.DatasetLayout(str(out)).config_dir("trajectories")) / "train-00000-of-00001.parquet"
    prefs = Path(storage.DatasetLayout(str(out)).config_dir("preferences")) / "train-00000-of-00001.parquet"
    data = traj.read_bytes()
    traj.write_bytes(data[: len(data) // 2])  # truncated mid-write
    prefs.write_bytes(b"PAR1 this is not a parquet file")
    report = validate()
    assert not report.success
    corrupt = {f.config: f for f in report.failures if f.reason == "corrupt_shard"}
    assert sorted(corrupt) == ["preferences", "trajectories"]
    assert corrupt["trajectories"].shard == "data/trajectories/train-00000-of-00001.parquet"
    assert corrupt["preferences"].shard == "data/preferences/train-00000-of-00001.parquet"
    assert all(f.detail for f in corrupt.values())
    message = report.message()
    assert "corrupt_shard" in message and "data/trajectories/train-00000-of-00001.parquet" in message
    # The corrupt shards leave data/ (quarantined); the intact configs stay.
    assert not traj.exists() and not prefs.exists()
    assert (out / "quarantine" / "trajectories" / "train-00000-of-00001.parquet").read_bytes() == data[: len(data) // 2]
    assert report.configs["unpaired"]["success"] and report.configs["rejects"]["success"]
