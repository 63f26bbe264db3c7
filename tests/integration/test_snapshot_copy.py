"""`replicator copy` (and `migrate --snapshot-only`): one snapshot, every table, no change capture.

A fresh pgbench database as a newcomer has it (pgbench_history without a key or replica
identity) is copied in one command into every target and equals the source row by row; nothing
is created on the source (no slot, no publication) and nothing but the tables on the target.  It
works as a role without REPLICATION, against a real streaming hot standby, and refuses to
overwrite a table a mirror on the same target replicates.  `migrate`, refusing the key-less table,
offers both ways around it.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from tests import procs, targets
from tests.compare import assert_same, target_tables
from tests.servers import PostgresServer, pgbench_init, pgbench_run

PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def replicator(*args, check=True, timeout=600):
    return procs.run(*args, timeout=timeout, check=check)


def slots_and_publications(dsn):
    with psycopg.connect(dsn) as c:
        slots = c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
        pubs = c.execute("SELECT pubname FROM pg_publication").fetchall()
    return slots, pubs


target_kind = targets.kind_fixture(*targets.ALL)


def test_copy_a_fresh_pgbench_database_in_one_command(fresh_pgbench, target_url):
    cp = replicator("copy", "--source", fresh_pgbench, "--target", target_url)
    assert "copied 4 table(s)" in cp.stdout, cp.stdout
    assert "changes made on the source after that snapshot are not included" in cp.stdout
    for t in PGBENCH:
        assert_same(fresh_pgbench, "public", t, target_url)
    assert slots_and_publications(fresh_pgbench) == ([], [])
    assert not {t for t in target_tables(target_url) if t.startswith("replicator_")}


def test_migrate_refusing_a_keyless_table_offers_copy_and_insert_only(fresh_pgbench, duckdb_target_url):
    cp = replicator("migrate", "--source", fresh_pgbench, "--target", duckdb_target_url, check=False)
    assert cp.returncode == 1, cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert any(x.startswith("problem: public.pgbench_history: no primary key") for x in lines), cp.stderr
    hints = [x for x in lines if x.startswith("hint: ")]
    assert len(hints) == 2, cp.stderr
    assert "replicator copy" in hints[0] and "insert_only: true" in hints[1], hints
    assert slots_and_publications(fresh_pgbench) == ([], [])


def test_copy_as_a_plain_reader_then_again_after_changes(fresh_pgbench, source_db, duckdb_target_url):
    """No REPLICATION, no ownership, no CREATE: SELECT is enough; a second copy replaces the rows
    (`migrate --snapshot-only` is the same command)."""
    role = f"reader_{int(time.time() * 1000) % 10**9}"
    with psycopg.connect(fresh_pgbench, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}' NOREPLICATION")
        c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        c.execute(f"REVOKE CREATE ON DATABASE {c.info.dbname} FROM PUBLIC")
    reader = psycopg.conninfo.make_conninfo(fresh_pgbench, user=role, password=f"pw-{role}")
    replicator("copy", "--source", reader, "--target", duckdb_target_url)
    with psycopg.connect(fresh_pgbench, autocommit=True) as c:
        c.execute("DELETE FROM pgbench_history WHERE tid % 2 = 0")
        c.execute("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 3 = 0")
    cp = replicator("migrate", "--snapshot-only", "--source", reader, "--target", duckdb_target_url)
    assert f"pw-{role}" not in cp.stdout + cp.stderr
    for t in PGBENCH:
        assert_same(fresh_pgbench, "public", t, duckdb_target_url)
    with psycopg.connect(fresh_pgbench, autocommit=True) as c:
        c.execute(f"DROP OWNED BY {role}")
        c.execute(f"DROP ROLE {role}")


def test_copy_refuses_a_table_a_mirror_replicates(fresh_pgbench, duckdb_target_url):
    replicator(
        "migrate", "--source", fresh_pgbench, "--target", duckdb_target_url, "--tables", "pgbench_branches"
    )
    cp = replicator("copy", "--source", fresh_pgbench, "--target", duckdb_target_url, check=False)
    assert cp.returncode == 2, cp.stderr
    assert "pgbench_branches is replicated by stream 'replicator'" in cp.stderr, cp.stderr
    assert "pgbench_accounts" not in target_tables(duckdb_target_url)  # refused before any copy


@pytest.fixture
def standby(request):
    """A primary with pgbench and a streaming hot standby of it (both private to this test);
    the standby's settings come from the test's ``standby_settings`` mark."""
    mark = request.node.get_closest_marker("standby_settings")
    with PostgresServer(name="primary") as primary:
        dsn = primary.create_database("bench")
        pgbench_init(dsn, scale=1)
        pgbench_run(dsn, transactions=100, clients=2, builtin="tpcb-like")
        sb = primary.standby(settings=mark.args[0] if mark else None)
        try:
            yield dsn, sb.dsn_for("bench")
        finally:
            sb.cleanup()


def _wait_replayed(primary: str, standby: str, timeout: float = 120) -> None:
    with psycopg.connect(primary, autocommit=True) as p:
        target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby, autocommit=True) as s:
        while time.monotonic() < deadline:
            if s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"the standby did not replay up to {target} within {timeout}s")


def test_copy_from_a_hot_standby(standby, duckdb_target_url):
    primary, replica = standby
    with psycopg.connect(replica) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    _wait_replayed(primary, replica)
    cp = replicator("copy", "--source", replica, "--target", duckdb_target_url)
    assert "from one snapshot of the standby" in cp.stdout, cp.stdout
    for t in PGBENCH:
        assert_same(primary, "public", t, duckdb_target_url)
    assert slots_and_publications(primary) == ([], [])


@pytest.mark.standby_settings({"hot_standby_feedback": "off", "max_standby_streaming_delay": 0})
def test_a_copy_cancelled_by_the_standby_says_what_to_set(standby, duckdb_target_url):
    """Vacuum on the primary removes rows the copy's snapshot still sees: a standby without
    hot_standby_feedback cancels the copy; the error names the settings that prevent it."""
    primary, replica = standby
    _wait_replayed(primary, replica)
    copy = procs.Replicator(
        "copy",
        "--no-progress",
        source=replica,
        target=duckdb_target_url,
        failpoints="copy.table:public.pgbench_accounts=sleep:10",
    )
    try:
        deadline = time.monotonic() + 180
        with psycopg.connect(primary, autocommit=True) as c:
            while copy.alive() and time.monotonic() < deadline:
                c.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 1000")
                c.execute("VACUUM pgbench_accounts")
                time.sleep(0.5)
        rc = copy.wait(60)
        assert rc != 0, f"the copy was not cancelled:\n{copy.tail()}"
        assert "hot_standby_feedback = on" in copy.log(), copy.tail()
        assert "not finished: " in copy.log() and "public.pgbench_accounts" in copy.log(), copy.tail()
    finally:
        copy.close()


def test_copy_with_a_mapping_needs_no_identity(fresh_pgbench, duckdb_target_url, tmp_path):
    """A mapping entry for a key-less table without insert_only: migrate refuses it naming both
    ways around; copy takes the mapping as it is (renames and excluded columns too)."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "tables:\n"
        "  - source: public.pgbench_history\n"
        "    target: history_copy\n"
        "    columns: {exclude: [filler]}\n"
        "  - source: public.pgbench_branches\n"
    )
    cp = replicator(
        "migrate",
        "--source",
        fresh_pgbench,
        "--target",
        duckdb_target_url,
        "--mapping",
        str(path),
        check=False,
    )
    assert cp.returncode == 2 and "insert_only: true" in cp.stderr and "replicator copy" in cp.stderr, (
        cp.stderr
    )
    replicator("copy", "--source", fresh_pgbench, "--target", duckdb_target_url, "--mapping", str(path))
    cols = ["tid", "bid", "aid", "delta", "mtime"]
    assert_same(fresh_pgbench, "public", "pgbench_history", duckdb_target_url, "history_copy", columns=cols)
    assert_same(fresh_pgbench, "public", "pgbench_branches", duckdb_target_url)
    assert "pgbench_accounts" not in target_tables(duckdb_target_url)
