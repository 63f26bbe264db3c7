"""Shared machinery of the fault-injection suite: a mirror process, positions, waits, comparison
and the report of faults injected and rows compared.

The mirror always runs as the real CLI (``python -m replicator mirror``) in its own process, so a
SIGKILL is a real crash; its stderr goes to a file (never a pipe a long run could fill).  The
class is tests/procs.py's :class:`~tests.procs.Mirror`, re-exported here.

Nothing here waits for time to pass: load runs until the test stops it (bounded by a transaction
count, never by a duration), tests wait for conditions (:func:`wait_until`, :meth:`Load.more`),
and every wait has a generous deadline and says what it waited for.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

import psycopg
import sqlalchemy as sa

from replicator.model import Lsn
from replicator.source.slot import reached
from tests.compare import assert_same
from tests.procs import Mirror  # noqa: F401  (re-exported: ``from tests.faults.harness import Mirror``)

PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


# ------------------------------------------------------------------ report


@dataclass
class FaultReport:
    """What the suite did: faults injected and rows compared, per test and in all."""

    faults: int = 0
    rows: int = 0
    tests: int = 0
    lines: list[str] = field(default_factory=list)

    def add(self, test: str, faults: int, rows: int, note: str = "") -> None:
        self.faults += faults
        self.rows += rows
        self.tests += 1
        self.lines.append(f"{test}: {faults} fault(s) injected, {rows} rows compared")
        if note:
            self.lines.append(f"    {note}")

    def summary(self) -> str:
        return (
            f"fault-injection report: {self.faults} faults injected, {self.rows} rows compared "
            f"row by row in {self.tests} passing test(s)"
        )


REPORT = FaultReport()


class Tally:
    """Per-test counter handed out by the ``tally`` fixture; recorded when the test ends."""

    def __init__(self):
        self.faults = 0
        self.rows = 0
        self.note = ""  # an extra line for the report

    def fault(self, n: int = 1) -> None:
        self.faults += n

    def compared(self, n: int) -> None:
        self.rows += n


# ------------------------------------------------------------------ the mirror process

# ``Mirror`` lives in tests/procs.py (shared by every suite) and is imported above, so that
# ``from tests.faults.harness import Mirror`` goes on working.  Every instance is registered there
# and killed at the end of each test (tests/conftest.py).

#: deadlines (seconds) for things the mirror makes happen: generous, so a machine whose cores are
#: all busy is slow but never fails; a test that fails waits this long, once
STREAMING_TIMEOUT = 240
CATCH_UP_TIMEOUT = 240
EXIT_TIMEOUT = 240


# ------------------------------------------------------------------ positions


def source_position(dsn: str) -> Lsn:
    """A position every transaction committed so far ends at or before (and flushed)."""
    from replicator.source.slot import catchup_lsn

    with psycopg.connect(dsn, autocommit=True) as c:
        return catchup_lsn(c)


def slot_row(dsn: str, slot: str = "replicator") -> Optional[dict]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        cur = c.execute(
            "SELECT slot_name, active, active_pid, confirmed_flush_lsn, restart_lsn, "
            "wal_status FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row)) if row else None


def slot_confirmed(dsn: str, slot: str = "replicator") -> Lsn:
    row = slot_row(dsn, slot)
    assert row is not None, f"slot {slot} does not exist"
    return Lsn.parse(row["confirmed_flush_lsn"])


def slots_of(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return sorted(
            r[0]
            for r in c.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
            )
        )


def target_applied(url: str, name: str = "replicator") -> Optional[Lsn]:
    """The applied LSN recorded on the target (None when the stream has no row yet)."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            v = c.execute(
                sa.text("SELECT applied_lsn FROM replicator_state_streams WHERE stream = :s"), {"s": name}
            ).scalar()
        return None if v is None else Lsn(int(v))
    finally:
        eng.dispose()


# ------------------------------------------------------------------ waiting


