"""Reward functions that judge exactly as the corpus did, for TRL's ``GRPOTrainer`` and for verl.

Online RL on verifiable rewards (GRPO, Shao et al. 2024; DAPO, Yu et al. 2025) scores each
sampled completion with a rule. These functions score with Counterpoint's own verifier
suite — the same verifier, version and isolation as the corpus: math-verify runs in the
suite's spawned worker processes with a hard per-item timeout, a hang or crash is an
``unknown`` verdict, never an exception in the trainer. Because the judging happens in
those workers (math-verify's ``signal.alarm`` timeout needs a main thread), the functions
are safe to call from any thread: TRL's async loop, a verl reward worker, a thread pool.

* :func:`trl_reward` — TRL 1.16's reward-function signature: ``completions`` (strings, or
  conversational lists of messages) plus the dataset's columns as keyword arguments, one
  list entry per completion. The gold answer is the ``answer`` column (``solution`` and
  ``gold_answer`` are accepted aliases). Optional columns ``verifier`` (numeric / math /
  exact: which verifier judged the corpus; ``problem_stats`` carries it), ``answer_type``
  and ``verifier_version`` (checked against the installed verifier; a mismatch is a
  :class:`~counterpoint.errors.ConfigError`, since a silently different judge is the
  failure this module exists to prevent). Returns one float per completion.
* :func:`verl_compute_score` — verl's custom reward signature
  ``(data_source, solution_str, ground_truth, extra_info=None)``; ``extra_info`` may carry
  ``verifier`` / ``answer_type`` / ``verifier_version``; extra keyword arguments (verl's
  ``custom_reward_function.reward_kwargs``) are the options of :class:`RewardJudge`.
* :func:`make_trl_reward` — a TRL reward function with other options (unknown score,
  verifier, timeout).

Scores: correct 1.0, incorrect 0.0, unknown ``unknown_score`` (default 0.0; any value below
1.0, never 1.0 — an undecided answer is never a success). Floor 6 of the layer order
(imports verifiers, schemas and errors).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.errors import ConfigError
from counterpoint.schemas import records
from counterpoint.verifiers.suite import VerifierSuite

DEFAULT_UNKNOWN_SCORE = 0.0
GOLD_COLUMNS = ("answer", "solution", "gold_answer")
VERIFIER_NAMES = ("numeric", "math", "exact")

_SUITES: Dict[Tuple[int, float, int], VerifierSuite] = {}
_SUITES_LOCK = threading.Lock()


def _suite(timeout_s: float, pool_size: int) -> VerifierSuite:
    """One suite (so one math-verify pool) per process and setting; a forked child builds its own."""
    key = (os.getpid(), float(timeout_s), int(pool_size))
    with _SUITES_LOCK:
        if key not in _SUITES:
            _SUITES[key] = VerifierSuite("auto", timeout_s=timeout_s, pool_size=pool_size)
        return _SUITES[key]


def completion_text(completion: Any) -> str:
    """The text to judge: a string as is; of a message list, the last assistant message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        said = [m for m in completion if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant"]
        if said:
            content = said[-1].get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, (list, tuple)):  # multimodal parts: [{"type": "text", "text": ...}]
                return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""  # malformed: judged as "no final answer"


