"""Values a target cannot hold: a ValueRangeError naming table, column, key (and LSN) by default,
else the column's policy (null | clamp | text), identical on the copy path and the change path.

Each row of ``odd`` holds at most one odd value.  REFUSED says, per target, which rows its natural
type map cannot hold (docs/types.md); ``n`` also carries the target type DECIMAL(4,1) chosen by
the mapping.  Mappings are built directly (dataclasses.replace on the columns), as a mapping file
would build them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from decimal import Decimal

import duckdb
import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from replicator.errors import ValueRangeError
from replicator.model import ChangeKind, Lsn, RowChange, TableMapping
from replicator.source import catalog, snapshot
from replicator.target import open_target

DDL = """
CREATE TABLE odd (id int PRIMARY KEY, f8 float8, f4 real, n52 numeric(5,2), d date, ts timestamp,
                  tz timestamptz, tm time, ai int[], a1 int[], an numeric(5,2)[], n numeric);
INSERT INTO odd VALUES (1, 1.5, 2.5, 1.25, '2024-01-01', '2024-01-01 01:02:03', '2024-01-01 01:02:03+00',
                        '12:00:00', '{1,2}', '{3}', '{1.5}', 1.5);
INSERT INTO odd (id, f8) VALUES (2, 'NaN'), (3, 'Infinity');
INSERT INTO odd (id, f4) VALUES (4, '-Infinity');
INSERT INTO odd (id, n52) VALUES (5, 'NaN');
INSERT INTO odd (id, d) VALUES (6, 'infinity'), (7, '-infinity'), (8, '0044-03-15 BC');
INSERT INTO odd (id, ts) VALUES (9, '10000-01-01 00:00:00');
INSERT INTO odd (id, tz) VALUES (10, '-infinity'), (11, '294270-01-01 00:00:00+00');
INSERT INTO odd (id, tm) VALUES (12, '24:00:00');
INSERT INTO odd (id, ai) VALUES (13, '[0:1]={1,2}');
INSERT INTO odd (id, a1) VALUES (14, '{{1,2},{3,4}}');
INSERT INTO odd (id, an) VALUES (15, '{1.5,NaN}');
INSERT INTO odd (id, n) VALUES (16, 123.45), (17, 12345), (18, 'NaN');
"""
COLUMN = {
    2: "f8",
    3: "f8",
    4: "f4",
    5: "n52",
    6: "d",
    7: "d",
    8: "d",
    9: "ts",
    10: "tz",
    11: "tz",
    12: "tm",
    13: "ai",
    14: "a1",
    15: "an",
    16: "n",
    17: "n",
    18: "n",
}
REFUSED = {
    "duckdb": {5, 11, 13, 14, 15, 16, 17, 18},
    "mysql": {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18},
    "sqlite": {2, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18},
    "pg": {16, 17},
}
# the nearest value each target holds, in the form read_rows gives (None: nothing is near)
CLAMPED = {
    "duckdb": {
        5: None,
        11: "294246-12-31 23:59:59.999999+00",
        13: None,
        14: None,
        15: None,
        16: "123.5",
        17: "999.9",
        18: None,
    },
    "mysql": {
        2: None,
        3: "1.7976931348623157e+308",
        4: "-1.7976931348623157e+308",
        5: None,
        6: "9999-12-31",
        7: "0001-01-01",
        8: "0001-01-01",
        9: "9999-12-31 23:59:59.999999",
        10: "0001-01-01 00:00:00",
        11: "9999-12-31 23:59:59.999999",
        13: None,
        16: "123.5",
        17: "999.9",
        18: None,
    },
    "sqlite": {
        2: None,
        6: "9999-12-31",
        7: "0001-01-01",
        8: "0001-01-01",
        9: "9999-12-31 23:59:59.999999",
        10: "0001-01-01 00:00:00.000000",
        11: "9999-12-31 23:59:59.999999",
        12: "23:59:59.999999",
        13: None,
        16: "123.5",
        17: "999.9",
        18: None,
    },
    "pg": {16: "123.5", 17: "999.9"},
}
SESSION = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex"


@pytest.fixture
def target(target_kind, target_url, source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(DDL)
    return target_kind, target_url


def mapping(dsn: str, name: str = "odd", policy: str = "error", **kw) -> TableMapping:
    with snapshot.connect(dsn) as c:
        t = catalog.load_schemas(c, [x for x in catalog.list_tables(c) if x[2] == "odd"])[0]
    cols = tuple(
        dataclasses.replace(c, policy=policy, target_type="DECIMAL(4,1)" if c.name == "n" else "")
        for c in t.columns
    )
    return TableMapping(dataclasses.replace(t, columns=cols), name, **kw)


def copy(dsn: str, target, m: TableMapping) -> int:
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.source_table, target.copy_expressions(m), target.copy_format(m), m.where)
        n = target.load_copy(conn, m, snapshot.CopyOut(sc, q))
        target.finish_copy(conn, m)
        return n


def text_rows(dsn: str, where: str = "true") -> list[tuple]:
    """Rows as the output functions render them: what pgoutput sends."""
    with (
        psycopg.connect(dsn, options=SESSION) as c,
        c.cursor().copy(f"COPY (SELECT * FROM odd WHERE {where} ORDER BY id) TO STDOUT") as cp,
    ):
        data = b"".join(bytes(b) for b in cp).decode()
    return [snapshot.parse_text_line(line) for line in data.split("\n")[:-1]]


def insert_changes(dsn: str, target, m: TableMapping, where: str = "true") -> None:
    with target.connect() as conn:
        target.ensure_table(conn, m)
        target.apply(
            conn,
            m,
            [
                RowChange(ChangeKind.INSERT, "public.odd", new=r, lsn=Lsn.parse("0/AB" + r[0]))
                for r in text_rows(dsn, where)
            ],
        )


def test_refused_values_name_table_column_key_and_lsn(target, source_db):
    kind, url = target
    t = open_target(url)
    fits = [i for i in range(1, 19) if i not in REFUSED[kind]]
    where = f"id IN ({', '.join(map(str, fits))})"
    assert copy(source_db, t, mapping(source_db, where=where)) == len(fits)
    insert_changes(source_db, t, mapping(source_db, "odd_changes"), where)
    for i in sorted(REFUSED[kind]):
        col = COLUMN[i]
        with pytest.raises(ValueRangeError) as e:  # copy path
            copy(source_db, t, mapping(source_db, "odd_refused", where=f"id = {i}"))
        msg = str(e.value)
        assert f"public.odd.{col}:" in msg and f"id='{i}'" in msg and "snapshot copy" in msg, msg
        assert "policy" in msg, msg
        with pytest.raises(ValueRangeError) as e:  # change path
            insert_changes(source_db, t, mapping(source_db, "odd_refused"), f"id = {i}")
        msg = str(e.value)
        assert f"public.odd.{col}:" in msg and f"id='{i}'" in msg and f"LSN 0/AB{i}" in msg, msg
    assert read_rows(kind, url, "odd") == read_rows(kind, url, "odd_changes")
    assert sorted(read_rows(kind, url, "odd")) == fits
    assert read_rows(kind, url, "odd_refused") == {}  # nothing of a refused load or batch stayed
    t.dispose()


@pytest.mark.parametrize("policy", ["null", "clamp", "text"])
def test_policies_store_the_same_on_both_paths(target, source_db, policy):
    kind, url = target
    t = open_target(url)
    assert copy(source_db, t, mapping(source_db, policy=policy)) == 18
    insert_changes(source_db, t, mapping(source_db, "odd_changes", policy=policy))
    copied, changed = read_rows(kind, url, "odd"), read_rows(kind, url, "odd_changes")
    assert copied == changed
    source = {int(r[0]): r for r in text_rows(source_db)}
    names = ["id", "f8", "f4", "n52", "d", "ts", "tz", "tm", "ai", "a1", "an", "n"]
    for i, row in copied.items():
        for name, got, src in zip(names, row, source[i]):
            if policy == "text":
                assert got == src, f"{kind} row {i} {name}: text policy keeps PostgreSQL's text"
            elif COLUMN.get(i) == name and i in REFUSED[kind]:
                want = None if policy == "null" else CLAMPED[kind][i]
                assert got == want, f"{kind} row {i} {name}: {policy} gave {got!r}, expected {want!r}"
            else:
                assert (got is None) == (src is None), f"{kind} row {i} {name}: {got!r} for {src!r}"
    t.dispose()


# ------------------------------------------------------------------ reading each target as text
def read_rows(kind: str, url: str, table: str) -> dict[int, tuple]:
    """Target rows as text (None for NULL): DuckDB's and PostgreSQL's own rendering, MySQL and
    SQLite values as Python gives them, in a text form."""
    if kind == "duckdb":
        with duckdb.connect(sa.make_url(url).database, read_only=True) as c:
            if not c.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[
                0
            ]:
                return {}
            c.execute("SET TimeZone = 'UTC'")
            cols = [r[0] for r in c.execute(f"DESCRIBE {table}").fetchall()]
            rows = c.execute(
                f"SELECT {', '.join(f'CAST({x} AS VARCHAR)' for x in cols)} FROM {table}"
            ).fetchall()
    elif kind == "pg":
        u = sa.make_url(url)
        with psycopg.connect(
            f"host={u.host} port={u.port} user={u.username} dbname={u.database}", options=SESSION
        ) as c:
            if c.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                return {}
            with c.cursor().copy(f"COPY {table} TO STDOUT") as cp:
                data = b"".join(bytes(b) for b in cp).decode()
        rows = [snapshot.parse_text_line(line) for line in data.split("\n")[:-1]]
    elif kind == "mysql":
        u = sa.make_url(url)
        c = pymysql.connect(host=u.host, port=u.port, user=u.username, database=u.database, charset="utf8mb4")
        try:
            with c.cursor() as cur:
                cur.execute("SHOW TABLES LIKE %s", (table,))
                if not cur.fetchall():
                    return {}
                cur.execute(f"SELECT * FROM `{table}`")
                rows = cur.fetchall()
        finally:
            c.close()
    else:
        with sqlite3.connect(sa.make_url(url).database) as c:
            if not c.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]:
                return {}
            rows = c.execute(f"SELECT * FROM {table}").fetchall()
    return {int(r[0]): tuple(as_text(v) for v in r) for r in rows}


def as_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(v).replace("inf", "Infinity")
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat(" ") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, dt.timedelta):
        s = v // dt.timedelta(seconds=1)
        return f"{s // 3600:02}:{s // 60 % 60:02}:{s % 60:02}" + (
            f".{v.microseconds:06}" if v.microseconds else ""
        )
    return str(v)
