"""Schema changes while mirroring, through real pgoutput Relation messages, on every target."""

from __future__ import annotations

import psycopg

from replicator.model import Column, RelationInfo, TableSchema
from replicator.schema_change import diff
from tests.compare import target_columns, target_rows
from tests.integration.test_migrate import replicator


def run(dsn, *stmts):
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def rows(dsn, sql):
    with psycopg.connect(dsn) as c:
        return sorted(c.execute(sql).fetchall())


def test_add_and_drop_columns_then_rename_needs_resync(source_db, target_url):
    run(
        source_db,
        "CREATE TABLE t (id int PRIMARY KEY, a int)",
        "INSERT INTO t SELECT g, g FROM generate_series(1, 5) g",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": target_url}
    replicator("migrate", "--keep-slot", env=env)
    run(
        source_db,
        "ALTER TABLE t ADD COLUMN b int DEFAULT 7",  # existing rows get 7 on the source
        "INSERT INTO t (id, a, b) VALUES (6, 6, 1)",
        "UPDATE t SET a = 20 WHERE id = 2",
        "ALTER TABLE t ADD COLUMN c text",  # existing rows get NULL
        "INSERT INTO t (id, a, b, c) VALUES (7, 7, 2, 'seven')",
        "ALTER TABLE t DROP COLUMN a",
        "INSERT INTO t (id, b, c) VALUES (8, 3, 'eight')",
        "UPDATE t SET c = 'one' WHERE id = 1",
    )
    cp = replicator("migrate", "--keep-slot", env=env)
    assert "added column(s) b" in cp.stderr and "dropped on the source" in cp.stderr
    assert rows(source_db, "SELECT id, b, c FROM t") == target_rows(target_url, "t", ["id", "b", "c"])
    assert set(target_columns(target_url, "t")) == {"id", "a", "b", "c"}
    a = dict(target_rows(target_url, "t", ["id", "a"]))
    assert a[2] == 20 and a[8] is None  # the dropped column stays, NULL for rows inserted later

    run(source_db, "ALTER TABLE t RENAME COLUMN b TO bb", "INSERT INTO t (id, bb, c) VALUES (9, 9, 'nine')")
    cp = replicator("migrate", "--keep-slot", env=env, check=False)
    assert cp.returncode != 0
    assert "public.t changed on the source" in cp.stderr and "renamed b → bb" in cp.stderr
    assert "replicator resync --tables public.t" in cp.stderr
    replicator("resync", "--tables", "public.t", env=env)
    replicator("migrate", env=env)  # replays past the rename: skipped, it is in the copy
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


# ---------------------------------------------------------------- issue 10, items 4 and 5


def _mirror(source_db, target_url):
    """A running mirror past its copy: it confirmed a WAL position written after it started."""
    from tests.faults.harness import Mirror, wait_caught_up, wait_streaming

    m = Mirror(source_db, target_url)
    wait_streaming(source_db, m)  # the slot is active during the copy already
    run(source_db, "SELECT pg_logical_emit_message(false, 'test', 'mark')")
    wait_caught_up(source_db, m)
    return m


def test_column_added_and_dropped_before_it_is_applied_and_a_dropped_table(source_db, target_url):
    """The Relation messages, not today's catalog, say which columns a change was written with:
    a column added and dropped again before the mirror applies it, and a table dropped with its
    changes still to apply, are followed (no KeyError/IndexError, no traceback)."""
    from tests.faults.harness import wait_caught_up

    run(
        source_db,
        "CREATE TABLE t2 (id int PRIMARY KEY, a int)",
        "INSERT INTO t2 VALUES (1, 1)",
        "CREATE TABLE t3 (id int PRIMARY KEY, a int)",
        "INSERT INTO t3 VALUES (1, 1)",
        "CREATE TABLE t5 (id int PRIMARY KEY, a int)",
        "INSERT INTO t5 VALUES (1, 1)",
    )
    m = _mirror(source_db, target_url)
    # one call = one source transaction: the mirror decodes it once the catalog has lost d / t3
    run(
        source_db,
        "ALTER TABLE t2 ADD COLUMN d int; INSERT INTO t2 VALUES (2,2,2); "
        "ALTER TABLE t2 DROP COLUMN d; INSERT INTO t2 VALUES (3,3)",
    )
    run(
        source_db,
        "INSERT INTO t3 VALUES (2, 2); ALTER TABLE t3 ADD COLUMN e numeric(8,2); "
        "INSERT INTO t3 VALUES (3, 3, 3.25); DROP TABLE t3",
    )
    wait_caught_up(source_db, m)
    assert m.alive(), m.tail()
    assert m.stop() == 0, m.tail()
    assert "Traceback" not in m.log(), m.tail()
    assert target_rows(target_url, "t2", ["id", "a", "d"]) == [(1, 1, None), (2, 2, 2), (3, 3, None)]
    assert [r[:2] for r in target_rows(target_url, "t3", ["id", "a", "e"])] == [(1, 1), (2, 2), (3, 3)]
    assert float(target_rows(target_url, "t3", ["id", "e"])[2][1]) == 3.25
    # a restart reads the same stream again from what the target applied: no crash either, nor
    # for a table dropped while the mirror was stopped with its changes still to apply
    run(
        source_db,
        "INSERT INTO t2 VALUES (4, 4)",
        "INSERT INTO t5 VALUES (2, 2)",
        "ALTER TABLE t5 ADD COLUMN e int",
        "INSERT INTO t5 VALUES (3, 3, 3)",
        "DROP TABLE t5",
    )
    m = _mirror(source_db, target_url)
    wait_caught_up(source_db, m)
    assert m.stop() == 0, m.tail()
    assert "Traceback" not in m.log(), m.tail()
    assert target_rows(target_url, "t2", ["id", "a"]) == rows(source_db, "SELECT id, a FROM t2")


def test_add_then_drop_column_is_not_a_rename(source_db, target_url):
    """ADD COLUMN g then DROP COLUMN f1 (one Relation shows f1 gone and g new at its position):
    followed as an ADD and a DROP; a real RENAME COLUMN still stops with the resync command."""
    run(
        source_db,
        "CREATE TABLE varchar_tbl (id int PRIMARY KEY, f1 varchar(4))",
        "INSERT INTO varchar_tbl VALUES (1, 'a'), (2, 'b')",
    )
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": target_url}
    replicator("migrate", "--keep-slot", env=env)
    run(
        source_db,
        "ALTER TABLE varchar_tbl ADD COLUMN g int DEFAULT 9",
        "ALTER TABLE varchar_tbl DROP COLUMN f1",
        "INSERT INTO varchar_tbl VALUES (3, 3)",
    )
    cp = replicator("migrate", "--keep-slot", env=env, check=False)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert "renamed" not in cp.stderr
    assert target_rows(target_url, "varchar_tbl", ["id", "f1", "g"]) == [
        (1, "a", 9),
        (2, "b", 9),
        (3, None, 3),
    ]
    run(source_db, "ALTER TABLE varchar_tbl RENAME COLUMN g TO h", "INSERT INTO varchar_tbl VALUES (4, 4)")
    cp = replicator("migrate", "--keep-slot", env=env, check=False)
    assert cp.returncode != 0 and "renamed g → h" in cp.stderr, cp.stderr[-3000:]
    assert "replicator resync --tables public.varchar_tbl" in cp.stderr


def test_added_column_of_a_type_dropped_since_stops_with_the_resync_command(source_db, sqlite_target_url):
    """What the catalog no longer knows (the type of a column added and dropped since, with its
    type) stops with the table, the LSN and the resync command; the resync goes on from there."""
    url = sqlite_target_url
    run(source_db, "CREATE TABLE t4 (id int PRIMARY KEY, a int)", "INSERT INTO t4 VALUES (1, 1)")
    m = _mirror(source_db, url)
    run(
        source_db,
        "CREATE TYPE mood AS ENUM ('ok', 'sad'); ALTER TABLE t4 ADD COLUMN m mood; "
        "INSERT INTO t4 VALUES (2, 2, 'ok'); ALTER TABLE t4 DROP COLUMN m; DROP TYPE mood",
    )
    assert m.wait(120) == 1
    err = m.log()
    assert "Traceback" not in err and "KeyError" not in err, err[-3000:]
    assert "public.t4 changed on the source at LSN" in err and "added column m" in err, err[-3000:]
    assert "replicator resync --tables public.t4" in err
    env = {"REPLICATOR_SOURCE": source_db, "REPLICATOR_TARGET": url}
    replicator("resync", "--tables", "public.t4", env=env)
    assert target_rows(url, "t4", ["id", "a"]) == [(1, 1), (2, 2)]
