"""Run report: one self-contained HTML page of plots about an output directory.

``build_report(layout)`` reads the Parquet configs of a dataset (``DatasetLayout``) (only the
columns it plots; local, ``gs://`` or ``s3://`` through :mod:`counterpoint.storage`),
``run_summary.json`` and, when present,
the verdict (:mod:`counterpoint.dataset.verdicts`), and writes ``report.html`` with every plot
embedded as a base64 PNG (matplotlib's Agg canvas, no pyplot global state), so
the file can be mailed or uploaded alone. A config that is absent (or has no
readable shard) gets a section saying so instead of a plot.

Long: one short function per report section (plot or table) plus the page around them; split, one page would be
scattered over modules.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from counterpoint import storage
from counterpoint.dataset.verdicts import Verdict
from counterpoint.schemas import records

def _title(o: "_Output") -> str:
    """The dataset's name: its run id (never an absolute local path: the report is published)."""
    return str(o.summary.get("run_id") or storage.basename(o.layout.dataset_dir))


_COLORS = {"correct": "#2e7d32", "incorrect": "#c62828", "unknown": "#9e9e9e", True: "#2e7d32", False: "#c62828"}


# ---------------------------------------------------------------------------
# Data access
# ---------------------------------------------------------------------------
class _Output:
    def __init__(self, layout: storage.DatasetLayout):
        self.layout = layout
        self.notes: List[str] = []
        self._cache: Dict[Tuple[str, Tuple[str, ...]], Optional[pa.Table]] = {}
        self.summary: Dict[str, Any] = storage.read_json(self.layout.summary_path) or {}
        self.validation: Optional[Verdict] = Verdict.read(layout)

    def shards(self, config: str) -> List[str]:
        return self.layout.shards(config)

    def num_rows(self, path: str) -> Optional[int]:
        try:
            return storage.parquet_num_rows(path)
        except Exception:  # noqa: BLE001 - a corrupt shard must not kill the report
            return None

    def read(self, config: str, columns: Sequence[str]) -> Optional[pa.Table]:
        """The given columns of every readable shard of ``config``; None when it has no shard."""
        key = (config, tuple(columns))
        if key in self._cache:
            return self._cache[key]
        tables = []
        for p in self.shards(config):
            try:
                tables.append(storage.read_parquet(p, columns=list(columns)))
            except Exception as e:  # a corrupt shard must not kill the report
                note = f"skipped unreadable shard {storage.relpath(p, self.layout.dataset_dir)}: {type(e).__name__}: {e}"
                if note not in self.notes:
                    self.notes.append(note)
        t = pa.concat_tables(tables) if tables else None
        self._cache[key] = t
        return t


