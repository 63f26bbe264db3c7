"""SQLite: WAL journal, short write transactions, a busy timeout; executemany in one transaction.

Types (docs/typemap.md): SQLite has no DECIMAL, UUID, interval or time zone.  Integers are INTEGER,
float4/float8 REAL (NaN has no REAL form: SQLite would store NULL, so it is a refused value),
booleans 0/1, bytea BLOB.  date, timestamp and timestamptz (in UTC) are SQLAlchemy's ISO text
(``YYYY-MM-DD HH:MM:SS.ffffff``), which holds years 1 to 9999; time its ``HH:MM:SS.ffffff``
(no ``24:00:00``).  Arrays are JSON text (``pgarray.py``).  Every other type (numeric, uuid, json,
interval, timetz, money, inet, ranges, composites, ...) is TEXT holding PostgreSQL's exact text.
The copy path reads COPY text rows and converts them with the same Python functions as changes
(``sqlite_copy.py``: composed per column, rows straight to the driver's executemany).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ..model import Column, CopyOutput, TableMapping
from . import names, pgarray, sqlite_copy, typemap, value_rules
from .base import Target
from .stage_apply import StagedApplier
from .typemap import Conv

SQLITE_TYPES = {
    "bool": sa.Boolean(),
    "bytes": sa.LargeBinary(),
    "int2": sa.SmallInteger(),
    "int4": sa.Integer(),
    "int8": sa.BigInteger(),
    "float4": sa.Float(),
    "float8": sa.Float(),
    "date": sa.Date(),
    "time": sa.Time(),
    "timestamp": sa.DateTime(),
    "timestamptz": sa.DateTime(),
}
WHERE = "SQLite"


def _column_limit() -> int:
    """SQLITE_MAX_COLUMN of the SQLite library this process uses (2000 unless compiled otherwise;
    Python before 3.11 cannot ask: the default)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        return db.getlimit(sqlite3.SQLITE_LIMIT_COLUMN) if hasattr(db, "getlimit") else 2000


def sqlite_conv(col: Column) -> Conv:
    """The SQLite column type, conversion and value rule of a source column."""
    fam = typemap.family(col)
    load = typemap.python_loader(col)
    if fam == "array":
        return Conv(sa.Text(), pgarray.array_json(col), rule=value_rules.array_rule(f"{WHERE} JSON"))
    if fam not in SQLITE_TYPES:
        return Conv(sa.Text())
    rule = None
    if fam in ("float4", "float8"):
        rule = value_rules.not_nan_rule(f"{WHERE} REAL")
    elif fam in ("date", "timestamp", "timestamptz"):
        rule = value_rules.year_rule(fam, f"{WHERE} ISO {fam} text")
    elif fam == "time":
        rule = value_rules.time_rule(f"{WHERE} time text")
    return Conv(SQLITE_TYPES[fam], load, rule=rule)


SQLITE_TRANSIENT = ("locked", "busy", "disk is full", "unable to open", "disk i/o")


class SQLiteTarget(Target):
    """The file is opened per batch (NullPool) so other processes can read between batches."""

    applier_class = StagedApplier  # set-based apply through a temporary table (stage_apply.py)

    name = "sqlite"
    embedded = True

    def read_only_engine(self, memory_limit: str, temp_dir: str) -> sa.Engine:
        assert self.url.database is not None  # an embedded target is a file (check_url)
        path = quote(os.path.abspath(self.url.database))
        return sa.create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool, connect_args={"timeout": 60}
        )

    def transient(self, e: BaseException) -> bool:
        """A locked or busy file, a full disk, a file that cannot be opened right now."""
        return any(w in str(getattr(e, "orig", e)).lower() for w in SQLITE_TRANSIENT) or super().transient(e)

    row_id = "rowid"
    busy_timeout_s = 60.0

    def create_engine(self):
        eng = sa.create_engine(
            self.url, hide_parameters=True, poolclass=NullPool, connect_args={"timeout": self.busy_timeout_s}
        )

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
            # writers take the write lock up front (no deadlock on upgrade); readers never wait
            readonly = conn.get_execution_options().get("replicator_readonly")
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return eng

    max_columns = _column_limit()
    max_columns_why = "SQLITE_MAX_COLUMN of this SQLite library"

    def conv(self, col: Column) -> Conv:
        return sqlite_conv(col)

    def load_copy(self, conn, m: TableMapping, out: CopyOutput) -> int:
        """The COPY text rows through the driver's executemany, each column converted by its
        loader and bind processor composed once (``sqlite_copy.py``): the generic path's rows,
        without its per-row dicts and SQLAlchemy's parameter processing."""
        return sqlite_copy.load_copy(self, conn, m, out)

    def identifier_problems(self, m: TableMapping) -> list[str]:
        """SQLite column names are case-insensitive."""
        return names.case_collisions(m, "SQLite", self.display(m))

    def set_next_value(self, conn, m, column: str, next_value: int, sequence: str) -> str:
        """An INTEGER PRIMARY KEY takes max(rowid)+1 by itself; other columns have no sequences."""
        pk = m.view.primary_key
        if pk == (column,):
            return (
                f"{self.display(m)}.{column}: SQLite assigns max({column})+1 to new rows by itself "
                f"(the source's next value is {next_value})"
            )
        return (
            f"{self.display(m)}.{column}: SQLite has no sequences; new rows must set it (next {next_value})"
        )
