"""DuckDB target specifics beyond the conformance body: CSV edge values through the copy path (and
the same values through the change path), chunk re-cutting, update coalescing with UNCHANGED,
key changes inside a run, divergence, and waiting for a file another process holds.

Real servers and files only: a throwaway PostgreSQL source, DuckDB files in tmp_path, and a real
second Python process holding the DuckDB file.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap
import time

import duckdb
import psycopg
import pytest
import sqlalchemy as sa

from replicator.errors import DivergenceError, TargetError
from replicator.model import UNCHANGED, ChangeKind, Lsn, RowChange, TableMapping
from replicator.source import catalog, snapshot
from replicator.target import open_target
from replicator.target.duckdb import DuckDBTarget, whole_rows
from tests.compare import assert_same

EDGE = r"""
CREATE TABLE edge (id int PRIMARY KEY, t text, n numeric, n50 numeric(50,10), j jsonb, js json,
                   iv interval, arr int[], ch char(4), b bytea, u uuid);
INSERT INTO edge (id, t) VALUES
 (1, NULL), (2, ''), (3, '\N'), (4, 'NULL'), (5, 'a,b,,c'), (6, 'say "hi" ""'), (7, '"'),
 (8, E'l1\nl2\r\nl3\r'), (9, E'\n'), (10, E'tab\there\t'), (11, E'back\\slash \\\\N \\'),
 (12, '😀𝄞 four-byte UTF-8 ünïcödé'), (13, ','), (14, ' padded '), (15, E'"\n,\\N\n"');
INSERT INTO edge SELECT 16, repeat('x', 150000) || E'\n' || repeat('"', 1000) || E'\n,';
INSERT INTO edge SELECT 17, string_agg(chr(32 + (i * 7919) % 9000), '') FROM generate_series(1, 120000) i;
UPDATE edge SET n = '12345678901234567890123456789012345678901234567890.123456789', n50 = -1.5,
  j = '{"b": [1, 2], "a": "x\"y"}', js = '{ "keep" :  "spacing" }', iv = '1 year 2 mons 3 days 04:05:06.5',
  arr = '{1,NULL,3}', ch = 'ab', b = '\x00ff', u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'
  WHERE id = 2;
UPDATE edge SET n = 'NaN', js = '"\\N"', ch = '', b = '\x' WHERE id = 3;
CREATE TABLE odd (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, f4 real, f8 float8, tm time);
INSERT INTO odd VALUES
 (1, 'infinity', 'infinity', 'infinity', 'NaN', 'NaN', '24:00:00'),
 (2, '-infinity', '-infinity', '-infinity', 'Infinity', '-Infinity', '00:00:00'),
 (3, '0044-03-15 BC', '0044-03-15 10:11:12.5 BC', '0001-01-01 00:00:00+00 BC', '-0', '1e-320', '23:59:59.999999'),
 (4, '0005-02-29 BC', '10000-01-01 00:00:00', '12345-06-07 08:09:10.123456+00', '3.4e38', '1.7976931348623157e308', NULL);