# ---------------------------------------------------------------------------
# Plot helpers
# ---------------------------------------------------------------------------
def _figure(ncols: int = 1, width: float = 6.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return ('<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode("ascii")
            + '"/>')


def _bar(ax, labels, values, title, colors=None, horizontal=False):
    labels = [str(x) for x in labels]
    if horizontal:
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
    else:
        ax.bar(labels, values, color=colors)
        for lab in ax.get_xticklabels():
            lab.set_rotation(30)
            lab.set_ha("right")
    ax.set_title(title)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return "" if v is None else str(v)


def _missing(config: str) -> str:
    return f'<p class="missing">Config <code>{html.escape(config)}</code> is not present in this output.</p>'


# ---------------------------------------------------------------------------
# Sections: each returns (title, html)
# ---------------------------------------------------------------------------
def _overview(o: _Output) -> Tuple[str, str]:
    parts = []
    counts = o.summary.get("counts") or {}
    if counts:
        parts.append("<h3>Counts</h3>" + _table(["count", "value"], sorted(counts.items())))
    consensus = o.summary.get("consensus")
    if consensus:
        parts.append("<h3>Consensus filtering (judge vs Monte Carlo first error)</h3>"
                     + _table(["field", "value"], sorted(consensus.items())))
    prov = o.summary.get("provenance") or {}
    if prov:
        parts.append("<h3>Provenance</h3>" + _table(["field", "value"], sorted(prov.items())))
    cfg_rows = []
    empty = o.summary.get("empty_configs") or {}
    for c in records.OUTPUT_TABLES:
        shards = o.shards(c)
        if not shards and c not in (o.summary.get("configs") or []):
            continue
        n = sum(o.num_rows(p) or 0 for p in shards)
        cfg_rows.append([c, len(shards), n if shards else "absent", empty.get(c, "")])
    parts.append("<h3>Configs</h3>" + _table(["config", "shards", "rows", "why empty"], cfg_rows))
    if not o.summary:
        parts.append('<p class="missing">No run_summary.json found.</p>')
    return "Overview", "".join(parts)


def _pass_rate(o: _Output) -> Tuple[str, str]:
    t = o.read("trajectories", ["problem_id", "verdict"])
    if t is None:
        return "Pass rate per problem", _missing("trajectories")
    df = t.to_pandas()
    if df.empty:
        return "Pass rate per problem", "<p>No trajectories.</p>"
    rate = df.assign(ok=df["verdict"] == records.VERDICT_CORRECT).groupby("problem_id")["ok"].mean()
    fig, (ax,) = _figure()
    ax.hist(rate.values, bins=[i / 10 for i in range(11)], color="#1565c0", edgecolor="white")
    ax.set_xlabel("fraction of samples verified correct")
    ax.set_ylabel("problems")
    ax.set_title(f"Pass rate per problem ({len(rate)} problems)")
    stats = _table(["problems", "mean pass rate", "all correct", "all wrong", "mixed (pairable)"], [[
        len(rate), float(rate.mean()), int((rate == 1).sum()), int((rate == 0).sum()),
        int(((rate > 0) & (rate < 1)).sum())]])
    verdicts = df["verdict"].value_counts()
    vt = _table(["verdict", "trajectories"], [[k, int(v)] for k, v in verdicts.items()])
    return "Pass rate per problem", _png(fig) + stats + vt


def _lengths(o: _Output) -> Tuple[str, str]:
    t = o.read("trajectories", ["verdict", "num_steps", "num_generated_tokens"])
    if t is None:
        return "Trajectory length", _missing("trajectories")
    df = t.to_pandas()
    if df.empty:
        return "Trajectory length", "<p>No trajectories.</p>"
    fig, (a1, a2) = _figure(2)
    for verdict, sub in df.groupby("verdict"):
        a1.hist(sub["num_steps"], bins=20, alpha=0.6, label=verdict, color=_COLORS.get(verdict))
        a2.hist(sub["num_generated_tokens"], bins=20, alpha=0.6, label=verdict, color=_COLORS.get(verdict))
    a1.set_title("Steps per trajectory")
    a1.set_xlabel("steps")
    a2.set_title("Generated tokens per trajectory")
    a2.set_xlabel("tokens")
    a1.legend()
    a2.legend()
    desc = df.groupby("verdict")[["num_steps", "num_generated_tokens"]].mean()
    tbl = _table(["verdict", "mean steps", "mean tokens"],
                 [[v, float(r["num_steps"]), float(r["num_generated_tokens"])] for v, r in desc.iterrows()])
    return "Trajectory length (steps and tokens)", _png(fig) + tbl


def _first_error(o: _Output) -> Tuple[str, str]:
    t = o.read("step_labels", ["first_error_index", "completions"])
    title = "First-error position"
    if t is None:
        return title, _missing("step_labels")
    df = t.to_pandas()
    if df.empty:
        return title, "<p>No step_labels rows.</p>"
    fe = df["first_error_index"].dropna().astype(int)
    n_steps = df.loc[fe.index, "completions"].map(len)
    rel = (fe / n_steps.clip(lower=1)).astype(float)
    fig, (a1, a2) = _figure(2)
    if len(fe):
        a1.hist(fe, bins=range(0, int(fe.max()) + 2), color="#c62828", edgecolor="white", align="left")
        a2.hist(rel, bins=[i / 10 for i in range(11)], color="#ef6c00", edgecolor="white")
    a1.set_title("First wrong step (index)")
    a1.set_xlabel("step index")
    a2.set_title("First wrong step (fraction of trajectory)")
    a2.set_xlabel("index / steps")
    tbl = _table(["labelled trajectories", "with an error", "without"], [[len(df), len(fe), len(df) - len(fe)]])
    return title, _png(fig) + tbl


def _mc_values(o: _Output) -> Tuple[str, str]:
    title = "Monte Carlo value distribution"
    t = o.read("step_labels", ["mc_values"])
    sv = o.read("step_values", ["q_value", "advantage"])
    if t is None and sv is None:
        return title, _missing("step_labels") + _missing("step_values")
    parts = []
    if t is not None:
        import pyarrow.compute as pc

        flat = pc.list_flatten(t.column("mc_values")).to_numpy(zero_copy_only=False) if t.num_rows else []
        fig, (ax,) = _figure()
        ax.hist(flat, bins=[i / 20 for i in range(21)], color="#6a1b9a", edgecolor="white")
        ax.set_title(f"step_labels.mc_values ({len(flat)} steps)")
        ax.set_xlabel("MC value of step prefix")
        parts.append(_png(fig))
    else:
        parts.append(_missing("step_labels"))
    if sv is not None:
        df = sv.to_pandas()
        fig, (a1, a2) = _figure(2)
        a1.hist(df["q_value"], bins=[i / 20 for i in range(21)], color="#283593", edgecolor="white")
        a1.set_title("step_values.q_value")
        a2.hist(df["advantage"], bins=[-1 + i / 10 for i in range(21)], color="#00838f", edgecolor="white")
        a2.set_title("step_values.advantage")
        parts.append(_png(fig))
    else:
        parts.append(_missing("step_values"))
    return title, "".join(parts)


def _label_balance(o: _Output) -> Tuple[str, str]:
    title = "Label balance per config"
    series: List[Tuple[str, Dict[str, int]]] = []
    missing = []
    t = o.read("trajectories", ["verdict"])
    if t is not None:
        series.append(("trajectories.verdict", t.to_pandas()["verdict"].value_counts().to_dict()))
    else:
        missing.append("trajectories")
    t = o.read("unpaired", ["label"])
    if t is not None:
        series.append(("unpaired.label", {str(k): int(v) for k, v in t.to_pandas()["label"].value_counts().items()}))
    else:
        missing.append("unpaired")
    t = o.read("step_labels", ["labels"])
    if t is not None:
        import pyarrow.compute as pc

        flat = pc.list_flatten(t.column("labels")).to_pylist() if t.num_rows else []
        series.append(("step_labels.labels (per step)", {"True": flat.count(True), "False": flat.count(False)}))
    else:
        missing.append("step_labels")
    t = o.read("step_values", ["is_first_pit"])
    if t is not None:
        series.append(("step_values.is_first_pit",
                       {str(k): int(v) for k, v in t.to_pandas()["is_first_pit"].value_counts().items()}))
    else:
        missing.append("step_values")
    parts = []
    if series:
        fig, axes = _figure(len(series), width=3.4)
        for ax, (name, counts) in zip(axes, series):
            keys = sorted(counts, key=str)
            colors = [_COLORS.get(k, _COLORS.get({"True": True, "False": False}.get(k), "#607d8b")) for k in keys]
            _bar(ax, keys, [counts[k] for k in keys], name, colors=colors)
        parts.append(_png(fig))
        parts.append(_table(["config.column", "counts"], [[n, c] for n, c in series]))
    parts.extend(_missing(c) for c in missing)
    return title, "".join(parts)


def _pairs(o: _Output) -> Tuple[str, str]:
    title = "Pairs per problem (by pair_type)"
    t = o.read("preferences", ["problem_id", "pair_type"])
    if t is None:
        return title, _missing("preferences")
    df = t.to_pandas()
    traj = o.read("trajectories", ["problem_id"])
    problems = set(traj.column("problem_id").to_pylist()) if traj is not None else set(df["problem_id"])
    if df.empty:
        return title, f"<p>No preference pairs for {len(problems)} problem(s).</p>"
    counts = df.groupby(["pair_type", "problem_id"]).size()
    types = sorted(df["pair_type"].unique())
    fig, axes = _figure(len(types), width=3.6)
    rows = []
    for ax, pt in zip(axes, types):
        per = counts.loc[pt].reindex(sorted(problems | set(counts.loc[pt].index)), fill_value=0)
        ax.hist(per.values, bins=range(0, int(per.max()) + 2), align="left", color="#1565c0", edgecolor="white")
        ax.set_title(f"{pt}")
        ax.set_xlabel("pairs per problem")
        rows.append([pt, int(per.sum()), float(per.mean()), int((per == 0).sum())])
    return title, _png(fig) + _table(["pair_type", "pairs", "mean per problem", "problems without"], rows)


def _rejects(o: _Output) -> Tuple[str, str]:
    title = "Rejects by reason"
    t = o.read("rejects", ["stage", "reason"])
    if t is not None and t.num_rows:
        df = t.to_pandas()
        by = df.groupby(["stage", "reason"]).size().sort_values(ascending=False)
        labels = [f"{s}: {r}" for s, r in by.index]
        fig, (ax,) = _figure(height=max(2.5, 0.35 * len(labels) + 1))
        _bar(ax, labels, by.values, f"Rejects by stage: reason ({len(df)} rows)", colors="#c62828", horizontal=True)
        return title, _png(fig) + _table(["stage", "reason", "rows"], [[s, r, int(n)] for (s, r), n in by.items()])
    fallback = o.summary.get("rejects_by_reason") or {}
    note = _missing("rejects") if t is None else "<p>The rejects config has no rows.</p>"
    if fallback:
        items = sorted(fallback.items(), key=lambda kv: -kv[1])
        fig, (ax,) = _figure(height=max(2.5, 0.35 * len(items) + 1))
        _bar(ax, [k for k, _ in items], [v for _, v in items], "run_summary.json rejects_by_reason",
             colors="#c62828", horizontal=True)
        return title, note + _png(fig) + _table(["reason", "count"], items)
    return title, note


def _stage_number(v: Any, keys: Sequence[str]) -> Optional[float]:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict):
        for k in keys:
            if isinstance(v.get(k), (int, float)):
                return float(v[k])
    return None


