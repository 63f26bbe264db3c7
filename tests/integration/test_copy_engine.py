"""The copy engine's source side against a real server: the asyncpg reader returns the bytes the
psycopg reader returns, ctid-range pieces cover a table exactly once, an early stop cancels the
COPY on the server, and a DSN only libpq understands still copies (through psycopg)."""

from __future__ import annotations

import time

import psycopg
import pytest

from replicator import copyplan
from replicator.source import snapshot
from replicator.source.fastcopy import FastSession
from tests.integration.test_target_conformance import schema_of

DDL = """
CREATE TABLE kinds (
  id int PRIMARY KEY, n numeric, f float8, r real, ts timestamptz, d date, iv interval,
  b bytea, t text, j jsonb, a int[], u uuid, bo boolean
);
INSERT INTO kinds VALUES
  (1, 1.50, 0.1, 1.1, '2024-02-29 23:59:59.123456+05', '0044-03-15 BC', '1 year 2 mons 3 days 04:05:06.7',
   '\\x00ff5c0a', E'tab\\there\\nnew "q" \\\\ back, comma', '{"k": [1, "x"]}', '{1,NULL,3}',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true),
  (2, NULL, 'NaN', '-Infinity', 'infinity', NULL, '-00:00:01', '\\x', '', 'null', '{}', NULL, false),
  (3, -0.0, -0.0, 3.4e38, '1999-12-31 00:00:00+00', '2000-01-01', NULL, NULL, '\\N', NULL, NULL, NULL, NULL);
"""

FORMATS = ["FORMAT text", "FORMAT csv, NULL '\\N'", "FORMAT csv, NULL 'NULL', ENCODING 'UTF8'"]


@pytest.fixture
def kinds_db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(DDL)
    return source_db


def read_all(session, select, options) -> bytes:
    return b"".join(session.copy_out(select, options, 1 << 10, None).chunks())


@pytest.mark.parametrize("options", FORMATS, ids=["text", "csv", "csv-null"])
def test_the_fast_reader_returns_the_bytes_the_psycopg_reader_returns(kinds_db, options):
    """Same pinned session settings (time zone, date and interval style, float digits, bytea
    output): the COPY bytes are identical, so the text rendering contract holds on both paths."""
    t = schema_of(kinds_db, "kinds")
    select = snapshot.copy_select(t, ["{col}"] * len(t.columns))
    fast = snapshot.open_session(kinds_db, None)
    slow = snapshot.PgSession(kinds_db, None)
    try:
        assert isinstance(fast, FastSession)
        got, want = read_all(fast, select, options), read_all(slow, select, options)
    finally:
        fast.close()
        slow.close()
    assert got == want
    assert got.count(b"\n") >= 3


def test_a_dsn_only_libpq_understands_is_read_through_psycopg(kinds_db):
    dsn = kinds_db + ("&" if "?" in kinds_db else "?") + "target_session_attrs=any"
    session = snapshot.open_session(dsn, None)
    try:
        assert isinstance(session, snapshot.PgSession)
        t = schema_of(kinds_db, "kinds")
        out = session.copy_out(snapshot.copy_select(t, ["{col}"] * 13), "FORMAT text", 1 << 20, None)
        rows = [r for batch in out.rows() for r in batch]
    finally:
        session.close()
    assert [r[0] for r in rows] == ["1", "2", "3"]


