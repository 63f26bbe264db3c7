"""Source tables of unusual shapes, through the real CLI into every target (issue 10, items 7-10).

* Unlogged tables: their changes are not in WAL.  ``check`` says so; the default selection leaves
  them out with a logged note; naming one (``--tables``, a mapping entry) is refused before
  anything is created, with ``ALTER TABLE … SET LOGGED`` as the fix.  Temporary tables are never
  selected.
* Tables without columns: refused by ``check`` and planning on targets that cannot hold them
  (DuckDB, SQLite, MySQL), naming the table; replicated with their row count into PostgreSQL.
* Target limits (columns, row size, key length) are checked while planning, naming table and limit.
* A table this role cannot read (a row-level security policy that fails) is named by every phase
  that reads it: the copy, the count fence, verify.
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from replicator.pipeline import Options, Pipeline
from tests import procs, targets
from tests.compare import assert_same, target_tables


def run(*args: str, source: str, target: str, check: bool = False):
    """``replicator <args> --source … --target …`` to completion (CompletedProcess)."""
    return procs.run(*args, "--source", source, "--target", target, timeout=300, check=check)


def source_objects(dsn: str) -> tuple[list, list]:
    """(replication slots of this database, publications)."""
    with psycopg.connect(dsn) as c:
        slots = c.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall()
        return slots, c.execute("SELECT pubname FROM pg_publication").fetchall()


def assert_nothing_created(dsn: str, url: str) -> None:
    """No slot, no publication on the source; no table on the target (no embedded file)."""
    assert source_objects(dsn) == ([], [])
    path = url.split(":///", 1)[1] if url.startswith(("duckdb", "sqlite")) else None
    if path is not None and not os.path.exists(path):
        return
    assert target_tables(url) == set()


def execute(dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(statements)


# ---------------------------------------------------------------- item 7: unlogged, temporary
UNLOGGED = """
CREATE TABLE kept (id int PRIMARY KEY, v text);
INSERT INTO kept VALUES (1, 'a'), (2, 'b');
CREATE UNLOGGED TABLE odd (id int PRIMARY KEY);
INSERT INTO odd VALUES (1);
"""


def test_unlogged_tables_are_left_out_by_default_and_refused_by_name(source_db, target_url, tmp_path):
    execute(source_db, UNLOGGED)
    mapping = tmp_path / "odd.yaml"
    mapping.write_text("tables:\n  - source: public.odd\n  - source: public.kept\n")
    with psycopg.connect(source_db, autocommit=True) as session:  # its temporary table lives on
        session.execute("CREATE TEMP TABLE scratch (id int PRIMARY KEY); INSERT INTO scratch VALUES (1)")
        cp = run("check", source=source_db, target=target_url)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "public.odd is UNLOGGED" in cp.stdout and "SET LOGGED" in cp.stdout, cp.stdout
        assert "scratch" not in cp.stdout + cp.stderr
        for args in (["--tables", "odd"], ["--tables", "kept,odd"], ["--mapping", str(mapping)]):
            for command in ("check", "migrate"):
                cp = run(command, *args, source=source_db, target=target_url)
                out = cp.stdout + cp.stderr
                assert cp.returncode != 0, (command, args, out)
                assert "public.odd is UNLOGGED" in out and 'ALTER TABLE "public"."odd" SET LOGGED' in out, out
                assert "cannot add relation" not in out, out
                assert_nothing_created(source_db, target_url)
        cp = run("migrate", source=source_db, target=target_url)
        assert cp.returncode == 0, cp.stderr
        assert "public.odd is UNLOGGED and left out" in cp.stderr, cp.stderr
    tables = target_tables(target_url)
    assert "kept" in tables and "odd" not in tables and "scratch" not in tables, tables
    assert assert_same(source_db, "public", "kept", target_url) == 2
    init = run("init", source=source_db, target=target_url)  # the mapping it writes works as written
    assert 'source: "public.kept"' in init.stdout and 'source: "public.odd"' not in init.stdout
    assert "# left out: public.odd is UNLOGGED" in init.stdout, init.stdout


# ---------------------------------------------------------------- item 8: tables without columns
NO_COLUMNS = """
CREATE TABLE kept (id int PRIMARY KEY);
CREATE TABLE odd ();
ALTER TABLE odd REPLICA IDENTITY FULL;
INSERT INTO odd DEFAULT VALUES; INSERT INTO odd DEFAULT VALUES;
"""


def count(url_or_dsn: str, table: str) -> int:
    if url_or_dsn.startswith("postgresql://") or "=" in url_or_dsn.split("/")[0]:
        with psycopg.connect(url_or_dsn) as c:
            return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    import sqlalchemy as sa

    eng = sa.create_engine(url_or_dsn)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
    finally:
        eng.dispose()


@pytest.mark.parametrize("kind", targets.params("duckdb", "sqlite", "mysql"))
def test_tables_without_columns_are_refused_where_the_target_cannot_hold_them(source_db, kind, request):
    url = request.getfixturevalue(targets.fixture(kind))
    execute(source_db, NO_COLUMNS)
    for command in ("check", "migrate"):
        cp = run(command, source=source_db, target=url)
        out = cp.stdout + cp.stderr
        assert cp.returncode == 1, out
        assert (
            f"public.odd: has no columns, and a {'mysql' if kind == 'mysql' else kind} table needs at least one"
            in out
        ), out
        assert_nothing_created(source_db, url)
    run("migrate", "--tables", "kept", source=source_db, target=url, check=True)


def test_tables_without_columns_replicate_into_postgresql_with_their_row_count(source_db, pg_target_url):
    execute(source_db, NO_COLUMNS)
    assert run("check", source=source_db, target=pg_target_url).returncode == 0
    run("migrate", "--keep-slot", source=source_db, target=pg_target_url, check=True)
    assert count(pg_target_url, "odd") == 2
    execute(
        source_db,
        "INSERT INTO odd SELECT FROM generate_series(1, 3); "
        "DELETE FROM odd WHERE ctid = (SELECT min(ctid) FROM odd)",
    )
    run("migrate", source=source_db, target=pg_target_url, check=True)
    assert count(source_db, "odd") == count(pg_target_url, "odd") == 4


# ---------------------------------------------------------------- item 9: target limits up front
def wide(name: str, n: int, typ: str, key: str = "id int PRIMARY KEY") -> str:
    """A table ``name`` with ``key`` and ``n`` more columns of ``typ``, and one row."""
    cols = ", ".join(f"c{i} {typ}" for i in range(n))
    return f"CREATE TABLE {name} ({key}, {cols}); INSERT INTO {name} (id) VALUES (1);"


def test_a_1600_column_table_is_refused_by_mysql_and_replicated_elsewhere(source_db, target_url):
    execute(source_db, wide("w1600", 1599, "int") + "CREATE TABLE kept (id int PRIMARY KEY);")
    if not target_url.startswith("mysql"):
        run("migrate", source=source_db, target=target_url, check=True)
        assert count(target_url, "w1600") == 1
        return
    for command in ("check", "migrate"):
        cp = run(command, source=source_db, target=target_url)
        out = cp.stdout + cp.stderr
        assert cp.returncode == 1, out
        assert "public.w1600: 1600 columns, more than the 1017 a mysql table holds (InnoDB's limit)" in out, (
            out
        )
        assert "1005" not in out, out
        assert_nothing_created(source_db, target_url)


# (table, fits) pairs at InnoDB's record limit (8126 bytes), measured on MariaDB 10.11
AT_THE_LIMIT = [
    ("b997", wide("b997", 997, "bigint"), True),
    ("b998", wide("b998", 998, "bigint"), False),
    ("v32", wide("v32", 32, "varchar(63)"), True),
    ("v33", wide("v33", 33, "varchar(63)"), False),
    ("n268", wide("n268", 268, "numeric(65,30)"), True),
    ("n269", wide("n269", 269, "numeric(65,30)"), False),
    ("t383", wide("t383", 383, "text"), True),
    ("t384", wide("t384", 384, "text"), False),
    ("u224", wide("u224", 224, "uuid"), True),
    ("u225", wide("u225", 225, "uuid"), False),
    ("k3", "CREATE TABLE k3 (id int, a varchar(400), b varchar(400), PRIMARY KEY (a, b));", False),
]


def test_mysql_row_and_key_limits_are_checked_while_planning(source_db, mysql_target_url):
    """The tables just within InnoDB's record limit replicate; one more column is refused by
    ``check`` and ``migrate`` before anything exists, naming the table and the limit."""
    execute(source_db, "".join(sql for _n, sql, _fits in AT_THE_LIMIT))
    refused = [n for n, _sql, fits in AT_THE_LIMIT if not fits]
    for command in ("check", "migrate"):
        cp = run(command, source=source_db, target=mysql_target_url)
        out = cp.stdout + cp.stderr
        assert cp.returncode == 1, out
        for n in refused[:-1]:
            assert f"public.{n}: a row of MySQL table {n} ({int(n[1:]) + 1} columns)" in out, (n, out)
            assert "InnoDB's record, which holds less than 8126" in out
        assert "public.k3: key (a, b) cannot be indexed by MySQL: InnoDB keys hold 3072 bytes" in out, out
        assert "1118" not in out and "1071" not in out, out
        assert_nothing_created(source_db, mysql_target_url)
    fits = [n for n, _sql, ok in AT_THE_LIMIT if ok]
    cp = run("check", "--tables", ",".join(fits), source=source_db, target=mysql_target_url)
    assert cp.returncode == 0, cp.stdout
    # the state table's layout column (TEXT on MySQL, state.py) holds the layout of ~100 columns
    # at most: the wide tables are created through the target alone, v32 by a migrate
    p = Pipeline(Options(source=source_db, target=mysql_target_url, tables=fits))
    with p.target.connect() as c:
        assert all(p.target.ensure_table(c, m) for m in p.plan())
        c.exec_driver_sql("DROP TABLE v32")
    p.target.dispose()
    run("migrate", "--tables", "v32", source=source_db, target=mysql_target_url, check=True)
    assert count(mysql_target_url, "v32") == 1


# ---------------------------------------------------------------- item 10: errors name their table
def test_a_table_the_role_cannot_read_at_the_count_fence_is_named(source_db, sqlite_target_url):
    """A row-level security policy that fails on one row (a table PostgreSQL cannot read for this
    role) stopped the count fence of a resumed migrate with a bare 'division by zero'."""
    role = f"repl_{uuid.uuid4().hex[:8]}"
    execute(
        source_db,
        "CREATE TABLE kept (id int PRIMARY KEY); CREATE TABLE odd (id int PRIMARY KEY);"
        "INSERT INTO odd SELECT generate_series(1, 5);"
        "CREATE PUBLICATION replicator FOR TABLE kept, odd;"
        f"CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON kept, odd TO {role}",
    )
    dsn = source_db.replace("postgres@", f"{role}@", 1)
    try:
        run("migrate", "--keep-slot", source=dsn, target=sqlite_target_url, check=True)
        execute(
            source_db,
            "ALTER TABLE odd ENABLE ROW LEVEL SECURITY;CREATE POLICY p ON odd USING (10 / (id - 3) <> 0)",
        )
        cp = run("migrate", source=dsn, target=sqlite_target_url)
        assert cp.returncode == 1, cp.stderr
        assert "counting the source rows of public.odd at the end point: division by zero" in cp.stderr, (
            cp.stderr
        )
        cp = run("verify", source=dsn, target=sqlite_target_url)  # verify named it already
        assert cp.returncode == 1 and "public.odd: ERROR could not be compared: division by zero" in cp.stdout
    finally:
        execute(
            source_db,
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = current_database(); DROP OWNED BY {role}; DROP ROLE {role}",
        )


def test_a_wide_table_within_the_limits_migrates_into_mysql(source_db, mysql_target_url):
    """Its column layout (kept in the state table) outgrew MySQL's TEXT: (1406, 'Data too long
    for column layout'). The layout column is LONGTEXT on MySQL now."""
    execute(source_db, wide("w900", 900, "int"))
    run("migrate", source=source_db, target=mysql_target_url, check=True)
    assert count(mysql_target_url, "w900") == 1
