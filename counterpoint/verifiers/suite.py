"""Routes each item to the verifier its problem needs (``answer_type``), batched per verifier."""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence, Tuple

from counterpoint.verifiers import Verdict, Verifier, make_verifier


class VerifierSuite:
    """Holds one verifier per name, built lazily; ``name="auto"`` follows each item's answer_type.

    Items are ``(completion, gold, truncated, answer_type)``. Picklable until used.
    """

    def __init__(self, name: str = "auto", *, timeout_s: float = 5.0, pool_size: int = 2,
                 fault_injector: Optional[str] = None):
        self.name = name
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self.fault_injector = fault_injector  # MathVerifier only (tests inject hangs / crashes)
        self._verifiers: Dict[str, Verifier] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"name": self.name, "timeout_s": self.timeout_s, "pool_size": self.pool_size,
                "fault_injector": self.fault_injector}

    def __setstate__(self, state):
        self.__init__(state["name"], timeout_s=state["timeout_s"], pool_size=state["pool_size"],
                      fault_injector=state.get("fault_injector"))

    def verifier(self, answer_type: str) -> Verifier:
        name = answer_type if self.name == "auto" else self.name
        with self._lock:
            if name not in self._verifiers:
                kwargs = {"pool_size": self.pool_size, "fault_injector": self.fault_injector} if name == "math" else {}
                self._verifiers[name] = make_verifier(name, timeout_s=self.timeout_s, **kwargs)
            return self._verifiers[name]

    def verify(self, items: Sequence[Tuple[str, str, bool, str]]) -> List[Tuple[Verdict, Verifier]]:
        out: List[Optional[Tuple[Verdict, Verifier]]] = [None] * len(items)
        groups: Dict[str, List[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item[3], []).append(i)
        for answer_type, idx in groups.items():
            verifier = self.verifier(answer_type)
            verdicts = verifier.verify_batch([(items[i][0], items[i][1], items[i][2]) for i in idx])
            for i, v in zip(idx, verdicts):
                out[i] = (v, verifier)
        return out  # type: ignore[return-value]

    def judge(self, items: Sequence[Tuple[str, str, bool, str]]) -> List[Verdict]:
        """:class:`Verdict` objects only (verdict, reason, final answer), in the order of ``items``:
        the shape a caller needs to tell a format failure (``reason_class(v.reason) == "format"``)
        from a wrong answer."""
        return [v for v, _ in self.verify(items)]

    def verdicts(self, items: Sequence[Tuple[str, str, bool, str]]) -> List[str]:
        """Verdict strings only: the callback shape the labelling scheduler takes."""
        return [v.verdict for v in self.judge(items)]

    def describe(self) -> Dict[str, str]:
        return {name: v.version for name, v in self._verifiers.items()}

    def close(self) -> None:
        for v in self._verifiers.values():
            v.close()
        self._verifiers.clear()
