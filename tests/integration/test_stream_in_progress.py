"""Large transactions streamed while they run (pgoutput protocol 2, streaming on): spooled until
their commit, then applied once as one transaction; a rolled-back savepoint and an aborted
transaction never reach the target; the source spills nothing to its disk; a crash while a
transaction is half spooled, after its commit is spooled, or after the target committed it,
neither loses nor repeats a change.

The source database gets ``logical_decoding_work_mem = 64kB``, so a few thousand rows are
enough for PostgreSQL to stream a transaction instead of keeping it whole.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests import procs
from tests.compare import assert_same, source_select, target_select
from tests.faults.harness import wait_caught_up, wait_streaming, wait_until

SETUP = """
CREATE TABLE big (id int PRIMARY KEY, v text);
CREATE TABLE small (id int PRIMARY KEY, v text);
INSERT INTO big SELECT g, 'start' FROM generate_series(1, 100) g;
"""


@pytest.fixture
def db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
        c.execute(f"ALTER DATABASE {c.info.dbname} SET logical_decoding_work_mem = '64kB'")
    return source_db


def spooled(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("xid-*.spool")) if spool.is_dir() else 0


def slot_stats(dsn: str) -> tuple[int, int]:
    """(stream_txns, spill_txns) of slot replicator."""
    rows = source_select(
        dsn, "SELECT stream_txns, spill_txns FROM pg_stat_replication_slots WHERE slot_name = 'replicator'"
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def open_big_transaction(
    dsn: str, spool: Path, mirror, first: int, rows: int, must_live: bool = True
) -> psycopg.Connection:
    """A session with an open transaction that inserted ``rows`` rows from id ``first``, a
    savepoint's rows rolled back and updates, grown until the mirror has spooled part of it (or,
    unless ``must_live``, has died trying)."""
    c = psycopg.connect(dsn)
    c.execute(
        "INSERT INTO big SELECT g, 'big' FROM generate_series(%s::int, %s::int) g", (first, first + rows - 1)
    )
    c.execute("SAVEPOINT s")
    c.execute("INSERT INTO big SELECT g, 'rolled back' FROM generate_series(%s::int, %s::int) g", (-rows, -1))
    c.execute("ROLLBACK TO SAVEPOINT s")
    c.execute("UPDATE big SET v = 'updated' WHERE id %% 10 = 0 AND id >= %s", (first,))
    n = first + rows
    deadline = time.monotonic() + 120
    while spooled(spool) == 0 and (must_live or mirror.alive()):  # drive it until spooled
        assert time.monotonic() < deadline and mirror.alive(), f"nothing spooled:\n{mirror.tail()}"
        c.execute("INSERT INTO big SELECT g, 'more' FROM generate_series(%s::int, %s::int) g", (n, n + 999))
        n += 1000
        time.sleep(0.1)
    return c


def test_a_large_transaction_is_streamed_spooled_and_applied_at_commit(db, duckdb_target_url, tmp_path):
    env = {"REPLICATOR_SPOOL_DIR": str(tmp_path)}  # the default spool directory, as status finds it
    spool = tmp_path / "replicator-replicator-spool"
    mirror = procs.Mirror(db, duckdb_target_url, env=env)
    try:
        wait_streaming(db, mirror)
        wait_caught_up(db, mirror)
        big = open_big_transaction(db, spool, mirror, 1000, 5000)
        st = procs.run("status", "--target", duckdb_target_url, "--json", env=env, timeout=120)
        ip = json.loads(st.stdout)["in_progress"]
        assert ip["transactions"] == 1 and ip["spooled_bytes"] > 0 and ip["oldest_start"], ip
        with psycopg.connect(db, autocommit=True) as other:  # committed while big is open
            other.execute("INSERT INTO small VALUES (1, 'meanwhile')")
        wait_caught_up(db, mirror)
        assert target_select(duckdb_target_url, "SELECT v FROM small") == [("meanwhile",)]
        assert target_select(duckdb_target_url, "SELECT count(*) FROM big") == [(100,)]  # not yet
        big.commit()
        big.close()
        wait_caught_up(db, mirror)
        assert_same(db, "public", "big", duckdb_target_url)
        assert spooled(spool) == 0 and not list(spool.glob("xid-*.spool"))
        aborted = open_big_transaction(db, spool, mirror, 900_000, 5000)
        aborted.rollback()
        aborted.close()
        wait_until(lambda: not list(spool.glob("xid-*.spool")), 60, "the aborted transaction's spool to go")
        wait_caught_up(db, mirror)
        assert_same(db, "public", "big", duckdb_target_url)
        streamed, spilled = slot_stats(db)
        assert streamed >= 2 and spilled == 0, (streamed, spilled)
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()


@pytest.mark.parametrize("point", ["stream.spooled=kill@2", "stream.replay=kill", "apply.committed=kill@2"])
def test_a_crash_with_a_streamed_transaction_loses_and_repeats_nothing(
    db, sqlite_target_url, tmp_path, point
):
    """Killed while the transaction is half spooled, once its commit is spooled but before it is
    applied, or after the target committed it: the restarted mirror applies it exactly once."""
    spool = tmp_path / "spool"
    args = ["--spool-dir", str(spool)]
    mirror = procs.Mirror(db, sqlite_target_url, args=args, failpoints=point)
    try:
        wait_streaming(db, mirror)
        wait_caught_up(db, mirror)
        big = open_big_transaction(db, spool, mirror, 1000, 3000, must_live=False)
        big.commit()
        big.close()
        n, deadline = 0, time.monotonic() + 120
        with psycopg.connect(db, autocommit=True) as c:
            while mirror.alive() and time.monotonic() < deadline:  # more batches until the kill
                n += 1
                c.execute("INSERT INTO small VALUES (%s, 'after')", (n,))
                time.sleep(0.2)
        assert mirror.wait(60) == -signal.SIGKILL, mirror.tail()
    finally:
        mirror.close()
    mirror = procs.Mirror(db, sqlite_target_url, args=args)
    try:
        wait_streaming(db, mirror)
        wait_caught_up(db, mirror)
        assert_same(db, "public", "big", sqlite_target_url)
        assert_same(db, "public", "small", sqlite_target_url)
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
