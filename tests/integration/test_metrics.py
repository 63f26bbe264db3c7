"""A real `replicator mirror --metrics-port` scraped over HTTP while changes stream; its output
carries no progress control characters (not a terminal), and with --log-format json every stderr
line is a JSON object without the password."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from replicator.devserver import free_port
from tests.procs import Replicator

CHANGES = 60  # row changes made while the mirror streams


def scrape(port: int):
    """{(sample name, frozenset(labels)): value}, or None while the endpoint is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def wait_for(port, proc, what, ok, timeout=120):
    deadline = time.monotonic() + timeout
    m = None
    while time.monotonic() < deadline:
        assert proc.alive(), f"mirror exited {proc.returncode}: {proc.tail(3000)}"
        m = scrape(port)
        if m is not None and ok(m):
            return m
        time.sleep(0.2)
    raise AssertionError(
        f"metrics did not show {what} within {timeout}s; last scrape: "
        f"{ {k[0]: v for k, v in (m or {}).items() if k[0].startswith('replicator')} }"
    )


def with_password(dsn: str, password: str) -> str:
    # the test server trusts local connections, so a password is accepted and ignored
    return dsn.replace("postgres@", f"postgres:{password}@", 1)


def make_tables(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, n int)")
        c.execute("INSERT INTO items SELECT g, 0 FROM generate_series(1, 500) g")
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        c.execute("ANALYZE")


def start_mirror(dsn, url, port, *args, failpoints=""):
    """``replicator [args] mirror --metrics-port PORT`` (tests/procs.py: stdout and stderr in
    files, killed at the end of the test if still running)."""
    return Replicator(
        "mirror",
        "--batch-seconds",
        "0.2",
        "--metrics-port",
        str(port),
        source=dsn,
        target=url,
        failpoints=failpoints,
        pre_args=args,
    )


def copied(m):
    return all(
        (value(m, "replicator_table_state", table=t, target=t.split(".")[1], state="s") or 0)
        + (value(m, "replicator_table_state", table=t, target=t.split(".")[1], state="r") or 0)
        == 1
        for t in ("public.items", "public.notes")
    )


def wait_slot(dsn, proc, timeout=120):
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while time.monotonic() < deadline:
            assert proc.alive(), f"mirror exited {proc.returncode}: {proc.tail(3000)}"
            # created and consistent (confirmed_flush_lsn is set once its snapshot is): every
            # change made from now on is streamed, none is in the copy's snapshot
            if c.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'replicator' "
                "AND confirmed_flush_lsn IS NOT NULL"
            ).fetchone():
                return
            time.sleep(0.05)
    raise AssertionError(f"the mirror created no slot within {timeout}s:\n{proc.tail(3000)}")


def test_mirror_metrics_endpoint(source_db, sqlite_target_url):
    make_tables(source_db)
    port = free_port()
    secret = "s3cr3t-pw"
    # the copy waits 2 s after the slot exists: the changes made meanwhile are streamed after it
    proc = start_mirror(
        with_password(source_db, secret),
        sqlite_target_url,
        port,
        "--log-format",
        "json",
        failpoints="slot.created=sleep:2",
    )
    try:
        wait_slot(source_db, proc)
        with psycopg.connect(source_db, autocommit=True) as c:
            for i in range(CHANGES // 3):  # 20 transactions of 3 changes each, both tables
                with c.transaction():
                    c.execute("UPDATE items SET n = n + 1 WHERE id = %s", (i + 1,))
                    c.execute("INSERT INTO notes VALUES (%s, 'x')", (i,))
                    c.execute("DELETE FROM items WHERE id = %s", (400 + i,))
        m = wait_for(port, proc, "both tables copied", copied)
        assert value(m, "replicator_table_rows_copied", table="public.items") == 500
        # the planner's estimate (pg_class.reltuples): 500, or 480 once autoanalyze saw the deletes
        assert 480 <= value(m, "replicator_table_rows_estimate", table="public.items") <= 500
        m = wait_for(
            port,
            proc,
            f"{CHANGES} changes applied",
            lambda m: (value(m, "replicator_changes_applied_total") or 0) >= CHANGES,
        )
        assert value(m, "replicator_changes_applied_total") == CHANGES
        assert value(m, "replicator_table_changes_applied_total", table="public.items") == 40
        assert value(m, "replicator_table_changes_applied_total", table="public.notes") == 20
        assert value(m, "replicator_transactions_applied_total") == CHANGES // 3
        assert value(m, "replicator_batches_total") >= 1
        assert value(m, "replicator_last_batch_changes") > 0
        assert value(m, "replicator_last_batch_seconds") >= 0
        assert copied(m)
        assert value(m, "replicator_applied_lsn") > 0
        assert value(m, "replicator_server_wal_end_lsn") >= value(m, "replicator_applied_lsn")
        assert value(m, "replicator_lag_bytes") is not None and value(m, "replicator_lag_bytes") >= 0
        assert value(m, "replicator_lag_seconds") is not None
        assert value(m, "replicator_last_commit_timestamp_seconds") > time.time() - 120
        assert value(m, "replicator_stream_info", stream="replicator") == 1
        # the slot watcher reads the slot every 1 s until it exists, then every 10 s
        m = wait_for(
            port,
            proc,
            "the slot's figures",
            lambda m: value(m, "replicator_slot_retained_wal_bytes") is not None,
        )
        assert value(m, "replicator_slot_exists") == 1  # (active: not while the copy sleeps)
        assert value(m, "replicator_slot_active") in (0, 1)
        assert value(m, "replicator_slot_retained_wal_bytes") > 0
        assert value(m, "replicator_slot_wal_status", status="reserved") == 1
        assert value(m, "replicator_errors_total", kind="slot_check") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert scrape(port) is None  # the endpoint stops with the mirror
    # not a terminal: no progress control characters anywhere; JSON lines; no password
    assert not any(c in out + err for c in ("\x1b", "\r")), err[-2000:]
    assert secret not in out + err
    lines = err.splitlines()
    assert lines, "expected log lines"
    docs = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= set(docs[0])
    assert any(d["message"].startswith("serving metrics on http://127.0.0.1:") for d in docs)
    assert "mirror stopped at" in out


def test_idle_mirror_reports_ready_tables_and_applied_lsn(source_db, sqlite_target_url):
    """No changes at all: the tables still become 'r' and the applied LSN moves (idle confirm)."""
    make_tables(source_db)
    port = free_port()
    proc = start_mirror(source_db, sqlite_target_url, port)
    try:
        wait_for(port, proc, "both tables copied", copied)
        wait_for(
            port,
            proc,
            "ready tables and an applied LSN",
            lambda m: (
                all(
                    value(m, "replicator_table_state", table=t, target=t.split(".")[1], state="r") == 1
                    for t in ("public.items", "public.notes")
                )
                and value(m, "replicator_applied_lsn") > 0
            ),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
