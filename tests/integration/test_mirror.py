"""`replicator mirror` under pgbench load: SIGKILL during the copy and while streaming, restart,
catch up, SIGTERM.  Every table must equal the source row by row; pgbench_history (FULL identity,
no key, insert-only) has an exact row count, so a transaction applied twice or lost shows.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.compare import assert_same
from tests.integration.test_migrate import PGBENCH, replicator, wait_slot_active
from tests.servers import pgbench_init, pgbench_run


def start_mirror(dsn, url, failpoints=""):
    env = {**os.environ, "REPLICATOR_SOURCE": dsn, "REPLICATOR_TARGET": url,
           "REPLICATOR_FAILPOINTS": failpoints}
    return subprocess.Popen([sys.executable, "-m", "replicator", "mirror", "--batch-seconds", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def table_states(dsn, url):
    doc = json.loads(replicator("status", "--target", url, "--json").stdout)
    return {t["source"]: t["state"] for t in doc["tables"]}


def wait_equal_history(dsn, url, timeout=90):
    import sqlalchemy as sa
    with psycopg.connect(dsn) as c:
        want = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        try:
            with eng.connect() as c:
                got = c.execute(sa.text("SELECT count(*) FROM pgbench_history")).scalar()
        except sa.exc.OperationalError:  # embedded file busy between batches: try again
            got = None
        if got == want:
            return
        assert got is None or got < want, f"target has {got} history rows, source {want}: applied twice"
        time.sleep(0.3)
    raise AssertionError(f"mirror did not catch up in {timeout}s: {got} of {want} history rows")


@pytest.fixture(params=["sqlite", "duckdb", "mysql", "pg"])
def target_url(request):
    return request.getfixturevalue(f"{request.param}_target_url")


def test_mirror_sigkill_during_copy_and_streaming_then_sigterm(source_db, target_url):
    pgbench_init(source_db, scale=2)
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    bench = pgbench_run(source_db, seconds=12, clients=2, builtin="tpcb-like", rate=300, background=True)
    try:
        # 1. killed while pgbench_accounts is loaded but not committed
        p = start_mirror(source_db, target_url, "copy.loaded:public.pgbench_accounts=kill")
        p.communicate(timeout=120)
        assert p.returncode == -signal.SIGKILL
        assert table_states(source_db, target_url)["public.pgbench_accounts"] in ("i", "d")
        # 2. restarted: re-copies accounts only, then killed after its 5th committed batch
        p = start_mirror(source_db, target_url, "apply.committed=kill@5")
        _, err = p.communicate(timeout=120)
        assert p.returncode == -signal.SIGKILL, err[-3000:]
        assert set(table_states(source_db, target_url).values()) <= {"s", "r"}
        # 3. restarted for good
        p = start_mirror(source_db, target_url)
        wait_slot_active(source_db, "replicator")
    finally:
        bench.communicate(timeout=120)
    try:
        wait_equal_history(source_db, target_url)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-3000:]
    for t in PGBENCH:
        assert_same(source_db, "public", t, target_url)
    assert set(table_states(source_db, target_url).values()) == {"r"}
