"""Hugging Face dataset card (``README.md``) of a dataset: a version folder's own, and the output root's.

A version's card lies next to its ``data/`` (the Hub layout ``counterpoint push`` uploads); the
output root's card is the live version's with ``data_files`` under ``versions/<id>/`` (written by
:func:`counterpoint.dataset.publish.write_root_card`), so ``datasets.load_dataset(out, config)`` reads
the live version.

The YAML front matter declares one ``configs:`` entry per config present under
``data/`` so ``datasets.load_dataset(out_dir_or_repo, "<config>")`` works for each
of them. Two ``datasets`` (5.x) limitations shape it:

* a config whose shards hold **no rows at all** is not declared: ``datasets``
  cannot build an empty split ("Instruction 'train' corresponds to no data!").
  The card's body lists it as empty instead;
* a config where *some* shard has zero rows gets ``batch_size`` in its entry
  (the Parquet builder otherwise uses the first row group's size, 0, as batch
  size and fails with "BatchSize must be greater than 0").

The body carries the provenance from ``run_summary.json`` (model, sampling,
verifier and labeler versions and parameters, counts, timing), the columns of
every config (from the TableSpecs), and the verdict (read by :mod:`counterpoint.dataset.verdicts`).

Long: one renderer per card section (configs, columns, provenance, what the run did, exports, validation) in
reading order; each section is short.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import yaml

from counterpoint import storage
from counterpoint.dataset import critical_tokens
from counterpoint.dataset.verdicts import Verdict
from counterpoint.schemas import records
from counterpoint.schemas.exports import VERL_REWARD_DOC

DEFAULT_LICENSE = "mit"
TASK_CATEGORIES = ["text-generation", "question-answering"]
TAGS = ["math", "reasoning", "synthetic", "preference", "dpo", "kto", "process-reward-model", "trl", "counterpoint"]
EMPTY_SHARD_BATCH_SIZE = 10_000

_TRAINER = {
    "trajectories": "raw sampled solutions with verdicts (SFT / rejection sampling / analysis)",
    "preferences": "TRL `DPOTrainer` (conversational preference: prompt / chosen / rejected)",
    "unpaired": "TRL `KTOTrainer` (unpaired preference: prompt / completion / label)",
    "step_labels": "TRL `PRMTrainer` (stepwise supervision: prompt / completions / labels)",
    "step_values": "per-step values and advantages of negative trajectories",
    "rejects": "everything dropped, with stage and reason",
}


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < bound:
            return label
    return "100M<n<1B"


def config_stats(layout: storage.DatasetLayout) -> Dict[str, Dict[str, Any]]:
    """``{config: {"shards", "rows", "empty_shards"}}`` for every config folder under ``data/`` (any filesystem)."""
    known = list(records.OUTPUT_TABLES)
    names = sorted(layout.present_configs(), key=lambda n: (known.index(n) if n in known else len(known), n))
    stats: Dict[str, Dict[str, Any]] = {}
    for name in names:
        shards = layout.shards(name)
        rows, empty = 0, 0
        for shard in shards:
            n = storage.parquet_num_rows(shard)
            rows += n
            empty += n == 0
        stats[name] = {"shards": len(shards), "rows": rows, "empty_shards": empty}
    return stats


def trainer_line(config: str) -> str:
    spec = records.OUTPUT_TABLES.get(config)
    return getattr(spec, "trainer", "") or _TRAINER.get(config, "")


def front_matter(layout: storage.DatasetLayout, prefix: str = "",
                 stats: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The YAML metadata of the card, as a dict; ``data_files`` are ``<prefix>data/<config>/train-*.parquet``."""
    summary = _load(layout.summary_path) or {}
    prov = summary.get("provenance") or {}
    stats = config_stats(layout) if stats is None else stats
    configs = []
    for name, s in stats.items():
        if s["rows"] == 0:
            continue  # datasets cannot load an empty split; listed as empty in the body
        entry: Dict[str, Any] = {"config_name": name}
        if s["empty_shards"]:
            entry["batch_size"] = EMPTY_SHARD_BATCH_SIZE
        entry["data_files"] = [{"split": "train", "path": f"{prefix}data/{name}/train-*.parquet"}]
        configs.append(entry)
    if configs and any(c["config_name"] == "trajectories" for c in configs):
        next(c for c in configs if c["config_name"] == "trajectories")["default"] = True
    biggest = max((s["rows"] for s in stats.values()), default=0)
    meta: Dict[str, Any] = {
        "license": str(prov.get("license") or DEFAULT_LICENSE),
        "language": ["en"],
        "pretty_name": str(prov.get("pretty_name") or "Counterpoint positive/negative math reasoning corpus"),
        "task_categories": list(TASK_CATEGORIES),
        "tags": list(TAGS),
        "size_categories": [_size_category(biggest)],
        "configs": configs,
    }
    return meta


