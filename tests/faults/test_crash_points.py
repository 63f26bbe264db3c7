"""SIGKILL at each named failpoint (REPLICATOR_FAILPOINTS), then restart, catch up and compare.

Each test crashes the real ``replicator mirror`` process at one point of its life under pgbench
load, starts it again and requires every table to equal the source row by row; pgbench_history
(no key, REPLICA IDENTITY FULL) must hold exactly the source's rows, so a transaction lost or
applied twice fails the test.  The targets alternate so every one crashes somewhere.
"""

from __future__ import annotations

import signal

import psycopg
import pytest
import sqlalchemy as sa

from tests import targets
from tests.faults.harness import (
    EXIT_TIMEOUT,
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_confirmed,
    slots_of,
    target_applied,
    wait_caught_up,
    wait_streaming,
    wait_until,
)

KILLED = -signal.SIGKILL
ORDERED = ["pgbench_branches", "pgbench_accounts", "pgbench_tellers", "pgbench_history"]


def states(url: str) -> dict[str, str]:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return {
                r[0].split(".", 1)[1]: r[1]
                for r in c.execute(sa.text("SELECT source_table, state FROM replicator_state_tables"))
            }
    finally:
        eng.dispose()


def finish(dsn: str, url: str, m: Mirror, load: Load, tally, tables=PGBENCH) -> None:
    """Stop the load, let the mirror confirm everything, stop it cleanly and compare."""
    load.stop()
    wait_caught_up(dsn, m)
    assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
    compare(dsn, url, tables, tally)
    assert set(states(url).values()) == {"r"}


@pytest.fixture
def bench_db(source_db):
    pgbench_source(source_db, scale=1)
    return source_db


def test_kill_right_after_slot_creation(bench_db, sqlite_target_url, tally):
    """The slot exists but nothing was recorded on the target: the restart drops that slot and
    starts over from a new one (no second slot left behind)."""
    load = Load(bench_db)
    m = Mirror(bench_db, sqlite_target_url, failpoints="slot.created=kill")
    try:
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        assert slots_of(bench_db) == ["replicator"]
        m = Mirror(bench_db, sqlite_target_url)
        wait_streaming(bench_db, m)
        assert "dropping slot replicator left by an interrupted start" in m.log()
        load.more(20, m)  # the restarted mirror streams under load
        finish(bench_db, sqlite_target_url, m, load, tally)
        assert slots_of(bench_db) == ["replicator"]
    finally:
        load.stop()
        m.close()


@pytest.mark.parametrize("table", ["pgbench_branches", "pgbench_accounts"], ids=["first", "middle"])
def test_kill_after_a_table_is_loaded_before_its_commit(bench_db, duckdb_target_url, tally, table):
    """Killed after the table's rows are loaded, before that target transaction commits: tables
    copied before it stay ``s`` and are not copied again, it and the later ones are copied from a
    fresh snapshot, and changes made meanwhile land once."""
    args = ["--jobs", "1", "--tables", ",".join(ORDERED)]
    load = Load(bench_db)
    m = Mirror(bench_db, duckdb_target_url, failpoints=f"copy.loaded:public.{table}=kill", args=args)
    try:
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        before = ORDERED[: ORDERED.index(table)]
        st = states(duckdb_target_url)
        assert st[table] == "d" and all(st[t] == "s" for t in before), st
        m = Mirror(bench_db, duckdb_target_url, args=args)
        wait_streaming(bench_db, m)
        redo = [t for t in ORDERED if t not in before]
        if before:  # resumed: the slot is needed, the rest comes from a temporary slot's snapshot
            assert (
                f"copying {len(redo)} table(s) from a fresh snapshot: "
                + ", ".join(f"public.{t}" for t in redo)
            ) in m.log(), m.tail()
        else:  # nothing was copied through the slot: our own interrupted first start begins again
            assert "dropping slot replicator left by an interrupted start" in m.log(), m.tail()
        load.more(20, m)  # the restarted mirror streams under load
        finish(bench_db, duckdb_target_url, m, load, tally)
    finally:
        load.stop()
        m.close()


def test_kill_in_the_middle_of_a_split_tables_copy(bench_db, duckdb_target_url, tally):
    """A big table is copied in ctid-range pieces, each committed on its own (copyplan.py).
    Killed before the third piece commits (two workers: at least one piece is in): the table is
    still ``d`` with part of its rows on the target; the restart clears it and copies it again
    from a fresh snapshot, and the changes made meanwhile land once."""
    args, env = ["--jobs", "2"], {"REPLICATOR_COPY_PIECE_PAGES": "200"}  # ~8 pieces of accounts
    load = Load(bench_db)
    m = Mirror(
        bench_db,
        duckdb_target_url,
        failpoints="copy.piece:public.pgbench_accounts=kill@3",
        args=args,
        env=env,
    )
    try:
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        assert states(duckdb_target_url)["pgbench_accounts"] == "d"
        partial = target_count(duckdb_target_url, "pgbench_accounts")
        assert 0 < partial < 100_000, f"expected some committed pieces, found {partial} rows"
        m = Mirror(bench_db, duckdb_target_url, args=args, env=env)
        wait_streaming(bench_db, m)
        load.more(20, m)  # the restarted mirror streams under load
        finish(bench_db, duckdb_target_url, m, load, tally)
    finally:
        load.stop()
        m.close()


