"""Great Expectations suites derived from the ``TableSpec`` of every output config.

Long: one derivation per kind of rule (and the row rules of the configs that have them), read together.

Nothing here lists a column by hand: every expectation comes from
:mod:`counterpoint.schemas.records`. Each config gets two suites:

``counterpoint.<config>.shard`` (run on every Parquet shard, in parallel)
    * ``expect_column_values_to_not_be_null`` for every non-nullable column
      (NaN counts as null, so non-nullable float columns are NaN-free);
    * ``expect_column_values_to_be_in_set`` for every ``value_set``;
    * ``expect_column_values_to_be_between`` for ``min_value``/``max_value``;
    * ``expect_column_list_elements_to_be_between`` (custom, defined below) for
      list columns with ``element_min``/``element_max`` (every element must be a
      non-NaN number inside the bounds, e.g. ``mc_values`` in [0, 1]);
    * ``expect_column_pair_values_to_be_equal`` on the derived length columns
      ``__len_<a>`` / ``__len_<b>`` for every ``equal_length`` pair;
    * ``expect_column_pair_values_to_differ`` (custom, defined below) on the
      derived canonical-JSON columns ``__<a>_json`` / ``__<b>_json`` for every
      ``must_differ`` pair (e.g. ``chosen`` != ``rejected`` message lists);
    * ``expect_column_pair_values_a_to_be_greater_than_b`` (``or_equal``) for every
      ``ordered`` pair (low, high), rows with a null skipped (e.g. ``pass_rate_lo`` <=
      ``pass_rate`` <= ``pass_rate_hi``);
    * ``expect_column_pair_values_to_be_equal`` between the derived ``__sum_<total>``
      column and ``<total>`` for every ``sums`` rule (e.g. correct + incorrect + unknown
      = samples).

``counterpoint.<config>.config`` (holds *across* shards; the gate evaluates it as a
distributed Beam aggregation — hash buckets of key values — rather than on one frame)
    * ``expect_column_values_to_be_unique`` for every ``unique`` column;
    * ``expect_compound_columns_to_be_unique`` for every ``unique_together`` group;
    * ``expect_table_row_count_to_be_between(min_value=N)`` when the run sets a floor (``--min-rows CONFIG=N``).

Derived helper columns (all start with ``__`` and never reach the published data):

=====================  =====================================================
``__len_<col>``        ``len(<col>)`` of a list column (null when the list is null)
``__<col>_json``       canonical JSON (sorted keys) of ``<col>`` (null when null)
``__sum_<total>``      row-wise sum of the ``sums`` parts of ``<total>``
=====================  =====================================================

Every expectation carries ``meta["counterpoint"] = {"rule": ..., "columns": [...]}``
naming the TableSpec rule it enforces and the *source* columns, so a failure on
``__chosen_json`` is reported against ``chosen``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Literal, Optional, Sequence

import pyarrow as pa

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation, ColumnPairMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    ColumnPairMapMetricProvider,
    column_condition_partial,
    column_pair_condition_partial,
)
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer
from great_expectations.render.renderer_configuration import RendererConfiguration, RendererValueType

from counterpoint.schemas import records

SHARD = "shard"
CONFIG = "config"
LEVELS = (SHARD, CONFIG)


# ---------------------------------------------------------------------------
# Custom expectations (registered with GX when this module is imported)
# ---------------------------------------------------------------------------
def _legacy_text(configuration, result, runtime_configuration, template: str) -> list:
    """The Data Docs (legacy prescriptive) rendering of a custom expectation: one sentence."""
    if configuration is None and result is not None:
        configuration = result.expectation_config
    params = dict(configuration.kwargs) if configuration is not None else {}
    styling = (runtime_configuration or {}).get("styling")
    return [
        RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={"template": template, "params": params, "styling": styling},
        )
    ]


class ColumnPairValuesDiffer(ColumnPairMapMetricProvider):
    """Row-wise ``column_A != column_B``."""

    condition_metric_name = "column_pair_values.counterpoint_differ"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_A",
        "column_B",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ()

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        return column_A != column_B


class ExpectColumnPairValuesToDiffer(ColumnPairMapExpectation):
    """Expect the values in column A to differ from those in column B on every row.

    Counterpoint applies it to canonical-JSON helper columns, so it compares whole
    message lists (e.g. ``chosen`` vs ``rejected``).
    """

    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = (
        "both_values_are_missing"
    )
    map_metric = "column_pair_values.counterpoint_differ"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")
    args_keys = ("column_A", "column_B")

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        renderer_configuration.add_param(name="column_A", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="column_B", param_type=RendererValueType.STRING)
        renderer_configuration.template_str = "Values in $column_A and $column_B must always differ."
        return renderer_configuration

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None, **kwargs):
        return _legacy_text(configuration, result, runtime_configuration,
                            "Values in $column_A and $column_B must always differ.")


def _element_ok(value: Any, min_value: Optional[float], max_value: Optional[float]) -> bool:
    try:
        elements = list(value)
    except TypeError:
        return False
    for e in elements:
        if e is None:
            return False
        try:
            if math.isnan(e):
                return False
        except TypeError:
            return False
        if min_value is not None and e < min_value:
            return False
        if max_value is not None and e > max_value:
            return False
    return True


class ColumnValuesListElementsBetween(ColumnMapMetricProvider):
    """Every element of the list in each row is a non-NaN number in [min_value, max_value]."""

    condition_metric_name = "column_values.counterpoint_list_elements_between"
    condition_value_keys = ("min_value", "max_value")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, min_value=None, max_value=None, **kwargs):
        return column.map(lambda v: _element_ok(v, min_value, max_value)).astype(bool)


class ExpectColumnListElementsToBeBetween(ColumnMapExpectation):
    """Expect every element of every list in the column to lie in [min_value, max_value] (NaN fails)."""

    min_value: Optional[float] = None
    max_value: Optional[float] = None
    map_metric = "column_values.counterpoint_list_elements_between"
    success_keys = ("min_value", "max_value", "mostly")
    args_keys = ("column", "min_value", "max_value")

    @classmethod
    def _prescriptive_template(cls, renderer_configuration: RendererConfiguration) -> RendererConfiguration:
        renderer_configuration.add_param(name="column", param_type=RendererValueType.STRING)
        renderer_configuration.add_param(name="min_value", param_type=RendererValueType.NUMBER)
        renderer_configuration.add_param(name="max_value", param_type=RendererValueType.NUMBER)
        renderer_configuration.template_str = (
            "Every element of the lists in $column must be between $min_value and $max_value."
        )
        return renderer_configuration

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None, **kwargs):
        return _legacy_text(configuration, result, runtime_configuration,
                            "Every element of the lists in $column must be between $min_value and $max_value "
                            "(NaN fails).")


# ---------------------------------------------------------------------------
# Helper column names and frames
# ---------------------------------------------------------------------------
def len_column(name: str) -> str:
    return f"__len_{name}"


def json_column(name: str) -> str:
    return f"__{name}_json"


def sum_column(total: str) -> str:
    return f"__sum_{total}"


def derived_columns(spec: records.TableSpec) -> Dict[str, tuple]:
    """``{helper column: (kind, source column)}`` the shard suite of ``spec`` needs."""
    out: Dict[str, tuple] = {}
    for a, b in spec.equal_length:
        out[len_column(a)] = ("len", a)
        out[len_column(b)] = ("len", b)
    for a, b in spec.must_differ:
        out[json_column(a)] = ("json", a)
        out[json_column(b)] = ("json", b)
    for parts, total in spec.sums:
        out[sum_column(total)] = ("sum", parts)
    return out


def _canonical_json(value: Any) -> Optional[str]:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def shard_frame(table: pa.Table, spec: records.TableSpec):
    """The pandas frame one shard is validated on: the table plus its derived helper columns."""
    df = table.to_pandas()
    for helper, (kind, source) in derived_columns(spec).items():
        if kind == "sum":
            if all(p in table.column_names for p in source):  # a missing part is reported by its own expectations
                df[helper] = sum(df[p] for p in source)
            continue
        if source not in table.column_names:
            continue  # the missing column is reported by its own expectations
        col = table.column(source)
        if kind == "len":
            import pyarrow.compute as pc

            df[helper] = pc.list_value_length(col).to_pandas()
        else:
            df[helper] = [_canonical_json(v) for v in col.to_pylist()]
    return df


# ---------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------
def suite_name(config: str, level: str = SHARD) -> str:
    return f"counterpoint.{config}.{level}"


def _meta(rule: str, *columns: str) -> dict:
    return {"counterpoint": {"rule": rule, "columns": list(columns)}}


def expectations(config: str, level: str = SHARD, min_rows: Optional[int] = None) -> list:
    """The expectation objects of one suite, derived from the config's TableSpec.

    ``min_rows`` (config level): a floor on the config's row count. Without one an empty config
    passes — a run in which no problem qualified for a config is thin, not defective.

    Long: one expectation per schema rule kind, in the order the suite runs them.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    spec = records.table(config)
    out: list = []
    if level == SHARD:
        for c in spec.columns:
            if not c.nullable:
                out.append(gxe.ExpectColumnValuesToNotBeNull(column=c.name, meta=_meta("not_null", c.name)))
            if c.value_set is not None:
                out.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=c.name, value_set=list(c.value_set), meta=_meta("value_set", c.name)
                    )
                )
            if c.min_value is not None or c.max_value is not None:
                out.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=c.name, min_value=c.min_value, max_value=c.max_value, meta=_meta("range", c.name)
                    )
                )
            if c.element_min is not None or c.element_max is not None:
                out.append(
                    ExpectColumnListElementsToBeBetween(
                        column=c.name,
                        min_value=c.element_min,
                        max_value=c.element_max,
                        meta=_meta("element_range", c.name),
                    )
                )
        for a, b in spec.equal_length:
            out.append(
                gxe.ExpectColumnPairValuesToBeEqual(
                    column_A=len_column(a),
                    column_B=len_column(b),
                    # a null list is the not-null expectation's business, not this one's
                    ignore_row_if="either_value_is_missing",
                    meta=_meta("equal_length", a, b),
                )
            )
        for a, b in spec.must_differ:
            out.append(
                ExpectColumnPairValuesToDiffer(
                    column_A=json_column(a),
                    column_B=json_column(b),
                    ignore_row_if="either_value_is_missing",
                    meta=_meta("must_differ", a, b),
                )
            )
        for low, high in spec.ordered:
            out.append(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=high, column_B=low, or_equal=True, ignore_row_if="either_value_is_missing",
                    meta=_meta("ordered", low, high),
                )
            )
        for parts, total in spec.sums:
            out.append(
                gxe.ExpectColumnPairValuesToBeEqual(
                    column_A=sum_column(total), column_B=total, ignore_row_if="either_value_is_missing",
                    meta=_meta("sums", *parts, total),
                )
            )
        out += conditional_expectations(config)
    else:
        for c in spec.columns:
            if c.unique:
                out.append(gxe.ExpectColumnValuesToBeUnique(column=c.name, meta=_meta("unique", c.name)))
        for group in spec.unique_together:
            out.append(
                gxe.ExpectCompoundColumnsToBeUnique(column_list=list(group), meta=_meta("unique_together", *group))
            )
        if min_rows:
            out.append(gxe.ExpectTableRowCountToBeBetween(min_value=int(min_rows), meta=_meta("min_rows")))
    return out


