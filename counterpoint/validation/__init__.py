"""Validation gate: Great Expectations suites derived from the TableSpecs, run as a Beam pipeline.

Modules by concern: :mod:`.suites` (the suites), :mod:`.shard` (one shard: read, fingerprint,
schema, shard suite, uniqueness keys), :mod:`.cross_shard` (``ValidateDataset``: duplicates across
shards, floors, written counts), :mod:`.quarantine`, :mod:`.data_docs`, :mod:`.results` (report
objects, GX-result trimming, ``shard_fingerprint``) and :mod:`.gate` (``validate_output``, the driver).
"""

from counterpoint.validation.gate import DEFAULT_RUNNER_OPTIONS, validate_output
from counterpoint.validation.results import Failure, ValidationReport, shard_fingerprint
from counterpoint.validation.suites import build_suite

__all__ = ["validate_output", "ValidationReport", "Failure", "build_suite", "DEFAULT_RUNNER_OPTIONS",
           "shard_fingerprint"]
