"""`replicator mirror` under pgbench load: SIGKILL during the copy and while streaming, restart,
catch up, SIGTERM.  Every table must equal the source row by row; pgbench_history (FULL identity,
no key, insert-only) has an exact row count, so a transaction applied twice or lost shows.

The load runs until the test has seen what it needs (never for a fixed time that may be over
before the mirror gets there), and every wait has a generous deadline.
"""

from __future__ import annotations

import json
import signal
import time

import psycopg

from tests import targets
from tests.compare import assert_same
from tests.faults.harness import Load
from tests.integration.test_migrate import PGBENCH, replicator, wait_slot_active
from tests.procs import Replicator
from tests.servers import pgbench_init

EXIT_TIMEOUT = 300  # for a mirror to reach its failpoint (a copy of 200k rows on a busy machine)


def start_mirror(dsn, url, failpoints=""):
    """``replicator mirror --batch-seconds 0.2`` (tests/procs.py: killed at the end of the test
    if still running; Popen-like: poll, returncode, send_signal, communicate -> (out, err))."""
    return Replicator("mirror", "--batch-seconds", "0.2", source=dsn, target=url, failpoints=failpoints)


def table_states(dsn, url):
    doc = json.loads(replicator("status", "--target", url, "--json").stdout)
    return {t["source"]: t["state"] for t in doc["tables"]}


def wait_equal_history(dsn, url, timeout=240, proc=None):
    """Until the target's pgbench_history has the source's row count (the load has stopped)."""
    import sqlalchemy as sa

    with psycopg.connect(dsn) as c:
        want = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]
    eng = sa.create_engine(targets.engine_url(url), poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    got = None
    try:
        while time.monotonic() < deadline:
            try:
                with eng.connect() as c:
                    got = c.execute(sa.text("SELECT count(*) FROM pgbench_history")).scalar()
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # file busy, table not yet made
                got = None
            if got == want:
                return
            assert got is None or got < want, f"target has {got} history rows, source {want}: applied twice"
            assert proc is None or proc.alive(), (
                f"mirror exited {proc.returncode} at {got} of {want} history rows:\n{proc.tail()}"
            )
            time.sleep(0.3)
    finally:
        eng.dispose()
    raise AssertionError(
        f"mirror did not catch up in {timeout}s: {got} of {want} history rows"
        + (f"\n{proc.tail()}" if proc is not None else "")
    )


# every target, the generic SQLAlchemy path too (tests/targets.py)
target_kind = targets.kind_fixture(*targets.ALL)


def test_mirror_sigkill_during_copy_and_streaming_then_sigterm(source_db, target_url):
    pgbench_init(source_db, scale=2)
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    load = Load(source_db, rate=300)  # until stopped below (bounded by a transaction count)
    try:
        # 1. killed while pgbench_accounts is loaded but not committed
        p = start_mirror(source_db, target_url, "copy.loaded:public.pgbench_accounts=kill")
        assert p.wait(EXIT_TIMEOUT) == -signal.SIGKILL, p.tail()
        assert table_states(source_db, target_url)["public.pgbench_accounts"] in ("i", "d")
        # 2. restarted: re-copies accounts only, then killed after its 5th committed batch (the
        # load still runs, so batches keep coming however long the copy took)
        p = start_mirror(source_db, target_url, "apply.committed=kill@5")
        assert p.wait(EXIT_TIMEOUT) == -signal.SIGKILL, p.tail()
        assert set(table_states(source_db, target_url).values()) <= {"s", "r"}
        # 3. restarted for good, streaming while the load goes on
        p = start_mirror(source_db, target_url)
        wait_slot_active(source_db, "replicator", proc=p)
        load.more(100, p)
    finally:
        load.stop()
    wait_equal_history(source_db, target_url, proc=p)
    assert p.stop() == 0, p.tail()
    for t in PGBENCH:
        assert_same(source_db, "public", t, target_url)
    assert set(table_states(source_db, target_url).values()) == {"r"}
