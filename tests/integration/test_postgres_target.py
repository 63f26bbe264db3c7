"""PostgreSQL target: exact round trip of awkward types and names through the copy and change paths.

Real servers only (``source_db`` and ``pg_target_url`` live on two separate PostgreSQL servers).
Rows are compared with the source twice: as the text both servers render under the same pinned
session (exact, and works for values Python cannot hold: NaN, infinity, BC, 1000-digit numerics),
and through ``tests/compare.assert_same`` for the columns Python can load.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from replicator.dsn import source_conninfo
from replicator.errors import DivergenceError, TargetError
from replicator.model import UNCHANGED, ChangeKind, Lsn, RowChange, TableMapping
from replicator.source import catalog, snapshot
from replicator.target import target_class
from replicator.target.postgres import PostgresTarget
from tests.compare import assert_same

BYTES_10K = (
    "decode((SELECT string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), '') "
    "FROM generate_series(1, 10240)), 'hex')"
)
DDL = f"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE SCHEMA "Sch";
CREATE TABLE "Sch"."Order" (
  "a""b" int PRIMARY KEY, "select" text, "Mixed Case" varchar(10), n40 numeric(40,20), nu numeric,
  f8 float8, tstz timestamptz, ts timestamp, iv interval, ia int[], ta text[], j jsonb, m mood,
  by bytea, dom posint, ch char(5));
INSERT INTO "Sch"."Order" VALUES
 (1, E'tab\\there\\nnew \\\\ line', 'MiXeD', '12345678901234567890.12345678901234567890', 'NaN',
  'Infinity', '2024-03-10 01:02:03.456789+05:30', 'infinity', '1 year 2 mons 3 days 04:05:06.789',
  '{{1,NULL,3}}', ARRAY['a"b', NULL, 'NULL', 'x,y', '{{}}', ' sp ', E'back\\\\slash', ''],
  '{{"k": [1, 2.50, null], "s": "é\\"q"}}', 'happy', {BYTES_10K}, 5, 'ab'),
 (2, '', '', '-0.00000000000000000001', (repeat('9', 1000) || '.' || repeat('1', 300))::numeric,
  '-Infinity', '1999-12-31 23:59:59.999999-08', '-infinity', '-1 days +00:00:00.000001', '{{}}',
  '{{}}', '[]', 'sad', '\\x', 1, ''),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'NULL', '\\N', '99999999999999999999.99999999999999999999', '1e-100', 'NaN',
  '0044-03-15 12:00:00+00 BC', '0044-03-15 12:00:00 BC', 'P1Y2M3DT4H5M6.000007S',
  '{{{{1,2}},{{3,NULL}}}}', '{{"{{nested}}","\\\\"}}', '"just a string"', 'ok', {BYTES_10K}, 7, 'abcde'),
 (5, 'x', 'y', '0', '-0.000', '5e-324', '294276-12-31 23:59:59.999999+00', '4713-01-01 00:00:00 BC',
  '178000000 years', '{{-2147483648,2147483647}}', '{{"\\t"}}', '{{"a": {{"b": [true, false]}}}}',
  'happy', '\\x00', 2147483647, 'é');
CREATE TABLE "Sch"."dup tab" (n numeric, f float8, ia int[], j json, p point, m mood, t timestamptz);
ALTER TABLE "Sch"."dup tab" REPLICA IDENTITY FULL;
INSERT INTO "Sch"."dup tab" VALUES
 ('NaN', 'NaN', '{{1,NULL}}', '{{"a": 1}}', '(1.5,2)', 'happy', 'infinity'),
 ('NaN', 'NaN', '{{1,NULL}}', '{{"a": 1}}', '(1.5,2)', 'happy', 'infinity'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL), (NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (1, 0.1, '{{}}', '[ ]', '(0,0)', 'sad', '2020-01-01 00:00:00+00');
"""
ORDER = ("Sch", "Order")
DUP = ("Sch", "dup tab")
# Python can load these columns on both sides (not NaN floats, infinite or BC timestamps).
PY_COLS = ['a"b', "select", "Mixed Case", "n40", "nu", "ia", "ta", "j", "m", "by", "dom", "ch"]


# ------------------------------------------------------------------ helpers
def run_sql(dsn: str, stmt: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(stmt)


def libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def schema_of(dsn: str, schema: str, name: str):
    with snapshot.connect(dsn) as c:
        return catalog.load_schemas(c, [t for t in catalog.list_tables(c) if t[1:3] == (schema, name)])[0]


def text_rows(dsn: str, qualified: tuple, cols) -> list[tuple]:
    """Every row as text renderings under the pinned session (UTC, ISO, iso_8601, hex, digits 3)."""
    with psycopg.connect(source_conninfo(dsn)) as c:
        q = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(x)) for x in cols),
            sql.Identifier(*qualified),
        )
        return sorted(c.execute(q).fetchall(), key=lambda r: [(v is None, v or "") for v in r])


