"""status through a whole run: i/d/s/r, copy progress while copying, slot fields, lag, warnings;
the human form of a running and of a stopped mirror shows the same facts as --json, in words."""

from __future__ import annotations

import json
import re
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


PYTHON_SPELLINGS = re.compile(r"\b(None|True|False)\b")
STATE_WORDS = {"i": "i (waiting)", "d": "d (copying)", "s": "s (copied)", "r": "r (ready)"}


def human_status(dsn, url):
    """status without --json: its text, which never holds a Python spelling."""
    out = replicator("status", "--source", dsn, "--target", url).stdout
    assert not PYTHON_SPELLINGS.search(out), out
    return out


def table_row(human, source):
    """The cells of ``source``'s row in the table of tables."""
    rows = [ln.split("  ") for ln in human.splitlines() if ln.startswith(source + " ")]
    assert len(rows) == 1, human
    return [cell.strip() for cell in rows[0] if cell.strip()]


def standing(doc):
    """What assert_same_facts compares: not the lag nor the retained WAL, which move with the
    source's WAL (and the clock) even while nothing is replicated."""
    slot = {k: v for k, v in (doc["slot"] or {}).items() if k != "retained_bytes"}
    return doc["applied_lsn"], doc["tables"], slot, doc["warnings"]


def settled(dsn, url, tries=10):
    """(doc, human) taken while the stream stood still: the same LSNs, tables and slot in the
    JSON before and after the text (a running mirror may still move)."""
    for _ in range(tries):
        before, human, after = status(dsn, url), human_status(dsn, url), status(dsn, url)
        if standing(before) == standing(after):
            return after, human
        time.sleep(0.5)
    raise AssertionError(f"the status never stood still:\n{before}\n{after}")


def assert_same_facts(doc, human):
    """The text shows the JSON's LSNs, states, rows, slot and warnings."""
    assert f"applied LSN: {doc['applied_lsn'] or '—'}\n" in human, human
    for t in doc["tables"]:
        row = table_row(human, t["source"])
        assert row[:3] == [t["source"], t["target"], STATE_WORDS[t["state"]]], row
        assert row[3] == (t["sync_lsn"] if t["sync_lsn"] != "0/0" else "—"), row
        assert row[4] == f"{t['rows_copied']:,}", row
    s = doc["slot"]
    if s and s["exists"]:
        slot_line = re.search(r"^ *slot: (.*)$", human, re.M).group(1)
        assert slot_line.startswith(f"{s['name']}: {'active' if s['active'] else 'inactive'} ")
        assert f"wal_status {s['wal_status']}" in slot_line
        assert f"confirmed {s['confirmed_flush_lsn']}, restart {s['restart_lsn']}" in human
    for w in doc["warnings"]:
        assert f"warning: {w}" in human


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
                row = table_row(human_status(source_db, sqlite_target_url), "public.big")
                if row[2] == "d (copying)":  # (unless the copy ended in between)
                    assert row[3] == "—" and re.fullmatch(r"\d+\.\d%", row[5]), row
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
        doc, human = settled(source_db, sqlite_target_url)
        assert_same_facts(doc, human)
        assert "wal_status reserved" in human  # the lag may have moved since: a size and a time
        assert re.search(r"^ *lag: \d+(\.\d)? [kMG]?B, [^—]+$", human, re.M), human
        assert re.search(r"^ *last commit: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(.* ago\)$", human, re.M), human
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    deadline = time.monotonic() + 30  # the walsender leaves a moment after the mirror
    while status(source_db, sqlite_target_url)["slot"]["active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    doc, human = settled(source_db, sqlite_target_url)  # a stopped mirror
    assert not doc["slot"]["active"] and "inactive (no process holds it)" in human
    assert_same_facts(doc, human)
    warned = collect(source_db, sqlite_target_url, "replicator", warn_retained_bytes=1)
    assert any("retains" in w and "is the mirror running" in w for w in warned["warnings"])
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('replicator')")
    doc = status(source_db, sqlite_target_url)
    assert doc["slot"] == {"name": "replicator", "exists": False}
    assert any("does not exist" in w for w in doc["warnings"])
    human = human_status(source_db, sqlite_target_url)
    assert re.search(r"^ *slot: replicator: does not exist", human, re.M), human
    assert_same_facts(doc, human)


def test_status_without_source_shows_unknown_slot_and_lag(source_db, sqlite_target_url):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    replicator("migrate", "--source", source_db, "--target", sqlite_target_url, "--no-progress")
    doc = json.loads(replicator("status", "--target", sqlite_target_url, "--json").stdout)
    assert doc["slot"] is None and doc["lag"] == {"bytes": None, "seconds": None}
    human = replicator("status", "--target", sqlite_target_url).stdout
    assert not PYTHON_SPELLINGS.search(human), human
    for label in ("slot", "lag"):
        assert re.search(rf"^ *{label}: —$", human, re.M), human
    assert_same_facts(doc, human)
    assert table_row(human, "public.t")[2:5] == ["r (ready)", doc["tables"][0]["sync_lsn"], "2"]
