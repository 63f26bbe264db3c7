"""Refusals: preflight problems, errors before anything is created, a lost slot, no leaked secret."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.test_migrate import replicator, slots_and_publications
from tests.servers import PostgresServer

CANARY = "Canary-Pw-7f3a9"


@pytest.fixture
def keyless_db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE good (id int PRIMARY KEY, v text);"
            "CREATE TABLE nokey (v text);"
            'CREATE TABLE "Nothing" (id int PRIMARY KEY); ALTER TABLE "Nothing" REPLICA IDENTITY NOTHING;'
            "INSERT INTO good VALUES (1, 'a')"
        )
    return source_db


def test_check_passes_on_a_replicable_database(keyless_db, sqlite_target_url):
    cp = replicator("check", "--source", keyless_db, "--tables", "public.good", "--target", sqlite_target_url)
    assert cp.returncode == 0 and "ok" in cp.stdout


def test_check_names_each_problem_and_its_fix(keyless_db):
    cp = replicator("check", "--source", keyless_db, check=False)
    assert cp.returncode == 1
    lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("problem:")]
    assert len(lines) == 2, cp.stdout
    assert any("public.nokey" in ln and "REPLICA IDENTITY FULL" in ln for ln in lines)
    assert any("public.Nothing" in ln and "NOTHING" in ln for ln in lines)


def test_migrate_refuses_before_creating_anything(keyless_db, sqlite_target_url, tmp_path):
    cp = replicator("migrate", "--source", keyless_db, "--target", sqlite_target_url, check=False)
    assert cp.returncode != 0
    assert "public.nokey" in cp.stderr and "ALTER TABLE" in cp.stderr
    assert slots_and_publications(keyless_db) == ([], [])
    assert not (tmp_path / "t.sqlite").exists() or (tmp_path / "t.sqlite").stat().st_size == 0


def test_unknown_table_and_bad_name_are_config_errors(keyless_db, sqlite_target_url):
    cp = replicator(
        "migrate",
        "--source",
        keyless_db,
        "--target",
        sqlite_target_url,
        "--tables",
        "public.missing",
        check=False,
    )
    assert cp.returncode == 2 and "public.missing" in cp.stderr
    cp = replicator("migrate", "--source", keyless_db, "--name", "Bad-Name", check=False)
    assert cp.returncode == 2 and "--name" in cp.stderr
    assert slots_and_publications(keyless_db) == ([], [])


def test_lost_slot_is_terminal_and_never_recreated(keyless_db, sqlite_target_url):
    replicator(
        "migrate", "--source", keyless_db, "--target", sqlite_target_url, "--tables", "good", "--keep-slot"
    )
    with psycopg.connect(keyless_db, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('replicator')")
    cp = replicator(
        "mirror",
        "--source",
        keyless_db,
        "--target",
        sqlite_target_url,
        "--tables",
        "good",
        check=False,
        timeout=60,
    )
    assert cp.returncode == 3, cp.stderr
    assert "replicator" in cp.stderr and "no longer exists" in cp.stderr and "replicator drop" in cp.stderr
    assert slots_and_publications(keyless_db)[0] == []


def test_wal_level_replica_is_reported(tmp_path):
    with PostgresServer(name="replica-only", settings={"wal_level": "replica"}) as srv:
        cp = replicator("check", "--source", srv.dsn, check=False)
    assert cp.returncode == 1 and "wal_level" in cp.stdout and "logical" in cp.stdout


def test_password_never_printed(keyless_db, sqlite_target_url):
    dsn = keyless_db.replace("postgres@", f"postgres:{CANARY}@")
    outputs = []
    for args in (
        ["check", "--source", dsn],
        ["migrate", "--source", dsn, "--target", sqlite_target_url],
        [
            "migrate",
            "--source",
            dsn.replace(keyless_db.rsplit("/", 1)[1], "no_such_db"),
            "--target",
            sqlite_target_url,
        ],
        ["migrate", "--source", dsn, "--target", f"mysql+pymysql://u:{CANARY}@127.0.0.1:1/x"],
        ["status", "--source", dsn, "--target", sqlite_target_url, "--json"],
    ):
        cp = replicator(*args, check=False, env={"REPLICATOR_LOG": "1"})
        outputs.append(cp.stdout + cp.stderr)
    assert all(CANARY not in o for o in outputs), [o for o in outputs if CANARY in o][0][-2000:]
    assert all("Traceback" not in o for o in outputs), [o for o in outputs if "Traceback" in o][0][-2000:]


def test_existing_target_table_missing_a_column_is_refused_first(keyless_db, sqlite_target_url):
    import sqlalchemy as sa

    eng = sa.create_engine(sqlite_target_url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE good (id integer PRIMARY KEY)"))
    eng.dispose()
    cp = replicator(
        "migrate", "--source", keyless_db, "--target", sqlite_target_url, "--tables", "good", check=False
    )
    assert cp.returncode == 1 and "good" in cp.stderr and "v" in cp.stderr and "lacks" in cp.stderr
    assert slots_and_publications(keyless_db) == ([], [])


def test_password_not_in_process_title(keyless_db, sqlite_target_url):
    import subprocess
    import sys
    import time

    dsn = keyless_db.replace("postgres@", f"postgres:{CANARY}@")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replicator",
            "mirror",
            "--source",
            dsn,
            "--target",
            sqlite_target_url,
            "--tables",
            "good",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        cmdline = ""
        while time.monotonic() < deadline and "mirror" not in cmdline:
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode()
            time.sleep(0.2)
        time.sleep(1)
        with open(f"/proc/{p.pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode()
        assert "mirror" in cmdline and "***" in cmdline, cmdline
        assert CANARY not in cmdline
    finally:
        p.terminate()
        out, err = p.communicate(timeout=60)
    assert CANARY not in out + err


def test_password_not_in_logs_or_state_tables(keyless_db, sqlite_target_url):
    import sqlalchemy as sa

    dsn = keyless_db.replace("postgres@", f"postgres:{CANARY}@")
    target = sqlite_target_url
    for args in (
        ["-vv", "migrate", "--source", dsn, "--target", target, "--tables", "good", "--keep-slot"],
        ["-vv", "--log-format", "json", "status", "--source", dsn, "--target", target],
    ):
        cp = replicator(*args)
        assert CANARY not in cp.stdout + cp.stderr
    eng = sa.create_engine(target)
    with eng.connect() as c:
        for t in ("replicator_state_tables", "replicator_state_streams"):
            dump = repr(c.execute(sa.text(f"SELECT * FROM {t}")).fetchall())
            assert CANARY not in dump and "127.0.0.1" not in dump, dump
    eng.dispose()


def test_exhausted_slots_are_reported_before_anything_is_created(tmp_path):
    with PostgresServer(name="one-slot", settings={"max_replication_slots": 1}) as srv:
        srv.create_database("app")
        dsn = srv.dsn_for("app")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE t (id int PRIMARY KEY)")
            c.execute("SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')")
        cp = replicator("check", "--source", dsn, check=False)
        assert cp.returncode == 1 and "max_replication_slots = 1 and 1 are in use" in cp.stdout
        cp = replicator("migrate", "--source", dsn, "--target", f"sqlite:///{tmp_path}/t.sqlite", check=False)
        assert cp.returncode != 0
        with psycopg.connect(dsn) as c:
            assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
