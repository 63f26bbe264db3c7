"""Which failures a running mirror retries, and how long it waits.

Contract: only failures that go away by themselves are retried (a server restarting, a dropped
connection, a locked or full embedded file, a deadlock); a missing table, a refused value or a
lost slot are not: they stop the mirror with their message.  The wait doubles from 1 s up to 30 s
and starts again at 1 s once the stream has worked after a failure.
"""

from __future__ import annotations

import psycopg
import sqlalchemy.exc

from .errors import TransientError


def is_transient(e: BaseException, target=None) -> bool:
    """Whether ``e`` goes away by itself.  Driver errors of the target are classified by the
    target (``Target.transient``: only it knows its database's codes); without one, only a
    dropped connection counts."""
    if isinstance(e, TransientError):
        return True
    if isinstance(e, psycopg.OperationalError):
        return True
    if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        if target is not None:
            return target.transient(e)
        return bool(getattr(e, "connection_invalidated", False)) or isinstance(
            e, sqlalchemy.exc.InterfaceError
        )
    return False


class Backoff:
    """1, 2, 4 … 30 s; back to 1 s after :meth:`healthy`."""

    def __init__(self, first: float = 1.0, cap: float = 30.0):
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return d

    def healthy(self) -> None:
        self.delay = self.first