def _stages(o: _Output) -> Tuple[str, str]:
    title = "Tokens and time per stage"
    timing = o.summary.get("timing") or {}
    stages = timing.get("stages") or {}
    if not stages:
        return title, '<p class="missing">No stage timing in run_summary.json.</p>'
    secs = {s: _stage_number(v, ("wall_s", "seconds", "time_s", "elapsed_s", "s")) for s, v in stages.items()}
    toks = {s: (_stage_number(v, ("generated_tokens", "tokens")) if isinstance(v, dict) else None)
            for s, v in stages.items()}
    has_tokens = any(v for v in toks.values())
    fig, axes = _figure(2 if has_tokens else 1)
    names = list(stages)
    _bar(axes[0], names, [secs[s] or 0 for s in names], f"Seconds per stage (wall {timing.get('wall_s', '?')} s)",
         colors="#37474f")
    if has_tokens:
        _bar(axes[1], names, [toks[s] or 0 for s in names], "Generated tokens per stage", colors="#6a1b9a")
    total_tokens = (o.summary.get("counts") or {}).get("generated_tokens")
    rows = [[s, secs[s], toks[s]] for s in names]
    extra = f"<p>Total generated tokens (counts): {html.escape(str(total_tokens))}</p>" if total_tokens else ""
    return title, _png(fig) + _table(["stage", "seconds", "generated tokens"], rows) + extra