def assert_exact(src: str, url: str, source: tuple, target: tuple, py_cols=None) -> int:
    """Text renderings equal row by row; plus ``assert_same`` over the Python-loadable columns."""
    cols = [c.name for c in schema_of(src, *source).columns]
    a, b = text_rows(src, source, cols), text_rows(libpq(url), target, cols)
    assert len(a) == len(b), f"{len(a)} source rows, {len(b)} target rows"
    for x, y in zip(a, b):
        assert x == y, f"row differs:\n source {x!r}\n target {y!r}"
    if py_cols:
        assert_same(src, source[0], source[1], url, target[1], py_cols, target[0])
    return len(a)


def copy_table(dsn: str, target, m: TableMapping) -> int:
    with snapshot.snapshot_connection(dsn, None) as sc, target.connect() as conn:
        target.ensure_table(conn, m)
        q = snapshot.copy_query(m.view, target.copy_expressions(m), target.copy_format(m))
        return target.load_copy(conn, m, snapshot.CopyOut(sc, q))


def row_text(dsn: str, table, where: str) -> tuple:
    """One row exactly as pgoutput would send it (COPY text output under the pinned session)."""
    q = snapshot.copy_query(table, ["{col}"] * len(table.columns), "FORMAT text", where)
    with snapshot.connect(dsn) as c:
        (row,) = [r for batch in snapshot.copy_rows(c, q) for r in batch]
    return row


def target_types(url: str, qualified: tuple) -> dict[str, str]:
    with psycopg.connect(libpq(url)) as c:
        return dict(
            c.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (sql.Identifier(*qualified).as_string(c),),
            ).fetchall()
        )


@pytest.fixture
def src(source_db):
    run_sql(source_db, DDL)
    return source_db


@pytest.fixture
def tgt(pg_target_url):
    run_sql(libpq(pg_target_url), 'CREATE SCHEMA "select"')  # target schema: a reserved word
    return pg_target_url


def order_mapping(src: str) -> TableMapping:
    return TableMapping(schema_of(src, *ORDER), "Order", target_schema="select")


# ------------------------------------------------------------------ tests
def test_copy_path_exact_types_and_names(src, tgt):
    target = PostgresTarget(tgt)
    m = order_mapping(src)
    assert copy_table(src, target, m) == 5
    assert assert_exact(src, tgt, ORDER, ("select", "Order"), PY_COLS) == 5
    types = target_types(tgt, ("select", "Order"))
    assert types["n40"] == "numeric(40,20)" and types["nu"] == "numeric" and types["ia"] == "integer[]"
    assert types["m"] == "text" and types["dom"] == "integer" and types["ch"] == "character(5)"
    assert types["tstz"] == "timestamp with time zone" and types["iv"] == "interval"
    target.dispose()


def test_change_path_exact_round_trip(src, tgt):
    target = PostgresTarget(tgt)
    m = order_mapping(src)
    t = m.view
    copy_table(src, target, m)
    run_sql(
        src,
        'INSERT INTO "Sch"."Order" SELECT "a""b" + 10, "select", "Mixed Case", n40, nu, f8, tstz, '
        'ts, iv, ia, ta, j, m, by, dom, ch FROM "Sch"."Order" WHERE "a""b" IN (1, 2, 4);'
        """UPDATE "Sch"."Order" SET nu = repeat('7', 900)::numeric, f8 = 'NaN', ts = '-infinity',
                    ia = '{NULL}', ta = '{"\\""}', j = '{}', m = 'sad', tstz = '2000-01-01 00:00:00+14',
                    iv = 'P-1Y-2M3DT-4H', n40 = '-1.5' WHERE "a""b" = 1;"""
        'UPDATE "Sch"."Order" SET "a""b" = 20, "select" = \'moved\' WHERE "a""b" = 2;'
        'UPDATE "Sch"."Order" SET "Mixed Case" = \'upd\' WHERE "a""b" = 4',
    )
    new = {k: row_text(src, t, f'"a""b" = {k}') for k in (11, 12, 14, 1, 20, 4)}
    run_sql(src, 'DELETE FROM "Sch"."Order" WHERE "a""b" IN (12, 3)')
    key = lambda k: (k,) + (None,) * 15  # noqa: E731  (old key tuple: non-key columns NULL)
    row4 = list(new[4])
    row4[13] = UNCHANGED  # TOASTed bytea not sent
    lsn = Lsn.parse("0/1234")
    changes = [RowChange(ChangeKind.INSERT, t.qualified, new=new[k], lsn=lsn) for k in (11, 12, 14)] + [
        RowChange(ChangeKind.UPDATE, t.qualified, new=new[1], lsn=lsn),
        RowChange(ChangeKind.UPDATE, t.qualified, old=key("2"), new=new[20], lsn=lsn),
        RowChange(ChangeKind.UPDATE, t.qualified, new=tuple(row4), lsn=lsn),
        RowChange(ChangeKind.DELETE, t.qualified, old=key("12"), lsn=lsn),
        RowChange(ChangeKind.DELETE, t.qualified, old=key("3"), lsn=lsn),
    ]
    with target.connect() as conn:
        target.apply(conn, m, changes)
    assert assert_exact(src, tgt, ORDER, ("select", "Order"), PY_COLS) == 6
    target.dispose()


