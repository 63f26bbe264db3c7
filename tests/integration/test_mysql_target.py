"""MySQL/MariaDB target specifics: LOAD DATA edge values, char(n), binary keys, strict values.

Real servers only (the ``source_db`` PostgreSQL and the ``mysql_target_url`` MariaDB fixtures).  Each
test does the same thing on both sides and compares row by row, through the copy path (LOAD DATA
LOCAL INFILE) and the change path (executemany), which must store identical values.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

import tests.compare as compare
from replicator.errors import DivergenceError, TargetError, ValueRangeError
from replicator.model import ChangeKind, Lsn, RowChange, TableMapping
from replicator.source import catalog, snapshot
from replicator.target import open_target
from replicator.target.mysql import MySQLTarget
from tests.compare import assert_same
from tests.servers import pgbench_init

LSN = Lsn.parse("0/1234")

EDGE_DDL = r"""
CREATE TABLE edge (id int PRIMARY KEY, t text, vc varchar(30), by bytea, n numeric, big numeric(70,10),
                   f4 real, f8 float8, b bool, j jsonb, js json, tm time, arr int[]);
INSERT INTO edge (id, t) VALUES
 (1, ''), (2, 'NULL'), (3, 'null'), (4, E'\\N'), (5, E'\\'), (6, 'a"b'), (7, '"'), (8, '""'),
 (9, 'a,b'), (10, ','), (11, E'line1\nline2'), (12, E'\r\n'), (13, E'tab\there'), (14, '😀 emoji 𝄞'),
 (15, ' leading'), (16, 'trailing '), (17, '"NULL"'), (18, E'x\\N'), (19, 'it''s'), (20, E'end\\'),
 (21, NULL), (22, E'\\x00'), (23, E'"\n",'), (24, 'Ünïcödé ß');
UPDATE edge SET vc = left(t, 30), by = convert_to(coalesce(t, ''), 'UTF8') WHERE id <= 24;
INSERT INTO edge VALUES
 (30, repeat('big text 😀 ', 12000), 'x', decode(repeat('00ff5c220a2c', 1750), 'hex'),
  '123456789012345678901234567890.123456789012345678901234567890', 1.5, 0.1, 1e308, true,
  '{"b": [1, "x\"y"], "a": null}', '{ "keep" :  "spacing" }', '24:00:00', '{1,NULL,3}'),
 (31, '', '', '\x', '-0.00', 0, -3.4e38, -2.25e-300, false, '"str"', '[]', '00:00:00.000001', '{}'),
 (32, NULL, NULL, '\x00', 'NaN', NULL, NULL, NULL, NULL, 'null', 'null', NULL, NULL);
"""


@pytest.fixture(autouse=True)
def float_safe_compare(monkeypatch):
    """tests/compare.py reflects MySQL DOUBLE as DOUBLE(asdecimal=True), which SQLAlchemy rounds to
    10 decimals: read floats as floats until compare.py does so itself."""

    def target_rows(url, table, columns, schema=None):
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with eng.connect() as c:
                t = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=c)
                for col in t.c:
                    if isinstance(col.type, sa.Float):
                        col.type.asdecimal = False
                rows = c.execute(sa.select(*[t.c[n] for n in columns]))
                return sorted((tuple(compare.norm(v) for v in r) for r in rows), key=compare._key)
        finally:
            eng.dispose()

    monkeypatch.setattr(compare, "target_rows", target_rows)


def run_sql(dsn, stmt):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(stmt)


def mapping(dsn, name, target_name=None):
    with snapshot.connect(dsn) as c:
        t = [x for x in catalog.list_tables(c) if x[2] == name]
        return TableMapping(catalog.load_schemas(c, t)[0], target_name or name)


def copy_table(dsn, target, m):
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_format(m))
        return target.load_copy(conn, m, snapshot.CopyOut(sc, q))


def text_rows(dsn, m, where=""):
    """Rows as PostgreSQL's output functions render them: what pgoutput sends."""
    with snapshot.connect(dsn) as c:
        q = snapshot.copy_query(m.view, ["{col}"] * len(m.view.columns), "FORMAT text", where)
        return [r for batch in snapshot.copy_rows(c, q) for r in batch]


def apply(target, m, changes):
    with target.connect() as conn:
        target.ensure_table(conn, m)
        target.apply(conn, m, changes)


def inserts(m, rows):
    return [RowChange(ChangeKind.INSERT, m.label, new=r, lsn=LSN) for r in rows]


def mysql_rows(url, stmt):
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(stmt).fetchall()
    finally:
        eng.dispose()


