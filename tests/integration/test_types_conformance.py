"""Type conformance: every PostgreSQL type of docs/types.md, with edge values, through the real
pipeline into every target, by the snapshot copy AND as streamed changes (INSERT and UPDATE).

`migrate --keep-slot` copies rows 1..7; then the source inserts rows 101..107 holding the same
values (they arrive through pgoutput) and updates rows 2 and 3 to the values of rows 5 and 4; a
second `migrate --keep-slot` applies the changes.  Each target row is compared with its source row
in the target's documented form (a small normaliser per target below), and the rows that arrived
as changes must equal the rows that arrived by the copy, value for value.

Values some target cannot hold (NaN into MySQL, infinite timestamps into SQLite ...) are in
test_types_policies.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import struct
from decimal import Decimal

import duckdb
import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from replicator.pipeline import Options, Pipeline
from replicator.source import snapshot
from tests import targets

SETUP = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy "quoted"');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(20);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE types_all (
  id int PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint, n52 numeric(5,2), n3810 numeric(38,10), n numeric,
  r real, d double precision, b boolean, t text, vc varchar(10), c char(5), by bytea,
  dt date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval, u uuid,
  j json, jb jsonb, ai int[], at text[], a2 int[][], an numeric[], ats timestamptz[], ab boolean[],
  ajb jsonb[], e mood, dom posint, dtx short_text, ip inet, cidr cidr, mac macaddr, m money,
  bt bit(4), vb varbit(8), tsv tsvector, rng int4range, trng tstzrange, comp pair, x xml,
  gen int GENERATED ALWAYS AS (i2 + 1) STORED);
INSERT INTO types_all (id, i2, i4, i8, n52, n3810, n, r, d, b, t, vc, c, by, dt, ts, tstz, tm, tmtz, iv,
  u, j, jb, ai, at, a2, an, ats, ab, ajb, e, dom, dtx, ip, cidr, mac, m, bt, vb, tsv, rng, trng, comp, x) VALUES
 (1, 1, 42, 1234567890123, 123.45, 1234567890123456789012345678.0123456789, 3.14159265358979323846264338327950288,
  1.1, 0.1, true, 'plain text', 'varchar', 'ab', '\x00ff10', '2024-02-29', '2024-02-29 12:34:56.789012',
  '2024-02-29 12:34:56.789012+05:30', '12:34:56.5', '12:34:56+05:30', '1 year 2 mons 3 days 04:05:06.5',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50, "x"], "b": null}', '{"b": [1, 2.50], "a": "x"}',
  '{1,2,3}', '{a,b}', '{{1,2},{3,4}}', '{1.50,-2}', '{"2024-01-01 00:00:00+00","1999-12-31 23:59:59.5+02"}',
  '{t,f}', ARRAY['{"k": [1, 2]}'::jsonb, '3'], 'ok', 7, 'domain text', '192.168.0.1/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', 1234.56, B'1010', B'101', 'the fat cats', '[1,10)', '[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)',
  ROW(1, 'one'), '<a x="1">text &amp; more</a>'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL),
 (3, 0, 0, 0, 0, 0, 0, 0, 0, false, '', '', '', '\x', '1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00',
  '00:00:00', '00:00:00+00', '0', '00000000-0000-0000-0000-000000000000', '{}', '[]', '{}', '{}', '{}', '{}', '{}',
  '{}', '{}', 'sad', 1, '', '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', 0, B'0000', B'', '', 'empty', 'empty',
  ROW(NULL, NULL), ''),
 (4, 32767, 2147483647, 9223372036854775807, 999.99, 9999999999999999999999999999.9999999999,
  123456789012345678901234567890123456789012345678901234567890.123456789012345678901234567890,
  3.4028235e38, 1.7976931348623157e308, true, repeat('x', 100), 'xxxxxxxxxx', 'abcde', '\xffffffff',
  '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '23:59:59.999999',
  '23:59:59.999999-15:59', '178956970 years 7 mons 2147483647 days 2562047788:00:54.775807',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '[1e400, -0, 123456789012345678901234567890]', '{"n": 1e400}',
  '{2147483647,-2147483648,NULL}', '{NULL,"NULL",null}', '{{NULL,2},{3,NULL}}', '{NaN,Infinity,-Infinity,1e-30}',
  '{infinity,-infinity,"0001-01-01 00:00:00+00"}', '{NULL,t}', ARRAY[NULL, 'null'::jsonb], 'happy "quoted"',
  2147483647, repeat('y', 20), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', '2001:db8::/32',
  'ff:ff:ff:ff:ff:ff', 92233720368547758.07, B'1111', B'11111111', 'a:1A,2B b:3', '[-2147483648,2147483647)',
  '(,)', ROW(2147483647, repeat('z', 50)), '<?xml version="1.0"?><r/>'),
 (5, -32768, -2147483648, -9223372036854775808, -999.99, -0.0000000001, 'NaN', -1.5e-45, 5e-324, false,
  E'quotes \' " `, comma, tab\t, newline\n, cr\r, backslash \\ \\N, NULL, 4-byte 😀𝄞, ünïcödé, 中文',
  E'😀\'"\\,;', E'\' "\\ ', '\x0a0d2c22275c', '0001-01-01', '0001-01-01 00:00:00', '0001-01-01 00:00:00+00',
  '00:00:00.000001', '00:00:00+15:59', '-1 years -2 mons +3 days -04:05:06.000001',
  '01234567-89ab-cdef-0123-456789abcdef', '{"q": "quote \" backslash \\ tab \t nl \n 😀 \u00e9 \u0000"}',
  '{"😀": "é", "esc": "\"\\"}', '{-1}', ARRAY[E'quote "', E'back\\slash', 'comma,', '{brace}', ' sp ', '', '😀', E'nl\n'],
  '{{-1},{-2}}', '{-0.0000000001,NaN}', '{NULL}', '{f}', ARRAY['"s"'::jsonb, '{"a": "\"q\""}'],
  'sad', 2, E'quote\'s \\', '::1', '::/0', '01:02:03:04:05:06', -92233720368547758.08, B'0001', B'1',
  E'''it''''s'' "q" back\\\\slash', '(-5,5]', '[-infinity,infinity]', ROW(-1, E'a "q", b\\c (x)'),
  '<![CDATA[ <not> & "xml" ]]>'),
 (6, 6, 6, 6, 6, 6, 6, 6, 6, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL),
 (7, 7, 7, 7, 7, 7, '-Infinity', 7, -0, NULL, NULL, NULL, NULL, NULL, NULL,
  '1900-02-28 23:59:59.000001', '1960-06-30 23:59:59.999999-12', '24:00:00', '24:00:00+00', 'P-1Y-1M-1DT-1H-1M-1S',
  NULL, 'null', '"string"', '[0:1]={1,2}', NULL, '{{{1}}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- the large values: a 1 MB text and a 10 MB bytea (not compressible: stored out of line)
UPDATE types_all SET t = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i) || '😀',
  by = (SELECT string_agg(decode(md5(i::text) || md5((-i)::text), 'hex'), '') FROM generate_series(1, 327680) i)
  WHERE id = 6;
"""
COLUMNS_SQL = """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'types_all'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"""
CHANGES = [  # one statement per transaction
    "INSERT INTO types_all SELECT id + 100, i2, i4, i8, n52, n3810, n, r, d, b, t, vc, c, by, dt, ts, tstz, tm, tmtz, iv, "
    "u, j, jb, ai, at, a2, an, ats, ab, ajb, e, dom, dtx, ip, cidr, mac, m, bt, vb, tsv, rng, trng, comp, x FROM types_all",
    "UPDATE types_all t SET ({cols}) = (SELECT {cols} FROM types_all s WHERE s.id = 5) WHERE t.id = 2",
    "UPDATE types_all t SET ({cols}) = (SELECT {cols} FROM types_all s WHERE s.id = 4) WHERE t.id = 3",
]