# Row rules that hold where a condition does (pandas row_condition), per config: (condition, column, rule, values);
# "equal": ``column`` equals the column ``values`` names wherever both are set.
# ``corrections`` (issue 22): a kept row is a verified-correct correction with a flip class; any other row has none.
CONDITIONAL_RULES: Dict[str, tuple] = {
    "corrections": (("kept == True", "verdict", "value_set", ("correct",)),
                    ("kept == True", "flip_class", "not_null", None),
                    ("kept == False", "flip_class", "null", None)),
    # ``critical_tokens`` (issue 21): the rollout-found token is in OmegaPRM's first wrong step; unsearched, no position.
    "critical_tokens": ((None, "rollout_critical_step", "equal", "first_wrong_step"),
                        *(("search_rollouts == 0", c, "null", None) for c in ("rollout_critical_position",
                                                                              "rollout_critical_step"))),
}


def conditional_expectations(config: str) -> list:
    """The shard expectations of :data:`CONDITIONAL_RULES` for ``config`` (none for most configs)."""
    out = []
    for condition, column, rule, values in CONDITIONAL_RULES.get(config, ()):
        if rule == "equal":  # a column pair, where both are set
            out.append(gxe.ExpectColumnPairValuesToBeEqual(column_A=column, column_B=values, meta=_meta(
                "equal", column, values), ignore_row_if="either_value_is_missing"))
            continue
        kw = dict(column=column, row_condition=condition, condition_parser="pandas",
                  meta=_meta(f"{rule} where {condition}", column, condition.split()[0]))
        if rule == "value_set":
            out.append(gxe.ExpectColumnValuesToBeInSet(value_set=list(values), **kw))
        elif rule == "not_null":
            out.append(gxe.ExpectColumnValuesToNotBeNull(**kw))
        else:
            out.append(gxe.ExpectColumnValuesToBeNull(**kw))
    return out


def build_suite(config: str, level: str = SHARD, min_rows: Optional[int] = None) -> gx.ExpectationSuite:
    """The GX ``ExpectationSuite`` for ``config`` at ``level`` ("shard" or "config").

    The suite is not attached to a context; add it with ``context.suites.add(...)``.
    """
    return gx.ExpectationSuite(
        name=suite_name(config, level),
        expectations=expectations(config, level, min_rows),
        meta={"counterpoint": {"config": config, "level": level}},
    )


def make_context(configs: Sequence[str], levels: Sequence[str] = LEVELS, min_rows: Optional[Dict[str, int]] = None):
    """An ephemeral GX context with a pandas datasource and the suites of ``configs`` added.

    Returns ``(context, batch_definition, {(config, level): suite})``.
    """
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_pandas("counterpoint")
    asset = datasource.add_dataframe_asset("output")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    suites = {}
    for config in configs:
        for level in levels:
            suites[(config, level)] = context.suites.add(build_suite(config, level, (min_rows or {}).get(config)))
    return context, batch_definition, suites
