"""Consensus filtering of step labels with a judge model (Qwen team, "The Lessons of Developing
Process Reward Models in Mathematical Reasoning", 2025).

The MC / OmegaPRM labels are noisy; the Qwen report keeps only the samples on which
Monte Carlo estimation and an LLM judge agree on the first erroneous step. Here:

1. :func:`judge_requests` turns ``step_labels`` rows into ProcessBench-style prompts
   (Zheng et al. 2024): the problem, the solution's steps as tagged paragraphs
   indexed from 0, and "return the index of the earliest wrong paragraph, or -1,
   in ``\\boxed{}``". Any generator answers them (in-process vLLM, the
   OpenAI-compatible pool, the scripted ``ChainJudgePolicy`` in tests);
2. :func:`parse_judgement` reads the reply (``None`` = unparsable: it never counts as
   agreement nor as disagreement);
3. :func:`apply_consensus` records ``judge_first_error_index`` and ``judge_agrees``
   on every judged row. ``annotate`` keeps every row and flags it;
   ``keep-agreeing`` drops each disagreeing row (a row-scope reject with reason
   ``consensus_disagreement``) together with that solution's step pairs, first-pit
   pairs and ``step_values`` rows; ``off`` returns the rows untouched.

Agreement: the judge's index equals the label's ``first_error_index`` (with
``tolerance = t``: differs by at most ``t`` steps; default 0, exact match). A judge
answer of -1 ("no error") never agrees with a labelled negative.

This module is Beam-free; the Beam stage around it belongs to the pipeline.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.generators.base import GenerationRequest, SamplingParams
from counterpoint.schemas import records
from counterpoint.schemas.records import PAIR_FIRST_PIT, PAIR_STEP
from counterpoint.verifiers.extract import extract_final_answer

CONSENSUS_MODES = ("off", "keep-agreeing", "annotate")
REASON_DISAGREEMENT = "consensus_disagreement"

#: ProcessBench's critique prompt (Zheng et al. 2024, "ProcessBench: Identifying Process Errors in
#: Mathematical Reasoning"); ``{problem}`` and ``{tagged_response}`` are filled in.
PROCESSBENCH_TEMPLATE = (
    "The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed "
    "from 0):\n\n"
    "[Math Problem]\n\n{problem}\n\n"
    "[Solution]\n\n{tagged_response}\n\n"
    "Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in "
    "a paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the "
    "index of -1 (which typically denotes \"not found\").\n\n"
    "Please put your final answer (i.e., the index) in \\boxed{{}}."
)


@dataclasses.dataclass
class ConsensusConfig:
    """``mode``: "off" | "keep-agreeing" | "annotate". Judge sampling: greedy by default
    (``temperature=0``); ``max_tokens`` bounds the critique. ``tolerance``: agree when
    ``|judge - label| <= tolerance`` (0 = exact match). ``prompt_template`` must contain
    ``{problem}`` and ``{tagged_response}``; ``seed`` seeds the judge requests."""

    mode: str = "off"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    tolerance: int = 0
    prompt_template: str = PROCESSBENCH_TEMPLATE
    seed: int = 0

    def __post_init__(self):
        if self.mode not in CONSENSUS_MODES:
            raise ValueError(f"consensus.mode must be one of {CONSENSUS_MODES}, got {self.mode!r}")
        if self.tolerance < 0:
            raise ValueError(f"consensus.tolerance must be >= 0 (0 = exact match), got {self.tolerance}")
        if self.temperature < 0 or not (0 < self.top_p <= 1) or self.max_tokens < 1:
            raise ValueError("consensus.temperature must be >= 0, top_p in (0, 1], max_tokens >= 1")
        for field in ("{problem}", "{tagged_response}"):
            if field not in self.prompt_template:
                raise ValueError(f"consensus.prompt_template must contain {field}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


def tag_steps(steps: Sequence[str]) -> str:
    return "\n\n".join(f"<paragraph_{i}>\n{s}\n</paragraph_{i}>" for i, s in enumerate(steps))


def judge_prompt(question: str, steps: Sequence[str], template: str = PROCESSBENCH_TEMPLATE) -> str:
    return template.format(problem=question, tagged_response=tag_steps(steps))


_PROBLEM_RE = re.compile(r"\[Math Problem\]\n\n(?P<q>.*?)\n\n\[Solution\]\n\n", re.DOTALL)
_PARAGRAPH_RE = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.DOTALL)


def read_judge_prompt(prompt: str) -> Tuple[str, List[str]]:
    """``(question, steps)`` back from a prompt built with the default template (scripted judges)."""
    m = _PROBLEM_RE.search(prompt)
    if m is None:
        raise ValueError("not a ProcessBench-style judge prompt")
    return m.group("q"), [p.group(2) for p in _PARAGRAPH_RE.finditer(prompt, m.end())]


def _question(row: Mapping[str, Any], problems: Mapping[str, Any]) -> str:
    p = problems.get(row["problem_id"]) if problems else None
    if isinstance(p, Mapping):
        return str(p["question"])
    if isinstance(p, str):
        return p
    return str(row["prompt"])


def judge_requests(rows: Sequence[Mapping[str, Any]], problems: Mapping[str, Any],
                   system_prompt: Optional[str] = None, *, config: Optional[ConsensusConfig] = None
                   ) -> List[GenerationRequest]:
    """One judge request per ``step_labels`` row, aligned with ``rows`` (``request_id`` = the row id).

    ``problems`` maps problem id to a problem row (or its question); a missing one
    falls back to the row's ``prompt`` (which holds the question).
    """
    config = config or ConsensusConfig()
    params = config.sampling()
    out = []
    for row in rows:
        text = judge_prompt(_question(row, problems), row["completions"], config.prompt_template)
        seed = int(records.content_id("judge", config.seed, row["id"], length=8), 16) & 0x7FFFFFFF
        out.append(GenerationRequest.chat(system_prompt, text, n=1, params=params, seed=seed,
                                          request_id=str(row["id"])))
    return out


_INDEX_RE = re.compile(r"^[+-]?\d+$")


def parse_judgement(text: Optional[str]) -> Optional[int]:
    """The judge's earliest wrong step index (``-1`` = none) from its ``\\boxed{k}``; None if unparsable."""
    if not text:
        return None
    answer = extract_final_answer(text)
    if answer is None:
        return None
    answer = answer.replace("\\text", "").strip("{} ")
    if not _INDEX_RE.match(answer):
        return None
    k = int(answer)
    return k if k >= -1 else None


