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
* **Type map**: ``duckdb_types.py`` (docs/types.md).  Every connection runs with TimeZone=UTC.
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
import dataclasses
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import duckdb
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from .. import stopping
from ..errors import TargetError, ValueRangeError
from ..model import UNCHANGED, ChangeKind, Column, CopyOutput, RowChange, TableMapping
from . import duckdb_compat  # noqa: F401  (process-wide duckdb-engine repairs)
from . import names, rules, types
from .base import Target
from .csvchunks import whole_rows
from .duckdb_types import duckdb_conv, loose_equality
from .types import DDL, Conv

if TYPE_CHECKING:  # the change path imports it lazily (start-up time)
    import pyarrow as pa

log = logging.getLogger(__name__)

STAGE = "_rp_stage"  # registered Arrow staging relation (per connection)
DONE = "_rp_done"  # rows a DELETE ... RETURNING removed
REFUSED = "replicator-refused:"  # prefix of the error() a marked copy value raises


def is_lock_error(e: BaseException) -> bool:
    orig = getattr(e, "orig", e)
    return isinstance(orig, duckdb.IOException) and "lock" in str(orig).lower()


def is_handle_race(e: BaseException) -> bool:
    """Another thread of this process is closing the file's last connection while we open it."""
    return "Unique file handle conflict" in str(getattr(e, "orig", e))


