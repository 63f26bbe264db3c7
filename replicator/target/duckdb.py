"""DuckDB: the embedded analytical default target.

Contracts
---------
* **One conversion, two paths.**  Values arrive as PostgreSQL text (COPY CSV on the copy path,
  pgoutput tuples on the change path).  Each column's ``cast`` (``duckdb_types.py``) is the one
  DuckDB SQL expression that turns that text into the stored value; the copy path applies it to
  the VARCHAR columns of ``read_csv``, the change path to the VARCHAR columns of a registered Arrow
  staging table (and to bound ``$n`` text parameters for key-less FULL identity rows).  Value
  policies and the array JSON form run before: in the source's copy query, and in Python
  (``value_loader``) on the changes, only for the columns that have them.  A value the copy query
  marked as refused makes the load raise ``error()`` with its column and key: ValueRangeError.
* **Type map**: ``duckdb_types.py`` (docs/typemap.md).  Every connection runs with TimeZone=UTC.
* **Copy path** (``load_copy`` reads ``out.chunks()``): ``COPY ... TO STDOUT (FORMAT csv, NULL '\\N')``, so NULL
  is an unquoted ``\\N``, a value spelled ``\\N`` is quoted (``allow_quoted_nulls`` off) and an
  empty string is an empty field; a one-column table gets a constant second column, as
  ``read_csv`` skips empty lines.  Chunks are re-cut at real row ends (a quoted value may hold
  newlines), spooled to a temp file of about ``load_file_bytes`` and loaded with ``INSERT INTO
  t SELECT <casts> FROM read_csv(<file>, all VARCHAR, ...)``, deleting the file after each load.  DuckDB loads one file
  (helper thread) while the next fills: RAM holds one chunk plus a partial row, disk two files.
* **Change path**: runs of one kind, in source order.  INSERT runs: one ``INSERT ... SELECT`` from
  Arrow.  UPDATE runs: coalesced by key (last value per column wins, ``UNCHANGED`` keeps an earlier
  value of the run or is left out of the SET), then ``UPDATE ... FROM`` staging.  A key change is
  applied on its own.  DuckDB skips an UPDATE value equal by ``=`` to the stored one (``-0.0`` over
  ``0.0``, ``'32 days'`` over ``'1 mon 2 days'``): REAL/DOUBLE/INTERVAL columns first get a value
  unequal to the new one (``Plan.unsettle``).  DELETE runs: ``DELETE ... USING`` staging.  Matched-row counts are checked:
  a missing row raises :class:`DivergenceError` (or is logged under ``on_missing_row: skip``).
  Key-less FULL identity: one row at a time by ``rowid`` (exactly one row among duplicates;
  REAL/DOUBLE/INTERVAL columns matched by their text too).
* **Files other processes read**: the file is opened per transaction (NullPool) and closed after.
  When another process holds it, :meth:`connect` waits with exponential backoff (≤ 5 s between
  tries, warning in the log) for ``lock_wait_s`` (URL query ``?lock_wait=<seconds>``, default 600),
  then raises :class:`TargetError` naming the file.
* Everything runs on the SQLAlchemy connection's own DuckDB connection, inside its transaction, so
  the caller's state row commits atomically with the data.
* Importing this module repairs duckdb-engine 0.17 under SQLAlchemy 2.1 process-wide: identifier
  quoting of DuckDB's type_function keywords, and column / primary-key reflection
  (``duckdb_compat.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import duckdb
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from .. import stopping
from ..errors import ConfigError, TargetError, ValueRangeError
from ..model import Column, CopyOutput, TableMapping
from . import (
    duckdb_compat,  # noqa: F401  (process-wide duckdb-engine repairs)
    names,
    typemap,
    value_rules,
)
from .base import Target
from .csvchunks import whole_rows
from .duckdb_apply import DuckDBApplier
from .duckdb_plan import REFUSED, Plan
from .duckdb_types import duckdb_conv
from .typemap import DDL, Conv

if TYPE_CHECKING:  # the change path imports it lazily (start-up time)
    pass

log = logging.getLogger(__name__)


def is_lock_error(e: BaseException) -> bool:
    orig = getattr(e, "orig", e)
    return isinstance(orig, duckdb.IOException) and "lock" in str(orig).lower()


def is_handle_race(e: BaseException) -> bool:
    """Another thread of this process is closing the file's last connection while we open it."""
    return "Unique file handle conflict" in str(getattr(e, "orig", e))


