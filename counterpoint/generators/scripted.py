"""Deterministic scripted generator: an engine without a model, for smoke runs, tests and benchmarks.

Behaves like an engine without one: same interface, seeded per (request, sample)
so results do not depend on how requests are batched.

Policies (``generator.scripted.policy``; a ``"module:Class"`` path plugs in any other
:class:`Policy`, e.g. the consensus judge of ``counterpoint.testing.chain``):

* :class:`AnswerKeyPolicy` (``answer_key``) answers questions it has a gold answer for,
  correctly with probability ``p_correct`` and otherwise with a wrong number — enough for
  outcome-level pipeline tests.
* :class:`ChainPolicy` (``chain``, the default) solves :func:`chain_problem` questions ("start at
  7, add 3, multiply by 2, ...": the ``chain`` problem source) one step per paragraph, making a
  slip at each step with probability ``step_error_rate``. By default a slip is a false equation
  that only overshoots and propagates (all ops are injective), so the first wrong step of every
  sample is known exactly (``counterpoint.testing.chain.chain_first_error``) and MC(prefix) has
  a closed form: 0 after a slip, ``(1 - p) ** remaining`` before. Options make it harder, for the
  label-quality benchmark: ``slip="misread"`` (a wrong operand, arithmetically true: no false
  equation to spot; it overshoots too, so misreads never cancel out), ``repair_rate`` (the step
  right after a slip silently goes on from the right value, so MC after a slip is > 0:
  non-monotone MC; the planted first error stays the slip), ``no_answer_rate`` (the final line
  states no answer marker: a format failure) and ``hedge_rate`` (the answer is stated in a form
  a verifier cannot decide). Continuations read the prefix back and go on from its last stated
  value, which is what rollouts from a step prefix need.

Fault injection (fail / hang / die every Nth call) is test scaffolding and lives in
``counterpoint.testing.faults``; it plugs in through ``generator.scripted.engine``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from counterpoint.generators.base import (
    Completion,
    GenerationError,
    GenerationRequest,
    Generator,
    PicklableLock,
)


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _approx_tokens(text: str) -> int:
    # Scripted "tokens": whitespace words plus punctuation runs — stable and monotone in length.
    return max(1, len(re.findall(r"\w+|[^\w\s]", text)))


@dataclasses.dataclass(frozen=True)
class ScriptedSample:
    text: str
    finish_reason: str = "stop"


class Policy:
    """Maps (request, sample index, rng) to one sample. Subclasses must be picklable."""

    def sample(self, request: GenerationRequest, sample_index: int, rng: random.Random) -> ScriptedSample:
        raise NotImplementedError


def _user_text(request: GenerationRequest) -> str:
    return next((c for r, c in reversed(request.messages) if r == "user"), "")


@dataclasses.dataclass
class AnswerKeyPolicy(Policy):
    """Answers from ``answer_key`` (question -> gold); right with probability ``p_correct``."""

    answer_key: Mapping[str, str]
    p_correct: float = 0.5
    num_steps: int = 3
    p_truncate: float = 0.0

    def sample(self, request, sample_index, rng):
        question = _user_text(request)
        gold = self.answer_key.get(question)
        correct = rng.random() < self.p_correct
        if gold is None:
            answer = str(rng.randint(1, 99))
        elif correct:
            answer = gold
        else:
            try:
                answer = str(int(float(gold)) + rng.choice([-3, -2, -1, 1, 2, 5, 10]))
            except ValueError:
                answer = gold + "0"
        steps = [f"Step {i + 1}: I work on part {i + 1} of the problem." for i in range(self.num_steps)]
        text = "\n\n".join(steps + [f"The answer is {answer}."])
        if request.continue_final_message:
            text = "\n\n" + text
        if rng.random() < self.p_truncate:
            return ScriptedSample(text[: max(1, len(text) // 2)], "length")
        return ScriptedSample(text)


# ---------------------------------------------------------------------------
# Chain problems with known first errors
# ---------------------------------------------------------------------------
_OPS = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply by": lambda a, b: a * b}
_SYMBOL = {"add": "+", "subtract": "-", "multiply by": "*"}
_OP_RE = re.compile(r"(add|subtract|multiply by) (-?\d+)")
_STEP_RE = re.compile(r"Step (\d+): (-?\d+) ([+\-*]) (-?\d+) = (-?\d+)\.")


def chain_problem(seed: int, index: int, num_steps: int = 16) -> Dict[str, Any]:
    """A problem row (``schemas.PROBLEMS`` layout) whose solution takes exactly ``num_steps`` steps."""
    rng = _rng("chain", seed, index)
    start = rng.randint(2, 20)
    ops: List[Tuple[str, int]] = []
    value = start
    for _ in range(num_steps):
        # Multiplication only by small factors keeps numbers readable; all ops are injective.
        name = rng.choice(["add", "add", "subtract", "multiply by"])
        operand = rng.randint(2, 3) if name == "multiply by" else rng.randint(1, 30)
        ops.append((name, operand))
        value = _OPS[name](value, operand)
    question = (
        f"Start with {start}. "
        + " ".join(f"Then {name} {operand}." for name, operand in ops)
        + " What is the final number?"
    )
    return {
        "problem_id": f"chain-{seed}-{index}",
        "source": "chain",
        "question": question,
        "gold_answer": str(value),
        "answer_type": "numeric",
        "difficulty": num_steps,
        "metadata": None,
    }


def parse_chain_question(question: str) -> Tuple[int, List[Tuple[str, int]]]:
    start = int(re.search(r"Start with (-?\d+)", question).group(1))
    return start, [(m.group(1), int(m.group(2))) for m in _OP_RE.finditer(question)]


#: Final-line forms of :class:`ChainPolicy` (read by ``counterpoint.testing.chain.chain_verdict``).
ANSWER_LINE = "The answer is {value}."
HEDGED_ANSWER_LINE = "The answer is {value} (I think)."
NO_ANSWER_LINE = "So the total is {value}."


@dataclasses.dataclass
class ChainPolicy(Policy):
    """Step-by-step solver of chain problems with a per-step slip probability (see the module docstring)."""

    step_error_rate: float = 0.05
    separator: str = "\n\n"
    slip: str = "overshoot"  # "overshoot": a false equation; "misread": a wrong operand, true arithmetic
    repair_rate: float = 0.0
    no_answer_rate: float = 0.0
    hedge_rate: float = 0.0

    def __post_init__(self):
        if self.slip not in ("overshoot", "misread"):
            raise ValueError(f"ChainPolicy.slip must be 'overshoot' or 'misread', got {self.slip!r}")

    def sample(self, request, sample_index, rng):
        start, ops = parse_chain_question(_user_text(request))
        truths = [start]  # the true running value after each operation
        for name, operand in ops:
            truths.append(_OPS[name](truths[-1], operand))
        value, done = start, 0
        prefix = request.messages[-1][1] if request.continue_final_message else ""
        fresh_slip = False  # the last stated step slipped from a right input: the next step may repair it
        for m in _STEP_RE.finditer(prefix):
            value, done = int(m.group(5)), int(m.group(1))
            fresh_slip = 0 < done <= len(ops) and int(m.group(2)) == truths[done - 1] and value != truths[done]
        truth = truths[min(done, len(ops))]
        pieces = []
        for i in range(done, len(ops)):
            if fresh_slip and self.repair_rate and rng.random() < self.repair_rate:
                value = truth  # the next step silently goes on from the right value: the slip is repaired
            fresh_slip = False
            name, operand = ops[i]
            shown = operand
            result = _OPS[name](value, operand)
            if rng.random() < self.step_error_rate:
                if self.slip == "misread":
                    # A misread operand that overshoots (like the arithmetic slips): the offset stays
                    # positive, so misreads never cancel out. Where it cannot overshoot, no slip.
                    delta = rng.choice([1, 2])
                    shown = operand - delta if name == "subtract" else operand + delta
                    if _OPS[name](value, shown) > result and shown > 0:
                        result = _OPS[name](value, shown)
                    else:
                        shown = operand
                else:
                    # Overshoots: every op keeps a positive offset positive, so without repairs a
                    # wrong prefix never reaches the gold answer: MC after a slip is exactly 0.
                    result += rng.choice([1, 2, 3])
            pieces.append(f"Step {i + 1}: {value} {_SYMBOL[name]} {shown} = {result}.")
            fresh_slip = value == truth and result != _OPS[name](truth, operand)
            value = result
            truth = _OPS[name](truth, operand)
        if fresh_slip and self.repair_rate and rng.random() < self.repair_rate:
            value = truth
        form = rng.random()
        if form < self.no_answer_rate:
            pieces.append(NO_ANSWER_LINE.format(value=value))
        elif form < self.no_answer_rate + self.hedge_rate:
            pieces.append(HEDGED_ANSWER_LINE.format(value=value))
        else:
            pieces.append(ANSWER_LINE.format(value=value))
        body = self.separator.join(pieces)
        if prefix and not prefix.endswith(self.separator):
            body = self.separator + body
        return ScriptedSample(body)


@dataclasses.dataclass
class ReplayPolicy(Policy):
    """Replays planted samples: sample ``i`` of a question is ``script[question][i]`` (cycled).

    An entry is the text (finish reason "stop") or ``{"text": ..., "finish_reason": ...}``
    ("length" plants a truncated sample). Tests plant exact per-problem outcomes with it.
    A question without a script gets "I cannot solve this." (no final answer).
    """

    script: Mapping[str, Sequence[Any]]

    def sample(self, request, sample_index, rng):
        planned = self.script.get(_user_text(request)) or ["I cannot solve this."]
        entry = planned[sample_index % len(planned)]
        if isinstance(entry, str):
            return ScriptedSample(entry)
        return ScriptedSample(entry["text"], entry.get("finish_reason", "stop"))


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------
class ScriptedGenerator(PicklableLock, Generator):
    """Seeded scripted engine.

    ``fail_on_substring`` raises for any batch containing a prompt with that text
    (a "poison" request, used to show that one bad request does not sink others);
    ``prompt_token_limit`` rejects a prompt over it (``prompt_too_long``), like a real engine.
    ``capacity`` is what :attr:`Generator.capacity` reports (default 256). Subclasses
    (``counterpoint.testing.faults``) add faults in :meth:`before_call`.
    """

    kind = "scripted"

    def __init__(
        self,
        policy: Optional[Policy] = None,
        *,
        model_id: str = "scripted/chain-solver-v1",
        fail_on_substring: Optional[str] = None,
        prompt_token_limit: Optional[int] = None,
        capacity: Optional[int] = 256,
    ):
        super().__init__()
        self._capacity = capacity
        self.policy = policy or ChainPolicy()
        self._model_id = model_id
        self.fail_on_substring = fail_on_substring
        self.prompt_token_limit = prompt_token_limit
        self.calls = 0
        self.requests_served = 0
        self.samples_served = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capacity(self) -> Optional[int]:
        """Sequences the scripted "engine" decodes at once (sizes the labelling scheduler's budget)."""
        return self._capacity

    def _load(self) -> None:
        pass

    def before_call(self, call: int) -> None:
        """Runs before engine call number ``call`` (1-based): the hook fault-injecting subclasses use."""

    def _generate(self, requests: List[GenerationRequest]) -> List[List[Completion]]:
        with self._lock:
            self.calls += 1
            call = self.calls
        self.before_call(call)
        if self.fail_on_substring and any(
            self.fail_on_substring in c for req in requests for _, c in req.messages
        ):
            raise GenerationError(f"scripted poison request ({self.fail_on_substring!r})", retriable=False,
                                  reason="poison_request")
        out = []
        for req in requests:
            prompt_tokens = sum(_approx_tokens(c) for _, c in req.messages)
            if self.prompt_token_limit and prompt_tokens > self.prompt_token_limit:
                raise GenerationError(
                    f"prompt has {prompt_tokens} tokens, over the model's limit of {self.prompt_token_limit}",
                    retriable=False, reason="prompt_too_long",
                )
            comps = []
            for i in range(req.n):
                sample = self.policy.sample(req, i, _rng(req.cache_key(self.model_fingerprint), i))
                comps.append(
                    Completion(
                        text=sample.text,
                        num_tokens=_approx_tokens(sample.text),
                        finish_reason=sample.finish_reason,
                        cumulative_logprob=None,
                        num_prompt_tokens=prompt_tokens,
                        num_cached_prompt_tokens=0,
                    )
                )
            out.append(comps)
        with self._lock:
            self.requests_served += len(requests)
            self.samples_served += sum(r.n for r in requests)
        return out


# ---------------------------------------------------------------------------
# From a config: generator.scripted = {policy, <policy options>, <engine options>, engine, engine_options}
# ---------------------------------------------------------------------------
POLICIES = {"chain": ChainPolicy, "answer_key": AnswerKeyPolicy, "replay": ReplayPolicy}


def _resolve(path: str, what: str):
    """A ``"module:Class"`` plug-in (importable in every worker, so it works on any runner)."""
    from counterpoint.verifiers._worker import resolve_callable

    try:
        return resolve_callable(path)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"generator.scripted.{what}: cannot load {path!r} ({e}); give a "
                         f"'module:Class' importable on every worker") from None