def judgements_from(rows: Sequence[Mapping[str, Any]], replies: Sequence[Optional[str]]) -> Dict[str, Optional[int]]:
    """``{row id: parsed judgement}`` from replies aligned with ``rows`` (e.g. ``judge_requests`` answers)."""
    if len(rows) != len(replies):
        raise ValueError(f"{len(replies)} judge replies for {len(rows)} rows")
    return {str(r["id"]): parse_judgement(t) for r, t in zip(rows, replies)}


def agrees(label_index: Optional[int], judge_index: Optional[int], tolerance: int = 0) -> Optional[bool]:
    """None when the judge is unparsable; -1 agrees only with a solution labelled without error."""
    if judge_index is None:
        return None
    if label_index is None or judge_index == -1:
        return label_index is None and judge_index == -1
    return abs(judge_index - label_index) <= tolerance


def apply_consensus(
    step_labels: Sequence[Mapping[str, Any]],
    step_values: Sequence[Mapping[str, Any]],
    preferences: Sequence[Mapping[str, Any]],
    judgements: Mapping[str, Optional[int]],
    mode: str,
    *,
    tolerance: int = 0,
) -> Tuple[Dict[str, List[dict]], List[dict], Dict[str, Any]]:
    """Applies the judge's verdicts; returns ``(kept rows per config, rejects, stats)``.

    ``judgements`` maps ``step_labels`` row ids to parsed judge indices (None =
    unparsable); rows without an entry are not judged (kept, judge columns null).
    Preferences other than step / first-pit pairs (e.g. outcome pairs) are never
    touched. ``stats``: judged, agreed, disagreed, unparsable, agreement_rate
    (agreed / (agreed + disagreed); None if neither), and the dropped row counts.
    """
    if mode not in CONSENSUS_MODES:
        raise ValueError(f"consensus mode must be one of {CONSENSUS_MODES}, got {mode!r}")
    stats: Dict[str, Any] = {"judged": 0, "agreed": 0, "disagreed": 0, "unparsable": 0, "agreement_rate": None,
                             "dropped_step_labels": 0, "dropped_step_values": 0, "dropped_preferences": 0}
    if mode == "off":
        return ({"step_labels": [dict(r) for r in step_labels], "step_values": [dict(r) for r in step_values],
                 "preferences": [dict(r) for r in preferences]}, [], stats)
    labels: List[dict] = []
    rejects: List[dict] = []
    dropped = set()  # (problem_id, sample_index, labeler) of disagreeing solutions
    for row in step_labels:
        out = dict(row)
        rid = str(row["id"])
        if rid in judgements:
            j = judgements[rid]
            stats["judged"] += 1
            verdict = agrees(row["first_error_index"], j, tolerance)
            out["judge_first_error_index"] = j
            out["judge_agrees"] = verdict
            if verdict is None:
                stats["unparsable"] += 1
            elif verdict:
                stats["agreed"] += 1
            else:
                stats["disagreed"] += 1
                if mode == "keep-agreeing":
                    dropped.add((row["problem_id"], row["sample_index"], row["labeler"]))
                    rejects.append(records.make_reject(
                        stage="label", reason=REASON_DISAGREEMENT, problem_id=row["problem_id"], scope="row",
                        detail=f"label first error {row['first_error_index']}, judge {j}", key=rid,
                    ))
                    stats["dropped_step_labels"] += 1
                    continue
        labels.append(out)
    decided = stats["agreed"] + stats["disagreed"]
    stats["agreement_rate"] = stats["agreed"] / decided if decided else None

    values = []
    for v in step_values:
        if (v["problem_id"], v["sample_index"], v["labeler"]) in dropped:
            stats["dropped_step_values"] += 1
            continue
        values.append(dict(v))
    prefs = []
    for p in preferences:
        if p["pair_type"] in (PAIR_STEP, PAIR_FIRST_PIT) and \
                (p["problem_id"], p["rejected_sample_index"], p.get("labeler")) in dropped:
            stats["dropped_preferences"] += 1
            continue
        prefs.append(dict(p))
    return {"step_labels": labels, "step_values": values, "preferences": prefs}, rejects, stats
