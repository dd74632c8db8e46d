"""Test doubles shared by the labelling tests."""

from __future__ import annotations

import re

from counterpoint.verifiers import base as vb


def fake_verdict(text, gold, truncated=False):
    """``ANS=<v>`` at the end: correct when v == gold; ``ANS=?``: unknown; no ``ANS=``: a format failure."""
    m = re.search(r"ANS=(\S+)\s*$", text)
    if truncated:
        return vb.incorrect(vb.REASON_TRUNCATED, None)
    if not m:
        return vb.incorrect(vb.REASON_NO_FINAL_ANSWER, None)
    if m.group(1) == "?":
        return vb.unknown(vb.REASON_UNPARSABLE_ANSWER, "?")
    return vb.correct(m.group(1)) if m.group(1) == gold else vb.incorrect(vb.REASON_ANSWER_MISMATCH, m.group(1))


def fake_verify(items):
    return [fake_verdict(text, gold, truncated) for text, gold, truncated, _ in items]


def shard_rule_checker(config):
    """``failed_rules(row)``: the names of the shard-level rules one ``config`` row breaks (its suite built once)."""
    from counterpoint.schemas import records
    from counterpoint.validation import suites

    _, batch_definition, built = suites.make_context([config], levels=(suites.SHARD,))
    suite = built[(config, suites.SHARD)]

    def failed_rules(row):
        df = suites.shard_frame(records.rows_to_table(config, [row]), records.table(config))
        result = batch_definition.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        return sorted(r.expectation_config.meta["counterpoint"]["rule"] for r in result.results if not r.success)

    return failed_rules
