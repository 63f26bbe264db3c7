"""Identifiers: names with quotes, semicolons, spaces, mixed case, reserved words and non-ASCII
letters replicate through the real pipeline (copy and streamed changes) to every target; a table
named like an injection leaves the ``canary`` tables alone; names a target cannot keep apart or
hold are refused before any slot or table exists, with both names shown.
"""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from replicator.errors import CheckError
from replicator.pipeline import Options, Pipeline
from replicator.target import target_class
from tests import targets
from tests.compare import assert_same, target_tables

EVIL = 'x";DROP TABLE canary;--'
SETUP = """
CREATE TABLE canary (id int PRIMARY KEY);
INSERT INTO canary VALUES (1);
CREATE TABLE "x"";DROP TABLE canary;--" (
  id int PRIMARY KEY, "a`b" text, "Mixed Case" int, "select" text, "ümlaut_é" text, "semi;colon" text,
  "quote'single" text, "space name" int, "back\\slash" text, "x"")--" text, "ts""{col}" timestamptz,
  "f;{x}" float8);
INSERT INTO "x"";DROP TABLE canary;--" VALUES
  (1, 'a', 1, 's', 'ü', ';', '''', 1, '\\', '"', '2024-01-01 00:00:00+00', 1.5),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE "Order" ("group" int PRIMARY KEY, "from" text, "Ünïcødé Straße" text, "where" int);
INSERT INTO "Order" VALUES (1, 'a', 'b', 1), (2, 'c', 'd', 2);
"""
CHANGES = [
    """INSERT INTO "x"";DROP TABLE canary;--" VALUES (3, 'c', 3, 'x', 'é', ';;', '''''', 3, '\\\\', '""',
       '1999-12-31 23:59:59+00', 2.5)""",
    """UPDATE "x"";DROP TABLE canary;--" SET "a`b" = 'changed', "Mixed Case" = 42 WHERE id = 1""",
    """UPDATE "x"";DROP TABLE canary;--" SET id = 20 WHERE id = 2""",
    """DELETE FROM "Order" WHERE "group" = 1""",
    """UPDATE "Order" SET "Ünïcødé Straße" = 'ß', "where" = 9 WHERE "group" = 2""",
    """INSERT INTO "Order" VALUES (3, ';--', '"''', 3)""",
]
TABLES = [EVIL, "Order"]


def target_sql(url: str, stmt: str):
    target_class(url)
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as c:
            r = c.exec_driver_sql(stmt)
            return r.fetchall() if r.returns_rows else None
    finally:
        eng.dispose()


def test_odd_names_replicate_and_injection_does_nothing(source_db, target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
    target_sql(target_url, "CREATE TABLE canary (id int)")
    target_sql(target_url, "INSERT INTO canary VALUES (7)")
    opts = Options(
        source=source_db,
        target=target_url,
        name="idents",
        keep_slot=True,
        tables=[f"public.{t}" for t in TABLES],
    )
    assert Pipeline(opts).migrate().rows_copied == 4
    with psycopg.connect(source_db, autocommit=True) as c:
        for stmt in CHANGES:
            c.execute(stmt)
    assert Pipeline(opts).migrate().changes_applied == 6
    for t in TABLES:
        assert_same(source_db, "public", t, target_url)
    assert target_sql(target_url, "SELECT id FROM canary") == [(7,)]
    with psycopg.connect(source_db) as c:
        assert c.execute("SELECT id FROM canary").fetchall() == [(1,)]
    assert {EVIL, "Order", "canary"} <= target_tables(target_url)


COLLIDING = """
CREATE TABLE people ("Name" text, "name" text, id int PRIMARY KEY, "😀" int, "É" int, "é" int);
"""
PROBLEMS = {  # target → names each refusal line must show
    "sqlite": [("Name", "name")],
    "duckdb": [("Name", "name")],
    "mysql": [("Name", "name"), ("😀",), ("É", "é")],
    "pg": [],
}


@pytest.mark.parametrize("kind", targets.params(*targets.NATIVE))
def test_names_a_target_cannot_keep_apart_are_refused_before_anything_exists(source_db, request, kind):
    url = request.getfixturevalue(targets.fixture(kind))
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(COLLIDING)
    opts = Options(source=source_db, target=url, name="collide", tables=["public.people"])
    if not PROBLEMS[kind]:
        assert Pipeline(opts).migrate().rows_copied == 0  # PostgreSQL keeps them apart
        return
    with pytest.raises(CheckError) as e:
        Pipeline(opts).migrate()
    lines = e.value.problems
    assert len(lines) == len(PROBLEMS[kind]), lines
    for names in PROBLEMS[kind]:
        line = next((x for x in lines if all(repr(n) in x for n in names)), None)
        assert line and "public.people" in line and "rename" in line, (names, lines)
    with psycopg.connect(source_db) as c:
        assert c.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
    assert "people" not in target_tables(url)
