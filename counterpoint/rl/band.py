"""Options of the RL exports (issue 19): the pass-rate band, the control draw, the positives cap.

Beam-free and plain (floor 6): the run config (``export_options``, flags ``--pass-band``,
``--control``, ``--max-per-problem``) and ``counterpoint export`` share these checks, so a bad
band is refused the same way before anything is read or written.

Band semantics: ``LO,HI`` keeps ``LO <= pass_rate <= HI`` (closed); no band keeps
``0 < pass_rate < 1`` (open: problems solved always or never carry no GRPO signal, DAPO's
dynamic-sampling argument, Yu et al. 2025); a problem without a known verdict is never kept.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Optional, Sequence, Tuple

Band = Tuple[float, float]
BAND_FORMATS = ("grpo-prompts", "verl-rl")


def parse_pass_band(value: Any) -> Band:
    """``"LO,HI"`` (or a 2-sequence) -> ``(lo, hi)`` with 0 <= lo <= hi <= 1; ``ValueError`` naming the fix."""
    parts = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if parts is None or len(parts) != 2:
        raise ValueError(f"--pass-band {value!r}: give two numbers LO,HI with 0 <= LO <= HI <= 1, e.g. 0.1,0.9")
    try:
        if any(isinstance(p, bool) for p in parts):
            raise TypeError
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"--pass-band {value!r}: LO and HI must be numbers, e.g. 0.1,0.9") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise ValueError(f"--pass-band {value!r}: LO and HI must lie in [0, 1], e.g. 0.1,0.9")
    if lo > hi:
        raise ValueError(f"--pass-band {value!r}: LO must not exceed HI (did you mean {hi:g},{lo:g}?)")
    return lo, hi


def in_band(pass_rate: Optional[float], band: Optional[Sequence[float]]) -> bool:
    """Whether a problem with ``pass_rate`` is kept (module docstring)."""
    if pass_rate is None:
        return False
    if band is None:
        return 0.0 < pass_rate < 1.0
    return band[0] <= pass_rate <= band[1]


@dataclasses.dataclass
class ExportOptions:
    """``pass_band`` [LO, HI] or None (default open band); ``control``: add the unfiltered control configs;
    ``max_per_problem``: ``sft-positives`` cap (None: every distinct positive)."""

    pass_band: Optional[List[float]] = None
    control: bool = False
    max_per_problem: Optional[int] = None

    def __post_init__(self):
        if self.pass_band is not None:
            self.pass_band = list(parse_pass_band(self.pass_band))
        if self.max_per_problem is not None and (isinstance(self.max_per_problem, bool)
                                                 or not isinstance(self.max_per_problem, int)
                                                 or self.max_per_problem < 1):
            raise ValueError(f"--max-per-problem must be an integer >= 1, got {self.max_per_problem!r}")

    @property
    def band(self) -> Optional[Band]:
        return None if self.pass_band is None else (self.pass_band[0], self.pass_band[1])

    def check_formats(self, fmts: Sequence[str]) -> None:
        """``ValueError`` for an option no given format uses (it would be silently ignored)."""
        if (self.pass_band is not None or self.control) and not any(f in BAND_FORMATS for f in fmts):
            raise ValueError(f"--pass-band/--control apply to {' and '.join(BAND_FORMATS)} only; add "
                             "--export/--format grpo-prompts (or verl-rl), or drop them")
        if self.max_per_problem is not None and "sft-positives" not in fmts:
            raise ValueError("--max-per-problem applies to sft-positives only; add sft-positives, or drop it")
