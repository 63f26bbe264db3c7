"""The target goes away under a running mirror: MariaDB and PostgreSQL crash and restart, a DuckDB
file held by another process, a SQLite target whose disk is full.

Server targets are private instances (``fault_mariadb``, ``fault_pg_target``: durable commits)
reached through the test's proxy, so the test can read the target's applied LSN after the restart
while the mirror is still shut out.  While the target is down the slot's confirmed position must
never pass what the target holds (invariant 2: nothing is acknowledged before it is applied).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa

from replicator.model import Lsn
from tests import targets
from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slot_confirmed,
    source_position,
    target_applied,
    wait_caught_up,
    wait_streaming,
    wait_until,
)
from tests.faults.proxy import Proxy
from tests.procs import Replicator, track


@pytest.fixture
def bench_db(source_db):
    pgbench_source(source_db, scale=1)
    return source_db


def _target(kind, request):
    """(server, direct URL, URL through a new proxy, proxy) for a fresh database."""
    name = f"tgt_{uuid.uuid4().hex[:8]}"
    if kind == "mysql":
        srv = request.getfixturevalue("fault_mariadb")
        srv.create_database(name)
        direct = srv.url_for(name)
        proxy = Proxy(srv.host, srv.port)
        via = direct.replace(f":{srv.port}/", f":{proxy.port}/")
    else:
        srv = request.getfixturevalue("fault_pg_target")
        srv.create_database(name)
        direct = srv.sqlalchemy_url(name)
        proxy = Proxy(srv.host, srv.port)
        via = direct.replace(f":{srv.port}/", f":{proxy.port}/")
    assert via != direct
    return srv, direct, via, proxy


@pytest.mark.parametrize("kind", targets.params("mysql", "pg"))
def test_target_crash_and_restart(bench_db, request, tally, kind):
    """The target is killed (MariaDB SIGKILL / PostgreSQL immediate stop) under load and kept down
    for a moment: the mirror retries with backoff, acknowledges nothing beyond what the target holds,
    and catches up once it is back."""
    srv, direct, via, proxy = _target(kind, request)
    m = Mirror(bench_db, via)
    load = Load(bench_db, rate=200)
    try:
        wait_streaming(bench_db, m)
        load.more(50, m)
        srv.stop("immediate")
        tally.fault()
        confirmed = []
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            confirmed.append(slot_confirmed(bench_db))
            time.sleep(0.1)
        proxy.refuse(True)  # the mirror stays shut out while the test reads the target
        srv.start()
        applied = target_applied(direct)
        assert max(confirmed) <= applied, (
            f"the slot was confirmed at {max(confirmed)} while the target held only {applied}"
        )
        assert m.alive(), m.tail()
        proxy.refuse(False)
        load.more(30, m)
        load.stop()
        wait_caught_up(bench_db, m)
        assert m.stop() == 0, m.tail()
        assert "retrying in" in m.log()
        compare(bench_db, direct, PGBENCH, tally)
    finally:
        load.stop()
        m.close()
        proxy.close()


HOLDER = r"""
import sys, time, duckdb
path, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + 120
while True:
    try:
        db = duckdb.connect(path)
        break
    except duckdb.IOException:      # the mirror holds it during a batch: try again
        if time.monotonic() > deadline:
            raise
        time.sleep(0.02)
