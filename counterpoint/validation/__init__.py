"""Validation gate: Great Expectations suites derived from the TableSpecs, run as a Beam pipeline."""

from counterpoint.validation.gate import DEFAULT_RUNNER_OPTIONS, Failure, ValidationReport, validate_output
from counterpoint.validation.suites import build_suite

__all__ = ["validate_output", "ValidationReport", "Failure", "build_suite", "DEFAULT_RUNNER_OPTIONS"]
