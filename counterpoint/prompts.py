"""Every prompt template of the project, in one place (floor 11: imports nothing from counterpoint).

* :data:`DEFAULT_SYSTEM_PROMPT` — the policy's system prompt for sampled solutions and
  rollouts (``RunConfig.system_prompt``);
* :data:`PROCESSBENCH_TEMPLATE` — the consensus judge's critique prompt (ProcessBench,
  Zheng et al. 2024), with :func:`judge_prompt` to fill it and :func:`read_judge_prompt`
  to read a filled one back (scripted judges). The consensus stage
  (``labeling.consensus``) and the scripted judge (``generators.scripted``) both import
  it from here.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

# Measured with the embedded 135M model on 24 one-op procedural problems x 8 samples: this prompt
# 13/192 correct, a one-line "step by step, one step per paragraph" prompt 14/192 (a wash). This one
# is kept: its length (> one 128-token KV block with the question) lets rollouts from step prefixes
# share cached prompt blocks in vLLM.
DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step. Write each step as its own "
    "short paragraph, separated by a blank line. End with a final line of the form "
    "'The answer is <number>.'"
)

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
#: The name the run summary and the card give the default judge prompt.
PROCESSBENCH_NAME = "processbench"


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
