"""The one Target interface, and its generic SQLAlchemy implementation.

A target receives three kinds of work, always inside a transaction it opened with :meth:`connect`:

* ``ensure_table`` – create the mapped table when missing, else check it has every column;
* ``load_copy`` – one table's snapshot copy, a :class:`~replicator.model.CopyOutput` the target
  reads either as the raw COPY output in ``copy_format(m)`` format (``chunks()``) or as batches of
  PostgreSQL-text tuples (``rows()``);
* ``apply`` / ``truncate`` – row changes of one table, in source order.

Contract: nothing here commits except :meth:`connect`'s context exit, so the pipeline can write the
progress row (``state.py``) in the same transaction as the data.  A subclass per database overrides
only what differs (bulk loader, row locator, type map); every other SQLAlchemy dialect uses this
class as it is.

Types: a subclass describes each column by :meth:`Target.conv` (a :class:`~.types.Conv`: column
type, source SQL of the copy, Python conversion of the change path, value rule).  This class
applies the mapping's ``target_type`` and ``policy`` (``value_rules.py``) on top, identically for
``copy_expressions`` (copy path) and ``value_loader`` (change path and row copies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .. import modes
from ..errors import TargetError
from ..model import Column, CopyOutput, TableMapping
from . import mode_ops, pgarray, swap, typemap, value_rules
from .applier import GenericApplier
from .typemap import Conv

log = logging.getLogger(__name__)

FAMILY_TYPES: dict[str, Any] = {
    "bool": sa.Boolean(),
    "bytes": sa.LargeBinary(),
    "int2": sa.SmallInteger(),
    "int4": sa.Integer(),
    "int8": sa.BigInteger(),
    "float4": sa.Float(),
    "float8": sa.Float(),
    "numeric": sa.Numeric(),
    "date": sa.Date(),
    "time": sa.Time(),
    "timestamp": sa.DateTime(),
    "timestamptz": sa.DateTime(),
    "uuid": sa.Uuid(),
    "json": sa.Text(),
    "text": sa.Text(),
    "varchar": sa.Text(),
    "bpchar": sa.Text(),
    "array": sa.Text(),
}


def quote_braceless(name: str) -> str:
    """A quoted PostgreSQL identifier without ``{`` or ``}`` (so a name like ``a{col}`` cannot
    read as the copy query's ``{col}`` placeholder): braces become ``U&"..."`` escapes."""
    if "{" not in name and "}" not in name:
        return '"' + name.replace('"', '""') + '"'
    body = name.replace("\\", "\\\\").replace('"', '""').replace("{", "\\007B").replace("}", "\\007D")
    return 'U&"' + body + '"'


class Target:
    """Generic SQLAlchemy target.  Subclasses: duckdb, sqlite, mysql, postgres (one file each)."""

    name = "generic"
    #: the options of the source's ``COPY … TO STDOUT`` whose output ``load_copy`` reads
    copy_options = "FORMAT text"
    #: an embedded file target is opened only while a batch is written (DESIGN.md).
    embedded = False
    #: pseudo-column that names one physical row ('rowid', 'ctid'); None: count-based fallback.
    row_id: str | None = None
    family_types = FAMILY_TYPES
    applier_class = GenericApplier
    #: (precision, scale) of a bare DECIMAL target type here; None: unbounded
    decimal_default: tuple[int, int] | None = None
    #: whether a DECIMAL target type here holds NaN (PostgreSQL's numeric does)
    decimal_holds_nan = False
    #: whether a table here may have no columns (PostgreSQL's may, and still hold rows)
    holds_no_columns = False
    #: most columns a table here holds, and why (None: no limit a PostgreSQL table can reach)
    max_columns: int | None = None
    max_columns_why = ""

    def __init__(self, url: str):
        self.url = sa.make_url(url)
        self._engine: Engine | None = None
        self._tables: dict[tuple, sa.Table] = {}
        self._appliers: dict[TableMapping, GenericApplier] = {}
        self._convs: dict[Column, Conv] = {}
        self.metadata = sa.MetaData()
        self.shadows: dict[tuple, str] = {}  # shadow table key → its live table's name (swap.py)

    # ---------------------------------------------------------------- connections
    def create_engine(self) -> Engine:
        """Engines never log bound values (``hide_parameters``)."""
        return sa.create_engine(self.url, hide_parameters=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.create_engine()
        return self._engine

    @contextlib.contextmanager
    def connect(self, readonly: bool = False) -> Iterator[Connection]:
        """One target transaction: commits when the block ends normally, rolls back otherwise.
        ``readonly`` tells databases that lock for writing (SQLite) that this one only reads."""
        with self.engine.connect() as conn:
            if readonly:
                conn = conn.execution_options(replicator_readonly=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep the target open across many short transactions (the snapshot copy), where
        opening it is costly; a no-op for server databases."""
        yield

    def describe(self) -> str:
        """The URL for humans: never shows the password."""
        return self.url.render_as_string(hide_password=True)

    # ---------------------------------------------------------------- capabilities
    def transient(self, e: BaseException) -> bool:
        """Whether a (SQLAlchemy-wrapped) driver error of this database goes away by itself: a
        dropped connection, a restarting server, a lock; the mirror retries those and stops on
        the rest.  Each database knows its own codes."""
        return bool(getattr(e, "connection_invalidated", False)) or isinstance(e, sa.exc.InterfaceError)

    def limit_lock_wait(self, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock another process holds on the target (an embedded
        file held by a writer); databases that never wait for such locks ignore it."""

    # ---------------------------------------------------------------- reading back (verify)
    #: whether -0.0 stays apart from 0.0 in this database's floats (verify compares the sign then)
    keeps_signed_zero = False
    #: whether a key bound as text must be cast in SQL to the column type (it converts there)
    casts_bound_text = False
    #: whether a reader keeps the writer (a running mirror) out while it reads (a DuckDB file)
    readers_block_writer = False

    def verify_read_type(self, col: Column, family: str) -> Any:
        """The type a column is read back as when its driver value would lose something (None:
        the driver's value as it is)."""
        return None

    def byte_order(self, column: Any, bpchar: bool) -> Any:
        """``column`` (text) ordered by its bytes, as the source orders the text it sends (this
        database's text already sorts so: binary collations)."""
        return column

    def read_only_engine(self, memory_limit: str, temp_dir: str) -> Engine:
        """An engine that only reads (an embedded file opened read-only, so a running mirror can
        still write it between reads); server databases: the target's own engine."""
        return self.engine

    # ---------------------------------------------------------------- types
    def conv(self, col: Column) -> Conv:
        """How this database stores a source column by its type (override per database).

        Generic dialects: the SQLAlchemy type of the family (text for the rest), arrays as JSON
        text, and the range of Python's datetime and time for the values bound through them."""
        fam = typemap.family(col)
        if fam == "array":
            return Conv(sa.Text(), pgarray.array_json(col), rule=value_rules.array_rule("JSON text"))
        rule = None
        if fam in ("date", "timestamp", "timestamptz"):
            rule = value_rules.year_rule(fam, "Python's datetime")
        elif fam == "time":
            rule = value_rules.time_rule("Python's time")
        elif fam in ("float4", "float8", "numeric"):  # an unknown dialect may store NaN as NULL
            rule = value_rules.finite_float_rule(f"a generic {self.url.get_backend_name()} number")
        return Conv(self.family_types.get(fam, sa.Text()), typemap.python_loader(col), rule=rule)

    def text_conv(self, col: Column) -> Conv:
        """PostgreSQL's exact text in this database's text type (the ``text`` policy)."""
        return Conv(sa.Text())

    def target_type(self, expr: str) -> Any:
        """A mapping's target type expression as a column type (rendered verbatim in DDL)."""
        return typemap.DDL(expr)

    def column_conv(self, col: Column) -> Conv:
        """:meth:`conv` with the mapping's ``target_type`` and ``text`` policy applied (cached); the
        ``text`` policy makes the column this database's text type even with a ``target_type``."""
        if col not in self._convs:
            if col.policy == "text":  # the text type, whatever target_type says
                c = self.text_conv(col)
            else:
                c = self.conv(typemap.target_type_column(col, self.decimal_default))
                if col.target_type:
                    rule = typemap.target_type_rule(
                        col, self.name, self.decimal_holds_nan, self.decimal_default
                    )
                    c = dataclasses.replace(c, ddl=self.target_type(col.target_type), rule=rule or c.rule)
            self._convs[col] = c
        return self._convs[col]

    def column_type(self, col: Column) -> Any:
        """The target column type for a source column."""
        return self.column_conv(col).ddl

    def value_loader(self, col: Column):
        """PostgreSQL text → bound value with the column's policy; serves copy rows and changes."""
        c = self.column_conv(col)
        return value_rules.apply_policy(c.rule, col.policy, c.load)

    @staticmethod
    def nullable(c: Column, m: TableMapping) -> bool:
        """NOT NULL only when the source says so and no policy may store NULL."""
        return c.name not in m.view.primary_key and (not c.not_null or c.policy in ("null", "clamp"))

    def table(self, m: TableMapping) -> sa.Table:
        """The SQLAlchemy Table for a mapping (identifiers are quoted by the dialect)."""
        key = self.table_key(m)
        if key not in self._tables:
            cols = [
                sa.Column(c.name, self.column_type(c), nullable=self.nullable(c, m)) for c in m.view.columns
            ]
            pk = () if self.key_after_load else m.view.primary_key
            args = [sa.PrimaryKeyConstraint(*pk)] if pk else []
            self._tables[key] = sa.Table(
                m.target_name, self.metadata, *cols, *args, schema=m.target_schema, quote=True
            )
        return self._tables[key]

    @staticmethod
    def table_key(m: TableMapping) -> tuple:
        """Tables are cached per target name (two mappings of one source table may differ)."""
        return (m.target_schema, m.target_name)

    def ensure_table(self, conn: Connection, m: TableMapping) -> bool:
        """Create the target table when missing (returns True); else check its columns exist.
        A table with a mode gets its ``<table>_current`` view too (target/mode_ops.py)."""
        t = self.table(m)
        insp = sa.inspect(conn)
        if not insp.has_table(t.name, schema=t.schema):
            try:
                t.create(conn)
                if m.mode is not None:
                    mode_ops.create_current_view(self, conn, m, modes.plain(m).view.column_names)
            except sa.exc.DBAPIError as e:
                if self.transient(e):
                    raise
                raise TargetError(
                    f"{m.label}: creating target table {self.display(m)} failed: "
                    f"{str(e.orig).strip().splitlines()[0]}"
                ) from e
            return True
        have = {c["name"] for c in insp.get_columns(t.name, schema=t.schema)}
        missing = [c.name for c in t.columns if c.name not in have]
        if missing:
            raise TargetError(
                f"target table {self.display(m)} exists but lacks column(s) {', '.join(missing)} "
                f"replicated from {m.label}: add them, or drop the target table so it is created"
            )
        return False

    # ---------------------------------------------------------------- schema changes
    def forget(self, m: TableMapping) -> None:
        """Drop cached table objects of ``m`` (its columns changed)."""
        t = self._tables.pop(self.table_key(m), None)
        if t is not None:
            self.metadata.remove(t)

    def add_columns(self, conn: Connection, m: TableMapping, names: Sequence[str]) -> None:
        """ALTER TABLE … ADD COLUMN for each of ``names`` (target names in ``m``) not yet there."""
        self.forget(m)
        t, q = self.table(m), conn.dialect.identifier_preparer
        have = {c["name"] for c in sa.inspect(conn).get_columns(t.name, schema=t.schema)}
        for n in [n for n in names if n not in have]:  # idempotent: a replayed Relation re-adds
            typ = t.c[n].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {q.format_table(t)} ADD COLUMN {q.quote(n)} {typ}")
        if m.mode is not None:  # the current view shows the new columns too
            mode_ops.create_current_view(self, conn, m, modes.plain(m).view.column_names)

    def fill_column(self, conn: Connection, m: TableMapping, name: str, text: str) -> None:
        """Set column ``name`` of every existing row to the value PostgreSQL's ``text`` renders."""
        col = m.view.column(name)
        conn.execute(sa.update(self.table(m)).values({name: self.value_loader(col)(text)}))

    # ---------------------------------------------------------------- re-sync beside the table
    #: whether DDL joins the caller's transaction (MySQL's commits by itself)
    transactional_ddl = True

    def name_problem(self, name: str) -> str | None:
        """Why this database cannot name a table ``name`` (None: it can)."""
        return None

    def shadow(self, m: TableMapping) -> TableMapping:
        """``m`` written to its shadow table ``<name>__resync`` instead, where a re-sync copies
        beside the live table (within :meth:`name_problem`'s limits: swap.py)."""
        return swap.shadow(self, m)

    def unshadow(self, m: TableMapping) -> TableMapping | None:
        """The live table's mapping when ``m`` is one :meth:`shadow` made (None: it is not)."""
        return swap.unshadow(self, m)

    def swap_table(self, conn: Connection, m: TableMapping, shadow: TableMapping) -> None:
        """Put the ``shadow`` table in place of the live table of ``m`` and drop the old one, in
        the caller's transaction (DROP TABLE, ALTER TABLE … RENAME TO): readers see the old rows
        until it commits, the new ones after.  A shadow that is gone was swapped in already."""
        swap.drop_and_rename(conn, m, shadow)

    # ---------------------------------------------------------------- cutover
    def set_next_value(
        self, conn: Connection, m: TableMapping, column: str, next_value: int, sequence: str
    ) -> str:
        """Make new rows of ``column`` start at ``next_value`` (cutover); returns what was done."""
        return f"{self.display(m)}.{column}: not supported on {self.name}; set it by hand to {next_value}"

    def identifier_problems(self, m: TableMapping) -> list[str]:
        """Names this database cannot keep apart or hold (case-insensitive collisions, length
        limits), one line each naming both names; checked before anything is created."""
        return []

    def limit_problems(self, m: TableMapping) -> list[str]:
        """What this database cannot hold of the table at all (no columns, too many columns; a
        subclass adds row size and key length), one line each naming the table, the limit and the
        fix; checked while planning, before anything is created."""
        n = len(m.view.columns)
        leave_out = "leave the table out (--tables, or exclude it from the mapping)"
        if n == 0 and not self.holds_no_columns:
            return [
                f"{m.label}: has no columns, and a {self.name} table needs at least one (target "
                f"{self.display(m)}): add a column on the source, or {leave_out}"
            ]
        if self.max_columns is not None and n > self.max_columns:
            return [
                f"{m.label}: {n} columns, more than the {self.max_columns} a {self.name} table "
                f"holds ({self.max_columns_why}): leave columns out in the mapping "
                f"(columns.exclude), or {leave_out}"
            ]
        return []

    def display(self, m: TableMapping) -> str:
        return f"{m.target_schema}.{m.target_name}" if m.target_schema else m.target_name

    # ---------------------------------------------------------------- copy
    def copy_expressions(self, m: TableMapping) -> list[str]:
        """Per column, the source SELECT expression of the snapshot copy (``{col}``: the quoted
        column name).  Here: PostgreSQL's plain text, which ``load_copy`` converts like changes;
        a database that loads the COPY output as it is asks for :meth:`sql_copy_expressions`."""
        return [c.source_sql or "{col}" for c in m.view.columns]

    def copy_format(self, m: TableMapping) -> str:
        """The options of the source's ``COPY … TO STDOUT`` whose output ``load_copy`` reads for
        ``m`` (here: ``copy_options``, whatever the table)."""
        return self.copy_options

    def sql_copy_expressions(self, m: TableMapping) -> list[str]:
        """The columns' copy forms computed by the source: each column's conversion, with its
        policy applied to the values its rule refuses (for loaders that take the bytes as they
        are: DuckDB, MySQL, PostgreSQL)."""
        out = []
        src = m.source_table.columns
        for i, vc in enumerate(m.view.columns):
            oc = src[i] if i < len(src) else vc  # beyond the source's: a mode's column (constant)
            c = self.column_conv(vc)
            if c.copy == "{v}" and (c.rule is None or vc.policy == "text"):
                out.append(vc.source_sql or "{col}")
            else:  # complex: the identifier is quoted here (the template may hold braces)
                ident = f"({vc.source_sql})" if vc.source_sql else quote_braceless(oc.name)
                out.append(value_rules.copy_sql(c.rule, vc.policy, c.copy, ident, oc.type_name))
        return out

    def clear(self, conn: Connection, m: TableMapping) -> None:
        """Remove the table's target rows before a (re-)copy."""
        conn.execute(sa.delete(self.table(m)))

    def load_copy(self, conn: Connection, m: TableMapping, out: CopyOutput) -> int:
        """Bulk-load one table's snapshot copy (``out``: read its ``chunks()`` or its ``rows()``,
        once) into the caller's transaction; returns rows loaded.  Here: batches of text tuples
        through executemany."""
        applier = self.applier(m)
        ins = applier.insert_stmt
        n = 0
        for batch in out.rows():
            rows = [applier.row_params(r, m) for r in batch]
            if rows:
                conn.execute(ins, rows)
                n += len(rows)
        return n

    #: whether a table this tool creates gets its primary key after the snapshot copy's load
    #: (:meth:`finish_copy`) instead of before: where building the index in bulk is faster
    key_after_load = False

    def finish_copy(self, conn: Connection, m: TableMapping) -> None:
        """After every row of the table's snapshot copy is in (one ``load_copy``, or several in
        separate transactions for a split table), in the transaction that marks it copied: what
        the database builds faster after a bulk load than during it.  Here: the primary key,
        when ``key_after_load`` and the table lacks one."""
        pk = m.view.primary_key
        if not (self.key_after_load and pk):
            return
        if self.has_primary_key(conn, m):
            return
        t, q = self.table(m), conn.dialect.identifier_preparer
        try:
            conn.exec_driver_sql(
                f"ALTER TABLE {q.format_table(t)} ADD PRIMARY KEY ({', '.join(q.quote(c) for c in pk)})"
            )
        except sa.exc.IntegrityError as e:
            first = str(e.orig).strip().splitlines()[0]
            raise TargetError(
                f"adding the primary key ({', '.join(pk)}) of {self.display(m)} (from {m.label}) after "
                f"its snapshot copy failed: {first}; the source rows hold duplicate keys under the "
                f"target's comparison rules, or the key columns were changed by the mapping"
            ) from None

    def has_primary_key(self, conn: Connection, m: TableMapping) -> bool:
        """Whether the target table of ``m`` has a primary key (SQLAlchemy's reflection)."""
        t = self.table(m)
        return bool(sa.inspect(conn).get_pk_constraint(t.name, t.schema).get("constrained_columns"))

    # ---------------------------------------------------------------- changes
    def applier(self, m: TableMapping) -> GenericApplier:
        """The applier of this exact mapping (options such as on_missing_row are part of it)."""
        if m not in self._appliers:
            self._appliers[m] = self.applier_class(self, m)
        return self._appliers[m]

    def apply(self, conn: Connection, m: TableMapping, changes: Sequence) -> None:
        """Apply row changes of one table in order; a missing row raises DivergenceError."""
        self.applier(m).apply(conn, changes)

    def truncate(self, conn: Connection, ms: Sequence[TableMapping]) -> None:
        """Empty the target tables (source TRUNCATE); DELETE keeps it transactional everywhere."""
        for m in ms:
            conn.execute(sa.delete(self.table(m)))

    # ---------------------------------------------------------------- exactly one row
    def delete_one(self, conn: Connection, t: sa.Table, match) -> int:
        """Delete exactly one row matching ``match`` (FULL identity may have duplicates)."""
        if self.row_id:
            rid: sa.ColumnClause[Any] = sa.literal_column(self.row_id)
            sub = sa.select(rid).select_from(t).where(match).limit(1).scalar_subquery()
            return conn.execute(sa.delete(t).where(rid == sub)).rowcount
        return self._rewrite_one(conn, t, match, None)

    def update_one(self, conn: Connection, t: sa.Table, match, sets: dict) -> int:
        """Update exactly one row matching ``match``."""
        if self.row_id:
            rid: sa.ColumnClause[Any] = sa.literal_column(self.row_id)
            sub = sa.select(rid).select_from(t).where(match).limit(1).scalar_subquery()
            return conn.execute(sa.update(t).where(rid == sub).values(sets)).rowcount
        return self._rewrite_one(conn, t, match, sets)

    def _rewrite_one(self, conn: Connection, t: sa.Table, match, sets: dict | None) -> int:
        """Portable exactly-one: read the duplicates, delete them all, put back all but one."""
        rows = [dict(r._mapping) for r in conn.execute(sa.select(t).where(match))]
        if not rows:
            return 0
        conn.execute(sa.delete(t).where(match))
        keep = rows[1:]
        if sets is not None:
            keep.append({**rows[0], **{c.name: v for c, v in sets.items()}})
        if keep:
            conn.execute(sa.insert(t), keep)
        return 1
