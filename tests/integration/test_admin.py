"""drop and resync against real servers."""

from __future__ import annotations

import json
import signal
import time

import psycopg
import pytest
import sqlalchemy as sa

from tests.compare import assert_same, target_tables
from tests.integration.test_migrate import replicator, slots_and_publications, wait_slot_active
from tests.integration.test_mirror import start_mirror

SETUP = """
CREATE TABLE a (id int PRIMARY KEY, v text);
CREATE TABLE b (id int PRIMARY KEY, v text);
INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 500) g;
INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 500) g;
"""


@pytest.fixture
def db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
    return source_db


def states(url):
    doc = json.loads(replicator("status", "--target", url, "--json").stdout)
    return {t["source"]: t["state"] for t in doc["tables"]}


def test_drop_is_complete_and_idempotent(db, sqlite_target_url):
    replicator("migrate", "--source", db, "--target", sqlite_target_url, "--keep-slot")
    assert slots_and_publications(db) != ([], [])
    out = replicator("drop", "--source", db, "--target", sqlite_target_url).stdout
    assert "dropped replication slot replicator" in out and "dropped publication replicator" in out
    assert slots_and_publications(db) == ([], [])
    assert target_tables(sqlite_target_url) == {"a", "b"}  # data stays, state is gone
    again = replicator("drop", "--source", db, "--target", sqlite_target_url).stdout
    assert "nothing to drop" in again
    replicator("migrate", "--source", db, "--target", sqlite_target_url, "--keep-slot")
    replicator("drop", "--source", db, "--target", sqlite_target_url, "--drop-tables")
    assert target_tables(sqlite_target_url) == set()


def test_drop_refuses_while_a_mirror_runs_unless_forced(db, duckdb_target_url):
    p = start_mirror(db, duckdb_target_url)
    try:
        wait_slot_active(db, "replicator", proc=p)
        cp = replicator("drop", "--source", db, "--target", duckdb_target_url, check=False)
        assert cp.returncode == 1 and "--force" in cp.stderr, cp.stderr
        assert f"(client pid {p.pid})" in cp.stderr, cp.stderr  # the mirror's pid, not the walsender's
        assert slots_and_publications(db)[0] != []
        replicator("drop", "--source", db, "--target", duckdb_target_url, "--force")
        # the mirror stops at its next contact (exit 3) and re-creates nothing
        _, err = p.communicate(timeout=90)
        assert p.returncode == 3, err[-3000:]
        assert slots_and_publications(db) == ([], [])
        assert "Traceback" not in err
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)


def test_resync_one_table_while_the_other_streams(db, duckdb_target_url):
    p = start_mirror(db, duckdb_target_url)
    try:
        wait_slot_active(db, "replicator", proc=p)
        _wait(lambda: states(duckdb_target_url) == {"public.a": "r", "public.b": "r"})
        eng = sa.create_engine(duckdb_target_url, poolclass=sa.pool.NullPool)
        _retry(lambda: _exec(eng, "DELETE FROM a WHERE id <= 100"))  # the target diverged
        eng.dispose()
        cp = replicator("resync", "--source", db, "--target", duckdb_target_url, "--tables", "a")
        assert "running mirror re-copies" in cp.stdout
        with psycopg.connect(db, autocommit=True) as c:
            c.execute("INSERT INTO b SELECT g, 'new' FROM generate_series(501, 600) g")
            c.execute("UPDATE a SET v = 'changed' WHERE id = 7")
        _wait(lambda: _equal(db, "a", duckdb_target_url) and _equal(db, "b", duckdb_target_url))
        assert states(duckdb_target_url) == {"public.a": "r", "public.b": "r"}
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    assert "copying 1 table(s) from a fresh snapshot: public.a" in err


def test_resync_without_a_running_mirror_copies_now(db, sqlite_target_url):
    replicator("migrate", "--source", db, "--target", sqlite_target_url, "--keep-slot")
    eng = sa.create_engine(sqlite_target_url)
    _exec(eng, "UPDATE b SET v = 'wrong'")
    eng.dispose()
    out = replicator("resync", "--source", db, "--target", sqlite_target_url, "--tables", "public.b").stdout
    assert "re-copied 1 table(s), 500 rows: public.b" in out
    assert_same(db, "public", "b", sqlite_target_url)
    cp = replicator("resync", "--source", db, "--target", sqlite_target_url, "--tables", "nope", check=False)
    assert cp.returncode == 2 and "public.nope" in cp.stderr


def test_resync_acts_on_the_streams_own_tables_only(db, sqlite_target_url):
    """A stream started with --tables public.a: an unrelated table without a key created since
    neither stops resync nor gets published; a table the stream does not replicate is refused."""
    url = sqlite_target_url
    replicator("migrate", "--source", db, "--target", url, "--tables", "public.a", "--keep-slot")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE unrelated (x int)")
    eng = sa.create_engine(url)
    _exec(eng, "UPDATE a SET v = 'wrong'")
    eng.dispose()
    cp = replicator("resync", "--source", db, "--target", url, "--tables", "public.a", check=False)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert "re-copied 1 table(s), 500 rows: public.a" in cp.stdout
    assert_same(db, "public", "a", url)
    assert target_tables(url) >= {"a"} and not target_tables(url) & {"b", "unrelated"}
    with psycopg.connect(db) as c:
        published = {r[0] for r in c.execute("SELECT tablename FROM pg_publication_tables")}
    assert published == {"a"}
    cp = replicator("resync", "--source", db, "--target", url, "--tables", "public.b", check=False)
    assert cp.returncode == 2 and "public.b" in cp.stderr and "not replicated by stream" in cp.stderr


def test_drop_tables_in_the_middle_of_a_resync_drops_the_shadow_and_the_table(db, sqlite_target_url):
    """A resync killed right before its swap leaves the state row naming the shadow: drop
    --drop-tables removes the shadow and the live table both."""
    url = sqlite_target_url
    replicator("migrate", "--source", db, "--target", url, "--keep-slot")
    env = {"REPLICATOR_FAILPOINTS": "resync.before_swap=kill"}
    cp = replicator("resync", "--source", db, "--target", url, "--tables", "a", env=env, check=False)
    assert cp.returncode == -signal.SIGKILL, cp.stderr[-2000:]
    assert target_tables(url) >= {"a", "a__resync", "b"}
    out = replicator("drop", "--source", db, "--target", url, "--drop-tables").stdout
    assert "dropped target table a__resync" in out and "dropped target table a\n" in out + "\n", out
    assert not target_tables(url) & {"a", "a__resync", "b"}


def _exec(eng, stmt):
    with eng.begin() as c:
        c.execute(sa.text(stmt))


def _retry(fn, seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sa.exc.DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _equal(dsn, table, url):
    try:
        assert_same(dsn, "public", table, url)
        return True
    except (AssertionError, sa.exc.DBAPIError, sa.exc.NoSuchTableError):
        return False


def _wait(cond, seconds=180):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"{getattr(cond, '__name__', cond)} not reached in {seconds}s"
        time.sleep(0.5)