class Plan:
    """SQL for one mapped table, built once: conversions, staging statements, key handling."""

    def __init__(self, target: "DuckDBTarget", m: TableMapping):
        q = target.engine.dialect.identifier_preparer
        self.m, self.cols = m, m.source.columns
        self.table = q.format_table(target.table(m))
        self.names = [q.quote_identifier(c.name) for c in self.cols]
        self.key_idx = [m.source.column_names.index(k) for k in m.source.key]
        convs = [target.column_conv(c) for c in self.cols]
        self.conv = [lambda v, c=c: c.cast.format(v=v) for c in convs]
        #: columns whose change-path text goes through Python first (array JSON, value policies)
        self.loaded = [i for i, (c, cv) in enumerate(zip(self.cols, convs))
                       if cv.load is not str or (cv.rule is not None and c.policy != "text")]
        self.marked = [i for i, (c, cv) in enumerate(zip(self.cols, convs))
                       if cv.rule is not None and c.policy == "error"]
        #: column → two unequal values of its type, where ``=`` holds between differing values
        self.loose = {i: pair for i, cv in enumerate(convs) if (pair := loose_equality(cv.ddl))}
        self.insert_sql = (f"INSERT INTO {self.table} ({', '.join(self.names)}) SELECT "
                           + ", ".join(self.load_sql(i) for i in range(len(self.cols))))
        self.key_match = self.match("_rp_t")

    def load_sql(self, i: int) -> str:
        """The conversion of loaded column ``c<i>``; a value the copy query marked as refused
        raises ``error()`` with the column number, the row's key values and the value."""
        if i not in self.marked:
            return self.conv[i](f"c{i}")
        key = ", ".join(f"coalesce(c{k}, 'NULL')" for k in self.key_idx or range(len(self.cols)))
        return (f"CASE WHEN starts_with(c{i}, '{rules.MARK}') THEN error(concat('{REFUSED}', {i}, "
                f"chr(31), concat_ws(chr(31), {key}), chr(30), c{i})) ELSE {self.conv[i](f'c{i}')} END")
    def match(self, alias: str) -> str:
        """``alias``'s key columns equal the converted staged keys ``s.k0, s.k1 ...``."""
        return " AND ".join(f"{alias}.{self.names[i]} = {self.conv[i](f's.k{j}')}"
                            for j, i in enumerate(self.key_idx))

    def key_of(self, ch: RowChange) -> tuple:
        src = ch.old if ch.old is not None else ch.new
        return tuple(src[i] for i in self.key_idx)

    def is_key_change(self, ch: RowChange) -> bool:
        return ch.old is not None and tuple(ch.new[i] for i in self.key_idx) != self.key_of(ch)

    def update_sql(self, set_idx: Sequence[int]) -> str:
        sets = ", ".join(f"{self.names[i]} = {self.conv[i](f's.c{i}')}" for i in set_idx)
        return f"UPDATE {self.table} AS _rp_t SET {sets} FROM {STAGE} AS s WHERE {self.key_match}"

    def unsettle(self, set_idx: Sequence[int], value) -> str:
        """SET list giving each loose-equality column of ``set_idx`` a value unequal to its new one
        (``value(i)``: the new value's SQL); '' when there is none.

        DuckDB's UPDATE leaves a stored value in place when the new one is equal to it by ``=``
        (``-0.0`` over ``0.0``, ``'32 days'`` over ``'1 mon 2 days'``), but only while the rows
        have no update of their own yet.  Running this SET first makes the real UPDATE write what
        the source sent."""
        sets = []
        for i in (i for i in set_idx if i in self.loose):
            a, b = self.loose[i]
            sets.append(f"{self.names[i]} = CASE WHEN {value(i)} = {a} THEN {b} ELSE {a} END")
        return ", ".join(sets)

    def unsettle_sql(self, set_idx: Sequence[int]) -> str:
        """The staged rows' :meth:`unsettle` UPDATE ('' when no column needs one)."""
        sets = self.unsettle(set_idx, lambda i: self.conv[i](f"s.c{i}"))
        return sets and f"UPDATE {self.table} AS _rp_t SET {sets} FROM {STAGE} AS s WHERE {self.key_match}"

    def delete_sql(self) -> str:
        keys = ", ".join(f"_rp_t.{self.names[i]}" for i in self.key_idx)
        return f"DELETE FROM {self.table} AS _rp_t USING {STAGE} AS s WHERE {self.key_match} RETURNING {keys}"

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.table} AS _rp_t JOIN {STAGE} AS s ON {self.key_match}"

    def missing_sql(self, done: str | None = None) -> str:
        """Staged keys without a target row (or, after a DELETE, without a ``done`` RETURNING row)."""
        keys = ", ".join(f"s.k{j}" for j in range(len(self.key_idx)))
        src = f"{self.table} AS _rp_t" if done is None else f"{done} AS _rp_t"
        return f"SELECT {keys} FROM {STAGE} AS s WHERE NOT EXISTS (SELECT 1 FROM {src} WHERE {self.key_match})"

    def find_one_sql(self, match_idx: Sequence[int]) -> str:
        """The rowid of one row whose columns ``match_idx`` hold ``$1..``, NULL-safe; a
        loose-equality column must also have the same text (``-0.0`` is not ``0.0`` here)."""
        conds = []
        for j, i in enumerate(match_idx):
            v = self.conv[i](f"${j + 1}")
            conds.append(f"{self.names[i]} IS NOT DISTINCT FROM {v}")
            if i in self.loose:
                conds.append(f"CAST({self.names[i]} AS VARCHAR) IS NOT DISTINCT FROM CAST({v} AS VARCHAR)")
        return f"SELECT rowid FROM {self.table} WHERE {' AND '.join(conds) or 'TRUE'} LIMIT 1"

    def one_row_sql(self, set_idx: Sequence[int] | None, unsettle: bool = False) -> str:
        """DELETE (``set_idx`` None) or UPDATE of the row whose rowid is the last parameter;
        ``$1..`` are the SET values.  ``unsettle``: the :meth:`unsettle` UPDATE ('' if none)."""
        one = f"rowid = ${len(set_idx or ()) + 1}"
        if set_idx is None:
            return f"DELETE FROM {self.table} WHERE {one}"
        if unsettle:
            sets = self.unsettle(set_idx, lambda i: self.conv[i](f"${set_idx.index(i) + 1}"))
        else:
            sets = ", ".join(f"{self.names[i]} = {self.conv[i](f'${j + 1}')}" for j, i in enumerate(set_idx))
        return sets and f"UPDATE {self.table} SET {sets} WHERE {one}"


def _unregister(raw, *names: str) -> None:
    """Drop staging views; after a failed statement DuckDB refuses until rollback (ours follows)."""
    for name in names:
        with contextlib.suppress(duckdb.Error):
            raw.unregister(name)


def _stage(columns: dict[str, list]) -> "pa.Table":
    import pyarrow as pa  # only the change path needs it: keeps start-up fast
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})


