"""The errors a person sees: one line naming the cause and the fix, and the exit code the CLI returns.

Every error that a user can cause or fix derives from :class:`CounterpointError`. The CLI prints
``counterpoint <command>: <message>`` (no traceback unless ``--debug``) and exits with the
class's ``exit_code``: 2 for usage and configuration errors, 1 for a run or check that failed,
130 on Ctrl-C. Anything else is a bug and keeps its traceback.

Lowest floor of the package: imports nothing from Counterpoint.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CounterpointError(Exception):
    """Base of every user-facing error. ``str(e)`` is the whole message: cause and fix."""

    exit_code = EXIT_FAILED


class UsageError(CounterpointError, ValueError):
    """A flag, config key or argument is wrong (exit 2). Subclasses ValueError for older callers."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config value has the wrong type or range, or names something that does not exist (exit 2)."""


class OutputNotOwned(UsageError):
    """The output folder is not empty and is not a Counterpoint output: nothing is written into it (exit 2)."""


class OutputLocked(CounterpointError):
    """Another process holds the output folder's lock (exit 1)."""


class RunFailed(CounterpointError):
    """A run or a check failed; the published dataset was left as it was (exit 1)."""


class VerdictMismatch(CounterpointError):
    """A file differs from what the validation gate saw (content hash, size, shard set): refuse (exit 1)."""
