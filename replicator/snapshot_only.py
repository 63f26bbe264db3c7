"""Snapshot-only copy (``replicator copy``, ``migrate --snapshot-only``): every selected table
from one consistent snapshot of the source, then stop.

Contracts:
* Nothing is created on the source: no slot, no publication, no replication connection.  A role
  with SELECT on the tables is enough, tables need no key or replica identity, and a hot standby
  works (snapshots can be exported there since PostgreSQL 10).
* One snapshot: a REPEATABLE READ, READ ONLY transaction exports it (``pg_export_snapshot``) and
  stays open until the copy ends, so every table is as of one instant.  Changes committed after
  it are not copied; the summary says so.
* The target gets the tables' rows and nothing else (no state tables).  Each table is cleared
  and loaded in one target transaction (bulkcopy.py), except a large table split into ctid pieces
  (several workers), whose pieces commit one by one: a failed or stopped run names every table it
  did not finish, and running the copy again clears and copies them anew.
* Config, mapping and target-name errors, and target tables that a stream on this target
  replicates (copying would overwrite a mirror's rows behind its back), are raised before
  anything is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import psycopg

from . import bulkcopy
from .dsn import redact
from .errors import ConfigError, ReplicatorError, SourceError
from .model import Lsn, TableMapping
from .options import Options, Summary, validate
from .planner import Planner
from .source import snapshot
from .state import StateStore
from .target import open_target
from .telemetry import Telemetry

log = logging.getLogger(__name__)

EXPORT_SQL = """
SELECT pg_export_snapshot(), pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
       now(), ({conflicts})
"""
#: queries a standby cancelled in this database so far, to replay WAL (a primary has none)
CONFLICTS_SQL = """
SELECT coalesce(sum(confl_tablespace + confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock), 0)
FROM pg_stat_database_conflicts WHERE datname = current_database()
"""
STANDBY_HINT = (
    "the source is a standby and cancelled the copy's query to replay WAL: set "
    "hot_standby_feedback = on (or raise max_standby_streaming_delay) on the standby and copy again"
)


class NoState(StateStore):
    """The state store of a snapshot-only copy: it records nothing (see the module contract)."""

    def __init__(self) -> None:
        super().__init__("copy")

    def set_table(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Snapshot:
    """The exported snapshot every table is copied at."""

    name: str
    standby: bool  # exported on a hot standby
    lsn: Lsn  # the WAL position it sees (on a standby: replayed up to)
    taken: dt.datetime  # the source's clock when it was taken
    conflicts: int = 0  # recovery conflicts of the database so far (CONFLICTS_SQL)


@dataclass
class CopySummary(Summary):
    snapshot: Optional[Snapshot] = None


def export(conn: psycopg.Connection) -> Snapshot:
    """Open a REPEATABLE READ, READ ONLY transaction on ``conn`` and export its snapshot; the
    snapshot is importable while that transaction stays open (keep ``conn`` idle)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    row = conn.execute(EXPORT_SQL.format(conflicts=CONFLICTS_SQL)).fetchone()
    assert row is not None
    name, standby, lsn, taken, conflicts = row
    return Snapshot(name, bool(standby), Lsn.parse(str(lsn)), taken, int(conflicts))


