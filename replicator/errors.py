"""One error type per domain.  ``cli_common.handle_errors`` turns them into exit codes and messages.

Every message names what failed (table, column, key, LSN, setting) and what to do.  Messages never
contain passwords: build them from :func:`replicator.dsn.redact` output, never from raw DSNs.
"""

from __future__ import annotations

from collections.abc import Sequence


class ReplicatorError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(ReplicatorError):
    """Bad options or mapping; raised before anything is created on any server."""

    exit_code = 2


class CheckError(ReplicatorError):
    """Preflight found problems; ``problems`` holds one line per problem, each with its fix."""

    def __init__(self, problems: list[str], hints: Sequence[str] = ()):
        self.problems = list(problems)
        self.hints = list(hints)  # ways around the problems, one line each (printed after them)
        super().__init__("\n".join(self.problems))


class SourceError(ReplicatorError):
    """The source PostgreSQL refused or failed."""


class TransientError(ReplicatorError):
    """A connection dropped or a server restarted; the pipeline retries with backoff."""


class SlotLostError(SourceError):
    """The replication slot is gone or invalidated: terminal, never recreated silently."""

    exit_code = 3


class DecodeError(SourceError):
    """A pgoutput message could not be decoded; nothing from it is applied."""


class TargetError(ReplicatorError):
    """The target database refused a statement or a value."""


class ValueRangeError(TargetError):
    """A value the target cannot hold (names table, column, key, LSN)."""


class DivergenceError(TargetError):
    """An UPDATE or DELETE found no target row: the target no longer matches the source."""

    exit_code = 4


class SourceUnavailable(SourceError, TransientError):
    """The source could not be reached (down, restarting, network): retried with backoff."""
