"""Source tables of unusual shapes, through the real CLI into every target (issue 10, items 7-10).

* Unlogged tables: their changes are not in WAL.  ``check`` says so; the default selection leaves
  them out with a logged note; naming one (``--tables``, a mapping entry) is refused before
  anything is created, with ``ALTER TABLE … SET LOGGED`` as the fix.  Temporary tables are never
  selected.
"""
from __future__ import annotations

import os

import psycopg
import pytest

from tests import procs
from tests.compare import assert_same, target_tables

TARGETS = ["sqlite", "duckdb", "mysql", "pg"]


@pytest.fixture(params=TARGETS)
def target_url(request):
    return request.getfixturevalue(f"{request.param}_target_url")


def run(*args: str, source: str, target: str, check: bool = False):
    """``replicator <args> --source … --target …`` to completion (CompletedProcess)."""
    return procs.run(*args, "--source", source, "--target", target, timeout=300, check=check)


def source_objects(dsn: str) -> tuple[list, list]:
    """(replication slots of this database, publications)."""
    with psycopg.connect(dsn) as c:
        slots = c.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()").fetchall()
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
