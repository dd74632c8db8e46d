"""The ``critical_tokens`` config (issue 21) in the card, the report and the benchmark: its figures and plot.

Rows are read by the schema (:data:`counterpoint.schemas.critical.CRITICAL_TOKENS`), one per scored
incorrect trajectory. :func:`critical_figures` (pure) aggregates them: the paper's ban test ("Critical
Tokens Matter", Lin et al. 2024, arXiv 2411.19943: k continuations from just before a token with that
token banned first) for the rollout-found, the contrast-found and a random token side by side; how often
the two methods agree (same token, same step) and land in OmegaPRM's first wrong step; rollouts per
critical token. :func:`card_section` and :func:`report_section` render them; the report also plots the
contrastive score along a few trajectories with their step boundaries.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from counterpoint import storage

CONFIG = "critical_tokens"
PLOT_ROWS = 4  # trajectories drawn in the report's score plot


def step_of(position: Optional[int], step_token_starts: Sequence[int]) -> Optional[int]:
    """The step holding token ``position`` (the last step starting at or before it); None for None."""
    if position is None or not step_token_starts:
        return None
    return max(i for i, s in enumerate(step_token_starts) if s <= position) if position >= step_token_starts[0] \
        else None


def _mean(xs: Iterable[Optional[float]]) -> Tuple[Optional[float], int]:
    vals = [float(x) for x in xs if x is not None]
    return (sum(vals) / len(vals) if vals else None), len(vals)


def _share(flags: Iterable[Optional[bool]]) -> Tuple[Optional[float], int]:
    return _mean(None if f is None else float(bool(f)) for f in flags)


def critical_figures(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Aggregates ``critical_tokens`` rows; every rate comes with the number of rows it is over (``n_*``).

    ``*_ban_success``: mean success rate of the ban test at the rollout-found token (``banned_success_rate``),
    at the top contrastive position (``contrast_ban_success_rate``) and at a random position
    (``random_ban_success_rate``). ``agree_token``: the top contrastive position is the rollout-found token;
    ``agree_step``: it lies in the rollout-found token's step; ``rollout_in_first_wrong_step`` /
    ``contrast_in_first_wrong_step``: against OmegaPRM's first wrong step. ``rollouts_per_critical_token``: search
    and ban-test rollouts over the rollout-found tokens.
    """
    found = [r for r in rows if r.get("rollout_critical_position") is not None]
    top = [(r["top_critical_positions"] or [None])[0] for r in found]
    figures: Dict[str, Any] = {"rows": len(rows), "searched": sum(1 for r in rows if r.get("search_rollouts")),
                               "found": len(found), "score_forms": {}}
    for r in rows:
        figures["score_forms"][r["score_form"]] = figures["score_forms"].get(r["score_form"], 0) + 1
    for key, col in (("rollout_ban_success", "banned_success_rate"),
                     ("contrast_ban_success", "contrast_ban_success_rate"),
                     ("random_ban_success", "random_ban_success_rate")):
        figures[key], figures[f"n_{key}"] = _mean(r.get(col) for r in rows)
    figures["agree_token"], figures["n_agree_token"] = _share(
        None if t is None else t == r["rollout_critical_position"] for r, t in zip(found, top))
    figures["agree_step"], figures["n_agree_step"] = _share(
        None if t is None else step_of(t, r["step_token_starts"]) == r["rollout_critical_step"]
        for r, t in zip(found, top))
    figures["rollout_in_first_wrong_step"], figures["n_rollout_in_first_wrong_step"] = _share(
        None if r.get("first_wrong_step") is None else r["rollout_critical_step"] == r["first_wrong_step"]
        for r in found)
    figures["contrast_in_first_wrong_step"], figures["n_contrast_in_first_wrong_step"] = _share(
        r.get("contrast_in_first_wrong_step") for r in rows)
    ban_tests = sum((r.get("banned_success_rate") is not None) + (r.get("contrast_ban_success_rate") is not None)
                    + (r.get("random_ban_success_rate") is not None) for r in rows)
    rollouts = sum(r.get("search_rollouts") or 0 for r in rows) + sum(
        (r.get("ban_rollouts") or 0) * ((r.get("banned_success_rate") is not None)
                                        + (r.get("contrast_ban_success_rate") is not None)
                                        + (r.get("random_ban_success_rate") is not None)) for r in rows)
    figures["ban_tests"], figures["rollouts"] = ban_tests, rollouts
    figures["rollouts_per_critical_token"] = rollouts / len(found) if found else None
    search = sum(r.get("search_rollouts") or 0 for r in rows)
    figures["search_rollouts"] = search
    figures["search_rollouts_per_critical_token"] = search / len(found) if found else None
    return figures


