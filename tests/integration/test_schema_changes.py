"""Schema changes while mirroring, through real pgoutput Relation messages, on every target."""
from __future__ import annotations

import psycopg
import pytest

from replicator.model import Column, RelationInfo, TableSchema
from replicator.schema_change import diff
from tests.compare import target_columns, target_rows
from tests.integration.test_migrate import replicator


@pytest.fixture(params=["sqlite", "duckdb", "mysql", "pg"])
def target_url(request):
    return request.getfixturevalue(f"{request.param}_target_url")


def run(dsn, *stmts):
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def rows(dsn, sql):
    with psycopg.connect(dsn) as c:
        return sorted(c.execute(sql).fetchall())


def test_add_and_drop_columns_then_rename_needs_resync(source_db, target_url):
    run(source_db, "CREATE TABLE t (id int PRIMARY KEY, a int)",
        "INSERT INTO t SELECT g, g FROM generate_series(1, 5) g")
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": target_url}
    replicator("migrate", "--keep-slot", env=env)
    run(source_db,
        "ALTER TABLE t ADD COLUMN b int DEFAULT 7",           # existing rows get 7 on the source
        "INSERT INTO t (id, a, b) VALUES (6, 6, 1)",
        "UPDATE t SET a = 20 WHERE id = 2",
        "ALTER TABLE t ADD COLUMN c text",                    # existing rows get NULL
        "INSERT INTO t (id, a, b, c) VALUES (7, 7, 2, 'seven')",
        "ALTER TABLE t DROP COLUMN a",
        "INSERT INTO t (id, b, c) VALUES (8, 3, 'eight')",
        "UPDATE t SET c = 'one' WHERE id = 1")
    cp = replicator("migrate", "--keep-slot", env=env)
    assert "added column(s) b" in cp.stderr and "dropped on the source" in cp.stderr
    assert rows(source_db, "SELECT id, b, c FROM t") == target_rows(target_url, "t", ["id", "b", "c"])
    assert set(target_columns(target_url, "t")) == {"id", "a", "b", "c"}
    a = dict(target_rows(target_url, "t", ["id", "a"]))
    assert a[2] == 20 and a[8] is None      # the dropped column stays, NULL for rows inserted later

    run(source_db, "ALTER TABLE t RENAME COLUMN b TO bb", "INSERT INTO t (id, bb, c) VALUES (9, 9, 'nine')")
    cp = replicator("migrate", "--keep-slot", env=env, check=False)
    assert cp.returncode != 0
    assert "public.t changed on the source" in cp.stderr and "renamed b → bb" in cp.stderr
    assert "replicator resync --tables public.t" in cp.stderr
    replicator("resync", "--tables", "public.t", env=env)
    replicator("migrate", env=env)          # replays past the rename: skipped, it is in the copy
    assert rows(source_db, "SELECT id, bb, c FROM t") == target_rows(target_url, "t", ["id", "bb", "c"])


def schema(*cols):
    return TableSchema("public", "t", tuple(Column(n, o, "x") for n, o in cols), key=("id",))


def rel(*cols):
    return RelationInfo("public.t", tuple(cols))


def test_diff_tells_add_drop_rename_and_type_change():
    known = schema(("id", 23), ("a", 23), ("b", 25))
    assert not diff(known, rel(("id", 23), ("a", 23), ("b", 25)))
    d = diff(known, rel(("id", 23), ("a", 23), ("b", 25), ("c", 16)))
    assert d.added == ["c"] and not d.dropped and not d.renamed
    d = diff(known, rel(("id", 23), ("b", 25)))
    assert d.dropped == ["a"] and not d.added
    d = diff(known, rel(("id", 23), ("x", 23), ("b", 25)))
    assert d.renamed == [("a", "x")] and not d.added and not d.dropped
    d = diff(known, rel(("id", 23), ("a", 20), ("b", 25)))
    assert d.retyped == [("a", 23, 20)]
