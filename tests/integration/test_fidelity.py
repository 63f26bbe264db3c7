"""Fidelity edge cases, through the real pipeline into every target (issue 10).

* Inheritance: a parent table holds its own rows only, never its children's (the copy reads
  ``ONLY``; pgoutput publishes a child's changes as the child's); partitioned tables are still read
  whole.  Checked after the snapshot copy and after streamed changes, and ``verify`` agrees.
"""

from __future__ import annotations

import math

import psycopg
import pytest
from psycopg import sql

from replicator.config import parse
from replicator.errors import ValueRangeError
from replicator.pipeline import Options, Pipeline
from replicator.verify import verify
from tests import targets
from tests.compare import norm, target_rows
from tests.integration.test_types_conformance import interval_parts


def source_rows(dsn: str, table: str, relation: str = "ONLY") -> tuple[list[str], list[tuple]]:
    """(column names, sorted rows) of ``relation`` ``table`` (``ONLY``: its own rows)."""
    with psycopg.connect(dsn) as c:
        q = sql.SQL(f"SELECT * FROM {relation} {{}}").format(sql.Identifier(table))
        cur = c.execute(q)
        names = [d.name for d in cur.description]
        return names, sorted((tuple(norm(v) for v in r) for r in cur), key=repr)


def assert_own_rows(dsn: str, url: str, table: str, relation: str = "ONLY") -> int:
    names, want = source_rows(dsn, table, relation)
    got = sorted(target_rows(url, table, names), key=repr)
    assert got == want, f"{table}: target {got} != source {relation} {want}"
    return len(want)


INHERITANCE = """
CREATE TABLE cities (name text, population float8, altitude int);
CREATE TABLE capitals (state char(2)) INHERITS (cities);
ALTER TABLE cities REPLICA IDENTITY FULL;
ALTER TABLE capitals REPLICA IDENTITY FULL;
INSERT INTO cities VALUES ('Las Vegas', 2.583e+05, 2174);
INSERT INTO capitals VALUES ('Carson City', 5.5e+04, 4660, 'NV');
CREATE TABLE towns (id int PRIMARY KEY, name text);
CREATE TABLE villages (mayor text) INHERITS (towns);
ALTER TABLE villages REPLICA IDENTITY FULL;
INSERT INTO towns VALUES (1, 'town one'), (2, 'town two');
INSERT INTO villages VALUES (1, 'village one', 'ann');  -- the parent's key, in the child
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_lo PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_hi PARTITION OF parted FOR VALUES FROM (100) TO (1000);
INSERT INTO parted VALUES (1, 'low'), (150, 'high');
"""
INHERITANCE_CHANGES = """
INSERT INTO cities VALUES ('Reno', 2.6e+05, 1373);
INSERT INTO capitals VALUES ('Sacramento', 5.2e+05, 9, 'CA');
UPDATE capitals SET population = 6e+04 WHERE name = 'Carson City';
UPDATE ONLY cities SET altitude = 2175 WHERE name = 'Las Vegas';
INSERT INTO villages VALUES (2, 'village two', 'bob');
UPDATE ONLY towns SET name = 'town 2' WHERE id = 2;
UPDATE villages SET mayor = 'cy' WHERE id = 1;
DELETE FROM ONLY towns WHERE id = 1;
INSERT INTO parted VALUES (2, 'low 2'), (300, 'high 2');
UPDATE parted SET v = 'moved' WHERE id = 150;
"""
OWN = {"cities": 1, "capitals": 1, "towns": 2, "villages": 1, "parted": 2}
RELATION = {"parted": ""}  # a partitioned table's rows are its partitions' rows


