"""Least privileges (docs/security.md): what a role with only LOGIN REPLICATION and SELECT gets,
and the documented source and target roles doing a whole migrate and mirror.

Roles are created on private servers of this module (no cluster-wide roles leak into others)."""

from __future__ import annotations

import os

import pytest

from tests import procs
from tests.faults.harness import (
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    slots_of,
    wait_caught_up,
    wait_streaming,
)
from tests.servers import MariaDBServer, PostgresServer, unique_name

# the source role of docs/security.md, for a database whose tables the role app_owner owns
SOURCE_ROLE_SQL = """
CREATE ROLE {role} LOGIN REPLICATION;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
GRANT CREATE ON DATABASE {db} TO {role};
GRANT app_owner TO {role};
"""
PG_TARGET_ROLE_SQL = """
CREATE ROLE {role} LOGIN;
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE, CREATE ON SCHEMA public TO {role};
"""
MYSQL_TARGET_GRANT = (
    "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX ON `{db}`.* TO '{user}'@'%'"
)


def replicator(*args, timeout=300):
    """Run ``replicator *args`` to completion (bounded; tests/procs.py)."""
    return procs.run(*args, timeout=timeout)


@pytest.fixture(scope="module")
def priv_pg():
    if os.environ.get("REPLICATOR_TEST_PG_DSN"):
        pytest.skip("creates roles: needs a private server")
    with PostgresServer(name="privileges") as srv:
        yield srv


@pytest.fixture
def app_db(priv_pg):
    """A pgbench database whose tables belong to the role app_owner (not to the replicator)."""
    name = unique_name("app")
    dsn = priv_pg.create_database(name)
    pgbench_source(dsn, scale=1)
    priv_pg.psql(
        "DO $$ BEGIN CREATE ROLE app_owner NOLOGIN; EXCEPTION WHEN duplicate_object "
        "THEN NULL; END $$;" + "".join(f"ALTER TABLE {t} OWNER TO app_owner;" for t in PGBENCH),
        dbname=name,
    )
    return name, dsn


def as_role(dsn: str, role: str) -> str:
    return dsn.replace("postgres@", f"{role}@", 1)


def target_tables(path) -> list[str]:
    import sqlite3

    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    with sqlite3.connect(path) as c:
        return [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_replication_and_select_only_role(priv_pg, app_db, tmp_path):
    """check and migrate as a role with LOGIN REPLICATION and SELECT only: either both work, or
    both refuse naming the missing privilege with the statement that grants it, before anything
    exists (no slot, no publication, no table on the target)."""
    name, dsn = app_db
    role = unique_name("ro")
    priv_pg.psql(
        f"CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};",
        dbname=name,
    )
    src = as_role(dsn, role)
    path = tmp_path / "t.sqlite"
    check = replicator("check", "--source", src, "--target", f"sqlite:///{path}")
    migrate = replicator("migrate", "--source", src, "--target", f"sqlite:///{path}")
    if check.returncode == 0:
        assert migrate.returncode == 0, f"check said ok, migrate failed:\n{migrate.stderr[-2000:]}"
        return
    problems = "\n".join(ln for ln in check.stdout.splitlines() if ln.startswith("problem:"))
    assert role in problems and ("GRANT" in problems or "OWNER" in problems), check.stdout
    assert migrate.returncode != 0
    assert role in migrate.stderr and ("GRANT" in migrate.stderr or "OWNER" in migrate.stderr), (
        migrate.stderr[-2000:]
    )
    assert slots_of(dsn) == []
    assert priv_pg.execute("SELECT pubname FROM pg_publication", dbname=name) == []
    assert target_tables(path) == [], "state or data tables were created before the refusal"


def test_documented_least_privilege_roles(priv_pg, app_db, tally):
    """The roles docs/security.md prescribes: check passes, migrate into a PostgreSQL target and a
    MariaDB target works, and a mirror resumes the kept slot under load (its publication is
    altered on start) with exact results."""
    name, dsn = app_db
    role = unique_name("repl")
    priv_pg.psql(SOURCE_ROLE_SQL.format(role=role, db=name), dbname=name)
    src = as_role(dsn, role)
    with PostgresServer(name="priv-target") as tgt, MariaDBServer(name="priv-mariadb") as my:
        tdb = unique_name("tgt")
        tgt.create_database(tdb)
        trole = unique_name("writer")
        tgt.psql(PG_TARGET_ROLE_SQL.format(role=trole, db=tdb), dbname=tdb)
        pg_url = tgt.sqlalchemy_url(tdb).replace("postgres@", f"{trole}@", 1)
        my.create_database(tdb)
        user = unique_name("writer")
        my.execute(f"CREATE USER '{user}'@'%'")
        my.execute(MYSQL_TARGET_GRANT.format(db=tdb, user=user))
        my_url = my.url_for(tdb).replace("root@", f"{user}@", 1)

        cp = replicator("check", "--source", src, "--target", pg_url)
        assert cp.returncode == 0 and "ok" in cp.stdout, cp.stdout + cp.stderr
        cp = replicator("migrate", "--source", src, "--target", pg_url, "--keep-slot")
        assert cp.returncode == 0, cp.stderr[-2000:]
        cp = replicator("migrate", "--source", src, "--target", my_url, "--name", "to_mysql")
        assert cp.returncode == 0, cp.stderr[-2000:]
        compare(dsn, my_url, PGBENCH, tally)

        m = Mirror(src, pg_url)
        load = Load(dsn, rate=200)
        try:
            wait_streaming(dsn, m)
            load.more(50, m)  # streamed under load
            load.stop()
            wait_caught_up(dsn, m)
            assert m.stop() == 0, m.tail()
        finally:
            load.stop()
            m.close()
        compare(dsn, pg_url, PGBENCH, tally)