q = "SELECT applied_lsn FROM replicator_state_streams"
print("held", db.execute(q).fetchone()[0], flush=True)
time.sleep(seconds)
print("released", db.execute(q).fetchone()[0], flush=True)
db.close()
"""


def test_duckdb_file_held_by_another_process(fault_db, tmp_path, tally):
    """Another process opens the DuckDB file and keeps it for 6 s (longer than the source's
    wal_sender_timeout of 5 s) under load: the mirror waits, confirms nothing it could not write,
    and catches up when the file is free again."""
    pgbench_source(fault_db, scale=1)
    path = tmp_path / "t.duckdb"
    url = f"duckdb:///{path}"
    m = Mirror(fault_db, url)
    load = Load(fault_db, rate=200)
    holder = None
    try:
        wait_streaming(fault_db, m)
        load.more(30, m)
        holder = track(
            subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(path), "6"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        first = holder.stdout.readline().split()
        assert first and first[0] == "held", holder.stderr.read()
        tally.fault()
        confirmed = []
        while holder.poll() is None:
            confirmed.append(slot_confirmed(fault_db))
            time.sleep(0.1)
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
        held_lsn = Lsn(int(out.split()[-1]))
        assert max(confirmed) <= held_lsn, (
            f"the slot was confirmed at {max(confirmed)} while the locked file held {held_lsn}"
        )
        assert m.alive(), m.tail()
        load.stop()
        wait_caught_up(fault_db, m)
        assert m.stop() == 0, m.tail()
        compare(fault_db, url, PGBENCH, tally)
    finally:
        load.stop()
        if holder is not None and holder.poll() is None:
            holder.kill()
        m.close()


@pytest.fixture
def tiny_fs(tmp_path):
    """An 8 MB tmpfs (we run as root in CI; skipped where mount is not allowed)."""
    d = tmp_path / "tiny"
    d.mkdir()
    cp = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], capture_output=True, text=True
    )
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {cp.stderr.strip()}")
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(directory, leave: int) -> str:
    """Fill the file system up to ``leave`` free bytes with one file; returns its path.  Some room
    stays so SQLite can still open the file (its -shm and -wal files are created per batch): the
    batch itself is what no longer fits."""
    path = os.path.join(directory, "filler")
    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - leave
    with open(path, "wb") as f:
        f.write(b"\0" * size)
    return path


def test_sqlite_target_disk_full(source_db, tiny_fs, tally):
    """The target's disk fills up under a batch: the batch rolls back, the slot does not move past
    it, the log says the disk is full; once space is freed the mirror goes on exactly."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE items (id int PRIMARY KEY, payload text);"
            "INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 200) g"
        )
    url = f"sqlite:///{tiny_fs / 't.sqlite'}"
    m = Mirror(source_db, url)
    try:
        wait_streaming(source_db, m)
        wait_caught_up(source_db, m)
        filler = fill(tiny_fs, leave=256 * 1024)
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute(
                "INSERT INTO items SELECT g, repeat(md5(g::text), 40) FROM generate_series(201, 1700) g"
            )
        end = source_position(source_db)
        tally.fault()
        wait_until(lambda: "disk is full" in m.log(), 120, "the mirror to report the full disk", m)
        confirmed = []
        for _ in range(20):
            confirmed.append(slot_confirmed(source_db))
            time.sleep(0.1)
        assert max(confirmed) < end, "the slot was confirmed past a batch the target refused"
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM items")).scalar() == 200
        eng.dispose()
        assert m.alive(), m.tail()
        os.unlink(filler)
        wait_caught_up(source_db, m)
        assert m.stop() == 0, m.tail()
        compare(source_db, url, ["items"], tally)
    finally:
        m.close()


def test_target_table_dropped_behind_the_mirror_stops_it(source_db, sqlite_target_url, tmp_path):
    """Someone drops the replicated table on the SQLite target: the next batch fails the same way
    on every retry, so the mirror must stop (non-zero) naming the table instead of retrying
    silently for ever; the slot stays before the failed batch (its INSERT is still to come: an
    idle mirror may confirm a position inside a transaction it has not received whole, which the
    slot sends again, so the test looks at what the slot would send, not at a position)."""
    import sqlite3

    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    m = Mirror(source_db, sqlite_target_url)
    try:
        wait_streaming(source_db, m)
        wait_caught_up(source_db, m)
        with sqlite3.connect(tmp_path / "t.sqlite") as c:
            c.execute("DROP TABLE t")
        with psycopg.connect(source_db, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (2, 'b')")
        try:  # it gives up after a few retries (seconds); the deadline is for a busy machine
            rc = m.proc.wait(120)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc not in (None, 0), f"still retrying after 120 s:\n{m.tail(1500)}"
        assert "no such table" in m.log()
        peek = (
            "SELECT data FROM pg_logical_slot_peek_binary_changes('replicator', NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'replicator')"
        )

        def pending():
            try:
                with psycopg.connect(source_db, autocommit=True) as c:
                    return [bytes(r[0]) for r in c.execute(peek).fetchall()]
            except psycopg.errors.ObjectInUse:  # the walsender has not let go of the slot yet
                return None

        wait_until(lambda: pending() is not None, 60, "the slot to be free", m)
        inserts = [d for d in pending() or [] if d[:1] == b"I"]
        assert len(inserts) == 1 and b"b" in inserts[0], "the failed batch was confirmed"
    finally:
        m.close()


def test_sqlite_disk_full_during_a_copy_ends_migrate_and_cleans_up(source_db, tiny_fs, tally):
    """Issue 9: the target's disk fills up in the middle of a 100k-row copy; migrate used to hang
    for ever (the worker rolled back while the source COPY was still open).  It ends now, naming
    the table and the full disk, and removes the slot and publication it created."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE items (id int PRIMARY KEY, payload text);"
            "INSERT INTO items SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 100000) g"
        )
    url = f"sqlite:///{tiny_fs / 't.sqlite'}"
    p = Replicator("migrate", "--no-progress", source=source_db, target=url)
    try:
        rc, log = p.wait(180), p.tail()
    finally:
        p.close()
    tally.fault()
    last = log.strip().splitlines()[-1]
    assert rc == 1 and "public.items" in last and "full" in last, log
    assert "removed replication slot replicator" in last, last
    with psycopg.connect(source_db) as c:
        assert (
            c.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            ).fetchone()[0]
            == 0
        )
        assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