# every target, the generic SQLAlchemy path too (tests/targets.py)
target_kind = targets.kind_fixture(*targets.ALL)


@pytest.fixture
def target(target_kind, target_url):
    return target_kind, target_url


def source_columns(c) -> list[tuple[str, str]]:
    return [(n, t) for n, t in c.execute(COLUMNS_SQL)]


def prepare(dsn: str, kind: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SETUP)
        # row 7 holds values only some targets hold; the others refuse them (test_types_policies.py)
        if kind in ("sqlite", "generic"):  # no 24:00:00 (SQLite's time text, Python's time)
            c.execute("UPDATE types_all SET tm = NULL WHERE id = 7")
        if kind == "generic":  # a generic dialect's numbers refuse NaN/±Infinity (policies test)
            for col in ("n", "r", "d"):
                c.execute(
                    f"UPDATE types_all SET {col} = NULL WHERE {col}::text IN ('NaN', 'Infinity', '-Infinity')"
                )
        if kind != "pg":  # explicit array bounds: PostgreSQL only
            c.execute("UPDATE types_all SET ai = '{1,2}' WHERE id = 7")
        if kind == "duckdb":  # a LIST has the declared number of dimensions
            c.execute("UPDATE types_all SET a2 = '{{1}}' WHERE id = 7")
        return source_columns(c)


