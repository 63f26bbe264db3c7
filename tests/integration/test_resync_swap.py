"""Re-sync beside the live table (issue 15, replicator/shadow.py), on every target.

* Readers never see a re-synced table missing or with fewer rows while a mirror under pgbench load
  copies it into its shadow and swaps it in; afterwards it equals the source row by row.
* A column the source gained since the first copy: the shadow is created with it (seen while the
  process is killed right before the swap) and the table has it after the swap; with a running
  mirror and with none (``resync`` then copies and swaps itself).
* SIGKILL right before and right after the swap (MySQL also between RENAME TABLE and the drop of
  the old table): the restarted mirror ends with every table equal to the source and no shadow
  or old table left.
"""

from __future__ import annotations

import signal
import threading

import psycopg
import pytest
import sqlalchemy as sa

from replicator.target import names
from tests.compare import assert_same, target_columns, target_rows, target_tables
from tests.faults.harness import (
    EXIT_TIMEOUT,
    PGBENCH,
    Load,
    Mirror,
    compare,
    pgbench_source,
    wait_caught_up,
    wait_streaming,
    wait_until,
)
from tests.integration.test_migrate import replicator
from tests.targets import engine_url

KILLED = -signal.SIGKILL
STATE_SQL = "SELECT source_table, target_table, state FROM replicator_state_tables"


def _engine(url: str) -> sa.Engine:
    """An engine that only reads (a DuckDB file opened read-only: the mirror may write between)."""
    args = {"read_only": True} if url.startswith("duckdb") else {}
    return sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool, connect_args=args)


def _busy(e: Exception) -> bool:
    return any(w in str(e).lower() for w in ("lock", "busy"))


def _missing(e: Exception) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("no such table", "does not exist", "doesn't exist"))


def states(url: str) -> dict[str, tuple[str, str]]:
    """source table (no schema) → (target table, state), read as soon as the file is free."""

    def read():
        eng = _engine(url)
        try:
            with eng.connect() as c:
                return {r[0].split(".", 1)[1]: (r[1], r[2]) for r in c.execute(sa.text(STATE_SQL))}
        except sa.exc.DBAPIError as e:
            if _busy(e):
                return None
            raise
        finally:
            eng.dispose()

    return wait_until(read, 120, "the state rows (target file busy)")


def leftovers(url: str) -> set[str]:
    return {t for t in target_tables(url) if "__resync" in t}