def test_full_identity_exactly_one_with_nan_arrays_json_point(src, tgt):
    target = PostgresTarget(tgt)
    m = TableMapping(schema_of(src, *DUP), "dup tab", target_schema="select")
    assert m.view.key == ()
    copy_table(src, target, m)
    first_nan = 'ctid = (SELECT min(ctid) FROM "Sch"."dup tab" WHERE f = \'NaN\')'
    first = row_text(src, m.view, first_nan)
    run_sql(
        src,
        f'DELETE FROM "Sch"."dup tab" WHERE {first_nan};'
        'UPDATE "Sch"."dup tab" SET n = 2, p = \'(3,4)\', j = \'{"x": null}\' '
        'WHERE ctid = (SELECT min(ctid) FROM "Sch"."dup tab" WHERE n IS NULL)',
    )
    updated = row_text(src, m.view, "n = 2")
    changes = [
        RowChange(ChangeKind.DELETE, m.view.qualified, old=first, old_is_key=False),
        RowChange(ChangeKind.UPDATE, m.view.qualified, old=(None,) * 7, new=updated, old_is_key=False),
    ]
    with target.connect() as conn:
        target.apply(conn, m, changes)
    assert assert_exact(src, tgt, DUP, ("select", "dup tab")) == 4
    target.dispose()


def test_divergence_names_the_missing_change_inside_a_batch(src, tgt):
    target = PostgresTarget(tgt)
    m = order_mapping(src)
    copy_table(src, target, m)
    dels = [
        RowChange(ChangeKind.DELETE, m.view.qualified, old=(k,) + (None,) * 15, lsn=Lsn.parse("2/A"))
        for k in ("1", "9999", "2")
    ]
    with pytest.raises(DivergenceError) as e:
        with target.connect() as conn:
            target.apply(conn, m, dels)
    assert "9999" in str(e.value) and "2/A" in str(e.value) and "Sch.Order" in str(e.value)
    assert_exact(src, tgt, ORDER, ("select", "Order"))  # rolled back: all 5 rows still there
    skip = TableMapping(m.view, "Order", target_schema="select", on_missing_row="skip")
    with target.connect() as conn:
        target.apply(conn, skip, dels)
    run_sql(src, 'DELETE FROM "Sch"."Order" WHERE "a""b" IN (1, 2)')
    assert assert_exact(src, tgt, ORDER, ("select", "Order")) == 3
    target.dispose()


def test_copy_refused_by_target_is_a_target_error(src, tgt):
    target = PostgresTarget(tgt)
    m = order_mapping(src)
    run_sql(libpq(tgt), 'CREATE TABLE "select"."Order" AS SELECT * FROM (SELECT 1 "a""b") x WHERE false')
    with target.connect() as conn:
        conn.exec_driver_sql(
            'ALTER TABLE "select"."Order" '
            + ", ".join(
                f'ADD COLUMN "{c.name}" {"varchar(2)" if c.name == "Mixed Case" else target.type_spec(c)}'
                for c in m.view.columns[1:]
            )
        )
    with pytest.raises(TargetError, match=r"Sch\.Order.*select\.Order.*too long"):
        copy_table(src, target, m)
    target.dispose()


def test_truncate_is_one_transactional_statement(src, tgt):
    target = PostgresTarget(tgt)
    ms = [order_mapping(src), TableMapping(schema_of(src, *DUP), "dup tab", target_schema="select")]
    for m in ms:
        copy_table(src, target, m)

    def count(conn, m):
        return conn.execute(sa.select(sa.func.count()).select_from(target.table(m))).scalar()

    with pytest.raises(RuntimeError):
        with target.connect() as conn:
            target.truncate(conn, ms)
            raise RuntimeError("crash before commit")
    with target.connect() as conn:
        assert [count(conn, m) for m in ms] == [5, 5]
        target.truncate(conn, ms)
    with target.connect() as conn:
        assert [count(conn, m) for m in ms] == [0, 0]
    target.dispose()