def test_every_type_by_copy_and_by_change_equals_the_source(source_db, target, caplog):
    kind, url = target
    cols = prepare(source_db, kind)
    opts = Options(source=source_db, target=url, name="typeconf", keep_slot=True)
    with caplog.at_level(logging.WARNING, "replicator.source.catalog"):
        assert Pipeline(opts).migrate().rows_copied == 7
    assert "public.types_all: generated column(s) gen are not replicated" in caplog.text
    names = ", ".join(f'"{n}"' for n, _ in cols if n != "id")
    with psycopg.connect(source_db, autocommit=True) as c:
        for stmt in CHANGES:
            c.execute(stmt.format(cols=names))
    assert Pipeline(opts).migrate().changes_applied == 9
    want = source_values(source_db, cols, kind)
    got = TARGETS[kind](url, cols)
    assert sorted(got) == sorted(want), "ids differ"
    for i in sorted(want):
        assert len(got[i]) == len(want[i]) == len(cols)
        for (name, typ), w, g in zip(cols, want[i], got[i]):
            assert g == w, f"{kind}: row {i} column {name} ({typ}): target {g!r:.300} != source {w!r:.300}"
    # the copy path and the change path stored the same values (INSERTs 10x, UPDATEs of 2 and 3)
    for copied, changed in [(i, i + 100) for i in (1, 4, 5, 6, 7)] + [(5, 2), (4, 3)]:
        assert got[changed][1:] == got[copied][1:], f"{kind}: row {changed} (changes) != row {copied} (copy)"
    assert "gen" not in target_columns(kind, url)  # generated columns are not replicated (docs/types.md)


