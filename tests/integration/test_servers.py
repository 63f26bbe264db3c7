"""The throwaway-server fixtures from tests/conftest.py actually work."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.servers import pgbench_init, pgbench_run, unique_name


def _one(dsn: str, sql: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_source_server_is_logical(pg_server, source_db):
    assert _one(source_db, "SHOW wal_level") == "logical"
    assert int(_one(source_db, "SHOW max_replication_slots")) >= 10
    assert _one(source_db, "SELECT current_database()") != "postgres"
    assert _one(source_db, "SHOW server_encoding") == "UTF8"


def test_logical_replication_slot_roundtrip(pg_server, source_db):
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
    with psycopg.connect(source_db, replication="database", autocommit=True) as repl:
        row = repl.execute("CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'export')").fetchone()
        slot_name, consistent_point, snapshot_name, plugin = row
        assert slot_name == "s" and plugin == "pgoutput" and snapshot_name
        # the exported snapshot is importable while the replication connection stays idle
        with psycopg.connect(source_db) as snap:
            snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            snap.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
            assert snap.execute("SELECT count(*) FROM t").fetchone()[0] == 0
            snap.rollback()
        repl.execute("DROP_REPLICATION_SLOT s")
    assert _one(pg_server.dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's'") == 0


def test_leftover_slot_is_cleaned_up(pg_server):
    # A test that leaves an (even active) slot behind must not break its database's teardown.
    name = unique_name("leftover")
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, replication="database", autocommit=True) as repl:
        repl.execute(f"CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput")
        pg_server.drop_database(name)  # slot is active on this connection
    assert _one(pg_server.dsn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == 0
    assert _one(pg_server.dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,)) == 0


def test_target_is_a_different_server(pg_server, pg_target_server, source_db, pg_target_url):
    source_id = _one(source_db, "SELECT system_identifier FROM pg_control_system()")
    engine = sa.create_engine(pg_target_url)
    try:
        with engine.connect() as conn:
            target_id = conn.execute(sa.text("SELECT system_identifier FROM pg_control_system()")).scalar()
            dbname = conn.execute(sa.text("SELECT current_database()")).scalar()
    finally:
        engine.dispose()
    assert source_id != target_id
    assert pg_target_url.startswith("postgresql+psycopg://") and pg_target_url.endswith("/" + dbname)


def test_mariadb_load_data_local_infile(mariadb_server, mysql_target_url, tmp_path):
    url = sa.engine.make_url(mysql_target_url)
    assert url.query.get("local_infile") == "1" and url.query.get("charset") == "utf8mb4"
    data = tmp_path / "rows.tsv"
    data.write_text("1\talpha\n2\tbeta\n3\t\\N\n4\tgrüße ✓\n", encoding="utf-8")
    conn = pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password or "",
        database=url.database,
        local_infile=True,
        charset="utf8mb4",
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(50))")
            cur.execute(
                f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t "
                "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' (id, v)"
            )
            cur.execute("SELECT id, v FROM t ORDER BY id")
            rows = cur.fetchall()
    finally:
        conn.close()
    assert rows == ((1, "alpha"), (2, "beta"), (3, None), (4, "grüße ✓"))


def test_mariadb_url_works_with_sqlalchemy(mysql_target_url):
    engine = sa.create_engine(mysql_target_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT @@local_infile")).scalar() == 1
            assert conn.execute(sa.text("SELECT DATABASE()")).scalar() == engine.url.database
    finally:
        engine.dispose()


def test_file_target_urls(duckdb_target_url, sqlite_target_url, tmp_path):
    assert duckdb_target_url == f"duckdb:///{tmp_path}/t.duckdb"
    assert sqlite_target_url == f"sqlite:///{tmp_path}/t.sqlite"
    for url in (duckdb_target_url, sqlite_target_url):
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
        finally:
            engine.dispose()


def test_pgbench_init_and_run(source_db):
    pgbench_init(source_db, scale=1)
    assert _one(source_db, "SELECT count(*) FROM pgbench_accounts") == 100000
    cp = pgbench_run(source_db, transactions=20, clients=2)
    assert "number of failed transactions: 0" in cp.stdout or "processed: 40/40" in cp.stdout
    proc = pgbench_run(source_db, seconds=1, clients=2, builtin="simple-update", background=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert _one(source_db, "SELECT count(*) FROM pgbench_history") > 40


def test_restart_keeps_dsn(pg_server, source_db):
    if not pg_server.managed:
        pytest.skip("external server")
    with psycopg.connect(source_db, autocommit=True) as conn:
        # The server runs with synchronous_commit=off: without this, a commit made
        # just before an immediate (crash) stop may be lost -- by design.
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TABLE r AS SELECT 1 AS x")
    pg_server.restart(mode="immediate")  # crash + recovery
    assert _one(source_db, "SELECT x FROM r") == 1
