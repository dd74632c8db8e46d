"""One bucket's build: what each export config got (counts only), and the RL formats' dispatch.

Used by :func:`counterpoint.dataset.export.api.stage_exports`, which streams the sources into
problem buckets (:mod:`.stream`) and calls :func:`build_parts` once per bucket and format; the
rows go straight to the config's shard writer, so only counts stay in memory (:class:`Built`).
The RL formats (:mod:`.rl`) keep state across buckets in :class:`Context`: the ``--control``
draw's remaining quota and verl's running ``extra_info.index``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Dict, List, Mapping

from counterpoint.dataset.export import rl
from counterpoint.dataset.export.formats import ExportRows
from counterpoint.schemas import exports

RL_FORMATS = ("grpo-prompts", "verl-rl", "npo-forget-retain", "grouped-negatives", "sft-positives")
BAND_FORMATS = rl.BAND_FORMATS
CONTROL_CONFIG = {"grpo-prompts": exports.GRPO_PROMPTS_CONTROL.name, "verl-rl": exports.VERL_RL_CONTROL.name}
# The reward function that judges online as the corpus did (the card's export section).
REWARD_FUNCTIONS = {
    exports.GRPO_PROMPTS.name: "counterpoint.rewards.trl_reward",
    exports.GRPO_PROMPTS_CONTROL.name: "counterpoint.rewards.trl_reward",
    exports.VERL_RL.name: "counterpoint.rewards.verl_compute_score (verl custom_reward_function)",
    exports.VERL_RL_CONTROL.name: "counterpoint.rewards.verl_compute_score (verl custom_reward_function)",
}


@dataclasses.dataclass
class Built:
    """What one export config got: counts only (its rows went to a :class:`~.stream.ShardWriter`)."""

    config: str
    rows: int = 0
    shards: int = 1
    rejects: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    not_applicable: int = 0
    skipped: Counter = dataclasses.field(default_factory=Counter)
    verifiers: set = dataclasses.field(default_factory=set)  # (verifier, verifier_version) of its rows

    def add(self, part: ExportRows) -> None:
        self.rows += len(part.rows)
        self.rejects += part.rejects
        self.not_applicable += part.not_applicable
        self.skipped.update(part.skipped)
        for r in part.rows:
            info = r.get("extra_info") if "verifier" not in r else r
            if info and info.get("verifier"):
                self.verifiers.add((info["verifier"], info.get("verifier_version")))

    def rejects_by_reason(self) -> Dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejects))


@dataclasses.dataclass
class Context:
    """Options and cross-bucket state of one staging. ``build_other``: the builder of the other formats."""

    build_other: Callable[[str, Dict[str, List[Dict[str, Any]]]], ExportRows]
    options: rl.RLOptions
    control_left: Dict[str, int] = dataclasses.field(default_factory=dict)
    built: Dict[str, Built] = dataclasses.field(default_factory=dict)

    def written(self, config: str) -> int:
        return self.built[config].rows if config in self.built else 0


def build_parts(f: str, sources: Mapping[str, List[Dict[str, Any]]], ctx: Context) -> List[ExportRows]:
    """The export rows of format ``f`` from one bucket's source rows (an RL format may fill two configs)."""
    if f not in RL_FORMATS:
        return [ctx.build_other(f, dict(sources))]
    band = ctx.options.band
    if f in BAND_FORMATS:
        stats = sources["problem_stats"]
        main = rl.grpo_prompt_rows(stats, band) if f == "grpo-prompts" else \
            rl.verl_rows(stats, band, first_index=ctx.written(exports.VERL_RL.name))
        if not ctx.options.control:
            return [main]
        drawn = rl.control_draw(stats, ctx.control_left.get(f, 0))
        ctx.control_left[f] -= len(drawn)
        return [main, rl.control_rows(drawn, verl=f == "verl-rl", first_index=ctx.written(CONTROL_CONFIG[f]))]
    traj = sources["trajectories"]
    if f == "npo-forget-retain":
        return list(rl.npo_rows(traj))
    if f == "grouped-negatives":
        return [rl.grouped_negative_rows(traj)]
    return [rl.sft_positive_rows(traj, ctx.options.max_per_problem)]


def record(f: str, config: str, b: Built, origin: str, options: rl.RLOptions) -> Dict[str, Any]:
    """The export's record in the verdict (the card's export section reads it)."""
    rec = {"format": f, "source": origin, "rows": b.rows, "rejects_by_reason": b.rejects_by_reason(),
           "not_applicable": b.not_applicable}
    if f in RL_FORMATS:
        rec.update(skipped_by_reason=dict(b.skipped), reward_function=REWARD_FUNCTIONS.get(config),
                   verifiers=[{"verifier": v, "verifier_version": ver} for v, ver in sorted(b.verifiers)],
                   options=options_record(f, options))
    return rec


def options_record(f: str, o: rl.RLOptions) -> Dict[str, Any]:
    if f in BAND_FORMATS:
        return {"pass_band": list(o.pass_band) if o.pass_band else "default (0, 1) open", "control": o.control}
    if f == "sft-positives":
        return {"max_per_problem": o.max_per_problem}
    return {}