class DuckDBTarget(Target):
    """DuckDB file target: CSV bulk load, set-based apply through Arrow staging, lock retry."""

    name = "duckdb"
    embedded = True
    row_id = "rowid"
    copy_options = "FORMAT csv, NULL '\\N'"
    lock_wait_s = 600.0
    lock_backoff_max_s = 5.0
    load_file_bytes = 16 << 20  # CSV spooled per read_csv (two source chunks)
    temp_dir: str | None = None  # where CSV spool files go (None: the system temp directory)

    def limit_lock_wait(self, seconds: float) -> None:
        self.lock_wait_s = min(self.lock_wait_s, seconds)

    keeps_signed_zero = True
    casts_bound_text = True  # DuckDB converts text to the column type in its SQL
    readers_block_writer = True  # one process opens the file at a time
    #: families read back as VARCHAR (lossless where Python's date, datetime, timedelta are not)
    READ_AS_TEXT = frozenset({"date", "timestamp", "timestamptz", "interval"})

    def verify_read_type(self, col: Column, family: str) -> Any:
        el = (getattr(col, "elem_base_oid", 0) or col.elem_oid) if family == "array" else 0
        if family in self.READ_AS_TEXT or (el and types.FAMILY_BY_OID.get(el) in self.READ_AS_TEXT):
            dims = str(self.column_type(col).compile()).count("[]")
            return sa.types.DDL("VARCHAR" + "[]" * dims) if dims else sa.String()
        return None

    def read_only_engine(self, memory_limit: str, temp_dir: str) -> sa.Engine:
        eng = sa.create_engine(self.url, poolclass=NullPool, connect_args={
            "read_only": True, "config": {"memory_limit": memory_limit, "temp_directory": temp_dir}})

        @sa.event.listens_for(eng, "connect")
        def _session(dbapi_conn, _record):
            dbapi_conn.execute("SET TimeZone = 'UTC'")
            dbapi_conn.execute("SET enable_progress_bar = false")
        return eng

    def __init__(self, url: str, lock_wait_s: float | None = None):
        u = sa.make_url(url)
        if "lock_wait" in u.query:
            lock_wait_s = float(u.query["lock_wait"])
            url = u.difference_update_query(["lock_wait"]).render_as_string(hide_password=False)
        super().__init__(url)
        if lock_wait_s is not None:
            self.lock_wait_s = lock_wait_s
        self._plans: dict[TableMapping, Plan] = {}

    # ---------------------------------------------------------------- connections
    def create_engine(self):
        eng = sa.create_engine(self.url, hide_parameters=True, poolclass=NullPool)

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
                        f"in the target URL") from None
                if waited - warned >= 30:
                    log.warning("DuckDB file %s is held by another process; waiting for it "
                                "(retrying for up to %.0fs)", self.path, self.lock_wait_s - waited)
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

    def table(self, m: TableMapping) -> sa.Table:
        """Created without its primary key: the first bulk load adds it (see ``_add_key``), which
        is ~30% faster than maintaining the index row by row during the load."""
        if self.table_key(m) not in self._tables:
            bare = dataclasses.replace(m, source=dataclasses.replace(m.source, primary_key=()))
            t = super().table(bare)
            for c in t.columns:
                c.nullable = c.nullable and c.name not in m.source.primary_key
        return super().table(m)

    def _add_key(self, conn: sa.Connection, m: TableMapping) -> None:
        """Add the source's primary key to a freshly loaded table that lacks it (same transaction)."""
        pk, t = m.source.primary_key, self.table(m)
        if not pk:
            return
        have = conn.exec_driver_sql(
            "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' "
            "AND table_name = $1 AND schema_name = coalesce($2, current_schema())",
            (t.name, t.schema)).scalar()
        if not have:
            q = conn.dialect.identifier_preparer
            with self._errors(m, "primary key after the snapshot copy"):
                conn.exec_driver_sql(f"ALTER TABLE {q.format_table(t)} ADD PRIMARY KEY "
                                     f"({', '.join(q.quote(c) for c in pk)})")

    def fill_column(self, conn: sa.Connection, m: TableMapping, name: str, text: str) -> None:
        """The change path's own conversion (the column's cast) applied to one bound value."""
        cv, q = self.column_conv(m.source.column(name)), conn.dialect.identifier_preparer
        value = text if cv.load is str else cv.load(text)
        conn.exec_driver_sql(f"UPDATE {q.format_table(self.table(m))} SET {q.quote(name)} = "
                             f"{cv.cast.format(v='$1')}", (value,))

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
                        spool = tempfile.NamedTemporaryFile("wb", suffix=".csv", dir=self.temp_dir, delete=False)
                    spool.write(block)
                    size += len(block)
                    if size >= self.load_file_bytes:
                        n += pending.result() if pending else 0
                        pending, spool, size = loader.submit(self._load_file, raw, p, spool), None, 0
                if spool is not None:
                    n += pending.result() if pending else 0
                    pending, spool = loader.submit(self._load_file, raw, p, spool), None
                n += pending.result() if pending else 0
                self._add_key(conn, m)
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
            src = (f"read_csv('{path}', columns = {{{cols}}}, header = false, auto_detect = false, "
                   f"delim = ',', quote = '\"', escape = '\"', nullstr = '\\N', "
                   f"allow_quoted_nulls = false, new_line = '\\n', strict_mode = true, "
                   f"max_line_size = {max(size + 1, 2 << 20)})")
            with self._errors(p.m, "snapshot copy"):
                return raw.execute(f"{p.insert_sql} FROM {src}").fetchall()[0][0]
        finally:
            os.unlink(spool.name)

    @contextlib.contextmanager
    def _errors(self, m: TableMapping, where: str):
        try:
            yield
        except duckdb.InvalidInputException as e:
            if REFUSED not in str(e):
                raise
            raise self._refused(m, str(e)) from None
        except duckdb.ConversionException as e:
            raise ValueRangeError(
                f"{m.label}: a value cannot be stored in DuckDB table {self.display(m)} ({where}): "
                f"{e}; choose a value policy or a column type in the mapping") from None
        except duckdb.ConstraintException as e:
            raise TargetError(f"{m.label} → DuckDB table {self.display(m)} ({where}): {e}; the "
                              f"target no longer matches the source: re-sync the table") from None

    def _refused(self, m: TableMapping, msg: str) -> ValueRangeError:
        """The error() of :meth:`Plan.load_sql`: column number, key values, value."""
        head, _, value = msg.split(REFUSED, 1)[1].partition("\x1e")
        i, _, keys = head.partition("\x1f")
        a = self.applier(m)
        c = a.cols[int(i)]
        rule = self.column_conv(m.source.columns[int(i)]).rule
        row = dict(zip((a.cols[k].name for k in a.key_idx or range(len(a.cols))),
                       map(rules.unmark, keys.split("\x1f"))))  # the source's values, unmarked
        key = ", ".join(f"{k}={v!r}" for k, v in row.items())
        return ValueRangeError(
            f"{m.label}.{c.name}: value {rules.unmark(value)[:60]!r} cannot be stored in the duckdb "
            f"target table {self.display(m)}: {rule.what if rule else 'refused'} (snapshot copy, key "
            f"{key}); choose a value policy (error | null | clamp | text) or a column type in the mapping")

    # ---------------------------------------------------------------- changes
    def apply(self, conn: sa.Connection, m: TableMapping, changes: Sequence[RowChange]) -> None:
        """Apply one table's changes in order, set-based per run of one kind."""
        p, raw = self.plan(m), self.raw(conn)
        if p.loaded:
            changes = self._loaded(m, p, changes)
        for kind, run in self._runs(p, changes):
            lsn = run[0].lsn
            with self._errors(m, f"changes from LSN {lsn}"):
                if kind is ChangeKind.INSERT:
                    self._insert(raw, p, run)
                elif not p.key_idx:
                    for ch in run:
                        self._apply_one(raw, p, ch)
                elif kind is ChangeKind.UPDATE:
                    self._update(raw, p, run)
                elif kind is ChangeKind.DELETE:
                    self._delete(raw, p, run)
                else:  # key change, alone
                    self._update_rows(raw, p, {p.key_of(run[0]): list(run[0].new)}, run, keys=True)

    def _loaded(self, m: TableMapping, p: Plan, changes: Sequence[RowChange]) -> list[RowChange]:
        """Changes with the array JSON form and value policies applied to the columns that have
        them (a refused value raises ValueRangeError naming column, key and LSN)."""
        a = self.applier(m)

        def load(ch: RowChange, values):
            if values is None:
                return None
            out = list(values)
            for i in p.loaded:
                out[i] = a.convert(i, out[i], ch)
            return tuple(out)

        return [dataclasses.replace(ch, new=load(ch, ch.new), old=load(ch, ch.old)) for ch in changes]

    @staticmethod
    def _runs(p: Plan, changes: Sequence[RowChange]) -> Iterator[tuple[object, list[RowChange]]]:
        """Maximal runs of one kind; an UPDATE that changes the key is a run of its own ('K')."""
        kind, run = None, []
        for ch in changes:
            k = ch.kind
            if k is ChangeKind.UPDATE and p.key_idx and p.is_key_change(ch):
                k = "K"
            if run and (k != kind or k == "K"):
                yield kind, run
                run = []
            kind = k
            run.append(ch)
        if run:
            yield kind, run

    def _insert(self, raw, p: Plan, run: list[RowChange]) -> None:
        raw.register(STAGE, _stage({f"c{i}": list(c) for i, c in enumerate(zip(*(ch.new for ch in run)))}))
        try:
            raw.execute(f"{p.insert_sql} FROM {STAGE}").fetchall()
        finally:
            _unregister(raw, STAGE)

    def _update(self, raw, p: Plan, run: list[RowChange]) -> None:
        """Coalesce by key (later values win, UNCHANGED keeps an earlier one) and update set-wise."""
        merged: dict[tuple, list] = {}
        for ch in run:
            key = p.key_of(ch)
            vals = merged.get(key)
            if vals is None:
                merged[key] = list(ch.new)
            else:
                for i, v in enumerate(ch.new):
                    if v is not UNCHANGED:
                        vals[i] = v
        self._update_rows(raw, p, merged, run, keys=False)

    def _update_rows(self, raw, p: Plan, rows: dict[tuple, list], run, keys: bool) -> None:
        """UPDATE rows (key → new values), one statement per set of UNCHANGED columns."""
        groups: dict[tuple, list[tuple]] = {}
        skip = set() if keys else set(p.key_idx)
        for key, vals in rows.items():
            pat = tuple(i for i, v in enumerate(vals) if v is not UNCHANGED and i not in skip)
            groups.setdefault(pat, []).append(key)
        for set_idx, group in groups.items():
            data = {f"k{j}": [k[j] for k in group] for j in range(len(p.key_idx))}
            data.update({f"c{i}": [rows[k][i] for k in group] for i in set_idx})
            sql = p.update_sql(set_idx) if set_idx else p.count_sql()
            self._checked(raw, p, _stage(data), sql, len(group), run, p.unsettle_sql(set_idx))

    def _delete(self, raw, p: Plan, run: list[RowChange]) -> None:
        keys = list(dict.fromkeys(p.key_of(ch) for ch in run))
        data = {f"k{j}": [k[j] for k in keys] for j in range(len(p.key_idx))}
        self._checked(raw, p, _stage(data), p.delete_sql(), len(keys), run)
        if len(keys) < len(run):  # the same key deleted twice in a run: the second finds nothing
            seen: set = set()
            dups = [ch for ch in run if (k := p.key_of(ch)) in seen or seen.add(k)]
            self.applier(p.m).missing(dups, len(dups))

    def _checked(self, raw, p: Plan, stage: "pa.Table", sql: str, expected: int, run, before: str = "") -> None:
        """Run ``before`` (if any), then ``sql`` against the staging rows; fewer rows matched by
        ``sql`` than staged is divergence."""
        raw.register(STAGE, stage)
        try:
            if before:
                raw.execute(before)
            done = raw.sql(sql).to_arrow_table() if "RETURNING" in sql else None
            n = done.num_rows if done is not None else raw.execute(sql).fetchall()[0][0]
            if n >= expected:
                return
            if done is not None:
                raw.register(DONE, done)
            missing = set(raw.execute(p.missing_sql(DONE if done is not None else None)).fetchall())
        finally:
            _unregister(raw, STAGE, DONE)
        chs = [ch for ch in run if p.key_of(ch) in missing]
        self.applier(p.m).missing(chs or run[:1], expected - n)

    def _apply_one(self, raw, p: Plan, ch: RowChange) -> None:
        """Key-less FULL identity: UPDATE/DELETE exactly one row matching every sent old column."""
        old = ch.old if ch.old is not None else ch.new
        match_idx = tuple(i for i, v in enumerate(old) if v is not UNCHANGED)
        found = raw.execute(p.find_one_sql(match_idx), [old[i] for i in match_idx]).fetchall()
        if not found:
            self.applier(p.m).missing([ch], 1)
            return
        if ch.kind is ChangeKind.DELETE:
            raw.execute(p.one_row_sql(None), [found[0][0]])
            return
        set_idx = tuple(i for i, v in enumerate(ch.new) if v is not UNCHANGED)
        for cols, unsettle in ((tuple(i for i in set_idx if i in p.loose), True), (set_idx, False)):
            if cols:
                raw.execute(p.one_row_sql(cols, unsettle), [ch.new[i] for i in cols] + [found[0][0]])

    def set_next_value(self, conn: sa.Connection, m: TableMapping, column: str, next_value: int,
                       sequence: str) -> str:
        """A sequence starting at ``next_value`` as the column's default."""
        q, t = conn.dialect.identifier_preparer, self.table(m)
        seq = q.quote(sequence)
        conn.exec_driver_sql(f"DROP SEQUENCE IF EXISTS {seq} CASCADE")
        conn.exec_driver_sql(f"CREATE SEQUENCE {seq} START WITH {int(next_value)}")
        conn.exec_driver_sql(f"ALTER TABLE {q.format_table(t)} ALTER COLUMN {q.quote(column)} "
                             f"SET DEFAULT nextval('{sequence.replace(chr(39), chr(39) * 2)}')")
        return f"{self.display(m)}.{column}: sequence {sequence} starts at {next_value}"