def time_text(td):
    """pymysql's timedelta for a TIME → PostgreSQL's time text."""
    if td is None:
        return None
    s, us = divmod(td // dt.timedelta(microseconds=1), 1_000_000)
    h, s = divmod(s, 3600)
    return f"{h:02}:{s // 60:02}:{s % 60:02}" + (f".{us:06}".rstrip("0") if us else "")


def test_url_forms_use_pymysql_utf8mb4_local_infile():
    for url in ("mysql://u@h/db", "mariadb://u@h/db", "mysql+pymysql://u:secret@h/db?charset=latin1"):
        t = MySQLTarget(url)
        assert t.url.drivername == "mysql+pymysql"
        assert t.url.query["charset"] == "utf8mb4" and t.url.query["local_infile"] == "1"
        assert "secret" not in t.describe()
    assert isinstance(open_target("mariadb://u@h/db"), MySQLTarget)


def test_edge_values_copy_and_change_path_store_the_source_exactly(source_db, mysql_target_url):
    run_sql(source_db, EDGE_DDL)
    target = open_target(mysql_target_url)
    m = mapping(source_db, "edge")
    assert copy_table(source_db, target, m) == 27
    m2 = mapping(source_db, "edge", "edge_changes")  # a Target caches tables by source table
    apply(open_target(mysql_target_url), m2, inserts(m2, text_rows(source_db, m)))
    plain = ["id", "t", "vc", "by", "f4", "f8", "b"]
    for name in ("edge", "edge_changes"):
        assert assert_same(source_db, "public", "edge", mysql_target_url, name, plain) == 27
    # Text-stored numerics, JSON, time: compare with PostgreSQL's text rendering; arrays are JSON.
    with psycopg.connect(source_db) as c:
        src = {
            r[0]: r[1:]
            for r in c.execute(
                "SELECT id, n::text, big::text, j::text, js::text, tm::text, "
                "array_to_json(arr)::text FROM edge"
            )
        }
    for name in ("edge", "edge_changes"):
        got = {
            r[0]: r[1:]
            for r in mysql_rows(mysql_target_url, f"SELECT id, n, big, j, js, tm, arr FROM {name}")
        }
        for k, (n, big, j, js, tm, arr) in src.items():
            gn, gbig, gj, gjs, gtm, garr = got[k]
            assert (gn, gbig, gjs) == (n, big, js)  # exact PostgreSQL text
            for g, want in ((gj, j), (garr, arr)):
                assert (json.loads(g) if g else g) == (json.loads(want) if want else want)
            assert time_text(gtm) == tm
    big = mysql_rows(mysql_target_url, "SELECT length(t), length(`by`) FROM edge WHERE id = 30")[0]
    assert big[0] > 100_000 and big[1] == 10_500


def test_char_n_keeps_postgresql_padding(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE ch (id int PRIMARY KEY, c char(5), k char(3) UNIQUE);"
        "INSERT INTO ch VALUES (1, 'ab', 'a'), (2, '', 'b'), (3, 'abcde', 'c'),"
        " (4, 'é', 'd'), (5, NULL, NULL), (6, ' x ', 'e')",
    )
    target = open_target(mysql_target_url)
    m = mapping(source_db, "ch")
    copy_table(source_db, target, m)
    assert assert_same(source_db, "public", "ch", mysql_target_url) == 6
    assert mysql_rows(mysql_target_url, "SELECT c FROM ch WHERE id = 1") == [("ab   ",)]
    run_sql(source_db, "UPDATE ch SET c = 'z' WHERE id = 2; INSERT INTO ch VALUES (7, 'q', 'f')")
    apply(
        target,
        m,
        [
            RowChange(ChangeKind.UPDATE, m.label, new=text_rows(source_db, m, "id = 2")[0], lsn=LSN),
            *inserts(m, text_rows(source_db, m, "id = 7")),
        ],
    )
    assert assert_same(source_db, "public", "ch", mysql_target_url) == 7


def test_case_accent_and_space_variants_of_a_text_key_stay_apart(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE k (name text PRIMARY KEY, v int);"
        "INSERT INTO k VALUES ('abc', 1), ('ABC', 2), ('abc ', 3), ('äbc', 4), ('Abc', 5)",
    )
    target = open_target(mysql_target_url)
    m = mapping(source_db, "k")
    assert copy_table(source_db, target, m) == 5
    assert assert_same(source_db, "public", "k", mysql_target_url) == 5
    run_sql(
        source_db,
        "UPDATE k SET v = 10 WHERE name = 'abc'; DELETE FROM k WHERE name = 'ABC';"
        "INSERT INTO k VALUES ('abC', 6)",
    )
    key = lambda k: (k, None)  # noqa: E731
    apply(
        target,
        m,
        [
            RowChange(ChangeKind.UPDATE, m.label, new=("abc", "10"), lsn=LSN),
            RowChange(ChangeKind.DELETE, m.label, old=key("ABC"), lsn=LSN),
            *inserts(m, [("abC", "6")]),
        ],
    )
    assert assert_same(source_db, "public", "k", mysql_target_url) == 5


def test_update_that_changes_nothing_is_not_divergence(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE same (id int PRIMARY KEY, v text); CREATE TABLE dup (a int, b text);"
        "ALTER TABLE dup REPLICA IDENTITY FULL;"
        "INSERT INTO same VALUES (1, 'x'), (2, 'y'), (3, 'z'); INSERT INTO dup VALUES (1, 'x'), (1, 'x')",
    )
    target = open_target(mysql_target_url)
    m, d = mapping(source_db, "same"), mapping(source_db, "dup")
    copy_table(source_db, target, m)
    copy_table(source_db, target, d)
    same = [RowChange(ChangeKind.UPDATE, m.label, new=r, lsn=LSN) for r in text_rows(source_db, m)]
    apply(target, m, same[:1])  # one statement
    apply(target, m, same)  # executemany
    apply(
        target, d, [RowChange(ChangeKind.UPDATE, d.label, old=("1", "x"), new=("1", "x"), old_is_key=False)]
    )
    assert assert_same(source_db, "public", "same", mysql_target_url) == 3
    assert assert_same(source_db, "public", "dup", mysql_target_url) == 2
    with pytest.raises(DivergenceError, match="id='9'"):
        apply(target, m, [RowChange(ChangeKind.UPDATE, m.label, new=("9", "x"), lsn=LSN)])


BAD_VALUES = [
    ("float8", "'NaN'"),
    ("real", "'-Infinity'"),
    ("numeric(10,2)", "'NaN'"),
    ("timestamp", "'infinity'"),
    ("timestamptz", "'-infinity'"),
    ("date", "'0044-03-15 BC'"),
    ("timestamp", "'10000-01-01 00:00:00'"),
]


def test_values_mysql_cannot_hold_are_refused_naming_table_and_column(source_db, mysql_target_url):
    ddl = "".join(
        f"CREATE TABLE bad{i} (id int PRIMARY KEY, good text, val {typ});"
        f"INSERT INTO bad{i} VALUES (1, 'ok', NULL), (2, 'ok', {v});"
        for i, (typ, v) in enumerate(BAD_VALUES)
    )
    run_sql(source_db, ddl)
    target = open_target(mysql_target_url)
    for i, (_typ, _v) in enumerate(BAD_VALUES):
        m = mapping(source_db, f"bad{i}")
        with pytest.raises(ValueRangeError) as e:
            copy_table(source_db, target, m)
        assert f"public.bad{i}.val" in str(e.value) and "id='2'" in str(e.value), str(e.value)
        with pytest.raises(ValueRangeError, match=rf"public\.bad{i}\.val"):
            apply(target, m, inserts(m, text_rows(source_db, m, "id = 2")))
    assert mysql_rows(mysql_target_url, "SELECT count(*) FROM bad0") == [(0,)]  # nothing half-loaded


def test_strict_session_refuses_truncation_on_the_change_path(source_db, mysql_target_url):
    run_sql(source_db, "CREATE TABLE s (id int PRIMARY KEY, vc varchar(5), i2 smallint)")
    target = open_target(mysql_target_url)
    m = mapping(source_db, "s")
    with pytest.raises(ValueRangeError, match=r"public\.s.*too long"):
        apply(target, m, inserts(m, [("1", "toolong", "1")]))
    with pytest.raises(ValueRangeError, match=r"public\.s.*range"):
        apply(target, m, inserts(m, [("1", "ok", "70000")]))
    with target.engine.connect() as c:
        mode, tz = c.exec_driver_sql("SELECT @@sql_mode, @@time_zone").one()
    assert tz == "+00:00"
    assert {
        "STRICT_ALL_TABLES",
        "NO_ZERO_DATE",
        "NO_ZERO_IN_DATE",
        "ERROR_FOR_DIVISION_BY_ZERO",
        "NO_ENGINE_SUBSTITUTION",
    } <= set(mode.split(","))
    assert mysql_rows(mysql_target_url, "SELECT count(*) FROM s") == [(0,)]


def test_a_zero_integer_key_stays_zero_and_copies_refuse_duplicates(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE z (id int PRIMARY KEY, v text); INSERT INTO z VALUES (0, 'zero'), (5, 'five')",
    )
    target = open_target(mysql_target_url)
    m = mapping(source_db, "z")
    copy_table(source_db, target, m)
    apply(
        target,
        m,
        [RowChange(ChangeKind.DELETE, m.label, old=("0", None), lsn=LSN), *inserts(m, [("0", "zero")])],
    )
    assert assert_same(source_db, "public", "z", mysql_target_url) == 2
    with pytest.raises(TargetError, match="Duplicate entry"):
        copy_table(source_db, target, m)  # a copy into a non-empty table must not skip rows silently


def test_key_too_wide_for_an_innodb_index_is_refused_when_building_the_table(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE wide (a varchar(700), b varchar(100), PRIMARY KEY (a, b));"
        "CREATE TABLE two (a text, b text, c int, PRIMARY KEY (a, b, c))",
    )
    target = open_target(mysql_target_url)
    with pytest.raises(TargetError, match=r"public\.wide.*3072"):
        with target.connect() as conn:
            target.ensure_table(conn, mapping(source_db, "wide"))
    m = mapping(source_db, "two")
    with target.connect() as conn:
        target.ensure_table(conn, m)
    run_sql(source_db, "INSERT INTO two VALUES (repeat('é', 380), repeat('b', 380), 1)")
    copy_table(source_db, target, m)
    assert assert_same(source_db, "public", "two", mysql_target_url) == 1


def test_a_refused_chunk_stops_the_source_copy_and_rolls_back(source_db, mysql_target_url):
    run_sql(
        source_db,
        "CREATE TABLE many (id int PRIMARY KEY, f float8, pad text);"
        "INSERT INTO many SELECT g, CASE WHEN g = 30 THEN 'NaN'::float8 ELSE g END, repeat('p', 100)"
        " FROM generate_series(1, 20000) g",
    )  # NaN in the first of ~140 chunks
    target = open_target(mysql_target_url)
    m = mapping(source_db, "many")
    threads = threading.active_count()
    with snapshot.snapshot_connection(source_db, None) as sc:
        q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_format(m))
        with pytest.raises(ValueRangeError, match=r"public\.many\.f: value 'NaN'.*id='30'"):
            with target.connect() as conn:
                target.ensure_table(conn, m)
                target.load_copy(conn, m, snapshot.CopyOut(sc, q, chunk=16 << 10))
        # the source COPY ended (cancelled at the refused chunk, not read to its end): the connection
        # is out of COPY and usable again after the rollback the failed copy leaves to the caller
        assert sc.pgconn.transaction_status != psycopg.pq.TransactionStatus.ACTIVE
        sc.rollback()
        assert sc.execute("SELECT count(*) FROM many").fetchone() == (20000,)
    assert threading.active_count() == threads
    assert mysql_rows(mysql_target_url, "SELECT count(*) FROM many") == [(0,)]


