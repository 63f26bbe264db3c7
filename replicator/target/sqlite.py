"""SQLite: WAL journal, short write transactions, a busy timeout; executemany in one transaction.

SQLite has no DECIMAL, UUID or time zone: numeric and uuid keep PostgreSQL's exact text form,
timestamps are stored as ISO text in UTC (SQLAlchemy's DateTime storage), booleans as 0/1.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from .base import FAMILY_TYPES, Target

SQLITE_TYPES = {**FAMILY_TYPES, "numeric": sa.Text(), "uuid": sa.Text(), "bytes": sa.LargeBinary()}


class SQLiteTarget(Target):
    """The file is opened per batch (NullPool) so other processes can read between batches."""

    name = "sqlite"
    embedded = True
    row_id = "rowid"
    family_types = SQLITE_TYPES
    busy_timeout_s = 60.0

    def create_engine(self):
        eng = sa.create_engine(self.url, hide_parameters=True, poolclass=NullPool,
                               connect_args={"timeout": self.busy_timeout_s})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _record):
            # pysqlite's implicit BEGIN is disabled so SQLAlchemy's begin() is a real BEGIN.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(eng, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return eng

    def value_loader(self, col):
        from . import types
        fam = types.family(col)
        if fam in ("numeric", "uuid"):
            return str
        return types.python_loader(col)
