"""mode: soft_delete on every target: a DELETE marks the row (commit time and LSN of the delete),
an INSERT of the key again brings it back unmarked, a TRUNCATE marks every row, the
``<table>_current`` view equals the source, and a crash between batches neither loses nor
repeats a mark.

The expected marks are recorded on the source by a trigger: every deleted row with its values,
so the target's marked rows can be compared with what the source deleted, row by row.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from tests import procs, targets
from tests.compare import norm, run_sql, source_select, target_select
from tests.faults.harness import crash_and_resume, wait_caught_up, wait_streaming

SETUP = """
CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric(12,2), note text);
CREATE TABLE logs (id int PRIMARY KEY, line text);
CREATE TABLE deleted_acct (id int, owner text, balance numeric(12,2), note text, xid bigint);
CREATE FUNCTION remember_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM deleted_acct WHERE id = OLD.id;
  INSERT INTO deleted_acct VALUES (OLD.id, OLD.owner, OLD.balance, OLD.note, txid_current());
  RETURN OLD;
END $$;
CREATE FUNCTION forget_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM deleted_acct WHERE id = NEW.id;
  RETURN NEW;
END $$;
CREATE TRIGGER acct_del AFTER DELETE ON acct FOR EACH ROW EXECUTE FUNCTION remember_delete();
CREATE TRIGGER acct_ins AFTER INSERT ON acct FOR EACH ROW EXECUTE FUNCTION forget_delete();
INSERT INTO acct SELECT g, 'owner ' || g, g * 1.25, repeat('x', g % 7) FROM generate_series(1, 200) g;
INSERT INTO logs SELECT g, 'line ' || g FROM generate_series(1, 20) g;
"""

MAPPING = """
tables:
  - source: public.acct
    mode: soft_delete
  - source: public.logs
    mode: soft_delete
    soft_delete: {deleted: gone, deleted_at: gone_at, deleted_lsn: gone_lsn}
"""


@pytest.fixture
def db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SETUP)
    return source_db


target_kind = targets.kind_fixture(*targets.ALL)


def values(r) -> tuple:
    """A row of acct's columns, the balance as a Decimal whatever the target returned."""
    return (int(r[0]), norm(r[1]), Decimal(str(r[2])).quantize(Decimal("0.01")), norm(r[3]))


def check_marks(dsn, url):
    """The marked rows are exactly the rows the source deleted (their values when deleted), each
    with a commit time and LSN; the current view equals the source."""
    cols = "id, owner, balance, note"
    want = sorted(values(r) for r in source_select(dsn, f"SELECT {cols} FROM deleted_acct"))
    got = target_select(url, f"SELECT {cols}, _deleted_at, _deleted_lsn FROM acct WHERE _deleted = true")
    assert sorted(values(r[:4]) for r in got) == want
    assert all(r[4] is not None and int(r[5]) > 0 for r in got), got[:3]
    current = sorted(values(r) for r in target_select(url, f"SELECT {cols} FROM acct_current"))
    assert current == sorted(values(r) for r in source_select(dsn, f"SELECT {cols} FROM acct"))
    live = target_select(url, "SELECT count(*) FROM acct WHERE _deleted = false")[0][0]
    assert live == source_select(dsn, "SELECT count(*) FROM acct")[0][0]


def test_soft_delete_marks_restores_and_truncates(db, target_url, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    mirror = procs.Mirror(db, target_url, args=["--mapping", str(mapping)])
    try:
        wait_streaming(db, mirror)
        run_sql(
            db,
            "DELETE FROM acct WHERE id <= 10",
            "INSERT INTO acct VALUES (5, 'back', 5.5, 'again')",
            "UPDATE acct SET balance = balance + 1 WHERE id BETWEEN 20 AND 30",
            "BEGIN; INSERT INTO acct VALUES (500, 'brief', 1, 'x'); DELETE FROM acct WHERE id = 500; COMMIT",
            "BEGIN; DELETE FROM acct WHERE id = 40; INSERT INTO acct VALUES (40, 'same tx', 4, 'y'); COMMIT",
            "BEGIN; DELETE FROM acct WHERE id = 41; INSERT INTO acct VALUES (41, 'x', 4, 'y'); "
            "DELETE FROM acct WHERE id = 41; COMMIT",
            "TRUNCATE logs",
        )
        wait_caught_up(db, mirror)
        check_marks(db, target_url)
        assert target_select(target_url, "SELECT owner FROM acct WHERE id = 5 AND _deleted = false") == [
            ("back",)
        ]
        assert target_select(target_url, "SELECT count(*) FROM acct WHERE id = 500 AND _deleted = true") == [
            (1,)
        ]
        logs = target_select(target_url, "SELECT count(*), min(gone_lsn) FROM logs WHERE gone = true")
        assert logs[0][0] == 20 and int(logs[0][1]) > 0
        assert target_select(target_url, "SELECT count(*) FROM logs_current") == [(0,)]
        run_sql(db, "INSERT INTO logs VALUES (3, 'after truncate')")
        wait_caught_up(db, mirror)
        assert target_select(target_url, "SELECT line FROM logs_current") == [("after truncate",)]
        assert mirror.stop() == 0, mirror.tail()
    finally:
        mirror.close()
    cp = procs.run("verify", "--mapping", str(mapping), "--source", db, "--target", target_url, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def churn(dsn: str, rng, n: int) -> None:
    """``n`` small transactions deleting, inserting again and updating random keys."""
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(n):
            k, op = rng.randint(1, 250), rng.random()
            with c.transaction():
                if op < 0.4:
                    c.execute("DELETE FROM acct WHERE id = %s", (k,))
                elif op < 0.7:
                    c.execute(
                        "INSERT INTO acct VALUES (%s, 'ins', %s, 'n') "
                        "ON CONFLICT (id) DO UPDATE SET owner = 'upsert'",
                        (k, rng.randint(1, 999)),
                    )
                else:
                    c.execute("UPDATE acct SET balance = balance + 1, note = 'u' WHERE id = %s", (k,))


@pytest.mark.parametrize(
    "point,kind",
    [("apply.committed", "duckdb"), ("apply.before_commit", "mysql"), ("apply.committed", "pg")],
)
def test_a_crash_neither_loses_nor_repeats_a_mark(db, point, kind, request, tmp_path):
    """SIGKILL after (or just before) a batch commits, under churn; the restarted mirror ends with
    exactly the source's deletions marked and the current view equal to the source."""
    import random

    targets.require(kind)
    url = request.getfixturevalue(targets.fixture(kind))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    rng = random.Random(f"{point}-{kind}")
    args = ["--mapping", str(mapping)]
    crash_and_resume(
        db, url, args, f"{point}=kill@3", lambda n: churn(db, rng, n), lambda: check_marks(db, url)
    )
