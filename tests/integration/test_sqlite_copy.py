"""SQLite's own snapshot copy (target/sqlite_copy.py) stores exactly what the generic path stores.

The same COPY of one table is loaded twice into one SQLite file: by ``SQLiteTarget.load_copy``
(the fast path: composed converters, integer text left to INTEGER affinity, the driver's
executemany) and by the base ``Target.load_copy`` (``GenericApplier.row_params`` and SQLAlchemy's
executemany, the per-row path it replaces).  Every cell is compared by ``typeof`` and value
(``repr``: -0.0 is not 0.0).  The table has a column of every family SQLite maps, values at their
edges, NULLs, value policies, a numeric column under an INTEGER target type fed ``'1.000'``, and
more rows than one batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from replicator.errors import ValueRangeError
from replicator.model import TableMapping
from replicator.source import catalog, snapshot
from replicator.target import open_target, sqlite_copy
from replicator.target.base import Target

DDL = """
CREATE TABLE fam (
  id int PRIMARY KEY, b bool, by bytea, i2 smallint, i4 int, i8 bigint, o oid, f4 real,
  f8 double precision, d date, tm time, ts timestamp, tz timestamptz, n numeric, n_int numeric,
  u uuid, tx text, bp char(5), ai int[], iv interval, j jsonb,
  ts_null timestamp, ts_clamp timestamp, f8_clamp float8, ts_text timestamp);
INSERT INTO fam VALUES
 (1, true, '\\x00ff10', 1, 2, 3, 4, 1.5, 2.25, '2024-02-29', '12:34:56.789012',
  '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', 1234567890.12, 7,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'plain', 'ab', '{1,2}', '1 day 02:03:04', '{"a": 1}',
  '2024-01-01', '2024-01-01', 1.5, '2024-01-01 00:00:00'),
 (2, false, '\\x', -32768, -2147483648, -9223372036854775808, 0, 'Infinity', '-0', '0001-01-01',
  '23:59:59.999999', '9999-12-31 23:59:59.999999', '1999-12-31 23:59:59.5-08', '-0.000100', 1.000,
  '00000000-0000-0000-0000-000000000000', E'tab\\there\\nnew line \\\\ back\\r', '', '{1,NULL,3}',
  '-1 mons +2 days', '{"a": [1, 2.50], "b": "\\\\t"}', 'infinity', '-infinity', 'NaN', 'infinity'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, true, decode(repeat('ab', 5000), 'hex'), 32767, 2147483647, 9223372036854775807, 4294967295,
  '-Infinity', '-Infinity', '9999-12-31', '00:00:00', '0001-01-01 00:00:00',
  '0001-01-01 00:00:00+00', 'NaN', -2147483648.0, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\\N',
  'NULL', '{}', '00:00:00.000001', 'null', '10000-01-01 00:00:00', '10000-01-01 00:00:00',
  'Infinity', '0044-03-15 00:00:00 BC'),
 (5, false, '\\x5c4e', 0, -1, 1000000000000000001, 1, 1.17549435e-38, 5e-324, '2000-01-01',
  '00:00:01', '2000-01-01 00:00:00.000001', '2000-01-01 00:00:00+00', 0, -0.0,
  '12345678-1234-5678-1234-567812345678', 'emoji 😀 ünïcödé, "quoted", comma', 'é', '{-0}',
  'P1Y', '[]', NULL, NULL, '-0', NULL);
INSERT INTO fam (id, i4, i8, f8, tx, ts, b)
  SELECT g, g * 7919 % 100000 - 50000, -g::bigint * 1000003, g / 7.0, 'row ' || g || E'\\t' || g,
         '2000-01-01'::timestamp + g * interval '61.5 seconds', g % 3 = 0
  FROM generate_series(100, 12099) g;
"""
POLICIES = {"ts_null": "null", "ts_clamp": "clamp", "f8_clamp": "clamp", "ts_text": "text"}
TARGET_TYPES = {"n_int": "INTEGER"}
ODD = '"Odd ""T"""'  # a table name to quote
#: columns whose text is stored as it is (no per-value call): text families and integer sources
AS_TEXT = {"id", "i2", "i4", "i8", "o", "n", "u", "tx", "bp", "iv", "j", "ts_text"}


@pytest.fixture
def src(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(DDL)
    return source_db


def mapping(dsn: str, name: str, table: str = "fam", schema: str | None = None) -> TableMapping:
    """``table`` as the target table ``name``, with the policies and target types above."""
    with snapshot.connect(dsn) as c:
        t = catalog.load_schemas(c, [x for x in catalog.list_tables(c) if x[2] == table])[0]
    cols = tuple(
        dataclasses.replace(c, policy=POLICIES.get(c.name, "error"), target_type=TARGET_TYPES.get(c.name, ""))
        for c in t.columns
    )
    return TableMapping(dataclasses.replace(t, columns=cols), name, target_schema=schema)


def load(dsn: str, target, m: TableMapping, loader, where: str = "") -> int:
    """``loader(conn, m, out)`` of the table's snapshot COPY, in one committed target transaction;
    a failed load cancels the COPY (as bulkcopy does), so the source session can roll back."""
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.source_table, target.copy_expressions(m), target.copy_format(m), where)
        out = snapshot.CopyOut(sc, q)
        try:
            return loader(conn, m, out)
        except BaseException:
            out.close()
            raise


