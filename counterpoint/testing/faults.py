"""Engine faults for reliability tests: a scripted engine that fails, hangs or dies every Nth call.

A run config selects it through the scripted engine's plug-in point (a ``"module:Class"`` path is
imported on every worker, so it works on any runner, subprocesses included)::

    generator: {kind: scripted, scripted: {policy: answer_key, ..., **faults(fail_every=3)}}

Faults count engine calls (one ``generate`` call = one engine call): ``fail_every=N`` raises
:class:`GenerationError` on every Nth call, ``hang_every=N`` sleeps ``hang_s`` seconds on every Nth
call, ``die_every=N`` raises :class:`EngineDeadError` on every Nth call and refuses further calls
until :meth:`load` rebuilds it, like a crashed engine.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from counterpoint.generators.base import EngineDeadError, GenerationError
from counterpoint.generators.scripted import ScriptedGenerator

#: ``generator.scripted.engine`` of :class:`FaultyScriptedGenerator`.
FAULTY_ENGINE = "counterpoint.testing.faults:FaultyScriptedGenerator"


def faults(**knobs: Any) -> Dict[str, Any]:
    """The ``generator.scripted`` keys that plug in :class:`FaultyScriptedGenerator` with ``knobs``."""
    return {"engine": FAULTY_ENGINE, "engine_options": dict(knobs)}


class FaultyScriptedGenerator(ScriptedGenerator):
    """:class:`ScriptedGenerator` with counted faults (see the module docstring)."""

    def __init__(self, policy=None, *, fail_every: int = 0, hang_every: int = 0, hang_s: float = 30.0,
                 die_every: int = 0, **kwargs):
        super().__init__(policy, **kwargs)
        self.fail_every = fail_every
        self.hang_every = hang_every
        self.hang_s = hang_s
        self.die_every = die_every
        self._dead = False

    def _load(self) -> None:
        self._dead = False

    def load(self) -> "FaultyScriptedGenerator":
        # A dead engine is rebuilt by load(), like a real one.
        if self._dead:
            self._loaded = False
        return super().load()

    def before_call(self, call: int) -> None:
        if self._dead:
            raise EngineDeadError("scripted engine is dead; call load() to restart it")
        if self.die_every and call % self.die_every == 0:
            self._dead = True
            raise EngineDeadError(f"scripted engine died on call {call}")
        if self.fail_every and call % self.fail_every == 0:
            raise GenerationError(f"scripted failure on call {call}")
        if self.hang_every and call % self.hang_every == 0:
            time.sleep(self.hang_s)
