"""mode: history on every target: every change appends a version, the previous one is closed,
unchanged TOAST values are carried, a DELETE leaves a tombstone, a TRUNCATE closes everything,
``<table>_current`` equals the source, and a crash never adds a version twice or loses one.

The source records every change of ``acct`` with a trigger (in commit order: one session makes
them), so the target's versions of each key can be compared with the source's changes, in order.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

import psycopg
import pytest

from tests import procs, targets
from tests.compare import norm, run_sql, source_select, target_select
from tests.faults.harness import crash_and_resume, wait_caught_up, wait_streaming

SETUP = """
CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2));
CREATE TABLE pair (a int, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE doc (id int PRIMARY KEY, title text, big text);
ALTER TABLE doc ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE logs (id int PRIMARY KEY, line text);
CREATE TABLE acct_log (n bigserial, id int, op text, owner text, balance numeric(12,2));
CREATE FUNCTION log_acct() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id <> NEW.id) THEN
    INSERT INTO acct_log (id, op) VALUES (OLD.id, 'delete');
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO acct_log (id, op, owner, balance) VALUES (NEW.id, lower(TG_OP), NEW.owner, NEW.balance);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER acct_log AFTER INSERT OR UPDATE OR DELETE ON acct FOR EACH ROW EXECUTE FUNCTION log_acct();
INSERT INTO acct SELECT g, 'owner ' || g, g * 1.25 FROM generate_series(1, 100) g;
INSERT INTO pair SELECT g % 5, g, 'v' || g FROM generate_series(1, 20) g;
INSERT INTO doc SELECT g, 'title ' || g, repeat(chr(65 + g % 26), 5000) FROM generate_series(1, 5) g;
INSERT INTO logs SELECT g, 'line ' || g FROM generate_series(1, 10) g;
"""

MAPPING = """
tables:
  - include: "public.*"
    exclude: [public.acct_log]
    mode: history
