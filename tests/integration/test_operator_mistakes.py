"""Mistakes operators make, against real servers (issue 9, sections 1–3): a second stream with the
same name, a target restored from an older backup, a target that fails in the middle of a copy,
stop requests during every kind of wait, a pre-created publication owned by another role.

Each scenario failed on the code before it: the second stream dropped the first one's slot, the
copy hung for ever, Ctrl-C was ignored, the migration with a pre-created publication exited 1.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_row,
    wait_caught_up,
    wait_streaming,
    wait_until,
)
from tests.faults.proxy import Proxy
from tests.integration.test_migrate import replicator
from tests.procs import Replicator


def source_objects(dsn: str) -> tuple[list[str], list[str]]:
    """(slot names, publication names) on the source."""
    with psycopg.connect(dsn) as c:
        slots = [
            r[0]
            for r in c.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() ORDER BY 1"
            )
        ]
        pubs = [r[0] for r in c.execute("SELECT pubname FROM pg_publication ORDER BY 1")]
    return slots, pubs


def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command run to its end (bounded), its exit code not checked."""
    return replicator(*args, check=False, timeout=timeout)


# ---------------------------------------------------------------- 1. streams own their slots


def test_a_second_stream_of_the_same_name_never_touches_the_first(source_db, tmp_path):
    """A mirror into a.duckdb runs under load; a migrate and a mirror into b.duckdb with the same
    (default) name are refused, naming the slot and the mirror's own pid; the mirror goes on and
    its target equals the source."""
    pgbench_source(source_db)
    url_a, url_b = f"duckdb:///{tmp_path / 'a.duckdb'}", f"duckdb:///{tmp_path / 'b.duckdb'}"
    m = Mirror(source_db, url_a)
    load = Load(source_db, rate=150)
    try:
        wait_streaming(source_db, m)
        wait_caught_up(source_db, m)  # streaming now (the slot is active during the copy too)
        walsender = slot_row(source_db)["active_pid"]
        for command in ("migrate", "mirror"):
            cp = run(command, "--source", source_db, "--target", url_b, "--no-progress", timeout=120)
            assert cp.returncode == 2, (command, cp.stderr)
            assert "replication slot replicator already exists" in cp.stderr, cp.stderr
            assert f"client pid {m.pid}" in cp.stderr and "another --name" in cp.stderr, cp.stderr
        assert m.alive(), m.tail()
        row = slot_row(source_db)
        assert row["active"] and row["active_pid"] == walsender, m.tail()  # not terminated
        assert source_objects(source_db)[0] == ["replicator"]
        load.stop()
        wait_caught_up(source_db, m)
        assert m.stop() == 0, m.tail()
        compare(source_db, url_a, PGBENCH)
    finally:
        load.stop()
        m.close()