def _load(path: str) -> Optional[dict]:
    data = storage.read_json(path)
    return data if isinstance(data, dict) else None


def _cell(v: Any) -> str:
    """Markdown table cell: pipes escaped, one line, ``<``/``>`` as entities (the Hub renders HTML)."""
    if isinstance(v, (dict, list)):
        v = json.dumps(v, sort_keys=True, default=str)
    s = "" if v is None else str(v)
    return s.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _code(v: Any) -> str:
    return "`" + str(v).replace("`", "'").replace("|", "\\|") + "`"


def _constraints(spec: records.TableSpec, c: records.ColumnSpec) -> str:
    out = []
    if c.value_set is not None:
        out.append("one of " + ", ".join(_code(v) for v in c.value_set))
    if c.min_value is not None and c.max_value is not None:
        out.append(f"in [{c.min_value}, {c.max_value}]")
    elif c.min_value is not None:
        out.append(f"&ge; {c.min_value}")
    elif c.max_value is not None:
        out.append(f"&le; {c.max_value}")
    if c.element_min is not None or c.element_max is not None:
        out.append(f"elements in [{c.element_min}, {c.element_max}]")
    if c.unique:
        out.append("unique")
    for group in spec.unique_together:
        if c.name in group:
            out.append("unique with (" + ", ".join(group) + ")")
    for a, b in spec.must_differ:
        if c.name in (a, b):
            out.append(f"{a} != {b}")
    for a, b in spec.equal_length:
        if c.name in (a, b):
            out.append(f"len({a}) == len({b})")
    return "; ".join(out)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """``raw``: cells are already Markdown (not escaped again)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) if raw else _cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _kv_section(title: str, value: Any) -> List[str]:
    if value is None:
        return [f"- **{title}**: not recorded"]
    if isinstance(value, dict):
        lines = [f"- **{title}**:"]
        for k, v in value.items():
            lines.append(f"  - `{k}`: {_cell(v)}")
        return lines
    return [f"- **{title}**: {_cell(value)}"]


def render_card(layout: storage.DatasetLayout, prefix: str = "") -> str:
    """The card of the dataset ``layout``; ``prefix``: where its ``data/`` lies relative to the card.

    Sections in reading order: configs, columns, provenance, what the run did (consensus, format
    failures, cleaning, counts, timing, rejects), validation.
    """
    stats = config_stats(layout)
    meta = front_matter(layout, prefix, stats)
    summary = _load(layout.summary_path) or {}
    prov = summary.get("provenance") or {}
    lines: List[str] = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# {meta['pretty_name']}",
        "",
        "Positive and negative solutions to math problems sampled from a language model, verified, "
        "paired and (optionally) labelled step by step by Counterpoint"
        f" {_cell(prov.get('counterpoint_version', ''))}.",
        "",
    ]
    lines += _configs_section(stats, meta, summary)
    lines += _provenance_section(prov)
    lines += _consensus_section(summary.get("consensus"))
    lines += _format_failures_section(summary.get("labeling") or {})
    lines += _clean_section(summary.get("clean"))
    lines += _run_sections(summary)
    lines += _corrections_section(layout)
    lines += critical_tokens.card_section(layout)
    lines += exports_section(layout)
    lines += _validation_section(layout)
    if storage.exists(layout.report_path):
        lines += ["A run report with plots is in `report.html`.", ""]
    return "\n".join(lines)


def _configs_section(stats: Dict[str, Dict[str, Any]], meta: Dict[str, Any], summary: Dict[str, Any]) -> List[str]:
    declared = {c["config_name"] for c in meta["configs"]}
    lines = ["## Configs", ""]
    rows = []
    empty = summary.get("empty_configs") or {}
    for name, s in stats.items():
        status = "" if name in declared else " (empty: not loadable)"
        rows.append([f"`{name}`{status}", s["rows"], s["shards"], trainer_line(name)])
    for name in summary.get("configs") or []:
        if name not in stats:
            rows.append([f"`{name}` (no file)", 0, 0, trainer_line(name)])
    lines += [_md_table(["config", "rows", "shards", "use"], rows), ""]
    if empty:
        lines += ["Configs without rows in this run, and why (a thin run, not a defect):", ""]
        lines += [f"- `{name}`: {_cell(why)}" for name, why in empty.items()]
        lines.append("")
    if declared:
        first = next(iter(c["config_name"] for c in meta["configs"]))
        lines += ["```python", "from datasets import load_dataset", "",
                  f'ds = load_dataset("<this repo or folder>", "{first}", split="train")', "```", ""]
    for name in stats:
        if name not in records.OUTPUT_TABLES:
            continue
        spec = records.table(name)
        lines += [f"### `{name}`", "", spec.doc, "",
                  _md_table(["column", "type", "nullable", "constraints", "description"],
                            [[_code(c.name), _code(c.type), "yes" if c.nullable else "no", _constraints(spec, c),
                              _cell(c.doc)] for c in spec.columns], raw=True),
                  ""]
    return lines


def _provenance_section(prov: Dict[str, Any]) -> List[str]:
    lines = ["## Provenance", ""]
    lines += _kv_section("Model", prov.get("model"))
    lines += _kv_section("Sampling", prov.get("sampling"))
    lines += _kv_section("Verifier", prov.get("verifier"))
    lines += _kv_section("Labeler", prov.get("labeler"))
    lines += _kv_section("Counterpoint version", prov.get("counterpoint_version"))
    others = {k: v for k, v in prov.items()
              if k not in ("model", "sampling", "verifier", "labeler", "counterpoint_version", "license", "pretty_name")}
    for k, v in others.items():
        lines += _kv_section(k, v)
    lines.append("")
    return lines


def _consensus_section(consensus: Optional[Dict[str, Any]]) -> List[str]:
    if not consensus:
        return []
    rate = consensus.get("agreement_rate")
    lines = ["### Consensus filtering", "",
             f"A judge model named the first wrong step of {consensus['judged']} labelled negative(s); "
             f"agreement with the Monte Carlo label: **{'n/a' if rate is None else f'{rate:.1%}'}** "
             f"({consensus['agreed']} agreed, {consensus['disagreed']} disagreed, "
             f"{consensus['unparsable']} unparsable; mode `{consensus['mode']}`).", ""]
    if "judge_model" in consensus:  # issue 15: judge, prompt and kept share
        kept = consensus.get("kept_share")
        lines += [f"Judge: `{consensus['judge_model']}`"
                  f"{' (the policy itself)' if consensus.get('judge_is_policy') else ''}; prompt: "
                  f"`{consensus.get('prompt')}`; step-label rows kept: "
                  f"**{'n/a' if kept is None else f'{kept:.1%}'}**.", ""]
    return lines


def _format_failures_section(labeling: Dict[str, Any]) -> List[str]:
    if not labeling.get("rollout_format_failures"):  # issue 15: format failures stated, not silent zeros
        return []
    share = labeling.get("format_failure_rollout_share")
    semantics = ("0 (Math-Shepherd / OmegaPRM semantics)" if labeling["rollout_format_failures"] == "zero"
                 else "unknown verdicts")
    return ["### Rollout format failures", "",
            f"Rollouts that reach no readable final answer count as **{semantics}**; share of the rows' rollouts "
            f"that were format failures: {'n/a' if share is None else f'{share:.1%}'} (truncated: "
            f"{_cell(labeling.get('truncated_rollout_share'))}).", ""]


def _clean_section(clean: Optional[Dict[str, Any]]) -> List[str]:
    """Issue 20: decontamination, deduplication and the two-sided pair guards, in numbers."""
    if not clean:
        return []
    decon = clean.get("decontamination")
    lines = ["### Cleaning", ""]
    if decon:
        sets = ", ".join(f"`{s}`" for s in decon.get("sets") or [])
        lines.append(f"Decontaminated against {sets} (rule `{decon.get('rule')}`, {decon.get('ngram')}-grams): "
                     f"{clean.get('problems_contaminated', 0)} problem(s) rejected as `contaminated` "
                     f"{_cell(clean.get('contaminated_by_benchmark') or {})}, "
                     f"{clean.get('step_pairs_contaminated', 0)} step pair(s) as `contaminated_step_prompt`.")
    else:
        lines.append("Not decontaminated against any evaluation set (`--decontaminate` was not given).")
    lines += ["", _md_table(["guard", "count"], [
        ["duplicate trajectories (exact)", clean.get("trajectories_duplicate_exact", 0)],
        ["duplicate trajectories (near, number-aware)", clean.get("trajectories_duplicate_near", 0)],
        [f"pairs avoided (pairing `{clean.get('pairing')}`)", clean.get("pairs_avoided", 0)],
        ["correct answers with a false step (`process_error`, never positives)",
         clean.get("process_error_positives", 0)],
        ["wrong answers equal to gold on a second check (never rejected sides)", clean.get("suspect_negatives", 0)],
        ["pairs with a reference solution as chosen (off-policy)", clean.get("reference_chosen_pairs", 0)],
    ]), ""]
    return lines


def _run_sections(summary: Dict[str, Any]) -> List[str]:
    lines: List[str] = []
    counts = summary.get("counts") or {}
    if counts:
        lines += ["### Counts", "", _md_table(["count", "value"], list(counts.items())), ""]
    timing = summary.get("timing") or {}
    if timing:
        stage_rows = [[k, v] for k, v in (timing.get("stages") or {}).items()]
        lines += ["### Timing", "", f"Wall time: {_cell(timing.get('wall_s'))} s", ""]
        if stage_rows:
            lines += [_md_table(["stage", "timing"], stage_rows), ""]
    if summary.get("rejects_by_reason"):
        lines += ["### Rejects by reason", "",
                  _md_table(["reason", "count"], list(summary["rejects_by_reason"].items())), ""]
    if not summary:
        lines += ["No `run_summary.json` was found: provenance unknown.", ""]
    return lines


def corrections_figures(layout: storage.DatasetLayout) -> Optional[Dict[str, Any]]:
    """Recovery rate, genuine-flip share and flip classes of the ``corrections`` config (None without it)."""
    from counterpoint.labeling.corrections import summarize

    shards = layout.shards("corrections")
    if not shards:
        return None
    cols = ["kept", "flip_class", "wrong_step_source", "num_generated_tokens"]
    rows = [r for p in shards for r in storage.read_parquet(p, columns=cols).to_pylist()]
    return summarize(rows, sum(r["num_generated_tokens"] for r in rows))


def _corrections_section(layout: storage.DatasetLayout) -> List[str]:
    """Issue 22: how often the model repaired its proved first mistake, and how (genuine flips vs not)."""
    f = corrections_figures(layout)
    if f is None:
        return []
    lines = ["### Corrections (mistake -> correction traces)", ""]
    if not f["attempted"]:
        why = ((_summary_dict(layout) or {}).get("empty_configs") or {}).get("corrections", "no rows")
        return lines + [f"No correction was attempted: {why}.", ""]
    share = f["genuine_flip_share"]
    lines += [f"After each labelled negative's proved first wrong step (search, false claim or stated wrong answer; "
              f"never a format failure) and a cue, {f['attempted']} continuation(s) were sampled and verified: "
              f"**{f['recovered']}** reached the gold answer — recovery rate **{f['recovery_rate']:.1%}** "
              f"(95% Wilson interval {_cell(f['recovery_lo'])}–{_cell(f['recovery_hi'])}); genuine flips "
              f"(the wrong step revised) among them: **{'n/a' if share is None else f'{share:.1%}'}**.", "",
              _md_table(["flip class", "kept corrections"], list(f["flip_classes"].items())), ""]
    return lines


def _summary_dict(layout: storage.DatasetLayout) -> Optional[dict]:
    return storage.read_json(layout.summary_path)


def exports_section(layout: storage.DatasetLayout) -> List[str]:
    """``## Exports``: per export config, its format, what trains on it, and the reward function and
    verifier version to judge with (from the verdict's export records; the options it was made with)."""
    verdict = Verdict.read(layout)
    recs = (verdict.raw.get("exports") or {}) if verdict else {}
    if not recs:
        return []
    rows = []
    for config, rec in recs.items():
        judges = ", ".join(f"`{v['verifier']}` {v['verifier_version']}" for v in rec.get("verifiers") or []) or "-"
        rows.append([f"`{config}`", f"`{rec.get('format')}`", rec.get("rows"), trainer_line(config),
                     f"`{rec['reward_function']}`" if rec.get("reward_function") else "-", judges,
                     rec.get("options") or "-"])
    lines = ["## Exports", "",
             "Trainer-ready configs derived from the validated ones. Judge online rewards with the verifier "
             "and version listed (the reward functions refuse another version).", "",
             _md_table(["config", "format", "rows", "train with", "reward function", "verifier (version)",
                        "options"], rows), ""]
    if any(str(c).startswith("verl_rl") for c in recs):
        lines += [VERL_REWARD_DOC, ""]
    return lines


def _validation_section(layout: storage.DatasetLayout) -> List[str]:
    verdict = Verdict.read(layout)
    lines = ["## Validation", ""]
    if verdict is None:
        return lines + ["This output has not been validated (no `validation/summary.json`).", ""]
    raw = verdict.raw
    lines += [f"Great Expectations {_cell(raw.get('great_expectations_version'))} suites derived from "
              f"the Counterpoint schemas; overall: **{'pass' if verdict.success else 'FAIL'}** "
              f"({_cell(verdict.validated_at)}).", ""]
    vrows = [[f"`{c.name}`", "pass" if c.success else "FAIL", len(c.shards), c.rows, ", ".join(c.failed) or "-"]
             for c in verdict.configs.values()]
    lines += [_md_table(["config", "result", "shards", "rows", "failed expectations"], vrows), ""]
    if raw.get("accepted_current"):
        lines += [f"Counts accepted as they are by `counterpoint validate --accept-current` "
                  f"({_cell(raw['accepted_current'].get('at'))}).", ""]
    if raw.get("data_docs"):
        lines += [f"Data Docs: `{raw['data_docs']}`.", ""]
    return lines


def write_dataset_card(layout: storage.DatasetLayout) -> str:
    """Writes the dataset's own ``README.md`` (Hub layout) and returns its path."""
    path = layout.card_path
    storage.write_text(path, render_card(layout))
    return path
