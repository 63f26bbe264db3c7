"""Row-by-row comparison of a source table with its target copy (test helper, no mocks).

Values are normalized only where the documented type map says a target stores another form of the
same value (naive UTC for timestamptz, text for numeric/uuid on SQLite, bytes for memoryview).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import psycopg
import sqlalchemy as sa
from psycopg import sql

from replicator.dsn import source_conninfo
from replicator.target import target_class
from tests.targets import engine_url


def norm(v):
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    if isinstance(v, bool):
        return int(v)
    return v


def _key(row):
    return tuple((v is None, repr(v)) for v in row)


def source_rows(dsn: str, schema: str, table: str, columns: list[str]) -> list[tuple]:
    with psycopg.connect(source_conninfo(dsn)) as c:
        q = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(x) for x in columns), sql.Identifier(schema, table)
        )
        return sorted((tuple(norm(v) for v in r) for r in c.execute(q)), key=_key)


def target_rows(url: str, table: str, columns: list[str], schema: str | None = None) -> list[tuple]:
    target_class(url)  # loads the target module: it may teach SQLAlchemy to reflect its database
    eng = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            t = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=c)
            for col in t.c:  # MySQL DOUBLE reflects as a decimal-returning type: read floats as floats
                if isinstance(col.type, sa.Float):
                    col.type.asdecimal = False
            q = sa.select(*[t.c[name] for name in columns])
            return sorted((tuple(norm(v) for v in r) for r in c.execute(q)), key=_key)
    finally:
        eng.dispose()


def assert_same(
    dsn: str,
    schema: str,
    table: str,
    url: str,
    target_table: str | None = None,
    columns: list[str] | None = None,
    target_schema: str | None = None,
) -> int:
    """Assert the target table holds exactly the source rows (multiset, row by row); returns count."""
    if columns is None:
        with psycopg.connect(dsn) as c:
            columns = [
                r[0]
                for r in c.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                    (sql.Identifier(schema, table).as_string(c),),
                )
            ]
    src = source_rows(dsn, schema, table, columns)
    dst = target_rows(url, target_table or table, columns, target_schema)
    assert len(src) == len(dst), f"{schema}.{table}: {len(src)} source rows, {len(dst)} target rows"
    for i, (a, b) in enumerate(zip(src, dst)):
        assert a == b, f"{schema}.{table} row {i} differs:\n source {a!r}\n target {b!r}"
    return len(src)


def target_columns(url: str, table: str, schema: str | None = None) -> list[str]:
    """Column names of a target table, in order."""
    target_class(url)
    eng = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    try:
        return [c["name"] for c in sa.inspect(eng).get_columns(table, schema=schema)]
    finally:
        eng.dispose()


def target_tables(url: str) -> set[str]:
    target_class(url)
    eng = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def run_sql(dsn: str, *statements: str) -> None:
    """Run each statement on the source, autocommit (a BEGIN … COMMIT string is one transaction)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in statements:
            c.execute(s)


def source_select(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return [tuple(r) for r in c.execute(query)]


def target_select(url: str, query: str) -> list[tuple]:
    """The rows of a SQL query on the target (any target URL the tests use)."""
    target_class(url)
    eng = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(query))]
    finally:
        eng.dispose()


def target_execute(url: str, *statements: str) -> None:
    """Run SQL statements on the target in one transaction (a test changing it by hand)."""
    target_class(url)
    eng = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as c:
            for s in statements:
                c.execute(sa.text(s))
    finally:
        eng.dispose()
