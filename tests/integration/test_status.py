"""status through a whole run: i/d/s/r, copy progress while copying, slot fields, lag, warnings."""

from __future__ import annotations

import json
import signal
import time

import psycopg

from replicator.status import collect
from tests.integration.test_migrate import replicator, wait_slot_active
from tests.integration.test_mirror import start_mirror


def status(dsn, url, check=True):
    """status --json as a dict; with ``check=False`` None when it fails (e.g. before the mirror
    created the target file: status never creates it)."""
    cp = replicator("status", "--source", dsn, "--target", url, "--json", check=check)
    return json.loads(cp.stdout) if cp.returncode == 0 else None


def test_status_through_a_run(source_db, sqlite_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE big (id int PRIMARY KEY, pad text);"
            "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g;"
            "CREATE TABLE small (id int PRIMARY KEY); ANALYZE big"
        )
    p = start_mirror(source_db, sqlite_target_url, "copy.chunk:public.big=sleep:4@2")
    try:
        seen = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and seen is None:
            doc = status(source_db, sqlite_target_url, check=False)
            big = [t for t in doc["tables"] if t["source"] == "public.big"] if doc else []
            if big and big[0]["state"] == "d" and big[0]["copy_percent"]:
                seen = big[0]
            if big and big[0]["state"] in ("s", "r"):
                break  # copied already: it was missed (the copy sleeps 4 s after its 2nd chunk)
            assert p.alive(), f"mirror exited {p.returncode}:\n{p.tail()}"
            time.sleep(0.2)
        assert seen is not None, "never saw public.big being copied"
        assert 0 < seen["copy_percent"] < 100 and seen["rows_copied"] > 0
        wait_slot_active(source_db, "replicator", proc=p)
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute("INSERT INTO small VALUES (1)")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            doc = status(source_db, sqlite_target_url)
            if {t["state"] for t in doc["tables"]} == {"r"} and doc["lag"]["bytes"] == 0:
                break
            time.sleep(0.3)
        assert {t["source"]: t["state"] for t in doc["tables"]} == {"public.big": "r", "public.small": "r"}
        assert doc["slot"]["exists"] and doc["slot"]["active"] and doc["slot"]["wal_status"] == "reserved"
        assert doc["applied_lsn"] and doc["lag"]["seconds"] == 0.0 and doc["warnings"] == []
        assert {"retained_bytes", "safe_wal_size", "confirmed_flush_lsn"} <= set(doc["slot"])
        human = replicator("status", "--source", source_db, "--target", sqlite_target_url).stdout
        assert "public.big" in human and "wal_status reserved" in human
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    warned = collect(source_db, sqlite_target_url, "replicator", warn_retained_bytes=1)
    assert any("retains" in w and "is the mirror running" in w for w in warned["warnings"])
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('replicator')")
    doc = status(source_db, sqlite_target_url)
    assert doc["slot"] == {"name": "replicator", "exists": False}
    assert any("does not exist" in w for w in doc["warnings"])