class SnapshotCopy:
    """Copies ``opts``' tables from one snapshot (:meth:`run`); ``telemetry`` and ``mappings``
    are read by the progress display and the metrics endpoint (watch.py) as for a Pipeline."""

    slot = None  # no replication slot to watch

    def __init__(self, opts: Options):
        opts.snapshot_only = True
        validate(opts)
        self.opts = opts
        self.target = open_target(opts.target)
        self.telemetry = Telemetry(opts.name)
        self.mappings: list[TableMapping] = []
        self.planner = Planner(opts, self.target, StateStore(opts.name))

    def run(self) -> CopySummary:
        """Plan, refuse replicated target tables, export a snapshot, copy every table at it."""
        t0 = time.monotonic()
        with self.target.held():
            self.mappings = self.planner.plan()
            self._refuse_replicated()
            snap, stats, copy_seconds = self._at_snapshot()
        return CopySummary(
            tables=len(self.mappings),
            rows_copied=stats.total_rows,
            seconds=time.monotonic() - t0,
            copy_seconds=copy_seconds,
            counts=dict(stats.rows),
            applied_lsn=snap.lsn,
            snapshot=snap,
        )

    def _at_snapshot(self) -> tuple[Snapshot, bulkcopy.CopyStats, float]:
        """Export the snapshot and copy every table at it; the exporting transaction ends as
        soon as every worker holds the snapshot (a standby then has one session less to cancel)."""
        with snapshot.connect(self.opts.source) as src:
            snap = export(src)
            log.info(
                "copying %d table(s) at snapshot %s of the %s (%s)",
                len(self.mappings),
                snap.name,
                "standby" if snap.standby else "source",
                snap.lsn,
            )
            t_copy = time.monotonic()
            stats = self._copy(snap, release=src.rollback)
            return snap, stats, time.monotonic() - t_copy

    def _copy(self, snap: Snapshot, release: Callable[[], None]) -> bulkcopy.CopyStats:
        """Create the missing target tables, copy them all; ``release`` ends the exporting
        transaction once every worker imported the snapshot.  A failure names the tables not
        finished (and, on a standby that cancelled the copy, the settings that prevent it)."""
        with self.target.connect() as c:
            for m in self.mappings:
                self.target.ensure_table(c, m)
        try:
            return bulkcopy.copy_tables(
                self.opts.source,
                self.target,
                NoState(),
                self.mappings,
                snap.name,
                snap.lsn,
                self.opts.jobs,
                imported=release,
                telemetry=self.telemetry,
            )
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise self._explained(SourceError(f"copying from the source: {redact(first)}"), snap) from e
        except BaseException as e:  # noqa: BLE001  (explained, then raised as it was)
            raise self._explained(e, snap) from None

    def _refuse_replicated(self) -> None:
        """A target table that a stream on this target replicates is not ours to overwrite."""
        with self.target.connect(readonly=True) as c:
            taken = StateStore(self.opts.name).replicated_targets(c)
        for m in self.mappings:
            stream = taken.get(self.target.display(m).lower())
            if stream is not None:
                raise ConfigError(
                    f"target table {self.target.display(m)} is replicated by stream {stream!r} on "
                    f"this target: a copy would overwrite its rows behind the mirror's back; copy "
                    f"into another target (or --mapping with other target names), or remove the "
                    f"stream first ('replicator drop --name {stream}')"
                )

    def _cancelled_since(self, snap: Snapshot, wait: float = 2.0) -> bool:
        """Whether the standby cancelled queries of this database since ``snap`` was taken (a
        cancelled session may report it a moment after it ended; a source that cannot be asked
        says no)."""
        deadline = time.monotonic() + wait
        try:
            with snapshot.connect(self.opts.source, autocommit=True) as c:
                while True:
                    row = c.execute(CONFLICTS_SQL).fetchone()
                    if (row and int(row[0]) > snap.conflicts) or time.monotonic() > deadline:
                        return bool(row and int(row[0]) > snap.conflicts)
                    time.sleep(0.2)
        except (ReplicatorError, psycopg.Error):
            return False

    def _explained(self, e: BaseException, snap: Snapshot) -> BaseException:
        """``e`` with which tables were not finished (and the standby hint) added to its message."""
        done = {m.label for m in self.mappings if self.telemetry.table(m.label).state == "s"}
        todo = [m.label for m in self.mappings if m.label not in done]
        note = (
            f"not finished: {', '.join(todo)} (may hold part of their rows; copying again clears "
            f"and copies them anew)"
            if todo
            else ""
        )
        if snap.standby and ("conflict with recovery" in str(e) or self._cancelled_since(snap)):
            note = f"{STANDBY_HINT}; {note}" if note else STANDBY_HINT
        if note:
            log.warning("%s", note)
            if isinstance(e, ReplicatorError) and e.args:
                e.args = (f"{e.args[0]}; {note}",) + e.args[1:]
        return e