def wait_until(cond, timeout: float, what: str, mirror: Optional[Mirror] = None, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if mirror is not None and not mirror.alive():
            raise AssertionError(
                f"mirror exited ({mirror.proc.returncode}) while waiting for {what}:\n{mirror.tail()}"
            )
        if time.monotonic() > deadline:
            tail = f"\nmirror log:\n{mirror.tail()}" if mirror is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(every)


def wait_streaming(dsn: str, mirror: Mirror, timeout: float = STREAMING_TIMEOUT) -> None:
    """Until the mirror streams: its slot's walsender is past START_REPLICATION and caught up
    (pg_stat_replication state 'streaming'), so the copy is done.  The slot alone is no sign: its
    walsender holds it (active) from CREATE_REPLICATION_SLOT on, through the whole copy."""

    def streaming():
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
            row = c.execute(
                "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
                "WHERE s.slot_name = %s AND r.state = 'streaming'",
                (mirror.name,),
            ).fetchone()
        return row is not None

    wait_until(streaming, timeout, f"slot {mirror.name}'s walsender to be streaming", mirror)


def wait_caught_up(dsn: str, mirror: Mirror, timeout: float = CATCH_UP_TIMEOUT) -> Lsn:
    """Until the mirror confirmed everything committed on the source so far (it confirms only what
    the target committed); returns that position."""
    pos = source_position(dsn)

    def done():
        try:
            row = slot_row(dsn, mirror.name)
        except psycopg.OperationalError:
            return False
        return bool(
            row and row["confirmed_flush_lsn"] and reached(Lsn.parse(row["confirmed_flush_lsn"]), pos)
        )

    wait_until(done, timeout, f"the mirror to confirm {pos}", mirror, every=0.2)
    return pos


def catch_up_and_stop(dsn: str, mirrors: Iterable[Mirror]) -> None:
    """Each mirror streams and confirms everything committed on the source, then each stops
    cleanly (SIGTERM, exit 0): the end of a kill loop, before the comparison."""
    mirrors = list(mirrors)
    for m in mirrors:
        wait_streaming(dsn, m)
        wait_caught_up(dsn, m)
    for m in mirrors:
        assert m.stop() == 0, m.tail()


def history_count(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]


# ------------------------------------------------------------------ comparison


def compare(dsn: str, url: str, tables: Iterable[str], tally: Optional[Tally] = None) -> int:
    """Every table equal row by row (multisets: an extra or a missing row fails); returns rows."""
    n = 0
    for t in tables:
        n += assert_same(dsn, "public", t, url)
    if tally is not None:
        tally.compared(n)
    return n


def pgbench_source(dsn: str, scale: int = 1) -> None:
    """pgbench tables; history gets REPLICA IDENTITY FULL (no key: its exact row count shows any
    transaction lost or applied twice)."""
    from tests.servers import pgbench_init

    pgbench_init(dsn, scale=scale)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")


class Load:
    """pgbench tpcb-like in the background at a bounded rate until stopped.

    It runs until the test stops it: no duration, only a bound of ``transactions`` per client (so
    a test that fails to stop it does not write for ever; at the default rate the bound is many
    minutes away).  Each transaction inserts one pgbench_history row, which :meth:`more` counts.
    """

    def __init__(self, dsn: str, transactions: int = 50_000, rate: float = 150, clients: int = 2):
        from tests.servers import pgbench_run

        self.dsn = dsn
        self.proc = pgbench_run(
            dsn, transactions=transactions, clients=clients, builtin="tpcb-like", rate=rate, background=True
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def more(self, n: int = 50, mirror: Optional[Mirror] = None, timeout: float = 180) -> int:
        """Until ``n`` more load transactions have committed on the source (load happened while
        the test watched, however slow the machine); returns the history row count then."""
        want = history_count(self.dsn) + n

        def enough():
            got = history_count(self.dsn)
            if got < want and not self.running():
                raise AssertionError(
                    f"the load ended (exit {self.proc.returncode}) before {n} more "
                    f"transactions: {got} of {want} history rows\n{self.stop()}"
                )
            return got >= want and got

        return wait_until(enough, timeout, f"{n} more load transactions", mirror, every=0.1)

    def stop(self) -> str:
        """End the load (SIGINT: pgbench stops its clients; open transactions roll back); its
        output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=30)
        except ValueError:  # stopped before: its output was read then
            out = ""
        return out or ""


@contextlib.contextmanager
def under_load(dsn: str, url: str, tally, mirror_source: Optional[str] = None, rate: float = 200):
    """A mirror of ``dsn`` (reached through ``mirror_source``, e.g. a proxy) streaming into ``url``
    under pgbench load; the block injects faults.  Then: the load stops, the mirror catches up,
    stops with exit 0, and every table is compared row by row with the source."""
    m = Mirror(mirror_source or dsn, url)
    load = Load(dsn, rate=rate)
    try:
        wait_streaming(dsn, m)
        load.more(20, m)
        yield m
        load.stop()
        wait_caught_up(dsn, m)
        assert m.stop(EXIT_TIMEOUT) == 0, m.tail()
        compare(dsn, url, PGBENCH, tally)
    finally:
        load.stop()
        m.close()


def crash_and_resume(dsn: str, url: str, args: list[str], point: str, load, check) -> None:
    """A mirror (``args``) SIGKILLed at ``point`` while ``load(n)`` makes n source transactions
    (driven until the kill, with a deadline), started again under more load, caught up, then
    ``check()``ed and stopped cleanly."""

    m = Mirror(dsn, url, args=args, failpoints=point)
    try:
        wait_streaming(dsn, m)
        deadline = time.monotonic() + 180
        while m.alive() and time.monotonic() < deadline:
            load(20)
        assert m.wait(60) == -signal.SIGKILL, m.tail()
    finally:
        m.close()
    m = Mirror(dsn, url, args=args)
    try:
        wait_streaming(dsn, m)
        load(100)
        wait_caught_up(dsn, m)
        check()
        assert m.stop() == 0, m.tail()
    finally:
        m.close()
