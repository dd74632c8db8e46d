"""Where things are, for tests in any folder below tests/ (unit/<package>/, pipeline/)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PACKAGE = REPO / "counterpoint"
DATA = TESTS / "data"