def test_ctid_pieces_cover_every_visible_row_exactly_once(source_db):
    """Dead tuples, HOT chains, rows moved by updates and a row filter: the pieces' union is the
    table's rows, each once."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY, v text) WITH (fillfactor = 70)")
        c.execute("INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
        c.execute("DELETE FROM big WHERE id % 7 = 0")
        c.execute("UPDATE big SET v = 'moved' WHERE id % 5 = 0")
        c.execute("UPDATE big SET v = repeat('y', 300) WHERE id % 11 = 0")
    t = schema_of(source_db, "big")
    m = _mapping(t)
    session = snapshot.open_session(source_db, None)
    try:
        pieces = copyplan.plan(session, [m], 20)
        assert len(pieces) > 5 and all(p.split is pieces[0].split for p in pieces)
        assert pieces[-1].hi is None or any(p.hi is None for p in pieces)
        seen: list[str] = []
        for p in pieces:
            q = snapshot.piece_select(t, ["{col}"] * 2, "id % 3 <> 1", p.lo, p.hi)
            seen += [
                r[0] for batch in session.copy_out(q, "FORMAT text", 1 << 16, None).rows() for r in batch
            ]
    finally:
        session.close()
    with psycopg.connect(source_db) as c:
        want = [str(r[0]) for r in c.execute("SELECT id FROM big WHERE id % 3 <> 1")]
    assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))


def test_small_tables_are_copied_whole(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE small (id int PRIMARY KEY)")
        c.execute("INSERT INTO small SELECT generate_series(1, 100)")
    session = snapshot.open_session(source_db, None)
    try:
        pieces = copyplan.plan(session, [_mapping(schema_of(source_db, "small"))], 8)
    finally:
        session.close()
    assert [(p.split, p.rel) for p in pieces] == [(None, None)]


def test_stopping_early_cancels_the_copy_on_the_server(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE slow (id int)")
    session = snapshot.open_session(source_db, None)
    try:
        session.label("copy-engine-test")
        select = psycopg.sql.SQL("SELECT g, pg_sleep(0.001) FROM generate_series(1, 1000000) g")
        out = session.copy_out(select, "FORMAT text", 1 << 10, None)
        chunks = out.chunks()
        next(chunks)
        t0 = time.monotonic()
        out.close()
        assert time.monotonic() - t0 < 10, "closing the output did not end the COPY promptly"
        # the cancel request travels on its own connection: give the server a moment to act on it
        deadline, active = time.monotonic() + 30, 1
        with psycopg.connect(source_db, autocommit=True) as c:
            while active and time.monotonic() < deadline:
                active = c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'copy-engine-test' "
                    "AND state = 'active'"
                ).fetchone()[0]
                time.sleep(0.05)
        assert active == 0, "the COPY still ran on the server 30 s after the reader stopped"
    finally:
        session.close()


def _mapping(t):
    from replicator.model import TableMapping

    return TableMapping(view=t, target_name=t.name)


SAFE_DDL = """
CREATE TABLE safe (
  id int8 PRIMARY KEY, s int2, i int4, n numeric, f4 real, f8 float8, b bool, t text,
  vc varchar(10), c char(3), d date, tm time, ts timestamp, tz timestamptz, iv interval,
  ttz timetz, u uuid, by bytea, j json, jb jsonb
);
INSERT INTO safe VALUES
  (1, -32768, 2147483647, 'NaN', 'NaN', '-Infinity', true, '', '', 'a', 'infinity', '24:00:00',
   '-infinity', 'infinity', '-178000000 years', '00:00:00+15:59', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '\\x', '{"a":1,  "a":2}', '{"k": [1, 2.50, null]}'),
  (2, 0, -0, -0.000, '-0', '-0', false, E'tab\\t\\\\ \\n"', 'x', NULL, '4713-01-01 BC', '00:00:00',
   '0001-01-01 00:00:00', '1999-12-31 23:59:59.999999+00', '1 mon -30 days', '12:00:00-15:59', NULL,
   '\\x00ff', 'null', 'null'),
  (3, NULL, NULL, 123456789012345678901234567890.123456789, 3.4e38, 1e-300, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""


def test_common_scalar_types_pass_through_binary_into_postgresql_exactly(source_db, pg_target_url):
    """A table of common built-in scalar types only is copied in binary (no text on either
    server); every value, edge cases included, arrives as the source renders it."""
    from replicator.options import Options
    from replicator.pipeline import Pipeline
    from replicator.target import open_target

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SAFE_DDL)
    opts = Options(source=source_db, target=pg_target_url, name="safe")
    p = Pipeline(opts)
    assert p.migrate().rows_copied == 3
    target = open_target(pg_target_url)
    try:
        (m,) = [m for m in p.mappings if m.view.name == "safe"]
        with target.connect() as conn:
            target.ensure_table(conn, m)
        assert target.copy_format(m) == "FORMAT binary"
    finally:
        target.dispose()
    rows = "SELECT s::text FROM safe s ORDER BY id"  # every column through its output function
    types = "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'safe'::regclass AND attnum > 0 ORDER BY attnum"
    dsn = pg_target_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(source_db) as s, psycopg.connect(dsn) as t:
        for c in (s, t):
            c.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = 'iso_8601'")
        assert t.execute(types).fetchall() == s.execute(types).fetchall()
        want, got = s.execute(rows).fetchall(), t.execute(rows).fetchall()
    assert got == want and len(got) == 3