"""


@pytest.fixture
def db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
        c.execute("TRUNCATE acct_log")  # the snapshot holds those rows
    return source_db


target_kind = targets.kind_fixture(*targets.ALL)


def money(v):
    return None if v is None else Decimal(str(v)).quantize(Decimal("0.01"))


def check_history(dsn, url):
    """Per key: the versions after the snapshot are the source's changes, in order; the chain is
    closed version by version; the current views equal the source."""
    log: dict[int, list] = {}
    for id_, op, owner, bal in source_select(dsn, "SELECT id, op, owner, balance FROM acct_log ORDER BY n"):
        log.setdefault(id_, []).append((op, owner, money(bal)))
    rows = target_select(
        url,
        "SELECT id, _op, owner, balance, _valid_from_lsn, _seq, _valid_to_lsn, _valid_from "
        "FROM acct ORDER BY id, _valid_from_lsn, _seq",
    )
    versions: dict[int, list] = {}
    for r in rows:
        versions.setdefault(int(r[0]), []).append(r)
    for id_, vs in versions.items():
        assert [int(v[6]) for v in vs[:-1]] == [int(v[4]) for v in vs[1:]], f"chain of {id_}: {vs}"
        assert vs[-1][6] is None, vs
        changes = [(v[1], norm(v[2]), money(v[3])) for v in vs if v[1] != "snapshot"]
        assert changes == log.get(id_, []), f"versions of acct {id_}"
        assert all(v[7] is not None for v in vs)
    for table, cols in (("acct", "id, owner, balance"), ("pair", "a, b, v"), ("doc", "id, title, big")):
        got = sorted(tuple(map(str, r)) for r in target_select(url, f"SELECT {cols} FROM {table}_current"))
        want = sorted(tuple(map(str, r)) for r in source_select(dsn, f"SELECT {cols} FROM {table}"))
        if table == "acct":
            got = sorted((a, b, str(money(c))) for a, b, c in got)
            want = sorted((a, b, str(money(c))) for a, b, c in want)
        assert got == want, table


CHANGES = [
    "UPDATE acct SET balance = balance + 1 WHERE id <= 20",
    "DELETE FROM acct WHERE id BETWEEN 15 AND 25",
    "INSERT INTO acct VALUES (17, 'back', 1.5)",
    "BEGIN; UPDATE acct SET owner = 'a' WHERE id = 30; UPDATE acct SET owner = 'b' WHERE id = 30; "
    "DELETE FROM acct WHERE id = 31; INSERT INTO acct VALUES (31, 'again', 3); COMMIT",
    "BEGIN; INSERT INTO acct VALUES (200, 'brief', 2); DELETE FROM acct WHERE id = 200; COMMIT",
    "UPDATE acct SET id = 300 WHERE id = 40",
    "UPDATE pair SET v = 'changed' WHERE b % 3 = 0",
    "DELETE FROM pair WHERE a = 1",
    "UPDATE pair SET b = b + 100 WHERE a = 2",
    "UPDATE doc SET title = 'retitled' WHERE id <= 3",
    "BEGIN; UPDATE doc SET title = 'twice' WHERE id = 4; UPDATE doc SET title = 'thrice' WHERE id = 4; COMMIT",
    "DELETE FROM doc WHERE id = 5",
    "TRUNCATE logs",
    "INSERT INTO logs VALUES (3, 'after truncate')",
]


def test_history_keeps_every_version(db, target_url, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    mirror = procs.Mirror(db, target_url, args=["--mapping", str(mapping)])
    try:
        wait_streaming(db, mirror)
        run_sql(db, *CHANGES)
        wait_caught_up(db, mirror)
        check_history(db, target_url)
        big = target_select(target_url, "SELECT big FROM doc WHERE id = 4 ORDER BY _valid_from_lsn, _seq")
        assert len(big) == 3 and all(b[0] == "E" * 5000 for b in big)  # carried, not NULL
        logs = target_select(
            target_url, "SELECT _op, count(*) FROM logs WHERE _valid_to_lsn IS NULL GROUP BY _op"
        )
        assert sorted((op, int(n)) for op, n in logs) == [("delete", 9), ("insert", 1)]
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
    cp = procs.run("verify", "--mapping", str(mapping), "--source", db, "--target", target_url, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def churn(dsn: str, rng: random.Random, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(n):
            k, op = rng.randint(1, 150), rng.random()
            with c.transaction():
                if op < 0.3:
                    c.execute("DELETE FROM acct WHERE id = %s", (k,))
                elif op < 0.6:
                    c.execute(
                        "INSERT INTO acct VALUES (%s, 'ins', %s) ON CONFLICT (id) DO UPDATE SET owner = 'ups'",
                        (k, rng.randint(1, 999)),
                    )
                else:
                    c.execute("UPDATE acct SET balance = balance + 1 WHERE id IN (%s, %s)", (k, k + 1))


@pytest.mark.parametrize("point,kind", [("apply.committed", "duckdb"), ("apply.before_commit", "mysql")])
def test_a_crash_adds_no_version_twice_and_loses_none(db, point, kind, request, tmp_path):
    targets.require(kind)
    url = request.getfixturevalue(targets.fixture(kind))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    rng = random.Random(f"{point}-{kind}")
    args = ["--mapping", str(mapping)]
    crash_and_resume(
        db, url, args, f"{point}=kill@3", lambda n: churn(db, rng, n), lambda: check_history(db, url)
    )


def test_readme_queries_on_a_duckdb_history_table(db, duckdb_target_url, tmp_path):
    """The README's two questions, asked of a DuckDB history table: which accounts were deleted
    since a time (with their last owner), and the balance of an account at a time."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    mirror = procs.Mirror(db, duckdb_target_url, args=["--mapping", str(mapping)])
    try:
        wait_streaming(db, mirror)
        wait_caught_up(db, mirror)  # the snapshot rows are in (the slot is active during the copy too)
        (t0,) = source_select(db, "SELECT clock_timestamp()")[0]
        run_sql(db, "UPDATE acct SET balance = 420 WHERE id = 42")
        time.sleep(0.05)
        (t1,) = source_select(db, "SELECT clock_timestamp()")[0]
        run_sql(db, "UPDATE acct SET balance = 421 WHERE id = 42", "DELETE FROM acct WHERE id IN (7, 8)")
        wait_caught_up(db, mirror)
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
    import duckdb

    with duckdb.connect(duckdb_target_url.split(":///", 1)[1], read_only=True) as con:
        deleted = con.execute(README_DELETED, [t0]).fetchall()
        balance = con.execute(README_BALANCE, [42, t1]).fetchall()
        before = con.execute(README_BALANCE, [42, t0]).fetchall()
    assert sorted((int(i), o) for i, o, _ in deleted) == [(7, "owner 7"), (8, "owner 8")]
    assert [money(b) for (b,) in balance] == [Decimal("420.00")]
    assert [money(b) for (b,) in before] == [Decimal("52.50")]


README_DELETED = """
SELECT id, owner, _valid_from AS deleted_at
FROM (SELECT id, _op, _valid_from,
             lag(owner) OVER (PARTITION BY id ORDER BY _valid_from_lsn, _seq) AS owner
      FROM acct)
WHERE _op = 'delete' AND _valid_from >= ?
"""
README_BALANCE = """
SELECT balance FROM acct
WHERE id = ? AND _op <> 'delete'
  AND _valid_from <= $2 AND (_valid_to IS NULL OR _valid_to > $2)
"""


def test_a_snapshot_only_copy_with_modes(db, sqlite_target_url, tmp_path):
    """`replicator copy` with a history/soft_delete mapping: snapshot versions at the snapshot's
    LSN, nothing marked, current views equal to the source."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING + "  - source: public.acct_log\n    key: [n]\n    mode: soft_delete\n")
    procs.run("copy", "--mapping", str(mapping), "--source", db, "--target", sqlite_target_url, check=True)
    ops = target_select(sqlite_target_url, "SELECT DISTINCT _op, _seq, _valid_to_lsn FROM acct")
    assert ops == [("snapshot", 0, None)]
    (lsn,) = {int(r[0]) for r in target_select(sqlite_target_url, "SELECT _valid_from_lsn FROM pair")}
    assert lsn > 0
    check_history(db, sqlite_target_url)


def test_migrate_counts_the_current_rows_of_a_history_table(db, duckdb_target_url, tmp_path):
    """migrate's row-count fence compares the source with the current versions (not with every
    version), so a migration with history entries catches up and ends."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    args = ["--mapping", str(mapping), "--source", db, "--target", duckdb_target_url]
    procs.run("migrate", *args, "--keep-slot", check=True, timeout=300)
    run_sql(db, *CHANGES)
    procs.run("migrate", *args, check=True, timeout=300)
    check_history(db, duckdb_target_url)