FIGURE_LABELS = (
    ("rows", "scored incorrect trajectories"),
    ("found", "rollout-found critical tokens"),
    ("rollout_ban_success", "success after banning the rollout-found token"),
    ("contrast_ban_success", "success after banning the top contrastive token"),
    ("random_ban_success", "success after banning a random token"),
    ("agree_token", "contrast = rollout (same token)"),
    ("agree_step", "contrast = rollout (same step)"),
    ("rollout_in_first_wrong_step", "rollout-found token in OmegaPRM's first wrong step"),
    ("contrast_in_first_wrong_step", "top contrastive token in OmegaPRM's first wrong step"),
    ("search_rollouts_per_critical_token", "search rollouts per critical token"),
    ("rollouts_per_critical_token", "rollouts per critical token (search + ban tests)"),
)


def figure_rows(f: Mapping[str, Any]) -> List[List[str]]:
    """``[label, value, over n rows]`` per figure (the card's and the report's table)."""
    out = []
    for key, label in FIGURE_LABELS:
        v = f.get(key)
        value = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        out.append([label, value, str(f.get(f"n_{key}", ""))])
    return out


def read_rows(layout: storage.DatasetLayout) -> Optional[List[Dict[str, Any]]]:
    """The config's rows (None when the output has none)."""
    if not layout.shards(CONFIG):
        return None
    return layout.read_table(CONFIG).to_pylist()


def card_section(layout: storage.DatasetLayout) -> List[str]:
    """``### Critical tokens (cDPO)``: what the rows hold and the figures (markdown lines; [] without the config)."""
    rows = read_rows(layout)
    if rows is None:
        return []
    f = critical_figures(rows)
    lines = ["### Critical tokens (cDPO)", "",
             "One row per verified-incorrect trajectory scored by a positive and a negative contrast model "
             "(contrastive estimation of \"Critical Tokens Matter\", arXiv 2411.19943), with per-token DPO weights "
             "aligned to the policy tokenizer; where searched, the critical token found by rollouts inside "
             "OmegaPRM's first wrong step, and the ban test (k continuations with that token banned first) next to "
             f"the top contrastive and a random token. Score forms: {f['score_forms'] or '-'}. Export "
             "`token-weighted-pairs` for token-weighted DPO (`counterpoint.training.token_weighted_dpo_loss`).", "",
             "| figure | value | over rows |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in figure_rows(f)]
    return lines + [""]


def report_section(o) -> Tuple[str, str]:
    """The report's section: the figures and the contrastive score along a few trajectories, step boundaries
    dashed, OmegaPRM's first wrong step shaded, the top contrastive (▼) and rollout-found (●) tokens marked."""
    from counterpoint.dataset.report import _figure, _missing, _png, _table

    title = "Critical tokens"
    rows = read_rows(o.layout)
    if rows is None:
        return title, _missing(CONFIG)
    f = critical_figures(rows)
    content = _table(["figure", "value", "over rows"], figure_rows(f))
    drawn = sorted(rows, key=lambda r: r["id"])[:PLOT_ROWS]
    if not drawn:
        return title, content
    fig, axes = _figure(ncols=1, width=9.0, height=1.9 * len(drawn))
    fig.clear()
    for i, r in enumerate(drawn):
        ax = fig.add_subplot(len(drawn), 1, i + 1)
        _plot_row(ax, r)
    return title, content + _png(fig)


def _plot_row(ax, r: Mapping[str, Any]) -> None:
    score, starts = r["contrastive_score"], r["step_token_starts"]
    ax.plot(range(len(score)), score, color="#37474f", linewidth=0.9)
    for s in starts:
        ax.axvline(s, color="#9e9e9e", linestyle="--", linewidth=0.6)
    e = r.get("first_wrong_step")
    if e is not None and e < len(starts):
        ax.axvspan(starts[e], starts[e + 1] if e + 1 < len(starts) else len(score), color="#ffcdd2", alpha=0.6)
    top = (r["top_critical_positions"] or [None])[0]
    if top is not None and top < len(score):
        ax.plot([top], [score[top]], marker="v", color="#1565c0", linestyle="none", label="top contrastive")
    rc = r.get("rollout_critical_position")
    if rc is not None and rc < len(score):
        ax.plot([rc], [score[rc]], marker="o", color="#c62828", linestyle="none", label="rollout-found")
    ax.set_title(str(r["id"]), fontsize=8)
    ax.set_ylabel("score", fontsize=7)
    ax.tick_params(labelsize=7)
    if top is not None or rc is not None:
        ax.legend(fontsize=6, loc="lower right")
