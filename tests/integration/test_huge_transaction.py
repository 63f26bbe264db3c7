"""One source transaction of 1M rows reaches the target in one target transaction, applied in
chunks: the mirror's memory stays bounded (its peak RSS is read from /proc; holding the changes
as Python objects would take well over 500 MB).  DESIGN.md invariant 3."""

from __future__ import annotations

import signal
import time

import psycopg

from tests.compare import assert_same
from tests.integration.test_migrate import wait_slot_active
from tests.integration.test_mirror import start_mirror

ROWS = 1_000_000


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def count(url, table):
    import sqlalchemy as sa

    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    except sa.exc.DBAPIError:
        return None
    finally:
        eng.dispose()


def test_one_million_row_transaction_bounded_memory(source_db, duckdb_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    p = start_mirror(source_db, duckdb_target_url)
    try:
        wait_slot_active(source_db, "replicator", proc=p)
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute(f"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g")
        deadline, peak = time.monotonic() + 240, 0.0
        while time.monotonic() < deadline:
            peak = max(peak, peak_rss_mb(p.pid))
            if count(duckdb_target_url, "big") == ROWS:
                break
            time.sleep(0.5)
        peak = max(peak, peak_rss_mb(p.pid))
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    assert p.returncode == 0
    assert_same(source_db, "public", "big", duckdb_target_url)
    print(f"1M-row transaction applied; mirror peak RSS {peak:.0f} MB")
    assert peak < 400, f"peak RSS {peak:.0f} MB"
