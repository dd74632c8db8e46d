"""Problem sources: procedural generator, problem files, HF datasets, mappings, validation."""

from __future__ import annotations

import bz2
import gzip
import json
import os
from collections import Counter

# HF loading below uses local files only; make sure nothing tries the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from counterpoint.schemas import records  # noqa: E402
from counterpoint.sources import (  # noqa: E402
    PRESETS,
    FieldMapping,
    ProblemSourceConfig,
    dedupe_key,
    extract_boxed,
    extract_gsm8k_answer,
    iter_source,
    map_record,
    validate_problem,
)
from counterpoint.sources.files import expand_paths, read_problem_file, shown_path  # noqa: E402
from counterpoint.sources.procedural import iter_procedural, procedural_problem  # noqa: E402

PROBLEM_COLUMNS = set(records.PROBLEMS.column_names)


def _split(items):
    problems = [r for k, r in items if k == "problem"]
    rejects = [r for k, r in items if k == "reject"]
    assert len(problems) + len(rejects) == len(items)
    return problems, rejects


def _solve(start, ops):
    """Independent re-computation of a procedural answer from its metadata."""
    v = start
    for o in ops:
        k = o["operand"]
        if o["op"] == "add":
            v = v + k
        elif o["op"] == "sub":
            v = v - k
        elif o["op"] == "mul":
            v = v * k
        elif o["op"] == "div":
            assert v % k == 0, "division must be exact"
            v = v // k
        else:
            raise AssertionError(o)
        assert v >= 0
    return v


# ---------------------------------------------------------------------------
# Procedural
# ---------------------------------------------------------------------------
def test_procedural_is_deterministic_and_random_access():
    a = procedural_problem(7, 123)
    assert a == procedural_problem(7, 123)
    # Generating index 123 alone equals generating it inside a range.
    ranged = list(iter_procedural(7, 120, 125))
    assert ranged[3] == a
    assert a["problem_id"] == "proc-7-123"
    assert procedural_problem(8, 123)["question"] != a["question"] or \
        procedural_problem(8, 123)["gold_answer"] != a["gold_answer"]
    assert len({procedural_problem(7, i)["question"] for i in range(50)}) == 50


def test_procedural_answers_are_correct_for_200_problems():
    styles, ops_seen, difficulties = Counter(), Counter(), Counter()
    for i in range(200):
        p = procedural_problem(3, i)
        assert set(p) == PROBLEM_COLUMNS
        assert p["source"] == "procedural" and p["answer_type"] == "numeric"
        assert p["question"].endswith("?")
        meta = json.loads(p["metadata"])
        answer = _solve(meta["start"], meta["ops"])
        assert p["gold_answer"] == str(answer) == str(meta["answer"])
        assert int(p["gold_answer"]) >= 0
        assert p["difficulty"] == len(meta["ops"]) == len(meta["steps"])
        assert 2 <= p["difficulty"] <= 4
        # The start value and additive operands are stated in the text as digits.
        assert str(meta["start"]) in p["question"]
        for o in meta["ops"]:
            if o["op"] in ("add", "sub"):
                assert str(o["operand"]) in p["question"]
        assert validate_problem(p, max_question_chars=8000) is None
        styles[meta["style"]] += 1
        difficulties[p["difficulty"]] += 1
        ops_seen.update(o["op"] for o in meta["ops"])
    assert set(styles) == {"story", "chain"}
    assert set(ops_seen) == {"add", "sub", "mul", "div"}
    assert set(difficulties) == {2, 3, 4}


def test_procedural_custom_op_range_and_bad_range():
    for i in range(30):
        p = procedural_problem(1, i, min_ops=5, max_ops=6)
        meta = json.loads(p["metadata"])
        assert p["difficulty"] in (5, 6)
        assert p["gold_answer"] == str(_solve(meta["start"], meta["ops"]))
        assert p["problem_id"] == f"proc-1-{i}-ops5to6"
    with pytest.raises(ValueError):
        procedural_problem(0, 0, min_ops=3, max_ops=2)
    with pytest.raises(ValueError):
        procedural_problem(0, 0, min_ops=0, max_ops=2)


