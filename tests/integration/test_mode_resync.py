"""``resync`` of history and soft_delete tables (issue 15): the re-copy is merged into the live
table, which keeps its past.

A first ``migrate --keep-slot`` copies and applies some changes; then the target is made to differ
from the source by hand (what a re-sync repairs: a version or mark the target got wrong, a row the
source no longer has); a mirror runs, ``resync`` hands it both tables, and the mirror's re-copy
waits (failpoint ``wait:``) right after its snapshot is loaded, while the test changes the source,
so the shadow also holds versions and marks made after the re-copy's snapshot when it is merged.
"""

from __future__ import annotations

import psycopg
import pytest

from tests import compare, procs, targets
from tests.compare import run_sql, source_select, target_execute, target_tables
from tests.faults.harness import wait_caught_up, wait_streaming, wait_until

SETUP = """
CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int);
CREATE TABLE cust (id int PRIMARY KEY, name text);
INSERT INTO acct SELECT g, 'owner ' || g, g FROM generate_series(1, 50) g;
INSERT INTO cust SELECT g, 'cust ' || g FROM generate_series(1, 50) g;
"""

MAPPING = """
tables:
  - {include: public.acct, mode: history}
  - {include: public.cust, mode: soft_delete}
"""

target_kind = targets.kind_fixture("sqlite", "duckdb", "mysql", "pg")  # generic is sqlite here

VERSIONS = "SELECT id, owner, balance, _op, _valid_from_lsn, _seq, _valid_to_lsn FROM acct ORDER BY id, _valid_from_lsn, _seq"


def target_select(url: str, query: str) -> list[tuple]:
    """The rows of ``query``, read when the mirror does not hold the file (DuckDB: one process)."""

    def attempt():
        try:
            return (compare.target_select(url, query),)
        except Exception as e:  # noqa: BLE001  (DuckDB's lock error, whatever its class)
            if "lock" in str(e).lower() or "busy" in str(e).lower():
                return None
            raise

    return wait_until(attempt, 120, f"the target file to be free for {query!r}")[0]


def diverge(url: str) -> None:
    """What a re-sync repairs, made by hand on the target (no process holds it)."""
    target_execute(
        url,
        "UPDATE acct SET owner = 'stale' WHERE id = 5 AND _valid_to_lsn IS NULL",
        "INSERT INTO acct (id, owner, balance, _op, _valid_from_lsn, _seq) VALUES (900, 'gone', 0, 'insert', 1, 0)",
        "UPDATE acct SET _valid_to_lsn = _valid_from_lsn + 1 WHERE id = 7 AND _valid_to_lsn IS NULL",
        "INSERT INTO acct (id, _op, _valid_from_lsn, _seq) SELECT 7, 'delete', _valid_to_lsn, 0 FROM acct WHERE id = 7",
        "UPDATE cust SET _deleted = true, _deleted_lsn = 3 WHERE id = 5",
        "INSERT INTO cust (id, name, _deleted) VALUES (900, 'gone', false)",
    )


def chains(url: str) -> dict[int, list[tuple]]:
    """Every key's versions, each closed where the next begins, the last one open."""
    by_key: dict[int, list[tuple]] = {}
    for r in target_select(url, VERSIONS):
        by_key.setdefault(int(r[0]), []).append(r)
    for k, vs in by_key.items():
        if k == 900:
            continue
        ends = [None if v[6] is None else int(v[6]) for v in vs]
        assert ends[:-1] == [int(v[4]) for v in vs[1:]] and ends[-1] is None, f"chain of {k}: {vs}"
    return by_key


def same_current(dsn: str, url: str) -> None:
    for table, cols in (("acct", "id, owner, balance"), ("cust", "id, name")):
        got = sorted(tuple(map(str, r)) for r in target_select(url, f"SELECT {cols} FROM {table}_current"))
        want = sorted(tuple(map(str, r)) for r in source_select(dsn, f"SELECT {cols} FROM {table}"))
        assert got == want, table