def test_a_target_restored_from_an_older_backup_stops_with_exit_3(source_db, tmp_path):
    """The slot confirmed changes the restored target never got: continuing would lose them, so
    the start stops (exit 3) with the resync command, and neither re-creates nor re-copies."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g")
    path = tmp_path / "t.sqlite"
    url = f"sqlite:///{path}"
    m = Mirror(source_db, url)
    try:
        wait_streaming(source_db, m)
        assert m.stop() == 0, m.tail()
    finally:
        m.close()
    shutil.copy(path, tmp_path / "backup.sqlite")
    m = Mirror(source_db, url)
    try:
        wait_streaming(source_db, m)
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute("INSERT INTO t SELECT g, 'new' FROM generate_series(101, 200) g")
        wait_caught_up(source_db, m)
        assert m.stop() == 0, m.tail()
    finally:
        m.close()
    confirmed = slot_row(source_db)["confirmed_flush_lsn"]
    shutil.copy(tmp_path / "backup.sqlite", path)
    cp = run("mirror", "--source", source_db, "--target", url, "--no-progress", timeout=120)
    assert cp.returncode == 3, cp.stderr
    assert "beyond" in cp.stderr and "replicator drop --name replicator" in cp.stderr, cp.stderr
    assert slot_row(source_db)["confirmed_flush_lsn"] == confirmed  # the same slot, untouched


# ---------------------------------------------------------------- 2./3. nothing hangs, failed runs clean up


@pytest.fixture
def infinity_at_50k(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY, ts timestamp, pad text)")
        c.execute(
            "INSERT INTO big SELECT g, CASE WHEN g = 50000 THEN 'infinity' ELSE "
            "'2024-01-01'::timestamp + g * interval '1 s' END, repeat('x', 40) "
            "FROM generate_series(1, 100000) g"
        )
        c.execute("CREATE TABLE small (id int PRIMARY KEY)")
        c.execute("INSERT INTO small SELECT generate_series(1, 10)")
    return source_db


def test_a_value_refused_mid_copy_ends_the_run_and_removes_what_it_created(
    infinity_at_50k, sqlite_target_url
):
    """Row 50,000 holds 'infinity', which SQLite cannot take: the run ends at once (it hung for
    ever: the worker waited on a source COPY still open), names table, column and key, and
    removes the slot and publication it created."""
    cp = run(
        "migrate", "--source", infinity_at_50k, "--target", sqlite_target_url, "--no-progress", timeout=120
    )
    assert cp.returncode == 1, cp.stderr
    err = cp.stderr.strip().splitlines()[-1]
    assert "public.big.ts" in err and "infinity" in err and "id='50000'" in err, err
    assert "removed replication slot replicator, publication replicator created by this run" in err, err
    assert source_objects(infinity_at_50k) == ([], [])


def wait_copying(dsn: str, proc, timeout: float = 90) -> None:
    """Until the copy stalls at its failpoint (the process logs it)."""
    wait_until(lambda: "failpoint copy.chunk" in proc.log(), timeout, "the copy to stall", proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_request_during_the_copy_ends_migrate_and_cleans_up(infinity_at_50k, duckdb_target_url, sig):
    """The target stalls at the first chunk (a failpoint sleeping 10 minutes): the signal ends the
    run within seconds (it was ignored until the copy ended), exit 130, nothing left."""
    p = Replicator(
        "migrate",
        "--no-progress",
        source=infinity_at_50k,
        target=duckdb_target_url,
        failpoints="copy.chunk=sleep:600",
    )
    try:
        wait_copying(infinity_at_50k, p)
        t0 = time.monotonic()
        p.proc.send_signal(sig)
        assert p.wait(60) == 130, p.tail()
        assert time.monotonic() - t0 < 30, p.tail()
        assert "stopped by" in p.tail() and "removed replication slot replicator" in p.tail()
        assert source_objects(infinity_at_50k) == ([], [])
    finally:
        p.close()


def test_a_stop_request_during_a_mirror_copy_exits_0_and_the_next_start_copies(
    infinity_at_50k, duckdb_target_url
):
    """A mirror stopped while one table's copy stalls exits 0 within seconds; the next start
    copies what is missing and the target equals the source."""
    with psycopg.connect(infinity_at_50k, autocommit=True) as c:
        c.execute("UPDATE big SET ts = '2024-01-01' WHERE id = 50000")
    p = Mirror(infinity_at_50k, duckdb_target_url, failpoints="copy.chunk:public.big=sleep:600")
    try:
        wait_copying(infinity_at_50k, p)
        t0 = time.monotonic()
        assert p.stop(60) == 0, p.tail()
        assert time.monotonic() - t0 < 30, p.tail()
    finally:
        p.close()
    m = Mirror(infinity_at_50k, duckdb_target_url)
    try:
        wait_streaming(infinity_at_50k, m)
        wait_caught_up(infinity_at_50k, m)
        assert m.stop() == 0, m.tail()
        compare(infinity_at_50k, duckdb_target_url, ["big", "small"])
    finally:
        m.close()


def test_a_stop_request_while_waiting_for_a_locked_duckdb_file(source_db, tmp_path):
    """Another process holds the DuckDB file: migrate waits for it (by design); Ctrl-C ends the
    wait within seconds and nothing is created on the source (it used to go on to create a slot)."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect("
            "sys.argv[1]); c.execute('CREATE TABLE x (a int)'); print('held', "
            "flush=True); time.sleep(600)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    p = None
    try:
        assert holder.stdout.readline().strip() == "held"
        p = Replicator("migrate", "--no-progress", source=source_db, target=f"duckdb:///{path}")
        wait_until(lambda: "held by another process" in p.log(), 90, "migrate to wait for the file", p)
        p.proc.send_signal(signal.SIGINT)
        assert p.wait(30) == 130, p.tail()
        assert source_objects(source_db) == ([], [])
    finally:
        holder.kill()
        holder.wait(30)
        if p is not None:
            p.close()


