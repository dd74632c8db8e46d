"""The typed state of one problem as it travels through the pipeline.

A :class:`ProblemState` holds the problem row and every output row made for it
so far, its rejects and its stats. Stages never change a state they were given
(Beam forbids mutating inputs): they return a new one, built with
:meth:`ProblemState.evolve` / :meth:`ProblemState.fail` / :meth:`ProblemState.add_stats`.
Keeping a problem's rows together is what makes per-problem checkpoints (resume)
and the accounting "problems in = problems with output + problems rejected" exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping

from counterpoint.schemas import records

#: Output configs a state carries rows for (``rejects`` included).
ROW_CONFIGS = ("trajectories", "preferences", "unpaired", "step_labels", "step_values", "corrections",
               "critical_tokens", "rejects")


@dataclasses.dataclass(frozen=True)
class ProblemState:
    """One problem and everything made for it.

    ``failed``: the problem produced no output rows (a problem-scope reject says why).
    ``resumed``: the state was loaded from a checkpoint of an earlier run.
    ``stats``: numeric per-problem counters (tokens, rollouts, stage seconds, ...).
    """

    problem: Dict[str, Any]
    trajectories: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    preferences: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    unpaired: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    step_labels: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    step_values: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    # ``corrections`` rows (issue 22): filled only with --corrections (written only when the run asks).
    corrections: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    # ``critical_tokens`` rows (issue 21): filled only when critical_tokens.enabled.
    critical_tokens: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    rejects: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: bool = False
    resumed: bool = False
    stats: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def problem_id(self) -> str:
        return self.problem["problem_id"]

    def rows(self, config: str) -> List[Dict[str, Any]]:
        return getattr(self, config)

    def evolve(self, **changes: Any) -> "ProblemState":
        """A new state with ``changes`` applied (lists are replaced, never appended in place)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"ProblemState has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def add_stats(self, **increments: float) -> "ProblemState":
        stats = dict(self.stats)
        for k, v in increments.items():
            stats[k] = stats.get(k, 0) + v
        return dataclasses.replace(self, stats=stats)

    def fail(self, *, stage: str, reason: str, detail: str) -> "ProblemState":
        """The problem produces no output: every row is dropped and a problem-scope reject records why."""
        reject = records.make_reject(
            stage=stage, reason=reason, problem_id=self.problem_id, scope="problem",
            detail=detail, payload={"question": self.problem["question"][:500]},
        )
        return dataclasses.replace(
            self, trajectories=[], preferences=[], unpaired=[], step_labels=[], step_values=[], corrections=[],
            critical_tokens=[], rejects=list(self.rejects) + [reject], failed=True,
        )

    # -- checkpoints --------------------------------------------------------------------
    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProblemState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def new_state(problem: Dict[str, Any]) -> ProblemState:
    return ProblemState(problem=problem)