def test_iter_source_procedural():
    items = list(iter_source(ProblemSourceConfig(kind="procedural", num_problems=5, seed=3)))
    assert [k for k, _ in items] == ["problem"] * 5
    assert [r["problem_id"] for _, r in items] == [f"proc-3-{i}" for i in range(5)]
    assert items[2][1] == procedural_problem(3, 2)
    with pytest.raises(ValueError):
        list(iter_source(ProblemSourceConfig(kind="procedural", num_problems=None)))


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
GOOD = [
    {"id": "a1", "question": "What is 2 + 3?", "answer": "5", "topic": "add"},
    {"id": "a2", "question": "Compute $\\frac{1}{2} + \\frac{1}{2}$.", "answer": 1, "topic": "frac"},
    {"id": "a3", "question": "Emoji 🍎🍏 count?", "answer": " 2 ", "topic": "emoji"},
]


def _expected_problem(rec, origin):
    return {
        "problem_id": rec["id"],
        "source": "toy",
        "question": rec["question"],
        "gold_answer": str(rec["answer"]).strip(),
        "answer_type": "numeric",
        "difficulty": None,
        "metadata": {"extra": {"topic": rec["topic"]}, "origin": origin},
    }


def _loaded(row):
    out = dict(row)
    out["metadata"] = json.loads(row["metadata"])
    return out


TOY = FieldMapping(id="id", source_name="toy")


def _jsonl_bytes(recs):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "jsonl.bz2", "jsonl.zst"])
def test_read_jsonl_plain_and_compressed(tmp_path, suffix):
    path = str(tmp_path / f"good.{suffix}")
    data = _jsonl_bytes(GOOD)
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".bz2"):
        data = bz2.compress(data)
    elif suffix.endswith(".zst"):
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(data)
    with open(path, "wb") as f:
        f.write(data)
    items = list(read_problem_file(path, TOY))
    assert [k for k, _ in items] == ["problem"] * 3
    assert [_loaded(r) for _, r in items] == [
        _expected_problem(rec, {"path": shown_path(path), "line": i + 1}) for i, rec in enumerate(GOOD)
    ]


def test_read_json_array_and_parquet(tmp_path):
    jpath = str(tmp_path / "good.json")
    with open(jpath, "w", encoding="utf-8") as f:
        json.dump(GOOD, f, ensure_ascii=False, indent=2)
    items = list(read_problem_file(jpath, TOY))
    assert [_loaded(r) for _, r in items] == [
        _expected_problem(rec, {"path": shown_path(jpath), "index": i}) for i, rec in enumerate(GOOD)
    ]

    ppath = str(tmp_path / "good.parquet")
    pq.write_table(pa.Table.from_pylist([dict(r, answer=str(r["answer"])) for r in GOOD]), ppath)
    items = list(read_problem_file(ppath, TOY))
    assert [_loaded(r) for _, r in items] == [
        _expected_problem(rec, {"path": shown_path(ppath), "row": i}) for i, rec in enumerate(GOOD)
    ]
    table = records.rows_to_table("problems", [r for _, r in items])
    assert table.num_rows == 3


def test_read_garbage_never_raises(tmp_path):
    cases = {
        "garbage.parquet": (b"this is not parquet", "unreadable_file"),
        "zero.parquet": (b"", "empty_file"),
        "empty.json": (b"[]", "empty_file"),
        "blank.jsonl": (b"\n  \n\r\n", "empty_file"),
        "broken.json": (b'[{"question": "x", "answer": "1"},', "malformed_json"),
        "corrupt.jsonl.gz": (b"not gzip at all", "unreadable_file"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        items = list(read_problem_file(str(path), FieldMapping()))
        assert [(k, r["reason"]) for k, r in items] == [("reject", reason)], name
        assert items[0][1]["stage"] == "read" and items[0][1]["scope"] == "problem"
    items = list(read_problem_file(str(tmp_path / "missing.jsonl"), FieldMapping()))
    assert [(k, r["reason"]) for k, r in items] == [("reject", "unreadable_file")]

    # A JSON array with a non-object element; a .json file holding JSON lines.
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"question": "q?", "answer": "1"}, 3]))
    assert [k if k == "problem" else r["reason"] for k, r in read_problem_file(str(mixed), FieldMapping())] == [
        "problem", "not_an_object"]
    lines = tmp_path / "lines.json"
    lines.write_text('{"question": "q?", "answer": "1"}\n{"question": "r?", "answer": "2"}\n')
    assert [k for k, _ in read_problem_file(str(lines), FieldMapping())] == ["problem", "problem"]


