"""`replicator migrate` end to end, through the real CLI, into every target.

pgbench at scale 2 (200k accounts) with pgbench_history set to REPLICA IDENTITY FULL; after the
migration every table equals the source row by row and no slot or publication is left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.compare import assert_same
from tests.servers import pgbench_init, pgbench_run

PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
TARGETS = ["sqlite", "duckdb", "mysql", "pg"]


def replicator(*args, env=None, timeout=600, check=True):
    """Run the real console entry point; returns the CompletedProcess."""
    cp = subprocess.run([sys.executable, "-m", "replicator", *args], capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, **(env or {})})
    if check and cp.returncode != 0:
        raise AssertionError(f"replicator {args[0]} exited {cp.returncode}:\n{cp.stderr[-4000:]}")
    return cp


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


@pytest.fixture(params=TARGETS)
def target_url(request):
    return request.getfixturevalue(f"{request.param}_target_url")


def test_migrate_pgbench_into_every_target(pgbench_db, target_url):
    cp = replicator("migrate", "--source", pgbench_db, "--target", target_url, "--jobs", "2")
    assert "migrated 4 table(s)" in cp.stdout
    for t in PGBENCH:
        assert_same(pgbench_db, "public", t, target_url)
    assert slots_and_publications(pgbench_db) == ([], [])
    if target_url.startswith("duckdb"):  # the key is added after the bulk load
        import duckdb
        with duckdb.connect(target_url.split(":///", 1)[1], read_only=True) as db:
            pks = db.execute("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                             "WHERE constraint_type = 'PRIMARY KEY' AND table_name LIKE 'pgbench%' ORDER BY 1").fetchall()
        assert pks == [("pgbench_accounts", ["aid"]), ("pgbench_branches", ["bid"]),
                       ("pgbench_tellers", ["tid"])]
    st = replicator("status", "--target", target_url, "--json")
    import json
    doc = json.loads(st.stdout)
    assert {t["source"]: t["state"] for t in doc["tables"]} == {f"public.{t}": "r" for t in PGBENCH}
    assert sum(t["rows_copied"] for t in doc["tables"]) >= 200_000


def test_changes_during_copy_are_applied_once(pgbench_db, sqlite_target_url):
    """pgbench runs while migrate copies and catches up: history counts must match exactly."""
    bench = pgbench_run(pgbench_db, seconds=6, clients=2, builtin="tpcb-like", background=True)
    try:
        replicator("migrate", "--source", pgbench_db, "--target", sqlite_target_url, "--keep-slot")
    finally:
        bench.communicate(timeout=60)
    # migrate caught up to the position read after its copy; pgbench may have gone on: mirror on
    env = {"REPLICATOR_SOURCE": pgbench_db, "REPLICATOR_TARGET": sqlite_target_url}
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "mirror"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_slot_active(pgbench_db, "replicator")
        _wait_caught_up(pgbench_db, sqlite_target_url)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    for t in PGBENCH:
        assert_same(pgbench_db, "public", t, sqlite_target_url)


def wait_slot_active(dsn, slot, timeout=60):
    import time
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"slot {slot} never became active")


def _wait_caught_up(dsn, url, timeout=60):
    """Until the target's history has the source's row count (pgbench has stopped)."""
    import time
    import sqlalchemy as sa
    with psycopg.connect(dsn) as c:
        want = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with eng.connect() as c:
            got = c.execute(sa.text("SELECT count(*) FROM pgbench_history")).scalar()
        if got == want:
            return
        assert got < want, f"target has {got} history rows, source {want}: applied twice"
        time.sleep(0.3)
    raise AssertionError(f"mirror did not catch up in {timeout}s: {got} of {want} history rows")
