"""The slot is lost while the mirror is stopped: invalidated (max_slot_wal_keep_size exceeded) or
dropped.  Starting again is a terminal error (exit 3) naming the slot and the resync command, and
no slot is created in its place (invariant 5: a new slot would silently skip the lost changes)."""

from __future__ import annotations

import psycopg
import pytest

from tests.faults.harness import (
    EXIT_TIMEOUT,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_row,
    slots_of,
    target_applied,
    wait_caught_up,
    wait_streaming,
)
from tests.servers import PostgresServer, unique_name

SLOT_LOST = 3


@pytest.fixture(scope="module")
def small_keep_pg():
    """A source that invalidates slots lagging more than 16 MB (one WAL segment) of WAL."""
    import os

    if os.environ.get("REPLICATOR_TEST_PG_DSN"):
        pytest.skip("needs a private server with max_slot_wal_keep_size = 16MB")
    with PostgresServer(
        name="small-keep",
        settings={"max_slot_wal_keep_size": "16MB", "wal_keep_size": 0, "synchronous_commit": "on"},
    ) as srv:
        yield srv


def mirror_then_stop(dsn: str, url: str, tally) -> None:
    """Mirror under load until caught up, then SIGKILL it (a crash: no goodbye to the source)."""
    m = Mirror(dsn, url)
    load = Load(dsn, rate=200)
    try:
        wait_streaming(dsn, m)
        load.more(20, m)  # streamed under load
        load.stop()
        wait_caught_up(dsn, m)
        compare(dsn, url, ["pgbench_history"], tally)
    finally:
        load.stop()
        m.kill()
        m.close()


def assert_refused(dsn: str, url: str, words: list[str]) -> None:
    applied = target_applied(url)
    before = slots_of(dsn)
    m = Mirror(dsn, url)
    try:
        rc = m.wait(EXIT_TIMEOUT)
        err = m.log()
    finally:
        m.close()
    assert rc == SLOT_LOST, err[-3000:]
    for w in words + ["replication slot replicator", "replicator drop --name replicator"]:
        assert w in err, f"{w!r} not in:\n{err[-3000:]}"
    assert slots_of(dsn) == before, "a slot was created in place of the lost one"
    assert target_applied(url) == applied, "the target's state changed"
    assert "created slot" not in err


def test_slot_invalidated_while_stopped(small_keep_pg, sqlite_target_url, tally):
    dsn = small_keep_pg.create_database(unique_name("src", "invalidated"))
    pgbench_source(dsn, scale=1)
    mirror_then_stop(dsn, sqlite_target_url, tally)
    # 16 MB+ of WAL past the slot, then checkpoints: the slot's WAL is removed, the slot is lost
    other = small_keep_pg.create_database(unique_name("filler"))
    with psycopg.connect(other, autocommit=True) as c:
        c.execute("CREATE TABLE filler (id int, v text)")
        for _ in range(8):
            c.execute("INSERT INTO filler SELECT g, repeat('x', 400) FROM generate_series(1, 20000) g")
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")
            if slot_row(dsn)["wal_status"] == "lost":
                break
    assert slot_row(dsn)["wal_status"] == "lost"
    tally.fault()
    assert_refused(dsn, sqlite_target_url, ["invalidated", "wal_status = lost", "max_slot_wal_keep_size"])


def test_slot_dropped_while_stopped(source_db, duckdb_target_url, tally):
    pgbench_source(source_db, scale=1)
    mirror_then_stop(source_db, duckdb_target_url, tally)
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('replicator')")
    tally.fault()
    assert_refused(source_db, duckdb_target_url, ["no longer exists"])


def test_slot_dropped_while_mirroring(source_db, sqlite_target_url, tally):
    """The slot is dropped under a running mirror (its walsender terminated first): the mirror
    stops with the same terminal error instead of retrying or creating a new slot."""
    pgbench_source(source_db, scale=1)
    m = Mirror(source_db, sqlite_target_url)
    try:
        wait_streaming(source_db, m)
        with psycopg.connect(source_db, autocommit=True) as c:
            for _ in range(50):
                pid = slot_row(source_db)["active_pid"]
                if pid:
                    c.execute("SELECT pg_terminate_backend(%s)", (pid,))
                try:
                    c.execute("SELECT pg_drop_replication_slot('replicator')")
                    break
                except psycopg.errors.ObjectInUse:
                    continue
        tally.fault()
        rc = m.wait(EXIT_TIMEOUT)
        err = m.log()
    finally:
        m.close()
    assert rc == SLOT_LOST, err[-3000:]
    assert "replication slot replicator" in err and "replicator drop --name replicator" in err, err[-3000:]
    assert slots_of(source_db) == []
