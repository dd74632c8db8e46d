"""Problem-level validation (stage ``validate_problem``) and the content dedupe key.

Duplicate ids / duplicate content are handled later in the Beam pipeline (stage
``dedupe``); this module only judges one row on its own.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Dict, Mapping, Optional

from counterpoint.schemas import records

from counterpoint.sources.mapping import safe_payload

DEFAULT_MAX_QUESTION_CHARS = 8000
# C0/C1 control characters other than tab, newline and carriage return: a NUL in an id or a prompt would
# reach the engine (which may cut the prompt there) and the Parquet id columns; such a row is rejected.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TEXT_FIELDS = ("problem_id", "question", "gold_answer")


def control_characters(row: Mapping[str, Any]) -> Optional[str]:
    """``"field: U+0000 at 12"`` for the first control character in an id or text field, else None."""
    for field in _TEXT_FIELDS:
        value = row.get(field)
        m = _CONTROL.search(value) if isinstance(value, str) else None
        if m:
            return f"{field}: U+{ord(m.group()):04X} at {m.start()}"
    return None


def validate_problem(
    row: Mapping[str, Any], *, max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS, key: Any = None
) -> Optional[Dict[str, Any]]:
    """A ``rejects`` row if ``row`` is unusable, else None.

    Reasons: ``control_characters`` (a NUL or other control character in the id, question or gold
    answer; the reject's ``problem_id`` is then null), ``empty_question``, ``empty_gold_answer``,
    ``question_too_long``, ``unknown_answer_type``. ``key`` disambiguates reject ids (defaults to the
    row's metadata, which carries its origin).
    """
    question = row.get("question")
    gold = row.get("gold_answer")
    answer_type = row.get("answer_type")
    problem_id = row.get("problem_id")
    if key is None:
        key = row.get("metadata")
    bad_text = control_characters(row)
    if bad_text is not None and problem_id is not None and _CONTROL.search(str(problem_id)):
        problem_id = None  # never write the bad id into the rejects' id column

    def reject(reason: str, detail: str) -> Dict[str, Any]:
        return records.make_reject(
            stage="validate_problem", reason=reason, problem_id=problem_id, scope="problem",
            detail=detail, payload=safe_payload(dict(row)), key=key,
        )

    if bad_text is not None:
        return reject("control_characters", f"control character in {bad_text}; remove it from the input")
    if not isinstance(question, str) or not question.strip():
        return reject("empty_question", "question is empty or whitespace")
    if gold is None or not str(gold).strip():
        return reject("empty_gold_answer", "gold answer is empty")
    if len(question) > max_question_chars:
        return reject("question_too_long", f"question has {len(question)} chars > limit {max_question_chars}")
    if answer_type not in records.ANSWER_TYPES:
        return reject("unknown_answer_type",
                      f"answer_type {answer_type!r} not in {list(records.ANSWER_TYPES)}")
    return None


def _norm(text: Any) -> str:
    s = unicodedata.normalize("NFKC", "" if text is None else str(text))
    return re.sub(r"\s+", " ", s).strip().casefold()


def dedupe_key(row: Mapping[str, Any]) -> str:
    """Content key for near-exact duplicates: normalised (NFKC, whitespace, case) question + gold."""
    return records.content_id("dedupe", _norm(row.get("question")), _norm(row.get("gold_answer")))