CREATE TABLE acc (id int PRIMARY KEY, a int, b text, big text);
INSERT INTO acc VALUES (1, 10, 'b1', 'big1'), (2, 20, 'b2', 'big2'), (3, 30, 'b3', 'big3');
"""


@pytest.fixture
def src(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(EDGE)
    return source_db


def mapping(dsn, name, target_name=None, **kw):
    with snapshot.connect(dsn) as c:
        s = catalog.load_schemas(c, [t for t in catalog.list_tables(c) if t[2] == name])[0]
    return TableMapping(s, target_name or name, **kw)


def copy_in(dsn, target, m, chunk=snapshot.CHUNK_BYTES):
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_format(m))
        return target.load_copy(conn, m, snapshot.CopyOut(sc, q, chunk=chunk))


def text_rows(dsn, m):
    """All rows as PostgreSQL text: exactly what pgoutput sends."""
    with snapshot.connect(dsn) as c:
        q = snapshot.copy_query(m.view, ["{col}"] * len(m.view.columns), "FORMAT text")
        return [r for batch in snapshot.copy_rows(c, q) for r in batch]


def run_sql(dsn, stmt):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(stmt)


def duck(url, q):
    with duckdb.connect(sa.make_url(url).database, read_only=True) as c:
        return c.execute(q).fetchall()


def U(*new, old=None, lsn="0/10"):  # noqa: N802
    return RowChange(ChangeKind.UPDATE, "public.acc", new=tuple(new), old=old, lsn=Lsn.parse(lsn))


def D(key, lsn="0/20"):  # noqa: N802
    return RowChange(ChangeKind.DELETE, "public.acc", old=(key, None, None, None), lsn=Lsn.parse(lsn))


# ------------------------------------------------------------------ copy path and change path


def test_csv_edge_values_copy_and_change_path_agree(src, duckdb_target_url):
    target = open_target(duckdb_target_url)
    target.load_file_bytes = 64 << 10  # several spool files, loaded while the next one fills
    m = mapping(src, "edge")
    assert copy_in(src, target, m, chunk=4096) == 17  # tiny chunks: cuts inside quoted newlines
    cols = ["id", "t", "n", "n50", "j", "js", "ch", "b", "u"]  # psycopg can't load iv/arr as text
    assert_same(src, "public", "edge", duckdb_target_url, columns=cols)
    mc, other = (
        mapping(src, "edge", "edge_changes"),
        open_target(duckdb_target_url),
    )  # tables cached by source
    with other.connect() as conn:
        other.ensure_table(conn, mc)
        other.apply(conn, mc, [RowChange(ChangeKind.INSERT, "public.edge", new=r) for r in text_rows(src, m)])
    assert_same(src, "public", "edge", duckdb_target_url, target_table="edge_changes", columns=cols)
    # Kept as PostgreSQL's exact text: no DECIMAL(38) squeeze, json spacing, padding; intervals
    # keep months and days apart (INTERVAL), arrays are LISTs (docs/types.md).
    with snapshot.connect(src) as c:
        want = c.execute(
            "SELECT id, n::text, n50::text, js::text, (extract(year FROM iv) * 12 + "
            "extract(month FROM iv))::int, extract(day FROM iv)::int, arr, ch "
            "FROM edge ORDER BY id"
        ).fetchall()
    for table in ("edge", "edge_changes"):
        assert (
            duck(
                duckdb_target_url,
                f"SELECT id, n, n50, CAST(js AS VARCHAR), datepart('year', iv) * 12 + "
                f"datepart('month', iv), datepart('day', iv), arr, ch "
                f"FROM {table} ORDER BY id",
            )
            == want
        )
    assert duck(duckdb_target_url, "SELECT typeof(n), typeof(n50), typeof(j) FROM edge LIMIT 1") == [
        ("VARCHAR", "VARCHAR", "JSON")
    ]
    target.dispose()


def test_infinity_bc_and_big_years_identical_on_both_paths(src, duckdb_target_url):
    target = open_target(duckdb_target_url)
    m, mc, other = mapping(src, "odd"), mapping(src, "odd", "odd_changes"), open_target(duckdb_target_url)
    copy_in(src, target, m)
    with other.connect() as conn:
        other.ensure_table(conn, mc)
        other.apply(conn, mc, [RowChange(ChangeKind.INSERT, "public.odd", new=r) for r in text_rows(src, m)])
    assert duck(
        duckdb_target_url, "SELECT count(*) FROM (SELECT * FROM odd EXCEPT SELECT * FROM odd_changes)"
    ) == [(0,)]
    rows = duck(
        duckdb_target_url,
        "SELECT id, isinf(d), isinf(ts), isinf(tz), CAST(f4 AS VARCHAR), "
        "CAST(f8 AS VARCHAR), CAST(tm AS VARCHAR) FROM odd_changes ORDER BY id",
    )
    assert rows[0] == (1, True, True, True, "nan", "nan", "24:00:00")
    assert rows[1][:6] == (2, True, True, True, "inf", "-inf")
    with snapshot.connect(src) as c:  # same instants: seconds since 1970 agree (BC, leap 5 BC, year > 9999)
        us = "(extract(epoch FROM {}) * 1000000)::int8"
        want = c.execute(
            f"SELECT id, {us.format('d::timestamp')}, {us.format('ts')}, {us.format('tz')}, "
            f"f4::float8, f8 FROM odd WHERE id > 2 ORDER BY id"
        ).fetchall()
    assert (
        duck(
            duckdb_target_url,
            "SELECT id, epoch_us(CAST(d AS TIMESTAMP)), epoch_us(ts), epoch_us(tz), "
            "CAST(f4 AS DOUBLE), f8 FROM odd_changes WHERE id > 2 ORDER BY id",
        )
        == want
    )
    target.dispose()


class CutChunks:
    """COPY output already read, cut anywhere (a CopyOutput that hands over given chunks)."""

    def __init__(self, parts):
        self.parts = parts

    def chunks(self):
        return iter(self.parts)


def test_chunks_cut_anywhere_are_recut_at_real_row_ends(src, duckdb_target_url):
    m = mapping(src, "edge")
    with snapshot.snapshot_connection(src, None) as sc:  # the target's copy form (arrays as JSON)
        q = snapshot.copy_query(
            m.view, DuckDBTarget(duckdb_target_url).copy_expressions(m), DuckDBTarget.copy_options
        )
        data = b"".join(snapshot.copy_bytes(sc, q))
    rnd = random.Random(7)
    for _ in range(50):
        cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 40)))
        parts = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        blocks = list(whole_rows(parts))
        assert b"".join(blocks) == data
        for b in blocks:  # every block ends outside quotes, at a newline
            assert b.endswith(b"\n") and b.count(b'"') % 2 == 0
    target = open_target(duckdb_target_url)
    target.load_file_bytes = 1  # one spool file per block
    with target.connect() as conn:
        target.ensure_table(conn, m)
        assert target.load_copy(conn, m, CutChunks(parts)) == 17  # cut inside quoted newlines, commas, UTF-8
    assert_same(
        src, "public", "edge", duckdb_target_url, columns=["id", "t", "n", "n50", "j", "js", "ch", "b", "u"]
    )
    target.dispose()


# ------------------------------------------------------------------ change path


def test_update_run_coalesces_keys_and_keeps_unchanged(src, duckdb_target_url):
    target = open_target(duckdb_target_url)
    m = mapping(src, "acc")
    copy_in(src, target, m)
    run_sql(
        src,
        "UPDATE acc SET big = 'big1-new' WHERE id = 1; UPDATE acc SET a = 11 WHERE id = 1;"
        "UPDATE acc SET a = 21 WHERE id = 2; UPDATE acc SET b = 'b1-new' WHERE id = 1;"
        "UPDATE acc SET a = 31, big = 'big3-new' WHERE id = 3; UPDATE acc SET a = 22 WHERE id = 2;"
        "UPDATE acc SET b = NULL WHERE id = 3",
    )
    changes = [
        U("1", "10", "b1", "big1-new"),
        U("1", "11", "b1", UNCHANGED),
        U("2", "21", "b2", UNCHANGED),
        U("1", "11", "b1-new", UNCHANGED),
        U("3", "31", "b3", "big3-new"),
        U("2", "22", "b2", UNCHANGED),
        U("3", "31", None, UNCHANGED),
    ]
    with target.connect() as conn:
        target.apply(conn, m, changes)
    assert_same(src, "public", "acc", duckdb_target_url)  # big of 1 and 3 from earlier updates; 2 untouched
    target.dispose()


def test_key_change_inside_a_run_and_key_reuse(src, duckdb_target_url):
    target = open_target(duckdb_target_url)
    m = mapping(src, "acc")
    copy_in(src, target, m)
    run_sql(
        src,
        "UPDATE acc SET a = 12 WHERE id = 1; UPDATE acc SET id = 20 WHERE id = 2;"
        "UPDATE acc SET a = 23 WHERE id = 20; UPDATE acc SET a = 13 WHERE id = 1;"
        "UPDATE acc SET id = 2, b = 'was 3' WHERE id = 3; UPDATE acc SET a = 99 WHERE id = 2;"
        "DELETE FROM acc WHERE id = 1; INSERT INTO acc VALUES (1, 1, 'again', NULL)",
    )
    key = lambda k: (k, None, None, None)  # noqa: E731
    changes = [
        U("1", "12", "b1", UNCHANGED),
        U("20", "20", "b2", UNCHANGED, old=key("2")),
        U("20", "23", "b2", UNCHANGED),
        U("1", "13", "b1", UNCHANGED),
        U("2", "30", "was 3", UNCHANGED, old=key("3")),
        U("2", "99", "was 3", UNCHANGED),
        D("1"),
        RowChange(ChangeKind.INSERT, "public.acc", new=("1", "1", "again", None)),
    ]
    with target.connect() as conn:
        target.apply(conn, m, changes)
    assert_same(src, "public", "acc", duckdb_target_url)
    target.dispose()


@pytest.mark.parametrize(
    "changes, key",
    [
        ([U("1", "5", "x", None), U("999", "5", "x", None, lsn="1/2"), U("2", "6", "y", None)], "999"),
        ([D("1"), D("998", lsn="1/2")], "998"),
        ([D("3", lsn="1/2"), D("2"), D("3", lsn="1/2")], "3"),  # deleted twice: the second finds nothing
    ],
    ids=["update", "delete", "delete-twice"],
)
def test_divergence_names_table_key_lsn_and_rolls_back(src, duckdb_target_url, changes, key, caplog):
    target = open_target(duckdb_target_url)
    m = mapping(src, "acc")
    copy_in(src, target, m)
    with pytest.raises(DivergenceError) as e:
        with target.connect() as conn:
            target.apply(conn, m, changes)
    assert "public.acc" in str(e.value) and f"id='{key}'" in str(e.value) and "LSN 1/2" in str(e.value)
    assert_same(src, "public", "acc", duckdb_target_url)  # nothing of the batch was committed
    skip = mapping(src, "acc", on_missing_row="skip")
    with caplog.at_level(logging.WARNING), target.connect() as conn:
        target.apply(conn, skip, changes)
    assert f"id='{key}'" in caplog.text
    left = {r[0] for r in duck(duckdb_target_url, "SELECT id FROM acc")}
    assert left == {1, 2, 3} - {int(c.old[0]) for c in changes if c.kind is ChangeKind.DELETE}
    target.dispose()


# ------------------------------------------------------------------ a file another process holds

HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    c = duckdb.connect(sys.argv[1])
    print(c.execute("SELECT count(*) FROM acc").fetchone()[0], flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold(path, seconds):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "3"  # it could open the file: we had closed it after the batch
    return p


def test_waits_for_a_file_another_process_holds(src, duckdb_target_url, caplog):
    path = sa.make_url(duckdb_target_url).database
    target = open_target(duckdb_target_url)
    m = mapping(src, "acc")
    copy_in(src, target, m)
    holder = hold(path, 2.0)
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING), target.connect() as conn:
            target.apply(conn, m, [U("1", "77", "b1", UNCHANGED)])
        assert time.monotonic() - t0 > 1.0
        assert path in caplog.text and "another process" in caplog.text
    finally:
        holder.wait(10)
    assert duck(duckdb_target_url, "SELECT a FROM acc WHERE id = 1") == [(77,)]
    holder = hold(path, 30.0)
    try:
        impatient = open_target(f"{duckdb_target_url}?lock_wait=1.5")
        t0 = time.monotonic()
        with pytest.raises(TargetError) as e, impatient.connect():
            pass
        assert 1.4 < time.monotonic() - t0 < 10
        assert path in str(e.value) and "another process" in str(e.value) and "lock_wait" in str(e.value)
    finally:
        holder.kill()
        holder.wait(10)
    target.dispose()


def test_duckdb_memory_is_bounded_by_default_and_the_url_can_raise_it(tmp_path):
    """DuckDB's own default (80% of RAM) would let a bulk load fill the machine with cache: the
    target sets 256 MB unless the URL says otherwise."""
    for url, want in [
        (f"duckdb:///{tmp_path}/a.duckdb", "244.1 MiB"),
        (f"duckdb:///{tmp_path}/b.duckdb?memory_limit=1GB", "953.6 MiB"),
    ]:
        target = open_target(url)
        try:
            with target.connect() as conn:
                assert conn.exec_driver_sql("SELECT current_setting('memory_limit')").scalar() == want
        finally:
            target.dispose()


def test_a_copy_that_runs_out_of_duckdb_memory_says_which_setting_to_raise(source_db, tmp_path):
    from tests import procs

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE wide (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO wide SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 100000) g")
    url = f"duckdb:///{tmp_path}/oom.duckdb?memory_limit=3MB"
    cp = procs.run("migrate", "--source", source_db, "--target", url, "--no-progress")
    assert cp.returncode != 0
    assert "public.wide" in cp.stderr and "?memory_limit=" in cp.stderr, cp.stderr[-2000:]
