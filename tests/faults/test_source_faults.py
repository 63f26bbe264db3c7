"""The source goes away under a running mirror: a crash (``pg_ctl stop -m immediate``) and
restart, a terminated walsender.  The source is a private server (``fault_pg``:
synchronous_commit=on, so what was committed before the crash survives it)."""

from __future__ import annotations

import re
import time

import psycopg
import pytest

from replicator.model import Lsn
from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_confirmed,
    slot_row,
    target_applied,
    under_load,
    wait_caught_up,
    wait_streaming,
    wait_until,
)


@pytest.fixture
def bench_db(fault_db):
    pgbench_source(fault_db, scale=1)
    return fault_db


def crash_source_under_load(fault_pg, dsn, down_seconds: float) -> tuple[Lsn, Lsn]:
    """Crash the source mid-load, keep it down ``down_seconds``, start it again; returns the
    slot's confirmed position (before the crash, after the restart)."""
    load = Load(dsn, rate=200)
    try:
        load.more(50)
        before = slot_confirmed(dsn)
        fault_pg.stop("immediate")
    finally:
        load.stop()
    time.sleep(down_seconds)
    fault_pg.start()
    return before, slot_confirmed(dsn)


def test_source_crash_and_restart_resends_are_skipped(fault_pg, bench_db, sqlite_target_url, tally):
    """After a crash the slot restarts from its last checkpointed position, before what the
    mirror confirmed: the transactions the source sends again were applied already and must be
    skipped.  Here the mirror is restarted by hand once the source is back; the test beside this
    one requires it to ride out the outage on its own."""
    m = Mirror(bench_db, sqlite_target_url)
    try:
        wait_streaming(bench_db, m)
        load = Load(bench_db, rate=200)
        try:
            load.more(50, m)
            fault_pg.stop("immediate")
            tally.fault()
        finally:
            load.stop()
        m.stop()  # whatever it says: it lost its source
        applied = target_applied(sqlite_target_url)
        fault_pg.start()
        resent_from = slot_confirmed(bench_db)
        print(f"slot restarts at {resent_from}, target applied {applied}")
        assert resent_from <= applied
        m = Mirror(bench_db, sqlite_target_url)
        wait_streaming(bench_db, m)
        load = Load(bench_db, rate=200)
        load.more(30, m)
        load.stop()
        wait_caught_up(bench_db, m)
        assert m.stop() == 0, m.tail()
        compare(bench_db, sqlite_target_url, PGBENCH, tally)
    finally:
        m.close()


def test_source_crash_while_mirroring_is_ridden_out(fault_pg, bench_db, duckdb_target_url, tally):
    """The source crashes and stays down for 4 s: the mirror keeps retrying with backoff, catches
    up once the source is back and skips the transactions the slot sends again."""
    m = Mirror(bench_db, duckdb_target_url)
    try:
        wait_streaming(bench_db, m)
        before, after = crash_source_under_load(fault_pg, bench_db, down_seconds=4)
        tally.fault()
        assert m.alive(), f"the mirror gave up while the source was down:\n{m.tail()}"
        load = Load(bench_db, rate=200)
        load.more(30, m)
        load.stop()
        wait_caught_up(bench_db, m)
        assert m.stop() == 0, m.tail()
        compare(bench_db, duckdb_target_url, PGBENCH, tally)
    finally:
        m.close()


def test_walsender_terminated(bench_db, mysql_target_url, tally):
    """pg_terminate_backend on the mirror's walsender, twice, under load: it reconnects and
    catches up, nothing lost or doubled."""
    with under_load(bench_db, mysql_target_url, tally) as m:
        for _ in range(2):
            wait_caught_up(bench_db, m)  # streaming (again) under load
            pid = slot_row(bench_db)["active_pid"]
            with psycopg.connect(bench_db, autocommit=True) as c:
                assert c.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            tally.fault()
            wait_until(lambda: (slot_row(bench_db)["active_pid"] or pid) != pid, 120, "a new walsender", m)
        assert "retrying in" in m.log()


def test_backoff_starts_over_after_a_successful_reconnect(bench_db, sqlite_target_url, tally):
    """Three walsender terminations, each after the mirror streamed again: the third reconnect
    waits as long as the first (1 s; without the reset it would be 4 s).  Read from the log's
    "retrying in Ns", not from a clock, so a slow machine does not matter."""
    m = Mirror(bench_db, sqlite_target_url)
    try:
        wait_streaming(bench_db, m)
        delays = []
        for _ in range(3):
            with psycopg.connect(bench_db, autocommit=True) as c:  # a change the new stream must carry
                c.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1")
            wait_caught_up(bench_db, m)  # streaming again: a frame arrived, the backoff was reset
            pid = slot_row(bench_db)["active_pid"]
            retries = len(re.findall(r"retrying in (\d+)s", m.log()))
            with psycopg.connect(bench_db, autocommit=True) as c:
                c.execute("SELECT pg_terminate_backend(%s)", (pid,))
            tally.fault()
            wait_until(
                lambda: (slot_row(bench_db)["active_pid"] or pid) != pid,
                120,
                "a new walsender",
                m,
                every=0.05,
            )
            found = re.findall(r"retrying in (\d+)s", m.log())
            assert len(found) > retries, f"no retry logged after the termination:\n{m.tail()}"
            delays.append(int(found[retries]))
        assert delays == [1, 1, 1], f"first retry delays after each termination: {delays} s\n{m.tail()}"
        wait_caught_up(bench_db, m)
        assert m.stop() == 0, m.tail()
        compare(bench_db, sqlite_target_url, PGBENCH, tally)
    finally:
        m.close()