PARTS = """
CREATE TABLE ev (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu') PARTITION BY RANGE (id);
CREATE TABLE ev_eu_lo PARTITION OF ev_eu FOR VALUES FROM (0) TO (5000);
CREATE TABLE ev_eu_hi PARTITION OF ev_eu FOR VALUES FROM (5000) TO (MAXVALUE);
CREATE TABLE ev_us (v text, region text NOT NULL, id int NOT NULL);  -- other column order, attached later
ALTER TABLE ev ATTACH PARTITION ev_us FOR VALUES IN ('us');
CREATE TABLE ev_rest PARTITION OF ev DEFAULT;
INSERT INTO ev SELECT g, (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], repeat('z', 200) FROM generate_series(1, 12000) g;
DELETE FROM ev WHERE id % 10 = 0;
"""


def test_a_partitioned_table_is_copied_by_its_leaves_exactly(source_db, tmp_path, monkeypatch):
    """Multi-level partitions, a leaf with another column order, a default partition, a row
    filter: the leaves' pieces hold the root's rows, each once, and a migrate copies them all."""
    from replicator.options import Options
    from replicator.pipeline import Pipeline

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(PARTS)
    t = schema_of(source_db, "ev")
    session = snapshot.open_session(source_db, None)
    try:
        pieces = copyplan.plan(session, [_mapping(t)], 8)
        assert {p.rel[1] for p in pieces} == {"ev_eu_lo", "ev_eu_hi", "ev_us", "ev_rest"}
        seen: list[tuple] = []
        for p in pieces:
            q = snapshot.piece_select(t, ["{col}"] * 3, "id % 7 <> 1", p.lo, p.hi, p.rel)
            seen += [r for batch in session.copy_out(q, "FORMAT text", 1 << 16, None).rows() for r in batch]
    finally:
        session.close()
    with psycopg.connect(source_db) as c:
        want = [tuple(str(x) for x in r) for r in c.execute("SELECT id, region, v FROM ev WHERE id % 7 <> 1")]
    assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))

    monkeypatch.setenv(copyplan.PIECE_PAGES_ENV, "8")
    url = f"duckdb:///{tmp_path}/ev.duckdb"
    assert (
        Pipeline(Options(source=source_db, target=url, name="ev", tables=("public.ev",)))
        .migrate()
        .rows_copied
        == 10800
    )
    import duckdb

    with duckdb.connect(f"{tmp_path}/ev.duckdb") as db:
        got = db.execute("SELECT count(*), count(DISTINCT (id, region)), sum(id) FROM ev").fetchone()
    assert got == (10800, 10800, sum(g for g in range(1, 12001) if g % 10))


def test_a_precreated_table_of_other_types_is_copied_as_text(source_db, pg_target_url):
    """Binary needs the target column of the very same type: a table the user made with bigint
    for an int4 column is copied as text (the target parses it), and every row arrives."""
    from replicator.options import Options
    from replicator.pipeline import Pipeline
    from replicator.target import open_target

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE wid (id int PRIMARY KEY, n int)")
        c.execute("INSERT INTO wid SELECT g, -g FROM generate_series(1, 1000) g")
    dsn = pg_target_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE wid (id bigint PRIMARY KEY, n bigint)")
    p = Pipeline(Options(source=source_db, target=pg_target_url, name="wid"))
    assert p.migrate().rows_copied == 1000
    target = open_target(pg_target_url)
    try:
        with target.connect() as conn:
            target.ensure_table(conn, p.mappings[0])
        assert target.copy_format(p.mappings[0]) == "FORMAT text"
    finally:
        target.dispose()
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*), sum(n) FROM wid").fetchone() == (1000, -500500)


@pytest.mark.parametrize("kind", ["duckdb", "pg"])
def test_a_key_the_loaded_rows_break_is_named_when_it_is_added(source_db, pg_target_url, tmp_path, kind):
    """The key is built after the load (key_after_load): rows that break it end the copy with an
    error naming the table and the key, not a driver trace."""
    from replicator.errors import TargetError
    from replicator.target import open_target

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE dup (id int PRIMARY KEY, v text)")
    m = _mapping(schema_of(source_db, "dup"))
    target = open_target(f"duckdb:///{tmp_path}/dup.duckdb" if kind == "duckdb" else pg_target_url)
    try:
        with target.connect() as conn:  # committed first, as a split table's pieces are
            target.ensure_table(conn, m)
            assert not target.has_primary_key(conn, m)
            conn.exec_driver_sql("INSERT INTO dup VALUES (1, 'a'), (1, 'b')")
        with target.connect() as conn:
            with pytest.raises(TargetError, match=r"primary key \(id\) of dup \(from public.dup\)"):
                target.finish_copy(conn, m)
    finally:
        target.dispose()
