"""SQLite snapshot copy: COPY text rows → one positional INSERT run by the driver's executemany.

The generic path (``Target.load_copy``) turns every value into a Python object through
``GenericApplier.row_params`` (the column's ``value_loader``, value policy included), builds a dict
per row, and lets SQLAlchemy bind each value through the column type's bind processor (for SQLite:
DateTime → ISO text, Boolean → 0/1, Float → float ...).  Here each column's loader and bind
processor are composed once; values are converted a column at a time; a column whose conversion
is the identity on PostgreSQL's text is not touched, and a batch with no such column goes to
``cursor.executemany`` as the very tuples the COPY reader made.

Integer columns (int2, int4, int8 and oid sources, no value rule) are left as text when the target
column has SQLite's INTEGER affinity: SQLite then stores the integer the text names, exactly what
``int()`` binds, for every text PostgreSQL prints for those types (``-?[0-9]+`` within 64 bits);
:func:`integer_text_exact` checks the SQLite library in use does so before it is relied on.  A
numeric source under an integer target type (``'1.000'``) has a rule, so it is converted.

Contract: the rows stored are exactly the generic path's (tests/integration/test_sqlite_copy.py
compares ``typeof`` and value of every cell).  A value whose conversion fails sends its whole
batch (nothing of it written yet) through the generic path, which raises today's
:class:`~replicator.errors.ValueRangeError` naming table, column, value and key.  Everything is
written into the caller's open transaction; nothing here commits.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import Column, CopyOutput, TableMapping
from . import typemap

Convert = Callable[[str], Any]
INTEGER_FAMILIES = ("int2", "int4", "int8")
#: integer texts at the edges of what SQLite must parse exactly (19 digits, beyond a double)
PROBE_INTEGERS = (
    "0",
    "-1",
    "32767",
    "-32768",
    "4294967295",
    "-2147483648",
    "1000000000000000001",
    "9223372036854775806",
    "9223372036854775807",
    "-9223372036854775807",
    "-9223372036854775808",
)


@functools.cache
def integer_text_exact() -> bool:
    """Whether this SQLite library stores an integer text bound into an INTEGER-affinity column
    (a rowid alias too) as the very integer ``int()`` gives, up to the limits of int8."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE probe (k INTEGER PRIMARY KEY, v BIGINT)")
        db.executemany("INSERT INTO probe VALUES (?, ?)", [(s, s) for s in PROBE_INTEGERS])
        got = db.execute("SELECT typeof(k), k, typeof(v), v FROM probe ORDER BY k").fetchall()
    want = sorted(int(s) for s in PROBE_INTEGERS)
    return got == [("integer", i, "integer", i) for i in want]


def integer_affinity(declared: str) -> bool:
    """SQLite's first affinity rule: a declared type containing ``INT`` is INTEGER affinity."""
    return "INT" in declared.upper()


def declared_types(conn: Connection, t: sa.Table) -> dict[str, str]:
    """Lower-cased column name → declared type of the target table as it exists (it may have been
    created by someone else, with other types than the mapping's)."""
    args = (t.name,) if t.schema is None else (t.name, t.schema)
    marks = ", ".join("?" for _ in args)
    rows = conn.exec_driver_sql(f"SELECT name, type FROM pragma_table_info({marks})", args)
    return {name.lower(): declared for name, declared in rows}


def column_converter(
    col: Column, load: Convert, bind: Optional[Callable[[Any], Any]], declared: str
) -> Optional[Convert]:
    """PostgreSQL text → the value the generic path binds (``bind(load(text))``), or None when
    the text itself stores the same: a text column (loader ``str``, no rule, no bind processor),
    or an integer source column whose target column has INTEGER affinity (see the module)."""
    if bind is None and load is str:
        return None
    if (
        bind is None
        and typemap.family(col) in INTEGER_FAMILIES
        and load is typemap.python_loader(col)  # no rule, no target type: plain int()
        and integer_affinity(declared)
        and integer_text_exact()
    ):
        return None
    if bind is None:
        return load
    return lambda s: bind(load(s))


@dataclass(frozen=True)
class CopyPlan:
    """One table's positional INSERT and the conversions its COPY rows need."""

    sql: str
    #: (column index, PostgreSQL text → bound value) of the columns that are converted
    converters: tuple[tuple[int, Convert], ...]

    def convert(self, batch: list[tuple]) -> Sequence[tuple]:
        """The batch's bound tuples (the batch itself when no column is converted).  Raises what a
        conversion raises (the caller then takes the generic path)."""
        if not self.converters or not batch:
            return batch
        cols: list[Sequence[Any]] = list(zip(*batch))
        for i, f in self.converters:
            cols[i] = [None if v is None else f(v) for v in cols[i]]
        return list(zip(*cols))


def insert_sql(dialect: sa.Dialect, t: sa.Table, names: Sequence[str]) -> str:
    """``INSERT INTO <table> (<columns>) VALUES (?, …)`` quoted as SQLAlchemy quotes ``t`` (its
    schema included) on ``dialect``."""
    q = dialect.identifier_preparer
    cols = ", ".join(q.format_column(t.c[n]) for n in names)
    marks = ", ".join("?" for _ in names)
    return f"INSERT INTO {q.format_table(t)} ({cols}) VALUES ({marks})"


def copy_plan(target, conn: Connection, m: TableMapping) -> CopyPlan:
    """The plan of ``m`` on ``conn``: the applier's table and loaders (the generic path's own),
    each composed with its column type's SQLite bind processor."""
    applier = target.applier(m)
    t, dialect = applier.t, conn.dialect
    declared = declared_types(conn, t)
    converters = []
    for i, (col, sa_col) in enumerate(zip(m.view.columns, applier.cols)):
        bind = sa_col.type.dialect_impl(dialect).bind_processor(dialect)
        f = column_converter(col, applier.loaders[i], bind, declared.get(sa_col.name.lower(), ""))
        if f is not None:
            converters.append((i, f))
    return CopyPlan(insert_sql(dialect, t, [c.name for c in applier.cols]), tuple(converters))


def load_copy(target, conn: Connection, m: TableMapping, out: CopyOutput) -> int:
    """Load ``out.rows()`` into ``m``'s table in the caller's transaction; returns rows loaded.
    A batch with a value that does not convert is loaded (or refused) by the generic path."""
    plan = copy_plan(target, conn, m)
    n = 0
    for batch in out.rows():
        try:
            rows = plan.convert(batch)
        except Exception:  # noqa: BLE001 - the generic path raises the error users know
            applier = target.applier(m)
            conn.execute(applier.insert_stmt, [applier.row_params(r, m) for r in batch])
            n += len(batch)
            continue
        if rows:
            conn.exec_driver_sql(plan.sql, rows)  # the driver's executemany; errors as SQLAlchemy's
            n += len(rows)
    return n