FIDELITY = r"""
CREATE TABLE fid (id int PRIMARY KEY, iv interval, d float8, r real, n63 numeric(6,3), n numeric,
                  ov oidvector, i2v int2vector);
INSERT INTO fid VALUES (1, '1 mon 2 days', 0, 0, 1.500, 1.50, '1 2 3', '1 -2'),
                       (2, '1 day', '-0', '-0', 0.000, 0.0, '', ''),
                       (3, '30 days', '-0', 0, 2.100, 100.000, '4294967295', '32767');
CREATE TABLE one_col (t text);
ALTER TABLE one_col REPLICA IDENTITY FULL;
INSERT INTO one_col VALUES ('a'), (''), (NULL);
"""
FIDELITY_CHANGES = [  # one statement per transaction
    "INSERT INTO fid SELECT id + 100, iv, d, r, n63, n, ov, i2v FROM fid",
    "UPDATE fid SET iv = '32 days', d = '-0', r = '-0', n = 1.5 WHERE id = 1",
    "UPDATE fid SET iv = '24 hours', d = 0, r = 0, n = 0.00 WHERE id = 2",
    "UPDATE fid SET iv = '1 mon', d = 0, n = 1e2 WHERE id = 3",
    "INSERT INTO one_col VALUES (''), ('b')",
    "DELETE FROM one_col WHERE t = 'a'",
]
FIDELITY_COLUMNS = """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""


def test_values_equal_by_eq_but_different_arrive_exactly(source_db, target):
    """Intervals equal under normalisation, -0.0, numerics with trailing zeros, oidvector and
    int2vector, one-column empty strings: by the snapshot copy and by streamed INSERT/UPDATE,
    each stored in the target's documented form (-0 is 0 only on MySQL and SQLite)."""
    kind, url = target
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(FIDELITY)
        fid = [(n, t) for n, t in c.execute(FIDELITY_COLUMNS, ("fid",))]
    opts = Options(source=source_db, target=url, name="fidconf", keep_slot=True)
    assert Pipeline(opts).migrate().rows_copied == 6
    with psycopg.connect(source_db, autocommit=True) as c:
        for stmt in FIDELITY_CHANGES:
            c.execute(stmt)
    Pipeline(opts).migrate()
    want, got = source_values(source_db, fid, kind, "fid"), TARGETS[kind](url, fid, "fid")
    assert sorted(got) == sorted(want) == [1, 2, 3, 101, 102, 103]
    for i in sorted(want):
        for (name, typ), w, g in zip(fid, want[i], got[i]):
            if kind in ("mysql", "sqlite", "generic") and w == 0.0 and isinstance(w, float):
                w = 0.0  # documented: MySQL and SQLite store -0 as 0 (targets.GENERIC_FORMS["-0"])
            assert repr(g) == repr(w), f"{kind}: row {i} column {name} ({typ}): target {g!r} != source {w!r}"
    want = sorted(text_rows(source_db, ['"t"'], "one_col"), key=repr)
    assert (
        sorted(one_col_values(kind, url), key=repr)
        == want
        == sorted([("",), ("",), ("b",), (None,)], key=repr)
    )


def one_col_values(kind: str, url: str) -> list[tuple]:
    """The rows of one_col as PostgreSQL text tuples (a text column is stored as its text)."""
    if kind == "pg":
        u = sa.make_url(url)
        return text_rows(
            f"host={u.host} port={u.port} user={u.username} dbname={u.database}", ['"t"'], "one_col"
        )
    eng = sa.create_engine(targets.engine_url(url), poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.exec_driver_sql("SELECT t FROM one_col")]
    finally:
        eng.dispose()


