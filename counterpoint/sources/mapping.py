"""Field mappings: how a source record (JSONL line, Parquet row, HF example) becomes a problem row.

A :class:`FieldMapping` names the record fields that hold the question, the gold
answer (raw or inside a worked solution), an optional id and difficulty, and how
the gold answer is written (``gold_format``):

* ``"plain"``: the field *is* the answer (stripped);
* ``"gsm8k"``: the text after the last ``####`` (stripped, thousands commas removed);
* ``"boxed"``: the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces).

:func:`map_record` applies a mapping to one record and returns either
``("problem", row)`` (a dict with exactly the ``PROBLEMS`` columns) or
``("reject", reject_row)``; it never raises on bad data.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from counterpoint.schemas import records

GOLD_FORMATS = ("plain", "gsm8k", "boxed")

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """Which record fields hold what. Field names may be dotted paths (``"meta.id"``)."""

    question: str = "question"
    answer: str = "answer"
    # Field holding a stable id; None (or absent / empty in a record) -> content hash.
    id: Optional[str] = None
    answer_type: str = "numeric"
    gold_format: str = "plain"
    # The ``source`` column; None -> the reader's default (file stem / HF dataset name).
    source_name: Optional[str] = None
    # Optional field holding the difficulty (an int, or a string such as "Level 3").
    difficulty: Optional[str] = None
    # Optional field holding a per-record answer type (overrides ``answer_type``).
    answer_type_field: Optional[str] = None
    # Hugging Face defaults, used by presets (a ProblemSourceConfig may override them).
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    split: Optional[str] = None

    def __post_init__(self):
        if self.gold_format not in GOLD_FORMATS:
            raise ValueError(f"gold_format must be one of {GOLD_FORMATS}, got {self.gold_format!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FieldMapping":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown FieldMapping keys {unknown}; known: {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> "FieldMapping":
        return dataclasses.replace(self, **changes)


PRESETS: Dict[str, FieldMapping] = {
    "gsm8k": FieldMapping(
        question="question", answer="answer", gold_format="gsm8k", answer_type="numeric",
        source_name="gsm8k", hf_name="openai/gsm8k", hf_config="main", split="test",
    ),
    # The original hendrycks/competition_math repo was taken down; this mirror keeps
    # its columns (problem / level / type / solution).
    "math": FieldMapping(
        question="problem", answer="solution", gold_format="boxed", answer_type="math",
        difficulty="level", source_name="math",
        hf_name="DigitalLearningGmbH/MATH-lighteval", hf_config="default", split="test",
    ),
    # MATH-500 has a clean ``answer`` column (plus solution / subject / level / unique_id).
    "math500": FieldMapping(
        question="problem", answer="answer", gold_format="plain", answer_type="math",
        id="unique_id", difficulty="level", source_name="math500",
        hf_name="HuggingFaceH4/MATH-500", hf_config=None, split="test",
    ),
}


def preset(name: str) -> FieldMapping:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


# ---------------------------------------------------------------------------
# Gold answer extraction
# ---------------------------------------------------------------------------
def extract_gsm8k_answer(text: str) -> Optional[str]:
    """Text after the last ``####`` (stripped, commas removed); None if there is none."""
    if not isinstance(text, str) or "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_group(text: str, start: int) -> Optional[str]:
    """Content of the ``{...}`` group opening at ``text[start]``; None if unbalanced."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip escaped char (\{ \} \\)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def extract_boxed(text: str) -> Optional[str]:
    """Content of the LAST ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces balanced).

    Also accepts the brace-less form ``\\boxed 5``. Returns None when there is no
    box or the last one is unbalanced (truncated).
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    i = m.end()
    n = len(text)
    while i < n and text[i] in " \t\n":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        inner = _balanced_group(text, i)
        return None if inner is None else inner.strip()
    if i == m.end():
        return None  # e.g. "\boxed5": not a box
    tok = re.match(r"[^\s$]+", text[i:])
    return tok.group(0).rstrip(".") if tok else None


def extract_gold(raw: str, gold_format: str) -> Optional[str]:
    if gold_format == "plain":
        return raw.strip()
    if gold_format == "gsm8k":
        return extract_gsm8k_answer(raw)
    if gold_format == "boxed":
        return extract_boxed(raw)
    raise ValueError(f"unknown gold_format {gold_format!r}")