def test_a_stop_request_during_reconnect_backoff(source_db, duckdb_target_url):
    """The source stops answering; while the mirror waits 8 s or more before its next try, SIGTERM
    ends it at once with exit 0 (it used to sleep the backoff out: up to 30 s)."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    host, port = "127.0.0.1", int(source_db.rsplit(":", 1)[1].split("/")[0])
    with Proxy(host, port) as px:
        m = Mirror(source_db.replace(f":{port}/", f":{px.port}/"), duckdb_target_url)
        try:
            wait_streaming(source_db, m)
            px.refuse(True)
            px.drop()
            wait_until(lambda: "retrying in 8s" in m.log(), 120, "a backoff of 8 s", m)
            t0 = time.monotonic()
            assert m.stop(60) == 0, m.tail()
            assert time.monotonic() - t0 < 6, m.tail()
        finally:
            m.close()


def test_a_stop_request_while_slot_creation_waits_for_a_transaction(source_db, sqlite_target_url):
    """Slot creation waits for an open source transaction; Ctrl-C ends the wait, exit 130, and
    the publication the run created is removed."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    blocker = psycopg.connect(source_db)
    try:
        blocker.execute("INSERT INTO t VALUES (1)")  # an open transaction with an xid
        p = Replicator("migrate", "--no-progress", source=source_db, target=sqlite_target_url)
        try:

            def waiting():
                with psycopg.connect(source_db) as c:
                    return (
                        c.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                            "'walsender' AND wait_event IS NOT NULL AND state = 'active'"
                        ).fetchone()[0]
                        > 0
                    )

            wait_until(waiting, 60, "slot creation to wait", p)
            p.proc.send_signal(signal.SIGINT)
            assert p.wait(30) == 130, p.tail()
            assert "creating replication slot replicator" in p.tail(), p.tail()
        finally:
            p.close()
    finally:
        blocker.rollback()
        blocker.close()
    assert source_objects(source_db) == ([], [])


# ---------------------------------------------------------------- 1. a pre-created publication


def test_a_pre_created_publication_of_another_role_is_used_and_left(source_db, sqlite_target_url):
    """docs/security.md: an administrator creates the publication; the replicating role only
    SELECTs. migrate exits 0 (it exited 1: it tried to drop a publication it does not own), the
    publication stays, and status reports no missing slot."""
    role = f"repl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g")
        c.execute("CREATE PUBLICATION replicator FOR TABLE t")
        c.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
        c.execute(f"GRANT SELECT ON t TO {role}")
    try:
        dsn = source_db.replace("postgres@", f"{role}@", 1)
        cp = run("migrate", "--source", dsn, "--target", sqlite_target_url, "--no-progress")
        assert cp.returncode == 0, cp.stderr
        assert source_objects(source_db) == ([], ["replicator"])
        st = run("status", "--source", dsn, "--target", sqlite_target_url, "--json")
        doc = json.loads(st.stdout)
        assert st.returncode == 0 and doc["slot"] is None, st.stdout + st.stderr  # finished: no slot
        human = run("status", "--source", dsn, "--target", sqlite_target_url)
        assert human.returncode == 0, human.stderr
        assert "missing" not in human.stdout.lower() and "no longer exists" not in human.stdout
    finally:
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


# ---------------------------------------------------------------- 4. the same problem, the same answer


def test_a_row_filter_that_is_not_one_expression_is_refused_by_check_and_migrate(source_db, tmp_path):
    """'aid > 0) OR (1=1' passed check (its LIMIT 0 probe is valid SQL) and failed in migrate:
    now both refuse it with exit 2, naming the table, and nothing is created."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE acc (aid int PRIMARY KEY)")
    mapping = tmp_path / "m.yaml"
    mapping.write_text('tables:\n  - source: public.acc\n    where: "aid > 0) OR (1=1"\n')
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    for command in ("check", "migrate"):
        cp = run(command, "--source", source_db, "--target", url, "--mapping", str(mapping))
        assert cp.returncode == 2, (command, cp.stdout, cp.stderr)
        assert "public.acc: where" in cp.stderr and "not one SQL expression" in cp.stderr, cp.stderr
    assert source_objects(source_db) == ([], [])
    assert not (tmp_path / "t.sqlite").exists()


def test_migrate_names_a_missing_replication_privilege_as_check_does(source_db, sqlite_target_url):
    role = f"norepl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT SELECT ON t TO {role}")
    try:
        dsn = source_db.replace("postgres@", f"{role}@", 1)
        check = run("check", "--source", dsn, "--target", sqlite_target_url)
        migrate = run("migrate", "--source", dsn, "--target", sqlite_target_url, "--no-progress")
        assert check.returncode == migrate.returncode == 1, (check.stdout, migrate.stderr)
        hint = f"lacks the REPLICATION attribute: ALTER ROLE {role} REPLICATION"
        assert hint in check.stdout and hint in migrate.stderr, (check.stdout, migrate.stderr)
        assert source_objects(source_db) == ([], [])
    finally:
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")
