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

# MySQL client/server codes that mean "try again": can't connect, gone away, lost connection,
# lock wait timeout, deadlock, server shutting down, too many connections.
MYSQL_TRANSIENT = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}
SQLITE_TRANSIENT = ("locked", "busy", "disk is full", "unable to open", "disk i/o")


def is_transient(e: BaseException) -> bool:
    if isinstance(e, TransientError):
        return True
    if isinstance(e, psycopg.OperationalError):
        return True
    if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return _driver_transient(getattr(e, "orig", None), e)
    return False


def _driver_transient(orig, e) -> bool:
    module = type(orig).__module__ if orig is not None else ""
    if module.startswith("sqlite3"):
        return any(w in str(orig).lower() for w in SQLITE_TRANSIENT)
    if module.startswith("pymysql"):
        code = orig.args[0] if getattr(orig, "args", None) else None
        return code in MYSQL_TRANSIENT
    if module.startswith("psycopg"):
        return isinstance(orig, psycopg.OperationalError)
    return bool(getattr(e, "connection_invalidated", False)) or isinstance(e, sqlalchemy.exc.InterfaceError)


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