# ---------------------------------------------------------------------------
# Record -> problem row
# ---------------------------------------------------------------------------
def get_field(record: Mapping[str, Any], name: str) -> Any:
    """``record[name]``, else a dotted-path lookup; ``_MISSING`` if absent."""
    if name in record:
        return record[name]
    cur: Any = record
    for part in name.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def clean_str(s: str) -> str:
    """``s`` with lone surrogates escaped, so it always encodes as UTF-8."""
    return s if _utf8_ok(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_payload(obj: Any) -> Any:
    """``obj`` with every string UTF-8 encodable (payloads must survive Arrow)."""
    if isinstance(obj, str):
        return clean_str(obj)
    if isinstance(obj, Mapping):
        return {clean_str(str(k)): safe_payload(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [safe_payload(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


def safe_dumps(obj: Any) -> str:
    """records.dumps, falling back to ASCII-escaped JSON if the text is not UTF-8 encodable."""
    s = records.dumps(obj)
    if _utf8_ok(s):
        return s
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, default=str)


def _answer_to_str(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return None


def parse_difficulty(value: Any) -> Optional[int]:
    """An int from ``3``, ``3.0``, ``"3"`` or ``"Level 3"``; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.search(r"-?\d+", value)
        if m:
            return int(m.group(0))
    return None


def map_record(
    record: Any,
    mapping: FieldMapping,
    *,
    source: str,
    key: Any,
    origin: Optional[Mapping[str, Any]] = None,
    stage: str = "read",
) -> Tuple[str, Dict[str, Any]]:
    """One source record -> ``("problem", row)`` or ``("reject", reject_row)``; never raises.

    ``key`` locates the record (path + line, dataset + index) and keeps reject ids unique;
    ``origin`` is stored in the problem's metadata for provenance. Reasons:
    ``not_an_object``, ``missing_field``, ``invalid_field_type``, ``invalid_utf8``,
    ``unparsable_gold`` and, for anything unforeseen (e.g. absurdly deep nesting),
    ``invalid_record``.
    """
    try:
        return _map_record(record, mapping, source=source, key=key, origin=origin, stage=stage)
    except Exception as e:  # noqa: BLE001 - bad data must never crash a reader
        return "reject", records.make_reject(
            stage=stage, reason="invalid_record", problem_id=None, scope="problem",
            detail=f"{key}: {type(e).__name__}: {e}", key=key,
        )


def _map_record(
    record: Any,
    mapping: FieldMapping,
    *,
    source: str,
    key: Any,
    origin: Optional[Mapping[str, Any]] = None,
    stage: str = "read",
) -> Tuple[str, Dict[str, Any]]:
    """Long: one field mapping per branch of a source record, each with its own reject reason."""
    def reject(reason: str, detail: str, problem_id: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
        return "reject", records.make_reject(
            stage=stage, reason=reason, problem_id=problem_id, scope="problem",
            detail=detail, payload=safe_payload(record), key=key,
        )

    if not isinstance(record, Mapping):
        return reject("not_an_object", f"{key}: expected a JSON object, got {type(record).__name__}")

    source_id: Optional[str] = None
    if mapping.id:
        raw_id = get_field(record, mapping.id)
        if raw_id is not _MISSING and raw_id is not None and str(raw_id).strip() != "":
            source_id = clean_str(str(raw_id))

    question = get_field(record, mapping.question)
    if question is _MISSING or question is None:
        return reject("missing_field", f"{key}: missing question field {mapping.question!r}", source_id)
    raw_answer = get_field(record, mapping.answer)
    if raw_answer is _MISSING or raw_answer is None:
        return reject("missing_field", f"{key}: missing answer field {mapping.answer!r}", source_id)
    if not isinstance(question, str):
        return reject("invalid_field_type",
                      f"{key}: question field {mapping.question!r} is {type(question).__name__}, not a string",
                      source_id)
    answer_text = _answer_to_str(raw_answer)
    if answer_text is None:
        return reject("invalid_field_type",
                      f"{key}: answer field {mapping.answer!r} is {type(raw_answer).__name__}, "
                      "not a string or finite number", source_id)
    if not _utf8_ok(question) or not _utf8_ok(answer_text):
        return reject("invalid_utf8", f"{key}: lone surrogate in question or answer", source_id)

    gold = extract_gold(answer_text, mapping.gold_format)
    if gold is None:
        return reject("unparsable_gold",
                      f"{key}: no {mapping.gold_format} answer in field {mapping.answer!r}", source_id)

    answer_type = mapping.answer_type
    if mapping.answer_type_field:
        v = get_field(record, mapping.answer_type_field)
        if v is not _MISSING and v is not None:
            answer_type = str(v)

    difficulty = None
    if mapping.difficulty:
        v = get_field(record, mapping.difficulty)
        if v is not _MISSING:
            difficulty = parse_difficulty(v)

    consumed = {mapping.question, mapping.answer}
    for f in (mapping.id, mapping.difficulty, mapping.answer_type_field):
        if f:
            consumed.add(f)
    meta: Dict[str, Any] = {"extra": {k: v for k, v in record.items() if k not in consumed}}
    if mapping.gold_format != "plain":
        meta["reference_solution"] = answer_text
    if mapping.difficulty and difficulty is None:
        v = get_field(record, mapping.difficulty)
        if v is not _MISSING and v is not None:
            meta["raw_difficulty"] = v
    if origin is not None:
        meta["origin"] = dict(origin)

    row = {
        "problem_id": source_id if source_id is not None else records.content_id(question, gold),
        "source": mapping.source_name or source,
        "question": question,
        "gold_answer": gold,
        "answer_type": answer_type,
        "difficulty": difficulty,
        "metadata": safe_dumps(meta),
    }
    return "problem", records.PROBLEMS.conform(row)