def test_multiline_values_across_copy_chunk_boundaries(source_db, mysql_target_url):
    """In CSV a newline may sit inside a quoted value: chunks must end at row ends (copy_bytes does,
    as libpq returns one whole row per CopyData), never at the last newline of a raw buffer."""
    run_sql(
        source_db,
        "CREATE TABLE ml (id int PRIMARY KEY, t text);"
        "INSERT INTO ml SELECT g, repeat(E'line\\n\"q\",\\n', g % 7) || g FROM generate_series(1, 3000) g",
    )
    target = open_target(mysql_target_url)
    m = mapping(source_db, "ml")
    with snapshot.snapshot_connection(source_db, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_format(m))
        assert target.load_copy(conn, m, snapshot.CopyOut(sc, q, chunk=997)) == 3000
    assert assert_same(source_db, "public", "ml", mysql_target_url) == 3000


@pytest.mark.bench
def test_bench_load_data_pgbench_accounts(source_db, mysql_target_url, capsys):
    """1M pgbench_accounts rows, COPY CSV → LOAD DATA end to end (run with -m bench -s)."""
    pgbench_init(source_db, scale=10)
    target = open_target(mysql_target_url)
    m = mapping(source_db, "pgbench_accounts")
    with target.connect() as conn:
        target.ensure_table(conn, m)
    t0 = time.perf_counter()
    assert copy_table(source_db, target, m) == 1_000_000
    secs = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\nMySQL LOAD DATA: 1,000,000 pgbench_accounts rows in {secs:.2f}s = {1e6 / secs:,.0f} rows/s")