def test_bad_input_corpus(tmp_path):
    limit = 200
    mapping = PRESETS["gsm8k"].replace(id="id", answer_type_field="kind")
    emoji_q = "🍎 Ava has 3 apples 🍏 and buys 2 more. How many apples does she have? 😀 ✓"
    latex_q = (r"Let $f(x)=\frac{\sqrt{x^2+1}}{\left(x-\tfrac{1}{2}\right)^{2}}$ and "
               r"$S=\{\,n\in\mathbb{Z} : \sum_{k=1}^{n} k^{2} \le 30\,\}$. Compute $|S| \cdot 2$.")
    lines = [
        # (raw bytes of the line, expected reason or "problem")
        (json.dumps({"id": "g1", "question": emoji_q, "answer": "3 + 2 = 5\n#### 5"}, ensure_ascii=False).encode(),
         "problem"),
        (json.dumps({"id": "g2", "question": latex_q, "answer": r"$\frac{a}{b}$ ... #### 8"}).encode(), "problem"),
        (b"", None),  # blank: skipped silently
        (b'{"id": "u1", "question": "caf\xe9 au lait?", "answer": "#### 1"}', "invalid_utf8"),
        (b'{"id": "m1", "question": "x", ', "malformed_json"),
        (b"not json at all", "malformed_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (json.dumps({"id": "q0", "answer": "#### 3"}).encode(), "missing_field"),
        (json.dumps({"id": "a0", "question": "What?"}).encode(), "missing_field"),
        (json.dumps({"id": "e1", "question": "   \n ", "answer": "#### 2"}).encode(), "empty_question"),
        (json.dumps({"id": "l1", "question": "x" * (limit + 1), "answer": "#### 4"}).encode(), "question_too_long"),
        (json.dumps({"id": "n1", "question": "What is 2+2?", "answer": "The answer is 4."}).encode(),
         "unparsable_gold"),
        (json.dumps({"id": "g1", "question": "Same id, other question?", "answer": "#### 9"}).encode(), "problem"),
        (json.dumps({"id": "c1", "question": "Big?", "answer": "so #### 1,234"}).encode(), "problem"),
        (json.dumps({"id": "eg", "question": "Q?", "answer": "####   "}).encode(), "empty_gold_answer"),
        (json.dumps({"id": "t1", "question": "Q?", "answer": "#### 1", "kind": "vector"}).encode(),
         "unknown_answer_type"),
        (json.dumps({"id": "w1", "question": 42, "answer": "#### 1"}).encode(), "invalid_field_type"),
        (b'{"id": "s1", "question": "lone \\ud800 surrogate", "answer": "#### 1"}', "invalid_utf8"),
        (json.dumps({"question": "No id here?", "answer": "#### 7"}).encode() + b"\r", "problem"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(raw for raw, _ in lines) + b"\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jsonl"
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage")
    nomatch = str(tmp_path / "nothing-*.jsonl")

    cfg = ProblemSourceConfig(kind="file", paths=[str(bad), str(empty), str(missing), str(corrupt), nomatch],
                              preset=None, mapping=mapping, max_question_chars=limit)
    items = list(iter_source(cfg))
    problems, rejects = _split(items)

    # Counts add up: every non-blank line, plus one reject per empty/missing/corrupt/unmatched input.
    rows_in = sum(1 for raw, _ in lines if raw.strip()) + 4
    assert len(items) == rows_in

    # Each line's outcome, in order (items are yielded in file order).
    expected = [exp for raw, exp in lines if exp is not None]
    got = [("problem" if k == "problem" else r["reason"]) for k, r in items[: len(expected)]]
    assert got == expected
    assert [r["reason"] for r in rejects[-4:]] == ["empty_file", "unreadable_file", "unreadable_file",
                                                   "no_files_matched"]
    # Read-stage rejects say where they are.
    for lineno, (raw, exp) in enumerate(lines, start=1):
        if exp in ("invalid_utf8", "malformed_json", "not_an_object", "missing_field", "unparsable_gold",
                   "invalid_field_type"):
            rej = next(r for r in rejects if f"{shown_path(str(bad))}:{lineno}" in (r["detail"] or ""))
            assert rej["reason"] == exp and rej["stage"] == "read" and rej["scope"] == "problem"
    missing_details = [r["detail"] for r in rejects if r["reason"] == "missing_field"]
    assert any("'question'" in d for d in missing_details) and any("'answer'" in d for d in missing_details)
    assert any("line 5" in r["detail"] for r in rejects if r["reason"] == "malformed_json")
    for r in rejects:
        if r["reason"] in ("empty_question", "question_too_long", "empty_gold_answer", "unknown_answer_type"):
            assert r["stage"] == "validate_problem" and r["problem_id"] in ("e1", "l1", "eg", "t1")
    assert len({r["id"] for r in rejects}) == len(rejects)
    records.rows_to_table("rejects", rejects)  # every reject is Arrow-writable (no lone surrogates)

    # Good rows come through untouched (emoji / LaTeX), duplicates are left to the dedupe stage.
    by_id = {}
    for p in problems:
        by_id.setdefault(p["problem_id"], []).append(p)
    assert len(by_id["g1"]) == 2
    emoji = by_id["g1"][0]
    assert {k: v for k, v in emoji.items() if k != "metadata"} == {
        "problem_id": "g1", "source": "gsm8k", "question": emoji_q, "gold_answer": "5",
        "answer_type": "numeric", "difficulty": None}
    assert json.loads(emoji["metadata"]) == {
        "extra": {}, "reference_solution": "3 + 2 = 5\n#### 5", "origin": {"path": shown_path(str(bad)), "line": 1}}
    latex = by_id["g2"][0]
    assert latex["question"] == latex_q and latex["gold_answer"] == "8"
    assert by_id["c1"][0]["gold_answer"] == "1234"
    no_id = [p for p in problems if p["question"] == "No id here?"][0]
    assert no_id["problem_id"] == records.content_id("No id here?", "7")
    records.rows_to_table("problems", problems)

    # num_problems caps items read (problems + rejects).
    capped = list(iter_source(dataclass_replace(cfg, num_problems=6)))
    assert len(capped) == 6 and capped == items[:6]


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_expand_paths_local_glob(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.jsonl", "a.jsonl.gz", "c.txt"):
        (tmp_path / "d" / name).write_bytes(b"")
    assert expand_paths(str(tmp_path / "d" / "*.jsonl*")) == [
        str(tmp_path / "d" / "a.jsonl.gz"), str(tmp_path / "d" / "b.jsonl")]
    assert expand_paths(str(tmp_path / "**" / "*.txt")) == [str(tmp_path / "d" / "c.txt")]
    assert expand_paths("gs://bucket/plain.jsonl") == ["gs://bucket/plain.jsonl"]  # no glob: as is
    assert expand_paths(str(tmp_path / "none-*.jsonl")) == []


# ---------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A farm sells 1,000 eggs a day for 2 days. How many eggs?",
     "answer": "1,000 * 2 = <<1000*2=2000>>2,000\n#### 2,000"},
    {"question": "Broken row without a final answer?", "answer": "It is 5."},
]


def test_hf_local_folder_with_gsm8k_preset(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "toy_gsm8k"
    folder.mkdir()
    (folder / "test.jsonl").write_bytes(_jsonl_bytes(GSM8K_ROWS))
    cfg = ProblemSourceConfig(kind="hf", preset="gsm8k", hf_name=str(folder),
                              hf_kwargs={"cache_dir": str(tmp_path / "cache")})
    assert cfg.hf_args() == (str(folder), None, "test")
    items = list(iter_source(cfg))
    problems, rejects = _split(items)
    assert [(p["source"], p["gold_answer"], p["answer_type"]) for p in problems] == [
        ("gsm8k", "7", "numeric"), ("gsm8k", "2000", "numeric")]
    assert problems[0]["question"] == GSM8K_ROWS[0]["question"]
    assert problems[0]["problem_id"] == records.content_id(GSM8K_ROWS[0]["question"], "7")
    meta = json.loads(problems[0]["metadata"])
    assert meta["reference_solution"] == GSM8K_ROWS[0]["answer"]
    assert meta["origin"] == {"hf_name": str(folder), "hf_config": None, "split": "test", "index": 0}
    assert [r["reason"] for r in rejects] == ["unparsable_gold"]


def test_hf_json_builder_with_data_files_and_cap(tmp_path):
    pytest.importorskip("datasets")
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_jsonl_bytes(GSM8K_ROWS))
    cfg = ProblemSourceConfig(kind="hf", preset="gsm8k", hf_name="json", hf_split="train",
                              hf_data_files=str(path), num_problems=1,
                              hf_kwargs={"cache_dir": str(tmp_path / "cache")})
    items = list(iter_source(cfg))
    assert [(k, r["gold_answer"]) for k, r in items] == [("problem", "7")]


# ---------------------------------------------------------------------------
# Mappings, gold extraction, validation
# ---------------------------------------------------------------------------
def test_extract_boxed():
    assert extract_boxed(r"so $\boxed{\frac{1}{\sqrt{2}}}$.") == r"\frac{1}{\sqrt{2}}"
    assert extract_boxed(r"\boxed{1} then \boxed{ {a}^{ {b} } }") == "{a}^{ {b} }"
    assert extract_boxed(r"\fbox{42}") == "42"
    assert extract_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert extract_boxed(r"\boxed{\left( 3, \frac{\pi}{2} \right)}") == r"\left( 3, \frac{\pi}{2} \right)"
    assert extract_boxed(r"The answer is $\boxed 5$.") == "5"
    assert extract_boxed(r"\boxed{\frac{1}{2}") is None  # unbalanced (truncated)
    assert extract_boxed("no box here") is None
    assert extract_boxed(r"\boxedx{3}") is None


def test_extract_gsm8k():
    assert extract_gsm8k_answer("work\n#### 1,234 ") == "1234"
    assert extract_gsm8k_answer("a #### 1 then #### 2") == "2"
    assert extract_gsm8k_answer("no marker") is None


def test_math_preset_mapping():
    rec = {"problem": "Find $x$.", "level": "Level 5", "type": "Algebra",
           "solution": r"First \boxed{2}, finally $x = \boxed{\dfrac{3}{4}}$."}
    kind, row = map_record(rec, PRESETS["math"], source="ignored", key="k")
    assert kind == "problem"
    assert row["gold_answer"] == r"\dfrac{3}{4}" and row["answer_type"] == "math"
    assert row["difficulty"] == 5 and row["source"] == "math"
    assert json.loads(row["metadata"])["extra"] == {"type": "Algebra"}
    kind, rej = map_record({"problem": "p", "solution": "no box"}, PRESETS["math"], source="s", key="k")
    assert (kind, rej["reason"]) == ("reject", "unparsable_gold")

    m500 = {"problem": "What is $1+1$?", "solution": r"\boxed{2}", "answer": "2", "subject": "Prealgebra",
            "level": 1, "unique_id": "test/prealgebra/1.json"}
    kind, row = map_record(m500, PRESETS["math500"], source="s", key="k")
    assert (row["problem_id"], row["gold_answer"], row["difficulty"]) == ("test/prealgebra/1.json", "2", 1)


def test_validate_problem_and_dedupe_key():
    good = procedural_problem(0, 0)
    assert validate_problem(good, max_question_chars=8000) is None
    assert validate_problem(dict(good, question=" "), max_question_chars=8000)["reason"] == "empty_question"
    assert validate_problem(dict(good, gold_answer=""), max_question_chars=8000)["reason"] == "empty_gold_answer"
    assert validate_problem(good, max_question_chars=10)["reason"] == "question_too_long"
    rej = validate_problem(dict(good, answer_type="vector"), max_question_chars=8000)
    assert rej["reason"] == "unknown_answer_type" and rej["stage"] == "validate_problem"
    assert rej["problem_id"] == good["problem_id"] and set(rej) == set(records.REJECTS.column_names)
    assert dedupe_key({"question": "What  is\n2+2?", "gold_answer": "4"}) == \
        dedupe_key({"question": "what is 2+2? ", "gold_answer": "4"})
    assert dedupe_key({"question": "q", "gold_answer": "4"}) != dedupe_key({"question": "q", "gold_answer": "5"})


def test_config_accepts_mapping_dict_and_rejects_bad_kind():
    cfg = ProblemSourceConfig(kind="file", paths="x.jsonl", mapping={"question": "q", "answer": "a"})
    assert cfg.mapping == FieldMapping(question="q", answer="a") and cfg.paths == ["x.jsonl"]
    with pytest.raises(ValueError):
        ProblemSourceConfig(kind="sql")
    with pytest.raises(ValueError):
        ProblemSourceConfig(kind="hf", preset="nope")


# ---------------------------------------------------------------------------
# ReadProblems: the same sources, read by Beam workers (counterpoint.transforms.read)
# ---------------------------------------------------------------------------
import apache_beam as beam  # noqa: E402

_COLLECTED: dict = {}  # filled by the in-process runner's workers (same process; module pickled by reference)


class _Collect(beam.DoFn):
    def __init__(self, name):
        self.name = name

    def process(self, element):
        _COLLECTED.setdefault(self.name, []).append(element)


def _read_in_pipeline(source: ProblemSourceConfig, hf_files=None):
    """(problems in read order, rejects, problems_in) from a real pipeline run on the FnApiRunner."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from counterpoint.transforms.read import ReadProblems

    _COLLECTED.clear()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = p | ReadProblems(source, hf_files)
        _ = out["problems"] | "CollectProblems" >> beam.ParDo(_Collect("problems"))
        _ = out["rejects"] | "CollectRejects" >> beam.ParDo(_Collect("rejects"))
        _ = out["problems_in"] | "CollectCount" >> beam.ParDo(_Collect("count"))
    got = dict(_COLLECTED)
    problems = [row for _, row in sorted(got.get("problems", []), key=lambda kv: kv[0])]
    return problems, got.get("rejects", []), got["count"]


def test_pipeline_reads_files_like_the_driver_did_with_the_same_rejects_and_ids(tmp_path):
    records_ = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(7)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records_[:4]) + "\n{broken\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in records_[4:]) + "\n")
    (tmp_path / "empty.jsonl").write_text("")
    mapping = {"question": "question", "answer": "answer", "id": "id"}
    source = ProblemSourceConfig(kind="file", paths=[str(tmp_path / "*.jsonl*"), str(tmp_path / "missing-*.json")],
                                 mapping=mapping)
    problems, rejects, count = _read_in_pipeline(source)
    driver = list(iter_source(source))
    want_problems, want_rejects = _split(driver)
    assert problems == want_problems  # whole rows, in file order then line order
    assert sorted(r["id"] for r in rejects) == sorted(r["id"] for r in want_rejects)
    assert sorted(r["reason"] for r in rejects) == ["empty_file", "malformed_json", "no_files_matched"]
    assert count == [len(driver)] == [10]


def test_pipeline_caps_items_in_read_order_across_files(tmp_path):
    for name, lo in (("p1.jsonl", 0), ("p2.jsonl", 100)):
        (tmp_path / name).write_text("".join(
            json.dumps({"question": f"Q{lo + i}?", "answer": str(i)}) + "\n" for i in range(5)))
    (tmp_path / "p1.jsonl").write_text((tmp_path / "p1.jsonl").read_text() + "not json\n")
    source = ProblemSourceConfig(kind="file", paths=[str(tmp_path / "p*.jsonl")], num_problems=8)
    problems, rejects, count = _read_in_pipeline(source)
    # p1 has 6 items (5 problems + 1 malformed line), then the first 2 of p2.
    assert [p["question"] for p in problems] == ["Q0?", "Q1?", "Q2?", "Q3?", "Q4?", "Q100?", "Q101?"]
    assert [r["reason"] for r in rejects] == ["malformed_json"]
    assert count == [8] and _split(list(iter_source(source)))[0] == problems


def test_pipeline_generates_procedural_and_chain_problems_from_index_ranges():
    from counterpoint.generators.scripted import chain_problem
    from counterpoint.transforms import read

    source = ProblemSourceConfig(kind="procedural", num_problems=2500, min_ops=1, max_ops=2, seed=3)
    problems, rejects, count = _read_in_pipeline(source)
    assert count == [2500] and not rejects
    assert problems[::499] == [procedural_problem(3, i, 1, 2) for i in range(0, 2500, 499)]
    assert len({p["problem_id"] for p in problems}) == 2500
    chain = ProblemSourceConfig(kind="chain", num_problems=5, min_ops=3, max_ops=6, seed=2)
    problems, _, count = _read_in_pipeline(chain)
    assert problems == [chain_problem(2, i, num_steps=read.chain_steps(2, i, 3, 6)) for i in range(5)]
    assert {p["difficulty"] for p in problems} <= set(range(3, 7))


def test_pipeline_reads_the_resolved_data_files_of_a_hf_dataset(tmp_path):
    from counterpoint.sources.hf import resolve_data_files

    folder = tmp_path / "gsm8k_like"
    (folder / "data").mkdir(parents=True)
    rows = [{"question": f"Ann has {i} pens. How many?", "answer": f"She has {i}.\n#### {i}"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows[:3]), folder / "data" / "test-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), folder / "data" / "test-00001-of-00002.parquet")
    source = ProblemSourceConfig(kind="hf", hf_name=str(folder), hf_split="test", preset="gsm8k")
    files = resolve_data_files(str(folder), None, "test")
    assert [os.path.basename(f) for f in files] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    problems, rejects, count = _read_in_pipeline(source, files)
    assert [p["gold_answer"] for p in problems] == [str(i) for i in range(6)] and count == [6] and not rejects
    assert {p["source"] for p in problems} == {"gsm8k"}  # the preset names the source
    with pytest.raises(ValueError, match="no data files for split 'train'"):
        resolve_data_files(str(folder), None, "train")