def target_count(url: str, table: str) -> int:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return int(c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        eng.dispose()


@pytest.mark.parametrize("target", targets.params("mysql"))
def test_kill_mid_batch_before_commit(bench_db, request, tally, target):
    """Killed with a batch applied into the open target transaction, before its commit: the
    batch rolls back, the slot was not confirmed past the target's applied LSN, and the restart
    applies those transactions once."""
    url = request.getfixturevalue(targets.fixture(target))
    load = Load(bench_db)
    m = Mirror(bench_db, url, failpoints="apply.before_commit=kill@4")
    try:
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        applied = target_applied(url)
        assert applied is not None and slot_confirmed(bench_db) <= applied, (
            "the slot was confirmed past what the target committed"
        )
        m = Mirror(bench_db, url)
        wait_streaming(bench_db, m)
        load.more(20, m)  # the restarted mirror streams under load
        finish(bench_db, url, m, load, tally)
    finally:
        load.stop()
        m.close()


@pytest.mark.parametrize("target", targets.params("pg", "duckdb"))
def test_kill_between_target_commit_and_feedback(bench_db, request, tally, target):
    """Killed after the target committed a batch but before the source heard of it: the slot
    resends those transactions and the restart skips them (the history count stays exact)."""
    url = request.getfixturevalue(targets.fixture(target))
    load = Load(bench_db)
    m = Mirror(bench_db, url, failpoints="apply.committed=kill@4")
    try:
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        applied = target_applied(url)
        assert applied is not None and slot_confirmed(bench_db) < applied, (
            "the failpoint sits between the target commit and the feedback"
        )
        m = Mirror(bench_db, url)
        wait_streaming(bench_db, m)
        load.more(20, m)  # the restarted mirror streams under load
        finish(bench_db, url, m, load, tally)
    finally:
        load.stop()
        m.close()


HUGE = 200_000


def huge_transaction(dsn: str) -> None:
    """One source transaction of 200k inserts plus 1000 updates and 500 deletes of them."""
    with psycopg.connect(dsn) as c:
        c.execute("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, %s) g", (HUGE,))
        c.execute("UPDATE big SET v = 'changed' WHERE id <= 1000")
        c.execute("DELETE FROM big WHERE id > %s", (HUGE - 500,))


@pytest.fixture
def big_db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY)")
    return source_db


def test_kill_before_committing_a_huge_transaction(big_db, duckdb_target_url, tally):
    """A 200k-row source transaction is flushed in chunks into one open target transaction; killed
    just before its commit, the target holds none of it, and the restart applies it once."""
    m = Mirror(big_db, duckdb_target_url)
    try:
        wait_streaming(big_db, m)
        assert m.stop() == 0, m.tail()
        huge_transaction(big_db)
        with psycopg.connect(big_db, autocommit=True) as c:
            c.execute("INSERT INTO small SELECT generate_series(1, 10)")  # a later transaction
        m = Mirror(big_db, duckdb_target_url, failpoints="apply.before_commit=kill")
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        tally.fault()
        eng = sa.create_engine(duckdb_target_url, poolclass=sa.pool.NullPool)
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM big")).scalar() == 0
        eng.dispose()
        m = Mirror(big_db, duckdb_target_url)
        wait_caught_up(big_db, m)
        assert m.stop() == 0, m.tail()
        compare(big_db, duckdb_target_url, ["big", "small"], tally)
    finally:
        m.close()


def test_sigkill_while_a_huge_transaction_is_half_applied(big_db, pg_target_server, pg_target_url, tally):
    """SIGKILL from the test while the PostgreSQL target holds part of a 200k-row transaction in
    an open transaction (seen in its pg_stat_activity): nothing of it is visible, the restart
    applies it once."""
    m = Mirror(big_db, pg_target_url, args=["--batch-rows", "1000"])
    try:
        wait_streaming(big_db, m)
        huge_transaction(big_db)
        db = sa.make_url(pg_target_url).database

        def writing():
            return pg_target_server.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_xid IS NOT NULL "
                "AND xact_start < now() - interval '200 milliseconds'",
                (db,),
            )[0][0]

        wait_until(writing, 180, "the target to hold an open transaction of the huge one", m, every=0.05)
        m.kill()
        tally.fault()
        eng = sa.create_engine(pg_target_url, poolclass=sa.pool.NullPool)
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM big")).scalar() == 0
        eng.dispose()
        m = Mirror(big_db, pg_target_url, args=["--batch-rows", "1000"])
        wait_caught_up(big_db, m)
        assert m.stop() == 0, m.tail()
        compare(big_db, pg_target_url, ["big", "small"], tally)
    finally:
        m.close()
