"""PostgreSQL target: the source's own column types, COPY pass-through, text values parsed by the target.

Contracts:

* **Driver and session.** Any ``postgresql://``, ``postgres://`` or ``postgresql+<driver>://`` URL is
  opened with psycopg 3 (the registry must list ``postgres`` for ``open_target`` to pick this class).
  Every session pins ``TimeZone=UTC``, ``DateStyle=ISO, YMD``, ``IntervalStyle=iso_8601`` (plus
  the source's float digits and hex bytea), appended to a ``?options=`` the URL may carry (e.g.
  ``-csearch_path=s``), so text renderings from the source parse the same way on both paths.
* **Types.** A column gets the source's ``format_type`` text (``numeric(12,2)``, ``integer[]``,
  ``timestamp with time zone``) when the type is built in, so the copy is exact and every value
  fits.  A domain gets its built-in base type.  Enums, composites, ranges and extension types get
  ``text`` holding their exact text form, unless a type of the same name exists on the target
  (``to_regtype`` when the table is first ensured).  ``reg*`` types name catalog objects that need
  not exist here: ``text`` as well.  A mapping's ``target_type`` is the column type as written;
  decimal, integer and varchar target types carry value rules (``value_rules.py``), applied on the
  source side of the COPY and in Python on the change path; a refused value is a
  :class:`ValueRangeError` naming table, column, key (and LSN).
* **Copy path** (``load_copy`` reads ``out.chunks()``): the source's ``COPY … TO STDOUT (FORMAT text)`` chunks go
  unchanged into ``COPY <table> (<columns>) FROM STDIN`` on the psycopg connection underneath the
  SQLAlchemy connection, inside the caller's transaction; one chunk in memory at a time.
* **Change path.** Values stay PostgreSQL text (``value_loader`` is ``str``) and are bound with
  psycopg's *unknown* type, so the server parses each with the input function of the column it is
  compared with or assigned to: the real target column type, whatever created the table.  A change
  that matched no row is known from its own statement's row count (see :class:`PgApplier`).
* **Exactly one row** for key-less FULL identity through ``ctid``, NULL-safe; types whose ``=`` is
  loose or missing (interval, floats, numeric, citext, json, geometric: all but
  :data:`EXACT_EQUALITY`) are matched on their text form.  ``truncate`` and ``clear`` are one
  ``TRUNCATE`` (transactional in PostgreSQL).  Nothing here commits.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import UserDefinedType

from ..dsn import connect_timeout, libpq_timeout
from ..errors import TargetError, ValueRangeError
from ..model import Column, CopyOutput, TableMapping
from . import names, swap, value_rules
from .base import Target
from .postgres_apply import PgApplier
from .typemap import Conv

log = logging.getLogger(__name__)

#: libpq ``options`` every target session carries (after the URL's own, so these win).
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601"
    " -c extra_float_digits=3 -c bytea_output=hex"
)
#: pg_type OIDs below this are built in (FirstNormalObjectId); extensions and user types are above.
FIRST_USER_OID = 16384
#: built-in types whose binary COPY form every server version reads back as it was sent (the
#: common scalar types; vectors such as oidvector, arrays and the rest are copied as text)
BINARY_SAFE = frozenset(
    {16, 17, 20, 21, 23, 25, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950, 3802}
)
#: types whose input looks names up in the catalog: stored as their text form.
REG_TYPES = frozenset(
    {
        "regproc",
        "regprocedure",
        "regoper",
        "regoperator",
        "regclass",
        "regtype",
        "regconfig",
        "regdictionary",
        "regnamespace",
        "regrole",
        "regcollation",
    }
)


class PgType(UserDefinedType):
    """A column type given as PostgreSQL type text (``numeric(40,20)``); binds values untouched.

    ``render_bind_cast`` stays False: parameters reach psycopg as ``str``, which it sends with the
    unknown type OID, and the server types them from the column they meet.
    """

    cache_ok = True

    def __init__(self, spec: str):
        self.spec = spec

    def get_col_spec(self, **kw) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"PgType({self.spec!r})"


def _driver_url(url: sa.URL) -> sa.URL:
    return url.set(drivername="postgresql+psycopg")


class _Chunks:
    """The source's COPY chunks, remembering whether the source (not the target) failed, and the
    last few chunks with their first line numbers (to name the row of a refused value)."""

    KEEP = 4

    def __init__(self, chunks: Iterable[bytes]):
        self.chunks, self.failed = chunks, False
        self.recent: list[tuple[int, bytes]] = []
        self.lines = 0

    def __iter__(self):
        try:
            for chunk in self.chunks:
                self.recent = (self.recent + [(self.lines + 1, chunk)])[-self.KEEP :]
                self.lines += chunk.count(b"\n")
                yield chunk
        except Exception:  # not GeneratorExit: a target error closes this generator too
            self.failed = True
            raise

    def line(self, n: int) -> list[str] | None:
        """COPY text line ``n`` (1-based) split into raw fields, when still held."""
        for first, chunk in self.recent:
            lines = chunk.split(b"\n")
            if first <= n < first + len(lines) - 1:
                return lines[n - first].decode("utf-8", "replace").split("\t")
        return None


class PostgresTarget(Target):
    """PostgreSQL through psycopg 3: exact types, COPY pass-through, server-side value parsing."""

    name = "postgresql"
    key_after_load = True  # copy phase of 1M pgbench accounts 1.8 s → 1.5 s (key built after)

    def transient(self, e: BaseException) -> bool:
        return isinstance(getattr(e, "orig", None), psycopg.OperationalError) or super().transient(e)

    keeps_signed_zero = True
    #: families psycopg returns as the source renders them; the rest are read back as text
    READ_NATIVE = frozenset({"int2", "int4", "int8", "text", "varchar", "bpchar"})

    def verify_read_type(self, col: Column, family: str) -> Any:
        """PostgreSQL's own text, identical to the source's rendering."""
        return sa.Text() if family not in self.READ_NATIVE else None

    def byte_order(self, column: Any, bpchar: bool) -> Any:
        """Byte order is the C collation (a char(n) column keeps its pad semantics)."""
        return (column if bpchar else sa.cast(column, sa.Text)).collate("C")

    copy_options = "FORMAT text"
    row_id = "ctid"
    applier_class = PgApplier
    decimal_holds_nan = True
    holds_no_columns = True  # and the copy and the apply keep their row count

    def __init__(self, url: str):
        super().__init__(url)
        self.url = _driver_url(self.url)
        self._target_types: set[str] = set()
        self._formats: dict[TableMapping, str] = {}
        self._columns: dict[tuple, dict[str, str]] = {}  # table key → its columns' actual types
        self._role_warned = False

    # ---------------------------------------------------------------- connections
    def create_engine(self) -> Engine:
        """psycopg 3 engine; the URL's ``options`` travel with the pinned session settings."""
        opts = self.url.query.get("options", "")
        opts = " ".join(opts) if isinstance(opts, tuple) else opts
        args = {"options": f"{opts} {SESSION_OPTIONS}".strip()}
        if "application_name" not in self.url.query:
            args["application_name"] = "replicator"
        if "connect_timeout" not in self.url.query:  # nothing waits forever (DESIGN.md 12)
            args["connect_timeout"] = libpq_timeout(connect_timeout())
        url = self.url.difference_update_query(["options"])
        eng = sa.create_engine(url, hide_parameters=True, connect_args=args)
        sa.event.listen(eng, "connect", self._replica_role)
        return eng

    def _replica_role(self, dbapi_conn, _record) -> None:
        """``session_replication_role = replica``, as PostgreSQL's own apply worker: user and
        foreign-key triggers do not fire for replicated rows.  It takes a superuser (or, on 15+, a
        role granted SET on it); without that the session keeps its role, said once."""
        try:
            dbapi_conn.execute("SET session_replication_role = replica")
            dbapi_conn.commit()
        except psycopg.errors.InsufficientPrivilege:
            dbapi_conn.rollback()
            if not self._role_warned:
                self._role_warned = True
                log.warning(
                    "the PostgreSQL target user may not set session_replication_role: triggers "
                    "and foreign-key checks on the target tables fire for replicated rows (grant "
                    "SET ON PARAMETER session_replication_role, or connect as a superuser)"
                )

    # ---------------------------------------------------------------- schema
    def type_spec(self, col: Column) -> str:
        """The target type text for a source column (see the module docstring)."""
        if col.type_name.removesuffix("[]") in REG_TYPES:
            return "text[]" if col.type_name.endswith("[]") else "text"
        if col.type_oid < FIRST_USER_OID:
            return col.type_name
        if col.base_oid and col.base_oid < FIRST_USER_OID:
            return col.base_name
        for name in (col.type_name, col.base_name):
            if name and name in self._target_types:
                return name
        return "text"

    def conv(self, col: Column) -> Conv:
        """Identity: the target's input function parses PostgreSQL's own text rendering."""
        return Conv(PgType(self.type_spec(col)))

    def text_conv(self, col: Column) -> Conv:
        return Conv(PgType("text"))

    def target_type(self, expr: str) -> PgType:
        return PgType(expr)

    def identifier_problems(self, m: TableMapping) -> list[str]:
        """Names longer than 63 bytes (only a mapping's renames can make them)."""
        return names.bad_names(m, "PostgreSQL", self.display(m), names.postgres_name_problem)

    def ensure_table(self, conn: Connection, m: TableMapping) -> bool:
        """Look up user-defined types on the target first, then create or check the table; the
        table's actual column types are remembered (:meth:`copy_format`)."""
        if self.table_key(m) not in self._tables:
            self._probe_types(conn, m.view.columns)
        created = super().ensure_table(conn, m)
        types = conn.exec_driver_sql(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
            "WHERE attrelid = CAST(%(t)s AS regclass) AND attnum > 0 AND NOT attisdropped",
            {"t": self.quoted(conn, m)},
        )
        self._columns[self.table_key(m)] = {str(n): str(t) for n, t in types}
        self._formats.pop(m, None)
        return created

    def _probe_types(self, conn: Connection, cols: Sequence[Column]) -> None:
        """Remember which of the source's non-built-in type names also exist on the target."""
        names = {n for c in cols if c.type_oid >= FIRST_USER_OID for n in (c.type_name, c.base_name) if n}
        probe = sa.text("SELECT to_regtype(:n) IS NOT NULL")
        found = {n for n in names - self._target_types if conn.execute(probe, {"n": n}).scalar()}
        if found:
            self._target_types |= found
            self._convs.clear()  # a user type found here changes the column type of its columns

    def quoted(self, conn: Connection, m: TableMapping) -> str:
        """The schema-qualified, quoted table name as SQLAlchemy's preparer renders it."""
        return conn.dialect.identifier_preparer.format_table(self.table(m))

    # ---------------------------------------------------------------- copy
    def copy_statement(self, m: TableMapping) -> sql.Composed:
        """``COPY <table> (<columns>) FROM STDIN``; no column list for a table without columns
        (its rows are empty lines, and their number is all there is to copy)."""
        t = self.table(m)
        name = sql.Identifier(t.schema, t.name) if t.schema else sql.Identifier(t.name)
        cols: sql.Composable = sql.SQL(", ").join(sql.Identifier(c.name) for c in m.view.columns)
        cols = sql.SQL(" ({})").format(cols) if m.view.columns else sql.SQL("")
        return sql.SQL("COPY {}{} FROM STDIN ({})").format(name, cols, sql.SQL(self.copy_format(m)))

    def copy_expressions(self, m: TableMapping) -> list[str]:
        return self.sql_copy_expressions(m)

    def copy_format(self, m: TableMapping) -> str:
        """``FORMAT binary`` when every column passes through unchanged: a common built-in scalar
        type (``BINARY_SAFE``) stored as the very same type (as the mapping says, and as the
        table that :meth:`ensure_table` found or made has it), with no conversion or value rule
        on the source side.  The bytes then go from the source's send functions to the target's
        receive functions with no text formatting and parsing on either server (copy phase of 1M
        pgbench accounts 1.5 s → 1.1-1.2 s).  Anything else, or a table not yet ensured, is
        copied as text, which the target parses."""
        if m not in self._formats:
            actual = self._columns.get(self.table_key(m), {})
            same = len(m.view.columns) == len(m.source_table.columns) and all(
                self._passes_through(vc, oc, e) and actual.get(vc.name) == oc.type_name
                for vc, oc, e in zip(m.view.columns, m.source_table.columns, self.copy_expressions(m))
            )
            self._formats[m] = "FORMAT binary" if same else self.copy_options
        return self._formats[m]

    def _passes_through(self, vc: Column, oc: Column, expr: str) -> bool:
        spec = getattr(self.column_conv(vc).ddl, "spec", None)
        return oc.type_oid in BINARY_SAFE and not oc.base_oid and expr == "{col}" and spec == oc.type_name

    def load_copy(self, conn: Connection, m: TableMapping, out: CopyOutput) -> int:
        """Stream COPY chunks into the table, in the caller's transaction; returns rows loaded.

        Target refusals become :class:`TargetError`; source failures and dropped connections
        (transient: the pipeline retries) propagate unchanged.
        """
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)  # the engine's driver is psycopg (_driver_url)
        src = _Chunks(out.chunks())
        try:
            with raw.cursor() as cur:
                with cur.copy(self.copy_statement(m)) as cp:
                    for chunk in src:
                        cp.write(memoryview(chunk))
                return cur.rowcount
        except psycopg.Error as e:
            if src.failed or isinstance(e, psycopg.OperationalError):
                raise
            if value_rules.MARK in str(e):
                raise self._range_error(m, e, src) from None
            raise TargetError(
                f"COPY of {m.label} into target {self.display(m)} failed: {str(e).strip()}"
            ) from e

    def _range_error(self, m: TableMapping, e: psycopg.Error, src: _Chunks) -> ValueRangeError:
        """A value the copy query marked as refused (``value_rules.MARK``): name column, key and value."""
        where = re.search(r"line (\d+), column (.*?): ", e.diag.context or "")
        row = src.line(int(where.group(1))) if where else None
        names_ = m.view.column_names
        col = where.group(2) if where and where.group(2) in names_ else "?"
        value = next((f for f in row or () if value_rules.MARK in f), "?")
        key = (
            ", ".join(f"{k}={value_rules.unmark(row[names_.index(k)])!r}" for k in m.view.key) if row else "?"
        )
        return ValueRangeError(
            f"{m.label}.{col}: value {value_rules.unmark(value)[:60]!r} cannot be stored in the postgresql "
            f"target table {self.display(m)}: its column type refuses it (snapshot copy, key "
            f"{key or '?'}); choose a value policy (error | null | clamp | text) or a column type "
            f"in the mapping"
        )

    def clear(self, conn: Connection, m: TableMapping) -> None:
        """Empty the table before a (re-)copy: TRUNCATE, rolled back with the transaction."""
        self.truncate(conn, [m])

    # ---------------------------------------------------------------- changes
    def truncate(self, conn: Connection, ms: Sequence[TableMapping]) -> None:
        """One ``TRUNCATE`` of all given tables (atomic, transactional)."""
        if ms:
            conn.exec_driver_sql("TRUNCATE " + ", ".join(self.quoted(conn, m) for m in ms))

    # ---------------------------------------------------------------- re-sync beside the table
    def name_problem(self, name: str) -> str | None:
        return names.postgres_name_problem(name)

    def swap_table(self, conn: Connection, m: TableMapping, shadow: TableMapping) -> None:
        """The generic swap (transactional here); the table swapped in then gives its primary key
        the old table's key name (else it keeps the shadow's, and key names drift per re-sync)."""
        old = self._key_name(conn, m)
        super().swap_table(conn, m, shadow)
        new = self._key_name(conn, m)
        if old and new and old != new:
            q = conn.dialect.identifier_preparer
            conn.exec_driver_sql(
                f"ALTER TABLE {swap.quoted(conn, m.target_name, m.target_schema)} "
                f"RENAME CONSTRAINT {q.quote_identifier(new)} TO {q.quote_identifier(old)}"
            )

    @staticmethod
    def _key_name(conn: Connection, m: TableMapping) -> str | None:
        """The primary key constraint's name of the table of ``m`` (None: no key, or no table)."""
        return conn.exec_driver_sql(
            "SELECT conname FROM pg_catalog.pg_constraint WHERE contype = 'p' "
            "AND conrelid = to_regclass(%(t)s)",
            {"t": swap.quoted(conn, m.target_name, m.target_schema)},
        ).scalar()

    def set_next_value(
        self, conn: Connection, m: TableMapping, column: str, next_value: int, sequence: str
    ) -> str:
        """A sequence owned by the column, as its default, positioned at ``next_value``."""
        q, t = conn.dialect.identifier_preparer, self.table(m)
        seq = q.format_table(sa.Table(sequence, sa.MetaData(), schema=t.schema))
        conn.exec_driver_sql(
            f"CREATE SEQUENCE IF NOT EXISTS {seq} OWNED BY {q.format_table(t)}.{q.quote(column)}"
        )
        conn.exec_driver_sql(
            f"ALTER TABLE {q.format_table(t)} ALTER COLUMN {q.quote(column)} "
            f"SET DEFAULT nextval('{seq.replace(chr(39), chr(39) * 2)}'::regclass)"
        )
        conn.execute(
            sa.text(f"SELECT setval('{seq.replace(chr(39), chr(39) * 2)}'::regclass, :v, false)"),
            {"v": next_value},
        )
        return f"{self.display(m)}.{column}: sequence {sequence} set to {next_value}"