def generic(target):
    """The per-row path the SQLite target used before its own loader: the base class's."""
    return lambda conn, m, out: Target.load_copy(target, conn, m, out)


def cells(path: str, table: str, columns: list[str]) -> list[tuple]:
    """Every row of ``table`` by id: per column, its SQLite storage class and its value's repr."""
    with sqlite3.connect(path) as db:
        sel = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
        rows = db.execute(f'SELECT {sel} FROM "{table}" ORDER BY id').fetchall()
    return [tuple((r[k], repr(r[k + 1])) for k in range(0, len(r), 2)) for r in rows]


def file_of(url: str) -> str:
    return sa.make_url(url).database or ""


@pytest.mark.parametrize("layout", ["created", "untyped"])
def test_fast_path_stores_what_the_per_row_path_stores(src, sqlite_target_url, layout):
    """Cell for cell the same, whether the replicator created the tables or they exist with no
    declared types (no INTEGER affinity: integer text must then be converted)."""
    t = open_target(sqlite_target_url)
    fast, slow = mapping(src, "fam_fast"), mapping(src, "fam_slow")
    names = [c.name for c in fast.view.columns]
    if layout == "untyped":
        with sqlite3.connect(file_of(sqlite_target_url)) as db:
            for m in (fast, slow):
                db.execute(f'CREATE TABLE "{m.target_name}" ({", ".join(names)})')
    assert load(src, t, fast, t.load_copy) == 12005
    assert load(src, t, slow, generic(t)) == 12005
    got, want = (cells(file_of(sqlite_target_url), n, names) for n in ("fam_fast", "fam_slow"))
    assert len(got) == 12005
    for row_got, row_want in zip(got, want):
        assert dict(zip(names, row_got)) == dict(zip(names, row_want))
    with t.connect() as conn:
        plan = sqlite_copy.copy_plan(t, conn, fast)
    converted = {names[i] for i, _ in plan.converters}
    if layout == "created":  # the shortcuts this test proves harmless were taken
        assert converted == set(names) - AS_TEXT
    else:
        assert converted == set(names) - AS_TEXT | {"id", "i2", "i4", "i8", "o"}
    t.dispose()


def test_integer_text_is_exact_in_this_sqlite():
    """The shortcut for integer columns is on here (else the test above proves less)."""
    assert sqlite_copy.integer_text_exact()


def test_refused_value_raises_the_per_row_error(src, sqlite_target_url):
    """A value the column cannot hold (timestamptz 'infinity', policy error) in the middle of a
    batch: the fast path raises the per-row path's ValueRangeError, word for word."""
    t = open_target(sqlite_target_url)
    with psycopg.connect(src, autocommit=True) as c:
        c.execute("UPDATE fam SET tz = 'infinity' WHERE id = 4000")
    errors = []
    for name, loader in (("fam_fast", t.load_copy), ("fam_slow", generic(t))):
        m = mapping(src, name)
        with t.connect() as conn:
            t.ensure_table(conn, m)
        with pytest.raises(ValueRangeError) as e:
            load(src, t, m, loader)
        errors.append(str(e.value))
    assert errors[0].replace("fam_fast", "fam_slow") == errors[1]
    assert "public.fam.tz:" in errors[0] and "id='4000'" in errors[0], errors[0]
    with sqlite3.connect(file_of(sqlite_target_url)) as db:
        assert db.execute('SELECT count(*) FROM "fam_fast"').fetchone() == (0,)  # rolled back
    t.dispose()


def test_insert_is_quoted_as_sqlalchemy_quotes_it(source_db, sqlite_target_url):
    """Odd names and a schema (SQLite's ``main``): the INSERT is SQLAlchemy's own, and loads."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(f'CREATE TABLE {ODD} ("Id" int PRIMARY KEY, "a b" text, "select" int, "x""y" date)')
        c.execute(f"INSERT INTO {ODD} VALUES (1, 'one', 1, '2024-01-01'), (2, NULL, NULL, NULL)")
    t = open_target(sqlite_target_url)
    m = mapping(source_db, 'Odd "T" here', table='Odd "T"', schema="main")
    assert load(source_db, t, m, t.load_copy) == 2
    with t.connect() as conn:
        plan = sqlite_copy.copy_plan(t, conn, m)
        compiled = t.applier(m).insert_stmt.compile(dialect=conn.dialect)
        rows = conn.execute(sa.select(t.table(m)).order_by(sa.text('"Id"'))).all()
    assert plan.sql == compiled.string
    assert rows == [(1, "one", 1, dt.date(2024, 1, 1)), (2, None, None, None)]
    t.dispose()