def run(dsn: str, *stmts: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


# ---------------------------------------------------------------- readers never see it dark


class Reader(threading.Thread):
    """Counts the rows of ``tables`` on the target every 0.2 s, and reads their state rows, until
    stopped; a table missing is recorded (a busy file is not: the poll is tried again)."""

    def __init__(self, url: str, tables: list[str]):
        super().__init__(daemon=True)
        self.url, self.tables = url, tables
        self.polls: list[tuple[dict, dict]] = []  # (counts, states) per poll that read everything
        self.missing: list[str] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        eng = _engine(self.url)
        try:
            while not self.halt.is_set():
                self.poll(eng)
                self.halt.wait(0.2)
        finally:
            eng.dispose()

    def poll(self, eng: sa.Engine) -> None:
        try:
            with eng.connect() as c:
                st = {r[0].split(".", 1)[1]: (r[1], r[2]) for r in c.execute(sa.text(STATE_SQL))}
            counts = {}
            for t in self.tables:
                with eng.connect() as c:
                    counts[t] = c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
            self.polls.append((counts, st))
        except sa.exc.DBAPIError as e:
            if _missing(e):
                self.missing.append(str(e).splitlines()[0][:300])
            elif not _busy(e):
                self.errors.append(str(e).splitlines()[0][:300])


def during(reader: Reader) -> list:
    """The polls that read the state row naming pgbench_accounts' shadow (a re-sync under way)."""
    return [st for _, st in list(reader.polls) if st["pgbench_accounts"][0] != "pgbench_accounts"]


def test_readers_see_the_old_rows_until_the_swap(source_db, target_url, tmp_path):
    pgbench_source(source_db, scale=1)
    chosen = ["pgbench_accounts", "pgbench_history"]
    go = tmp_path / "go"  # the swap of pgbench_accounts waits until a reader saw the shadow named
    m = Mirror(source_db, target_url, failpoints=f"resync.before_swap:public.pgbench_accounts=wait:{go}")
    load = Load(source_db)
    reader = Reader(target_url, chosen)
    try:
        wait_streaming(source_db, m)
        load.more(30, m)
        wait_until(lambda: {s for _, s in states(target_url).values()} == {"r"}, 240, "every table r", m)
        reader.start()
        wait_until(lambda: reader.polls, 120, "a first read of the target", m)
        replicator("resync", "--source", source_db, "--target", target_url, "--tables", ",".join(chosen))
        wait_until(lambda: during(reader), 300, "a read while the re-sync runs", m)
        go.touch()
        # resync returned with the rows naming the shadows: naming the tables again is the swap
        swapped = lambda: all(states(target_url)[t] == (t, "r") for t in chosen)  # noqa: E731
        wait_until(swapped, 300, "both copies swapped in", m, every=0.5)
        load.more(20, m)  # the stream writes the swapped-in tables
    finally:
        reader.halt.set()
        reader.join(30)
        load.stop()
    assert not reader.missing, reader.missing[:5]
    assert not reader.errors, reader.errors[:5]
    counts = [c for c, _ in reader.polls]
    assert {c["pgbench_accounts"] for c in counts} == {100_000}
    history = [c["pgbench_history"] for c in counts]
    assert history == sorted(history), "pgbench_history, which only grows, shrank for a reader"
    assert during(reader), "no read while the re-sync ran"
    wait_caught_up(source_db, m)
    assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
    compare(source_db, target_url, PGBENCH)
    assert not leftovers(target_url)
    assert "copying 2 table(s) from a fresh snapshot" in m.log()


# ---------------------------------------------------------------- a column the source gained


@pytest.fixture
def small(source_db):
    run(
        source_db,
        "CREATE TABLE t (id int PRIMARY KEY, a text)",
        "INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 2000) g",
    )
    return source_db


def _columns_and_rows_before_swap(url: str, before: list) -> None:
    """Killed right before the swap: the shadow has the new column, the live table is as it was."""
    assert states(url)["t"] == ("t__resync", "r")
    assert "b" in target_columns(url, "t__resync")
    assert target_columns(url, "t") == ["id", "a"]
    assert target_rows(url, "t", ["id", "a"]) == before


def test_resync_with_a_running_mirror_brings_the_new_column(small, target_url):
    """The column was added without a change since: the mirror has not seen it, the re-sync's copy
    (planned from today's catalog) has it."""
    m = Mirror(small, target_url, failpoints="resync.before_swap=kill")
    try:
        wait_streaming(small, m)
        wait_until(lambda: states(target_url).get("t") == ("t", "r"), 240, "t r", m)
        before = target_rows(target_url, "t", ["id", "a"])
        run(small, "ALTER TABLE t ADD COLUMN b int DEFAULT 7")
        replicator("resync", "--source", small, "--target", target_url, "--tables", "t")
        # once the mirror took the re-sync up, the stream writes t's changes to the shadow
        wait_until(lambda: not m.alive() or states(target_url)["t"][1] != "i", 120, "the copy")
        run(small, "INSERT INTO t VALUES (5000, 'new', 1)")
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        _columns_and_rows_before_swap(target_url, before)
        m = Mirror(small, target_url)  # swaps at start, then streams
        wait_streaming(small, m)
        run(small, "UPDATE t SET b = 8 WHERE id = 5", "INSERT INTO t VALUES (5001, 'x', 2)")
        wait_caught_up(small, m)
        assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
    finally:
        m.close()
    assert states(target_url)["t"] == ("t", "r")
    assert_same(small, "public", "t", target_url)
    assert not leftovers(target_url)


def test_resync_without_a_mirror_after_a_change_it_could_not_follow(small, target_url):
    """A volatile default rewrote the table: the mirror stops; ``resync`` (no mirror) copies into
    the shadow with the new column and swaps it in itself, here killed right before the swap; the
    next mirror start completes it."""
    env = {"REPLICATOR_SOURCE": small, "REPLICATOR_TARGET": target_url}
    replicator("migrate", "--keep-slot", env=env)
    before = target_rows(target_url, "t", ["id", "a"])
    run(
        small,
        "ALTER TABLE t ADD COLUMN b timestamptz DEFAULT clock_timestamp()",
        "INSERT INTO t (id, a) VALUES (3000, 'after')",
    )
    cp = replicator("migrate", "--keep-slot", env=env, check=False)
    assert cp.returncode != 0 and "replicator resync --tables public.t" in cp.stderr, cp.stderr[-2000:]
    kill = {**env, "REPLICATOR_FAILPOINTS": "resync.before_swap=kill"}
    cp = replicator("resync", "--tables", "t", env=kill, check=False)
    assert cp.returncode == KILLED, cp.stderr[-2000:]
    _columns_and_rows_before_swap(target_url, before)
    m = Mirror(small, target_url)
    try:
        wait_streaming(small, m)
        run(small, "INSERT INTO t (id, a) VALUES (3001, 'later')")
        wait_caught_up(small, m)
        assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
    finally:
        m.close()
    assert_same(small, "public", "t", target_url)
    assert not leftovers(target_url)
    out = replicator("resync", "--tables", "t", env=env).stdout  # uninterrupted: swapped before it returns
    assert "re-copied 1 table(s), 2002 rows: public.t" in out
    assert states(target_url)["t"] == ("t", "r")
    assert_same(small, "public", "t", target_url)
    assert not leftovers(target_url)


# ---------------------------------------------------------------- crashes at the swap

POINTS = ["resync.before_swap", "resync.swapped", "resync.renamed"]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_the_swap_under_load(source_db, target_url, target_kind, point):
    if point == "resync.renamed" and target_kind != "mysql":
        pytest.skip("RENAME TABLE commits by itself only on MySQL")
    pgbench_source(source_db, scale=1)
    chosen = ["pgbench_tellers", "pgbench_history"]
    m = Mirror(source_db, target_url, failpoints=f"{point}=kill")
    load = Load(source_db)
    try:
        wait_streaming(source_db, m)
        load.more(20, m)
        replicator("resync", "--source", source_db, "--target", target_url, "--tables", ",".join(chosen))
        assert m.wait(EXIT_TIMEOUT) == KILLED, m.tail()
        st = states(target_url)
        swapped = point == "resync.swapped"
        assert any(st[t] == ((t, "r") if swapped else (f"{t}__resync", "r")) for t in chosen), st
        if point == "resync.renamed":  # the old table parked, the shadow renamed, nothing recorded
            assert leftovers(target_url) & {f"{t}__resync_old" for t in chosen}
        m = Mirror(source_db, target_url)
        wait_streaming(source_db, m)
        load.more(20, m)
        load.stop()
        wait_caught_up(source_db, m)
        assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
    finally:
        load.stop()
        m.close()
    compare(source_db, target_url, PGBENCH)
    assert {v for v in states(target_url).values()} == {(t, "r") for t in PGBENCH}
    assert not leftovers(target_url)


# ---------------------------------------------------------------- shadow names


def test_shadow_names_stay_within_the_limits():
    pg, my = names.postgres_name_problem, names.mysql_name_problem
    assert names.beside("t", "__resync", pg) == "t__resync"
    long = "x" * 60
    a, b = names.beside(long, "__resync", pg), names.beside(long + "y", "__resync", pg)
    assert pg(a) is None and pg(b) is None and a != b and "__resync_" in a
    assert my(names.beside("é" * 64, "__resync_old", my)) is None
    assert pg(names.beside("ü" * 40, "__resync", pg)) is None  # 63 bytes, not characters
