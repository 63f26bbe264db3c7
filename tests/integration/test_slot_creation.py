"""Slot creation waits for open transactions: it gives up after --slot-timeout naming their pids;
check warns about them and about unlimited WAL retention."""

from __future__ import annotations

import psycopg

from tests.integration.test_migrate import replicator, slots_and_publications


def test_slot_creation_gives_up_naming_the_blocking_pid(source_db, sqlite_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    holder = psycopg.connect(source_db)
    try:
        holder.execute("INSERT INTO t VALUES (2)")  # an open transaction with an xid
        pid = holder.info.backend_pid
        cp = replicator(
            "migrate",
            "--source",
            source_db,
            "--target",
            sqlite_target_url,
            "--slot-timeout",
            "2",
            check=False,
            timeout=60,
        )
        assert cp.returncode == 1, cp.stderr
        assert f"pid {pid}" in cp.stderr and "waited 2s" in cp.stderr, cp.stderr
        assert "usename" not in cp.stderr, cp.stderr  # the tool's own blocker query is no blocker
        assert slots_and_publications(source_db) == ([], [])  # nothing was left behind
    finally:
        holder.rollback()
        holder.close()
    replicator("migrate", "--source", source_db, "--target", sqlite_target_url)


def test_check_warns_about_wal_retention_and_old_transactions(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    holder = psycopg.connect(source_db)
    try:
        holder.execute("INSERT INTO t VALUES (1)")
        holder.execute("SELECT pg_sleep(0)")
        pid = holder.info.backend_pid
        with psycopg.connect(source_db, autocommit=True) as c:  # make it look old
            c.execute("SELECT 1")
        import time

        time.sleep(1.2)
        from replicator.check import warnings

        ws = warnings(source_db, long_transaction_s=1)
    finally:
        holder.rollback()
        holder.close()
    assert any("max_slot_wal_keep_size is unlimited" in w for w in ws)
    assert any(f"pid {pid}" in w and "long-running transaction" in w for w in ws)
    cp = replicator("check", "--source", source_db)
    assert "warning: max_slot_wal_keep_size is unlimited" in cp.stdout and cp.returncode == 0