def migrated(source_db: str, url: str, tmp_path) -> list[str]:
    """The two mode tables created on the source and migrated (slot kept); the command's
    arguments for the next commands."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    args = ["--mapping", str(mapping), "--source", source_db, "--target", url]
    procs.run("migrate", *args, "--keep-slot", check=True, timeout=300)
    return args


def test_resync_merges_into_the_history_and_the_marks(source_db, target_url, tmp_path):
    args = migrated(source_db, target_url, tmp_path)
    run_sql(source_db, "UPDATE acct SET balance = 100 WHERE id = 3", "DELETE FROM cust WHERE id = 2")
    procs.run("migrate", *args, "--keep-slot", check=True, timeout=300)
    before = chains(target_url)
    marked_2 = target_select(target_url, "SELECT _deleted_lsn FROM cust WHERE id = 2")
    diverge(target_url)

    go = tmp_path / "go"
    mirror = procs.Mirror(
        source_db,
        target_url,
        args=args[:2],
        failpoints=f"copy.loaded:public.acct=wait:{go}",
    )
    try:
        wait_streaming(source_db, mirror)
        procs.run("resync", "--tables", "acct,cust", *args, check=True, timeout=300)
        wait_until(
            lambda: "failpoint copy.loaded:public.acct: waiting" in mirror.log(), 240, "the re-copy", mirror
        )
        run_sql(  # after the re-copy's snapshot: the shadow gets these as versions and marks
            source_db,
            "UPDATE acct SET balance = -1 WHERE id IN (1, 5)",
            "DELETE FROM acct WHERE id = 2",
            "INSERT INTO acct VALUES (950, 'new', 9)",
            "DELETE FROM cust WHERE id = 3",
        )
        go.touch()
        wait_until(
            lambda: not target_select(target_url, "SELECT 1 FROM acct WHERE id = 950") == [],
            240,
            "the merge",
            mirror,
        )
        wait_caught_up(source_db, mirror)
        after = chains(target_url)
        same_current(source_db, target_url)
        s = max(int(v[4]) for v in after[5] if v[3] == "snapshot")  # the re-copy's sync LSN
        assert {k for k, vs in after.items() if any(v[3] == "snapshot" and int(v[4]) == s for v in vs)} == {
            5,
            7,
        }
        stale, again, upd = after[5]  # the stale version closed at S, the source's opened there
        assert (stale[1], int(stale[6]), again[1], int(again[4]), upd[3]) == (
            "stale",
            s,
            "owner 5",
            s,
            "update",
        )
        assert [(v[3], v[6] and int(v[6])) for v in after[900]] == [("insert", s)]  # vanished: closed
        assert [(v[3], v[6] and int(v[6])) for v in after[7][-2:]] == [("delete", s), ("snapshot", None)]
        for k, op in ((1, "update"), (2, "delete")):  # the version before continued, then changed
            assert [v[:6] for v in after[k][:-1]] == [v[:6] for v in before[k]] and after[k][-1][3] == op
        assert after[3] == before[3]  # untouched: no version added
        marks = dict(target_select(target_url, "SELECT id, _deleted_lsn FROM cust WHERE _deleted = true"))
        assert set(marks) == {2, 3, 900} and int(marks[900]) == s and [(marks[2],)] == marked_2, marks
        assert int(marks[3]) > s
        run_sql(
            source_db,
            "UPDATE acct SET owner = 'later' WHERE id IN (3, 4, 7)",
            "DELETE FROM cust WHERE id = 4",
        )
        wait_caught_up(source_db, mirror)
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
    chains(target_url)
    same_current(source_db, target_url)
    assert not [t for t in target_tables(target_url) if "__resync" in t]
    cp = procs.run("verify", *args, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr


@pytest.mark.parametrize("point,kind", [("resync.before_swap", "sqlite"), ("resync.merged", "mysql")])
def test_a_crash_at_the_merge_is_completed_on_start(source_db, request, tmp_path, point, kind):
    """Killed right before the merge (the shadow ready, ``r``): the next start merges it.  MySQL,
    killed after the merge committed, before the shadow's DROP (DDL commits by itself there): the
    next start drops it."""
    targets.require(kind)
    url = request.getfixturevalue(targets.fixture(kind))
    args = migrated(source_db, url, tmp_path)
    diverge(url)
    env = {"REPLICATOR_FAILPOINTS": f"{point}=kill"}
    cp = procs.run("resync", "--tables", "acct,cust", *args, env=env, timeout=300)
    assert cp.returncode == -9, cp.stderr[-2000:]
    open_900 = target_select(url, "SELECT 1 FROM acct WHERE id = 900 AND _valid_to_lsn IS NULL")
    assert len(open_900) == (1 if point == "resync.before_swap" else 0)  # merged or not
    assert "acct__resync" in target_tables(url)
    run_sql(source_db, "UPDATE acct SET balance = -1 WHERE id = 1")
    procs.run("migrate", *args, check=True, timeout=300)
    chains(url)
    same_current(source_db, url)
    assert not [t for t in target_tables(url) if "__resync" in t]