def _validation(o: _Output) -> Tuple[str, str]:
    title = "Validation"
    v = o.validation
    if v is None:
        return title, '<p class="missing">No validation/summary.json: the output has not been validated.</p>'
    rows = [[c.name, "pass" if c.success else "FAIL", len(c.shards), c.rows, ", ".join(c.failed)]
            for c in v.configs.values()]
    head = f"<p>Overall: <b>{'pass' if v.success else 'FAIL'}</b> ({html.escape(str(v.validated_at))})"
    if v.raw.get("data_docs"):
        head += f' &middot; <a href="{html.escape(v.raw["data_docs"])}">Great Expectations Data Docs</a>'
    return title, head + "</p>" + _table(["config", "result", "shards", "rows", "failed"], rows)


SECTIONS = (_overview, _pass_rate, _lengths, _first_error, _mc_values, _label_balance, _pairs, _rejects,
            _stages, _validation)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em;
text-align:left;vertical-align:top}th{background:#f4f4f4}img{max-width:100%}.missing{color:#a15c00}
.notes{color:#a15c00;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def _corrections(o: _Output) -> Tuple[str, str]:
    """Issue 22: recovery rate and flip classes of the corrections, by what located the wrong step."""
    from counterpoint.dataset.card import corrections_figures

    title = "Corrections"
    f = corrections_figures(o.layout)
    if f is None:
        return title, _missing("corrections")
    if not f["attempted"]:
        return title, "<p>No correction attempted (no labelled negative with a located first wrong step).</p>"
    rows = [["attempted", f["attempted"]], ["verified correct", f["recovered"]],
            ["recovery rate [95% Wilson]", f"{_fmt(f['recovery_rate'])} [{_fmt(f['recovery_lo'])}, "
                                            f"{_fmt(f['recovery_hi'])}]"],
            ["genuine-flip share (revise)", _fmt(f["genuine_flip_share"])],
            ["engine tokens per kept correction", _fmt(f["tokens_per_kept_correction"])]]
    rows += [[f"flip class: {k}", v] for k, v in f["flip_classes"].items()]
    rows += [[f"wrong step from: {k}", v] for k, v in f["by_source"].items()]
    return title, _table(["figure", "value"], rows)


SECTIONS += (_corrections,)


def _critical_tokens(o: _Output) -> Tuple[str, str]:
    """Issue 21: the critical-token figures and the contrastive score along a few trajectories."""
    from counterpoint.dataset.critical_tokens import report_section

    return report_section(o)


SECTIONS += (_critical_tokens,)


def build_report(layout: storage.DatasetLayout) -> str:
    """Writes the dataset's ``report.html`` (the live version's, for an output folder) and returns its path."""
    o = _Output(layout)
    body = []
    for section in SECTIONS:
        try:
            title, content = section(o)
        except Exception as e:  # one broken section must not lose the others
            title, content = section.__name__.strip("_"), (
                f'<p class="missing">Section failed: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>')
        slug = title.lower().replace(" ", "-").replace("(", "").replace(")", "")
        body.append(f'<section id="{html.escape(slug)}"><h2>{html.escape(title)}</h2>{content}</section>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in o.notes)
    model = (o.summary.get("provenance") or {}).get("model", "")
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Counterpoint run report</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>Counterpoint run report</h1><p>{html.escape(_title(o))}"
        + (f" &middot; model <code>{html.escape(str(model))}</code>" if model else "")
        + f" &middot; generated {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}</p>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "".join(body)
        + "</body></html>"
    )
    path = o.layout.report_path
    storage.write_text(path, page)
    return path