class RewardJudge:
    """Scores completions against gold answers with the corpus's verifier suite.

    Args:
        verifier: ``auto`` (each item's ``verifier`` / ``answer_type``, else ``default_answer_type``)
            or a verifier name that judges every item.
        unknown_score: the score of an ``unknown`` verdict: a finite number below 1.0.
        default_answer_type: the verifier for items that name none (math: LaTeX and numbers).
        timeout_s / pool_size: the math-verify pool's hard per-item timeout and size (the corpus's
            ``verifier.timeout_s`` / ``verifier.pool_size``).
        check_version: refuse an item whose ``verifier_version`` differs from the installed verifier's.
    """

    def __init__(self, verifier: str = "auto", *, unknown_score: float = DEFAULT_UNKNOWN_SCORE,
                 default_answer_type: str = "math", timeout_s: float = 5.0, pool_size: int = 2,
                 check_version: bool = True):
        if isinstance(unknown_score, bool) or not isinstance(unknown_score, (int, float)) \
                or not math.isfinite(unknown_score) or unknown_score >= 1.0:
            raise ConfigError(f"unknown_score={unknown_score!r}: an unknown verdict must score below 1.0 (the score "
                              "of a correct answer); use 0.0 (default) or a penalty such as -0.5")
        for name in (default_answer_type, None if verifier == "auto" else verifier):
            if name is not None and name not in VERIFIER_NAMES:
                raise ConfigError(f"verifier {name!r} is unknown: choose one of {list(VERIFIER_NAMES)}")
        self.verifier = verifier
        self.unknown_score = float(unknown_score)
        self.default_answer_type = default_answer_type
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self.check_version = check_version

    def _verifier_name(self, verifier: Optional[str], answer_type: Optional[str]) -> str:
        name = self.verifier if self.verifier != "auto" else (verifier or answer_type or self.default_answer_type)
        if name not in VERIFIER_NAMES:
            raise ConfigError(f"verifier {name!r} is unknown: choose one of {list(VERIFIER_NAMES)}")
        return name

    def score(self, texts: Sequence[str], golds: Sequence[Any], *, verifiers: Optional[Sequence[Any]] = None,
              answer_types: Optional[Sequence[Any]] = None,
              versions: Optional[Sequence[Any]] = None) -> List[float]:
        """One score per text (``golds`` and the optional per-item lists aligned with ``texts``)."""
        n = len(texts)
        for label, col in (("gold answers", golds), ("verifiers", verifiers), ("answer types", answer_types),
                           ("verifier versions", versions)):
            if col is not None and len(col) != n:
                raise ConfigError(f"{len(col)} {label} for {n} completions: pass one per completion")
        suite = _suite(self.timeout_s, self.pool_size)
        names = [self._verifier_name(verifiers[i] if verifiers else None, answer_types[i] if answer_types else None)
                 for i in range(n)]
        if self.check_version and versions:
            for name, version in zip(names, versions):
                installed = suite.verifier(name).version
                if version and version != installed:
                    raise ConfigError(
                        f"the corpus was judged by {name} {version!r}, this environment has {installed!r}: install "
                        "the corpus's verifier versions, or pass check_version=False to judge differently on purpose")
        items = [(t, "" if g is None else str(g), False, name) for t, g, name in zip(texts, golds, names)]
        values = {records.VERDICT_CORRECT: 1.0, records.VERDICT_INCORRECT: 0.0,
                  records.VERDICT_UNKNOWN: self.unknown_score}
        return [values[v.verdict] for v in suite.judge(items)] if items else []


def _gold_column(kwargs: Mapping[str, Any]) -> Sequence[Any]:
    for name in GOLD_COLUMNS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    raise ConfigError(f"the reward function got no gold answers: give the dataset an 'answer' column (or one of "
                      f"{list(GOLD_COLUMNS[1:])}); it had {sorted(k for k in kwargs if not k.startswith('log_'))}")


def make_trl_reward(**options: Any) -> Callable[..., List[float]]:
    """A TRL reward function judging with ``RewardJudge(**options)`` (named ``counterpoint_reward``)."""
    judge = RewardJudge(**options)

    def counterpoint_reward(completions: Sequence[Any], **kwargs: Any) -> List[float]:
        golds = _gold_column(kwargs)
        return judge.score([completion_text(c) for c in completions], golds, verifiers=kwargs.get("verifier"),
                           answer_types=kwargs.get("answer_type"), versions=kwargs.get("verifier_version"))

    return counterpoint_reward


_DEFAULT_TRL = None
_DEFAULT_LOCK = threading.Lock()


def trl_reward(completions: Sequence[Any], **kwargs: Any) -> List[float]:
    """TRL ``GRPOTrainer`` reward function with the default options (module docstring)."""
    global _DEFAULT_TRL
    with _DEFAULT_LOCK:
        if _DEFAULT_TRL is None:
            _DEFAULT_TRL = make_trl_reward()
    return _DEFAULT_TRL(completions, **kwargs)


def verl_compute_score(data_source: Any, solution_str: str, ground_truth: Any,
                       extra_info: Optional[Mapping[str, Any]] = None, **options: Any) -> float:
    """verl custom reward function: the score of one response (module docstring).

    ``options`` are :class:`RewardJudge`'s keyword arguments (verl's ``reward_kwargs``).
    ``data_source`` is not used to pick a scorer: the verifier is the corpus's.
    """
    info = extra_info if isinstance(extra_info, Mapping) else {}
    judge = RewardJudge(**options)
    return judge.score([completion_text(solution_str)], [ground_truth], verifiers=[info.get("verifier")],
                       answer_types=[info.get("answer_type")], versions=[info.get("verifier_version")])[0]
