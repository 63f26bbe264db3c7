"""Slot safety: an idle mirror's slot follows the server's WAL (invariant 4), and a value the target
refuses never advances the slot past it (invariant 9)."""

from __future__ import annotations

import signal
import time

import psycopg

from replicator.model import Lsn
from tests.integration.test_migrate import wait_slot_active
from tests.integration.test_mirror import start_mirror


def slot_confirmed(dsn, slot="replicator") -> Lsn:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return Lsn.parse(row[0])


def test_idle_mirror_slot_advances_while_another_database_writes(source_db, pg_server, sqlite_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE quiet (id int PRIMARY KEY)")
    other = pg_server.create_database()
    p = start_mirror(source_db, sqlite_target_url)
    try:
        wait_slot_active(source_db, "replicator", proc=p)
        with psycopg.connect(other, autocommit=True) as c:
            c.execute("CREATE TABLE busy AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            written = Lsn.parse(c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
        deadline = time.monotonic() + 180
        while slot_confirmed(source_db) < written and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slot_confirmed(source_db) >= written, "idle slot held WAL written by another database (180 s)"
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    assert p.returncode == 0


def test_refused_value_stops_the_mirror_without_advancing_the_slot(source_db, mysql_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE m (id int PRIMARY KEY, x float8); INSERT INTO m VALUES (1, 1.5)")
    p = start_mirror(source_db, mysql_target_url)
    wait_slot_active(source_db, "replicator", proc=p)
    with psycopg.connect(source_db, autocommit=True) as c:
        before = Lsn.parse(c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
        c.execute("INSERT INTO m VALUES (2, 'NaN')")
    _, err = p.communicate(timeout=180)
    assert p.returncode not in (0, -signal.SIGKILL), err[-2000:]
    assert "public.m" in err and "x" in err and "NaN" in err, err[-2000:]
    assert slot_confirmed(source_db) <= before, "the slot moved past a transaction never applied"