class DuckDBTarget(Target):
    """DuckDB file target: CSV bulk load, set-based apply through Arrow staging, lock retry."""

    name = "duckdb"
    embedded = True
    row_id = "rowid"
    applier_class = DuckDBApplier  # set-based apply through Arrow staging (duckdb_apply.py)
    copy_options = "FORMAT csv, NULL '\\N'"
    lock_wait_s = 600.0
    lock_backoff_max_s = 5.0
    load_file_bytes = 16 << 20  # CSV spooled per read_csv (two source chunks)
    temp_dir: str | None = None  # where CSV spool files go (None: the system temp directory)
    #: DuckDB's own memory (its buffer pool: pages, indexes, join state) when the URL does not say
    #: (?memory_limit=); DuckDB's default is 80% of RAM, which a bulk load fills as cache: 256 MB
    #: keeps a 5M-row copy under 500 MB of process memory at the same speed (bench/bench_copy.py)
    memory_limit = "256MB"

    def limit_lock_wait(self, seconds: float) -> None:
        self.lock_wait_s = min(self.lock_wait_s, seconds)

    keeps_signed_zero = True
    casts_bound_text = True  # DuckDB converts text to the column type in its SQL
    readers_block_writer = True  # one process opens the file at a time
    key_after_load = True  # ~30% faster than maintaining the index row by row during the load
    #: families read back as VARCHAR (lossless where Python's date, datetime, timedelta are not)
    READ_AS_TEXT = frozenset({"date", "timestamp", "timestamptz", "interval"})

    def verify_read_type(self, col: Column, family: str) -> Any:
        el = (getattr(col, "elem_base_oid", 0) or col.elem_oid) if family == "array" else 0
        if family in self.READ_AS_TEXT or (el and typemap.FAMILY_BY_OID.get(el) in self.READ_AS_TEXT):
            dims = str(self.column_type(col).compile()).count("[]")
            return DDL("VARCHAR" + "[]" * dims) if dims else sa.String()
        return None

    def read_only_engine(self, memory_limit: str, temp_dir: str) -> sa.Engine:
        eng = sa.create_engine(
            self.url,
            poolclass=NullPool,
            connect_args={
                "read_only": True,
                "config": {"memory_limit": memory_limit, "temp_directory": temp_dir},
            },
        )

        @sa.event.listens_for(eng, "connect")
        def _session(dbapi_conn, _record):
            dbapi_conn.execute("SET TimeZone = 'UTC'")
            dbapi_conn.execute("SET enable_progress_bar = false")

        return eng

    def __init__(self, url: str, lock_wait_s: float | None = None):
        u = sa.make_url(url)
        if "lock_wait" in u.query:
            wait = u.query["lock_wait"]
            if not isinstance(wait, str):  # a tuple: the parameter was repeated
                raise ConfigError("the target URL gives lock_wait more than once: give it once")
            lock_wait_s = float(wait)
            url = u.difference_update_query(["lock_wait"]).render_as_string(hide_password=False)
        super().__init__(url)
        if isinstance(u.query.get("memory_limit"), str):
            self.memory_limit = str(u.query["memory_limit"])
        if lock_wait_s is not None:
            self.lock_wait_s = lock_wait_s
        self._plans: dict[TableMapping, Plan] = {}

    # ---------------------------------------------------------------- connections
    def create_engine(self):
        eng = sa.create_engine(
            self.url,
            hide_parameters=True,
            poolclass=NullPool,
            connect_args={"config": {"memory_limit": self.memory_limit}},  # the URL's own wins
        )

        @sa.event.listens_for(eng, "connect")
        def _utc(dbapi_conn, _record):
            dbapi_conn.execute("SET TimeZone = 'UTC'")

        return eng

    @property
    def path(self) -> str:
        return self.url.database or ":memory:"

    @contextlib.contextmanager
    def connect(self, readonly: bool = False) -> Iterator[sa.Connection]:
        """Open the file, one transaction (commit on success, rollback on error), close the file.
        (One process holds a DuckDB file at a time, so ``readonly`` changes nothing here.)"""
        with self._open() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep the file open (one idle connection) while the snapshot copy runs: its many
        short transactions then share the open database instead of opening and checkpointing
        the file each time (~15 ms each).  Other processes wait for the file meanwhile."""
        with self._open():
            yield

    def _open(self) -> sa.Connection:
        """Connect, waiting with exponential backoff while another process holds the file."""
        start, delay, warned = time.monotonic(), 0.05, -1e9
        while True:
            try:
                return self.engine.connect()
            except sa.exc.DBAPIError as e:
                if is_handle_race(e) and time.monotonic() - start < self.lock_wait_s:
                    time.sleep(0.01)
                    continue
                if not is_lock_error(e):
                    raise TargetError(f"cannot open DuckDB file {self.path}: {e.orig}") from None
                waited = time.monotonic() - start
                if waited >= self.lock_wait_s:
                    raise TargetError(
                        f"DuckDB file {self.path} is held by another process (gave up after "
                        f"{waited:.0f}s): {e.orig}. Close that process's connection to the file "
                        f"(queries must not keep it open), or wait longer with ?lock_wait=<seconds> "
                        f"in the target URL"
                    ) from None
                if waited - warned >= 30:
                    log.warning(
                        "DuckDB file %s is held by another process; waiting for it "
                        "(retrying for up to %.0fs)",
                        self.path,
                        self.lock_wait_s - waited,
                    )
                    warned = waited
                if stopping.sleep(min(delay, self.lock_wait_s - waited)):
                    stopping.check(f"waiting for DuckDB file {self.path}, held by another process")
                delay = min(delay * 2, self.lock_backoff_max_s)

    @staticmethod
    def raw(conn: sa.Connection):
        """The DuckDB connection under ``conn`` (same transaction)."""
        return conn.connection.driver_connection

    # ---------------------------------------------------------------- schema
    def conv(self, col: Column) -> Conv:
        return duckdb_conv(col)

    def text_conv(self, col: Column) -> Conv:
        return Conv(DDL("VARCHAR"))

    def identifier_problems(self, m: TableMapping) -> list[str]:
        """DuckDB column names are case-insensitive (ASCII letters)."""
        return names.case_collisions(m, "DuckDB", self.display(m))

    def has_primary_key(self, conn: sa.Connection, m: TableMapping) -> bool:
        """From ``duckdb_constraints()`` (duckdb-engine's reflection casts to REGCLASS, which
        DuckDB lacks)."""
        t = self.table(m)
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
                "AND table_name = $1 AND schema_name = coalesce($2, current_schema())",
                (t.name, t.schema),
            ).scalar()
        )

    def fill_column(self, conn: sa.Connection, m: TableMapping, name: str, text: str) -> None:
        """The change path's own conversion (the column's cast) applied to one bound value."""
        cv, q = self.column_conv(m.view.column(name)), conn.dialect.identifier_preparer
        value = text if cv.load is str else cv.load(text)
        conn.exec_driver_sql(
            f"UPDATE {q.format_table(self.table(m))} SET {q.quote(name)} = {cv.cast.format(v='$1')}", (value,)
        )

    def plan(self, m: TableMapping) -> Plan:
        """SQL of this exact mapping (its options, e.g. on_missing_row, are part of it)."""
        if m not in self._plans:
            self._plans[m] = Plan(self, m)
        return self._plans[m]

    # ---------------------------------------------------------------- copy
    def load_copy(self, conn: sa.Connection, m: TableMapping, out: CopyOutput) -> int:
        """Load PostgreSQL CSV chunks through spooled temp files and ``read_csv``; returns rows.

        While DuckDB loads one spool file (in a helper thread), the next one is filled from the
        source COPY: at most two spool files exist at a time."""
        raw, p, n = self.raw(conn), self.plan(m), 0
        spool, size, pending = None, 0, None
        with ThreadPoolExecutor(1, thread_name_prefix="duckdb-load") as loader:
            try:
                for block in whole_rows(out.chunks()):
                    if spool is None:
                        spool = tempfile.NamedTemporaryFile(
                            "wb", suffix=".csv", dir=self.temp_dir, delete=False
                        )
                    spool.write(block)
                    size += len(block)
                    if size >= self.load_file_bytes:
                        n += pending.result() if pending else 0
                        pending, spool, size = loader.submit(self._load_file, raw, p, spool), None, 0
                if spool is not None:
                    n += pending.result() if pending else 0
                    pending, spool = loader.submit(self._load_file, raw, p, spool), None
                n += pending.result() if pending else 0
                return n
            finally:
                if spool is not None:
                    spool.close()
                    os.unlink(spool.name)

    def copy_expressions(self, m: TableMapping) -> list[str]:
        """The columns' copy forms; a one-column table gets a constant NULL second column, so that
        no CSV line is empty (``read_csv`` skips empty lines: an empty string would be lost)."""
        exprs = self.sql_copy_expressions(m)
        return exprs + ["NULL"] if len(exprs) == 1 else exprs

    def _load_file(self, raw, p: Plan, spool) -> int:
        spool.close()
        try:
            cols = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(max(len(p.cols), 2)))
            path = spool.name.replace("'", "''")
            size = os.path.getsize(spool.name)
            src = (
                f"read_csv('{path}', columns = {{{cols}}}, header = false, auto_detect = false, "
                f"delim = ',', quote = '\"', escape = '\"', nullstr = '\\N', "
                f"allow_quoted_nulls = false, new_line = '\\n', strict_mode = true, "
                f"max_line_size = {max(size + 1, 2 << 20)})"
            )
            with self.errors(p.m, "snapshot copy"):
                return raw.execute(f"{p.insert_sql} FROM {src}").fetchall()[0][0]
        finally:
            os.unlink(spool.name)

    @contextlib.contextmanager
    def errors(self, m: TableMapping, where: str):
        try:
            yield
        except duckdb.InvalidInputException as e:
            if REFUSED not in str(e):
                raise
            raise self._refused(m, str(e)) from None
        except duckdb.ConversionException as e:
            raise ValueRangeError(
                f"{m.label}: a value cannot be stored in DuckDB table {self.display(m)} ({where}): "
                f"{e}; choose a value policy or a column type in the mapping"
            ) from None
        except duckdb.ConstraintException as e:
            raise TargetError(
                f"{m.label} → DuckDB table {self.display(m)} ({where}): {e}; the "
                f"target no longer matches the source: re-sync the table"
            ) from None
        except duckdb.OutOfMemoryException as e:
            raise TargetError(
                f"{m.label} → DuckDB table {self.display(m)} ({where}): {e}; DuckDB may use "
                f"{self.memory_limit} here: give it more with ?memory_limit=<size> in the target "
                f"URL (e.g. duckdb:///file.duckdb?memory_limit=4GB)"
            ) from None

    def _refused(self, m: TableMapping, msg: str) -> ValueRangeError:
        """The error() of :meth:`Plan.load_sql`: column number, key values, value."""
        head, _, value = msg.split(REFUSED, 1)[1].partition("\x1e")
        i, _, keys = head.partition("\x1f")
        a = self.applier(m)
        c = a.cols[int(i)]
        rule = self.column_conv(m.view.columns[int(i)]).rule
        row = dict(
            zip(
                (a.cols[k].name for k in a.key_idx or range(len(a.cols))),
                map(value_rules.unmark, keys.split("\x1f")),
            )
        )  # the source's values, unmarked
        key = ", ".join(f"{k}={v!r}" for k, v in row.items())
        return ValueRangeError(
            f"{m.label}.{c.name}: value {value_rules.unmark(value)[:60]!r} cannot be stored in the duckdb "
            f"target table {self.display(m)}: {rule.what if rule else 'refused'} (snapshot copy, key "
            f"{key}); choose a value policy (error | null | clamp | text) or a column type in the mapping"
        )

    def set_next_value(
        self, conn: sa.Connection, m: TableMapping, column: str, next_value: int, sequence: str
    ) -> str:
        """A sequence starting at ``next_value`` as the column's default."""
        q, t = conn.dialect.identifier_preparer, self.table(m)
        seq = q.quote(sequence)
        conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {seq} CASCADE")
        conn.exec_driver_sql(f"CREATE SEQUENCE {seq} START WITH {int(next_value)}")
        conn.exec_driver_sql(
            f"ALTER TABLE {q.format_table(t)} ALTER COLUMN {q.quote(column)} "
            f"SET DEFAULT nextval('{sequence.replace(chr(39), chr(39) * 2)}')"
        )
        return f"{self.display(m)}.{column}: sequence {sequence} starts at {next_value}"
