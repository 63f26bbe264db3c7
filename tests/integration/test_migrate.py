"""`replicator migrate` end to end, through the real CLI, into every target.

pgbench at scale 2 (200k accounts) with pgbench_history set to REPLICA IDENTITY FULL; after the
migration every table equals the source row by row and no slot or publication is left behind.
"""

from __future__ import annotations

import psycopg
import pytest

from tests import procs, targets
from tests.compare import assert_same
from tests.servers import pgbench_init, pgbench_run

PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def replicator(*args, env=None, timeout=600, check=True):
    """Run the real console entry point to completion (tests/procs.py: killed, and the test
    failed with its log, past ``timeout``); returns the CompletedProcess."""
    return procs.run(*args, env=env, timeout=timeout, check=check)


def slots_and_publications(dsn):
    with psycopg.connect(dsn) as c:
        db = c.info.dbname
        slots = c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (db,)).fetchall()
        pubs = c.execute("SELECT pubname FROM pg_publication").fetchall()
    return slots, pubs


@pytest.fixture
def pgbench_db(source_db):
    pgbench_init(source_db, scale=2)
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    pgbench_run(source_db, transactions=200, clients=2, builtin="tpcb-like")
    return source_db


# test_migrate_pgbench_into_every_target: the generic SQLAlchemy path too (tests/targets.py)
target_kind = targets.kind_fixture(*targets.ALL)


def test_migrate_pgbench_into_every_target(pgbench_db, target_url):
    cp = replicator("migrate", "--source", pgbench_db, "--target", target_url, "--jobs", "2")
    assert "migrated 4 table(s)" in cp.stdout
    for t in PGBENCH:
        assert_same(pgbench_db, "public", t, target_url)
    assert slots_and_publications(pgbench_db) == ([], [])
    if target_url.startswith("duckdb"):  # the key is added after the bulk load
        import duckdb

        with duckdb.connect(target_url.split(":///", 1)[1], read_only=True) as db:
            pks = db.execute(
                "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                "WHERE constraint_type = 'PRIMARY KEY' AND table_name LIKE 'pgbench%' ORDER BY 1"
            ).fetchall()
        assert pks == [
            ("pgbench_accounts", ["aid"]),
            ("pgbench_branches", ["bid"]),
            ("pgbench_tellers", ["tid"]),
        ]
    st = replicator("status", "--target", target_url, "--json")
    import json

    doc = json.loads(st.stdout)
    assert {t["source"]: t["state"] for t in doc["tables"]} == {f"public.{t}": "r" for t in PGBENCH}
    assert sum(t["rows_copied"] for t in doc["tables"]) >= 200_000


def test_changes_during_copy_are_applied_once(pgbench_db, sqlite_target_url):
    """pgbench runs while migrate copies and catches up: history counts must match exactly."""
    from tests.faults.harness import Load

    load = Load(pgbench_db, rate=300)  # for as long as migrate runs, however long that is
    try:
        replicator("migrate", "--source", pgbench_db, "--target", sqlite_target_url, "--keep-slot")
    finally:
        load.stop()
    # migrate caught up to the position read after its copy; pgbench may have gone on: mirror on
    proc = procs.Replicator("mirror", source=pgbench_db, target=sqlite_target_url)
    wait_slot_active(pgbench_db, "replicator", proc=proc)
    _wait_caught_up(pgbench_db, sqlite_target_url, proc=proc)
    assert proc.stop() == 0, proc.tail()
    for t in PGBENCH:
        assert_same(pgbench_db, "public", t, sqlite_target_url)


def wait_slot_active(dsn, slot, timeout=240, proc=None):
    """Until ``slot`` is active (the copy is done and the stream started); fails at once when
    ``proc`` (the mirror) exits meanwhile."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row and row[0]:
                return
            if proc is not None and not proc.alive():
                raise AssertionError(
                    f"the mirror exited {proc.returncode} before slot {slot} became active:\n{proc.tail()}"
                )
            time.sleep(0.1)
    raise AssertionError(
        f"slot {slot} did not become active within {timeout}s"
        + (f"; mirror log:\n{proc.tail()}" if proc is not None else "")
    )


def _wait_caught_up(dsn, url, timeout=240, proc=None):
    """Until the target's history has the source's row count (pgbench has stopped)."""
    from tests.integration.test_mirror import wait_equal_history

    wait_equal_history(dsn, url, timeout=timeout, proc=proc)