def from_options(options: Mapping[str, Any]) -> ScriptedGenerator:
    """The scripted engine that ``generator.scripted`` describes.

    ``policy``: ``chain`` (default), ``answer_key`` or a ``"module:Class"`` :class:`Policy`; the
    options named like the policy's fields configure it, the rest go to the engine. ``engine``: a
    ``"module:Class"`` subclass of :class:`ScriptedGenerator` to build instead, with its own
    ``engine_options`` (how tests plug in ``counterpoint.testing.faults``).
    """
    opts = dict(options)
    name = opts.pop("policy", "chain")
    cls = POLICIES.get(name) or (_resolve(name, "policy") if ":" in str(name) else None)
    if cls is None:
        raise ValueError(f"generator.scripted.policy: unknown scripted policy {name!r}; use "
                         f"{' or '.join(POLICIES)}, or a 'module:Class' Policy")
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    policy = cls(**{k: opts.pop(k) for k in list(opts) if k in fields})
    engine = opts.pop("engine", None)
    engine_cls = _resolve(engine, "engine") if engine else ScriptedGenerator
    engine_options = opts.pop("engine_options", None) or {}
    if engine_options and not engine:
        raise ValueError("generator.scripted.engine_options needs generator.scripted.engine ('module:Class')")
    try:
        return engine_cls(policy, **opts, **engine_options)
    except TypeError as e:
        raise ValueError(f"generator.scripted: {e}; policy {name!r} takes {sorted(fields)}") from None