def test_url_forms_session_and_existing_target_type(src, tgt):
    """``postgres://`` with ``options=-csearch_path``; an enum that exists on the target is used."""
    assert target_class(tgt) is PostgresTarget
    assert target_class(tgt.replace("postgresql+psycopg://", "postgresql://")) is PostgresTarget
    run_sql(libpq(tgt), "CREATE SCHEMA other; CREATE TYPE other.mood AS ENUM ('sad', 'ok', 'happy')")
    url = libpq(tgt).replace("postgresql://", "postgres://") + "?options=-csearch_path%3Dother"
    target = PostgresTarget(url)
    assert target.url.drivername == "postgresql+psycopg"
    with target.connect() as conn:
        shown = [
            conn.exec_driver_sql(f"SHOW {s}").scalar()
            for s in ("TimeZone", "DateStyle", "IntervalStyle", "search_path")
        ]
    assert shown == ["UTC", "ISO, YMD", "iso_8601", "other"]
    m = TableMapping(schema_of(src, *ORDER), "Order")  # no schema: lands in search_path 'other'
    copy_table(src, target, m)
    assert target_types(tgt, ("other", "Order"))["m"] == "other.mood"
    run_sql(src, 'UPDATE "Sch"."Order" SET m = \'ok\' WHERE "a""b" = 5')
    with target.connect() as conn:
        target.apply(
            conn, m, [RowChange(ChangeKind.UPDATE, m.view.qualified, new=row_text(src, m.view, '"a""b" = 5'))]
        )
    assert_exact(src, tgt, ORDER, ("other", "Order"), PY_COLS)
    target.dispose()


# ------------------------------------------------------------------ benchmark (-m bench)
@pytest.mark.bench
def test_bench_copy_pass_through_and_apply_rates(source_db, pg_target_url):
    """1M pgbench_accounts rows through COPY pass-through, then 20k UPDATEs through the applier."""
    from tests.servers import pgbench_init

    pgbench_init(source_db, scale=10)
    target = PostgresTarget(pg_target_url)
    m = TableMapping(schema_of(source_db, "public", "pgbench_accounts"), "pgbench_accounts")
    t0 = time.perf_counter()
    n = copy_table(source_db, target, m)
    dt = time.perf_counter() - t0
    print(f"\nCOPY pass-through: {n} rows in {dt:.2f}s = {n / dt:,.0f} rows/s")
    ups = [
        RowChange(ChangeKind.UPDATE, m.view.qualified, new=(str(i), "1", str(i % 97), "x" * 84))
        for i in range(1, 20001)
    ]
    t0 = time.perf_counter()
    with target.connect() as conn:
        target.apply(conn, m, ups)
    dt = time.perf_counter() - t0
    print(f"apply: {len(ups)} UPDATEs in {dt:.2f}s = {len(ups) / dt:,.0f} changes/s")
    target.dispose()


def test_changes_are_applied_as_replica_user_and_foreign_key_triggers_do_not_fire(source_db, pg_target_url):
    """As PostgreSQL's own apply worker (session_replication_role = replica): a child row may
    arrive before its parent within a batch, and the target's own triggers stay quiet."""
    run_sql(
        source_db, "CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, p int)"
    )
    run_sql(
        libpq(pg_target_url),
        "CREATE TABLE parent (id int PRIMARY KEY); "
        "CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent); "
        "CREATE TABLE audit (what text); "
        "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO audit VALUES (TG_OP); RETURN NEW; END $$; "
        "CREATE TRIGGER noted BEFORE INSERT OR UPDATE ON child FOR EACH ROW EXECUTE FUNCTION note()",
    )
    target = PostgresTarget(pg_target_url)
    child, parent = (TableMapping(schema_of(source_db, "public", t), t) for t in ("child", "parent"))
    with target.connect() as conn:
        for m in (child, parent):
            target.ensure_table(conn, m)
        target.apply(conn, child, [RowChange(ChangeKind.INSERT, "public.child", new=("1", "7"))])
        target.apply(conn, parent, [RowChange(ChangeKind.INSERT, "public.parent", new=("7",))])
    with psycopg.connect(libpq(pg_target_url)) as c:
        assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
        assert c.execute("SELECT p FROM child").fetchall() == [(7,)]
        c.execute("INSERT INTO child VALUES (2, 7)")  # an ordinary session: the trigger fires
        assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
    target.dispose()