# ------------------------------------------------------------------ the source, per target form
ISO = re.compile(r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?")


def interval_parts(text: str) -> tuple[int, int, int]:
    """ISO 8601 interval text → (months, days, microseconds), as PostgreSQL and DuckDB keep them."""
    y, mo, d, h, mi, s = (g or "0" for g in ISO.fullmatch(text).groups())
    return (
        int(y) * 12 + int(mo),
        int(d),
        int(h) * 3600_000_000 + int(mi) * 60_000_000 + int(Decimal(s) * 1_000_000),
    )


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def utc_naive(v: dt.datetime) -> dt.datetime:
    return v.astimezone(dt.timezone.utc).replace(tzinfo=None) if v.tzinfo else v


def time_text(t) -> str:
    """datetime.time / timedelta (MySQL TIME) → PostgreSQL's time text."""
    if isinstance(t, dt.timedelta):
        us = t // dt.timedelta(microseconds=1)
        h, rest = divmod(us, 3600_000_000)
        t = (h, rest // 60_000_000, rest // 1_000_000 % 60, rest % 1_000_000)
    else:
        t = (t.hour, t.minute, t.second, t.microsecond)
    return f"{t[0]:02}:{t[1]:02}:{t[2]:02}" + (f".{t[3]:06}".rstrip("0") if t[3] else "")


def array_json_expr(name: str, typ: str) -> str:
    """The documented JSON form of an array (docs/types.md), computed by PostgreSQL itself."""
    native = typ.removesuffix("[]") in ("integer", "smallint", "bigint", "boolean")
    return f'array_to_json("{name}")::text' if native else f'array_to_json("{name}"::text[])::text'


def expected(kind: str, typ: str, text, as_json):
    """A source value (PostgreSQL text; arrays also as their JSON form) in the target's form."""
    if text is None:
        return None
    if kind == "pg":
        return text
    if typ.endswith("[]"):
        value = json.loads(as_json)
        return duck_list(typ, value) if kind == "duckdb" else value
    return scalar(kind, typ, text)


def scalar(kind: str, typ: str, text: str):
    if typ in ("smallint", "integer", "bigint", "posint"):
        return int(text)
    if typ == "real":
        return f32(float(text))
    if typ == "double precision":
        return float(text)
    if typ == "boolean":
        return text == "t"
    if typ == "bytea":
        return bytes.fromhex(text[2:])
    if typ.startswith("timestamp"):
        return utc_naive(dt.datetime.fromisoformat(text))
    if typ == "interval" and kind == "duckdb":
        return interval_parts(text)
    if kind == "generic" and (typ == "numeric" or typ.startswith("numeric(")):
        return generic_numeric(text)
    if kind == "generic" and typ == "uuid":
        return text.replace("-", "")  # targets.GENERIC_FORMS["uuid"]
    return text


def generic_numeric(text: str):
    """targets.GENERIC_FORMS["numeric"]: a float, NaN as NULL; SQLite's NUMERIC affinity keeps an
    integral value that fits 64 bits as an INTEGER."""
    if text == "NaN":
        return None
    v = float(text)
    return int(v) if v.is_integer() and abs(v) < 2**63 else v


def duck_list(typ: str, value):
    """A JSON array as the DuckDB LIST of the element type reads back in Python."""
    if isinstance(value, list):
        return [duck_list(typ, v) for v in value]
    if value is None or not isinstance(value, str) or typ.startswith("timestamp"):
        return value  # timestamps are compared as text (infinity has no Python datetime)
    return scalar("duckdb", typ.removesuffix("[]"), value)


SESSION = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex"


def text_rows(dsn: str, exprs: list[str], table: str = "types_all") -> list[tuple]:
    """Rows rendered by the types' output functions (COPY text: exactly what pgoutput sends)."""
    with (
        psycopg.connect(dsn, options=SESSION) as c,
        c.cursor().copy(f"COPY (SELECT {', '.join(exprs)} FROM {table}) TO STDOUT") as cp,
    ):
        data = b"".join(bytes(b) for b in cp).decode()
    return [snapshot.parse_text_line(line) for line in data.split("\n")[:-1]]


def source_values(dsn: str, cols, kind: str, table: str = "types_all") -> dict[int, tuple]:
    exprs = [f'"{n}"' for n, _ in cols] + [
        array_json_expr(n, t) if t.endswith("[]") else "NULL" for n, t in cols
    ]
    n = len(cols)
    return {
        int(r[0]): tuple(expected(kind, t, r[i], r[n + i]) for i, (_, t) in enumerate(cols))
        for r in text_rows(dsn, exprs, table)
    }


# ------------------------------------------------------------------ each target, read natively
def pg_values(url, cols, table="types_all"):
    u = sa.make_url(url)
    rows = text_rows(
        f"host={u.host} port={u.port} user={u.username} dbname={u.database}",
        [f'"{n}"' for n, _ in cols],
        table,
    )
    return {int(r[0]): tuple(r) for r in rows}


def duck_expr(name: str, typ: str) -> str:
    q = f'"{name}"'
    if typ == "interval":
        return (
            f"CASE WHEN {q} IS NOT NULL THEN [datepart('year', {q}) * 12 + datepart('month', {q}), "
            f"datepart('day', {q}), datepart('hour', {q}) * 3600000000 + datepart('minute', {q}) * 60000000 "
            f"+ datepart('microsecond', {q})] END"
        )
    if typ.endswith("[]"):
        return f"CAST({q} AS VARCHAR[])" if typ.startswith("timestamp") else q
    if typ in (
        "time with time zone",
        "time without time zone",
        "date",
        "uuid",
        "json",
        "jsonb",
    ) or typ.startswith("numeric"):
        return f"CAST({q} AS VARCHAR)"  # the same text as PostgreSQL's
    return q


def duck_values(url, cols, table="types_all"):
    with duckdb.connect(sa.make_url(url).database, read_only=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        rows = c.execute(f"SELECT {', '.join(duck_expr(n, t) for n, t in cols)} FROM {table}").fetchall()
    out = {}
    for r in rows:
        vals = []
        for (_n, t), v in zip(cols, r):
            if t == "interval" and v is not None:
                v = tuple(v)
            elif isinstance(v, dt.datetime):
                v = utc_naive(v)
            elif t == "real":
                v = f32(v) if v is not None else v
            elif t.endswith("[]") and v is not None:
                v = duck_leaves(v)
            vals.append(v)
        out[r[0]] = tuple(vals)
    return out


def duck_leaves(v):
    if isinstance(v, list):
        return [duck_leaves(x) for x in v]
    return utc_naive(v) if isinstance(v, dt.datetime) else v


def mysql_values(url, cols, table="types_all"):
    u = sa.make_url(url)
    c = pymysql.connect(
        host=u.host,
        port=u.port,
        user=u.username,
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
    )
    try:
        with c.cursor() as cur:
            cur.execute(f"SELECT {', '.join('`' + n + '`' for n, _ in cols)} FROM {table}")
            rows = cur.fetchall()
    finally:
        c.close()
    return {r[0]: tuple(plain("mysql", t, v) for (_, t), v in zip(cols, r)) for r in rows}


def sqlite_values(url, cols, table="types_all"):
    with sqlite3.connect(sa.make_url(url).database) as c:
        rows = c.execute(
            f"SELECT {', '.join(chr(34) + n + chr(34) for n, _ in cols)} FROM {table}"
        ).fetchall()
    return {r[0]: tuple(plain("sqlite", t, v) for (_, t), v in zip(cols, r)) for r in rows}


def plain(kind: str, typ: str, v):
    """A MySQL or SQLite value in the comparison form."""
    if v is None:
        return None
    if typ.endswith("[]"):
        return json.loads(v)
    if typ == "boolean":
        return bool(v)
    if typ == "real":
        return f32(v)
    if typ == "date" and not isinstance(v, str):
        return v.isoformat()
    if typ.startswith("timestamp"):
        return dt.datetime.fromisoformat(v) if isinstance(v, str) else v
    if typ == "time without time zone":
        return time_text(v if isinstance(v, dt.timedelta) else dt.time.fromisoformat(v))
    if isinstance(v, Decimal):
        return format(v, "f")
    return v


TARGETS = {
    "pg": pg_values,
    "duckdb": duck_values,
    "mysql": mysql_values,
    "sqlite": sqlite_values,
    "generic": sqlite_values,
}  # the base Target on SQLite (tests/targets.py)


def target_columns(kind: str, url: str) -> list[str]:
    from tests.compare import target_columns as columns

    return columns(url, "types_all")