def test_inheritance_parents_hold_their_own_rows(source_db, target_url):
    """Copy and stream: a parent never gets its children's rows, and a child's row sharing the
    parent's primary key does not break the copy; partitioned tables arrive whole."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(INHERITANCE)
    opts = Options(source=source_db, target=target_url, name="inherit", keep_slot=True)
    assert Pipeline(opts).migrate().rows_copied == sum(OWN.values())
    for table, n in OWN.items():
        assert assert_own_rows(source_db, target_url, table, RELATION.get(table, "ONLY")) == n
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(INHERITANCE_CHANGES)
    assert Pipeline(opts).migrate().changes_applied == 11
    for table in OWN:
        assert_own_rows(source_db, target_url, table, RELATION.get(table, "ONLY"))
    doc = verify(opts)
    assert doc["equal"], doc
    assert {t["source"]: t["source_rows"] for t in doc["tables"]} == {
        "public.cities": 2,
        "public.capitals": 2,
        "public.towns": 1,
        "public.villages": 2,
        "public.parted": 4,
    }


ONE_COLUMN = """
CREATE TABLE e (f1 text);
CREATE TABLE en (f1 name);
CREATE TABLE ev (f1 varbit);
INSERT INTO e VALUES ('a'), (''), (NULL);
INSERT INTO en VALUES ('a'), (''), (NULL);
INSERT INTO ev VALUES (B'1'), (B''), (NULL);
ALTER TABLE e REPLICA IDENTITY FULL;
ALTER TABLE en REPLICA IDENTITY FULL;
ALTER TABLE ev REPLICA IDENTITY FULL;
"""


def test_one_column_empty_strings_survive_copy_and_stream(source_db, target_url):
    """A one-column row holding '' is a row (DuckDB's CSV reader skips empty lines)."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(ONE_COLUMN)
    opts = Options(source=source_db, target=target_url, name="onecol", keep_slot=True)
    assert Pipeline(opts).migrate().rows_copied == 9
    for table in ("e", "en", "ev"):
        assert assert_own_rows(source_db, target_url, table) == 3
    with psycopg.connect(source_db, autocommit=True) as c:
        for table in ("e", "en", "ev"):
            c.execute(f"INSERT INTO {table} SELECT * FROM {table}")
            c.execute(f"DELETE FROM {table} WHERE ctid = (SELECT min(ctid) FROM {table} WHERE f1 = '')")
    Pipeline(opts).migrate()
    for table in ("e", "en", "ev"):
        assert assert_own_rows(source_db, target_url, table) == 5
    assert verify(opts)["equal"]


LOOSE = """
CREATE TABLE loose (id int PRIMARY KEY, iv interval, f float8, r real);
INSERT INTO loose VALUES (1, '1 mon 2 days', 0, 0), (2, '1 day', '-0', '-0'), (3, '30 days', 1.5, 1.5);
CREATE TABLE loose_full (iv interval, f float8);
ALTER TABLE loose_full REPLICA IDENTITY FULL;
INSERT INTO loose_full VALUES ('1 mon', 0), ('30 days', 0), ('1 day', '-0'), ('1 day', 0);
"""
LOOSE_CHANGES = """
UPDATE loose SET iv = '32 days', f = '-0', r = '-0' WHERE id = 1;
UPDATE loose SET iv = '24 hours', f = 0, r = 0 WHERE id = 2;
UPDATE loose SET iv = '1 mon' WHERE id = 3;
UPDATE loose_full SET f = 1 WHERE iv::text = '30 days';
DELETE FROM loose_full WHERE f::text = '-0';
UPDATE loose_full SET iv = '24 hours' WHERE iv::text = '1 day';
"""


def loose_values(row) -> tuple:
    """(interval as ISO text or DuckDB month/day/µs parts → parts; floats → (value, sign))."""
    out = []
    for v in row:
        if isinstance(v, str) and v.startswith("P"):
            v = interval_parts(v)
        elif isinstance(v, list):
            v = tuple(v)
        elif isinstance(v, float) or (isinstance(v, str) and v.lstrip("-")[:1].isdigit()):
            v = (float(v), math.copysign(1, float(v)))
        out.append(v)
    return tuple(out)


def loose_rows(kind: str, dsn_or_url: str, table: str, cols: list[str]) -> list[tuple]:
    """Rows with intervals as parts and floats with their sign, from the source or a target."""
    if kind == "duckdb":
        import duckdb

        exprs = [
            f"[datepart('year', {c}) * 12 + datepart('month', {c}), datepart('day', {c}), "
            f"datepart('hour', {c}) * 3600000000 + datepart('minute', {c}) * 60000000 + "
            f"datepart('microsecond', {c})]"
            if c == "iv"
            else f"CAST({c} AS VARCHAR)"
            for c in cols
        ]
        with duckdb.connect(dsn_or_url.split(":///", 1)[1], read_only=True) as db:
            rows = db.execute(f"SELECT {', '.join(exprs)} FROM {table}").fetchall()
    else:
        if kind == "pg":
            import sqlalchemy as sa

            u = sa.make_url(dsn_or_url)
            dsn_or_url = f"host={u.host} port={u.port} user={u.username} dbname={u.database}"
        with psycopg.connect(dsn_or_url, options="-c IntervalStyle=iso_8601 -c extra_float_digits=3") as c:
            rows = c.execute(f"SELECT {', '.join(f'{n}::text' for n in cols)} FROM {table}").fetchall()
    return sorted((loose_values(r) for r in rows), key=repr)


@pytest.mark.parametrize("kind", targets.params("duckdb", "pg"))
def test_updates_between_equal_but_different_values_are_written(source_db, kind, request):
    """'32 days' over '1 mon 2 days', '24 hours' over '1 day', -0 over 0 and back: the target
    holds what the source sent (DuckDB's UPDATE skips values equal by '='), key-less FULL rows
    are located exactly, and verify compares intervals by parts and keeps the sign of zero."""
    url = request.getfixturevalue(targets.fixture(kind))
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(LOOSE)
    opts = Options(source=source_db, target=url, name="loose", keep_slot=True)
    Pipeline(opts).migrate()
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(LOOSE_CHANGES)
    Pipeline(opts).migrate()
    for table, cols in (("loose", ["id", "iv", "f", "r"]), ("loose_full", ["iv", "f"])):
        want = loose_rows("source", source_db, table, cols)
        assert loose_rows(kind, url, table, cols) == want, table
    assert verify(opts)["equal"]
    # a target value equal by '=' but not the source's is a difference; so is 0 for -0
    tamper(
        kind,
        url,
        "DELETE FROM loose WHERE id IN (1, 2)",
        "INSERT INTO loose VALUES (1, INTERVAL '32 days', 0.0, -0.0), (2, INTERVAL '1 day', 0.0, 0.0)",
    )
    doc = verify(opts)
    assert {t["source"]: t["equal"] for t in doc["tables"]} == {
        "public.loose": False,
        "public.loose_full": True,
    }
    assert doc["tables"][0]["ranges"][0]["changed"] == [{"id": 1}, {"id": 2}], doc


def tamper(kind: str, url: str, *statements: str) -> None:
    """Run statements on the target directly (DuckDB: DELETE + INSERT, not UPDATE: see above)."""
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(url.split(":///", 1)[1]) as db:
            for st in statements:
                db.execute(st)
        return
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.begin() as c:
        for st in statements:
            c.exec_driver_sql(st)
    eng.dispose()


REFUSED_KEYS = {
    "duckdb": ("int[]", "[4:4]={NULL}"),
    "mysql": ("timestamp", "infinity"),
    "pg": ("numeric", "123.5"),
}


@pytest.mark.parametrize("kind", targets.params("duckdb", "mysql", "pg"))
def test_refusals_name_the_source_key_value_not_the_copy_mark(source_db, kind, request):
    """A refused key value (an array with explicit bounds, an infinite timestamp, a number too wide
    for the mapping's target type) is shown as the source has it, without the copy stream's internal mark."""
    url = request.getfixturevalue(targets.fixture(kind))
    typ, value = REFUSED_KEYS[kind]
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            f"CREATE TABLE refused (a {typ} PRIMARY KEY, v int); INSERT INTO refused VALUES ('{value}', 1)"
        )
    cfg = (
        parse("tables:\n- source: public.refused\n  columns: {types: {a: 'numeric(3,1)'}}\n")
        if kind == "pg"
        else None
    )
    with pytest.raises(ValueRangeError) as e:
        Pipeline(Options(source=source_db, target=url, name="marked", mapping=cfg)).migrate()
    assert "\x1a" not in str(e.value) and "out-of-range" not in str(e.value), str(e.value)
    assert f"key a='{value}'" in str(e.value), str(e.value)
