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
from dataclasses import dataclass
from typing import Optional

import psycopg

from . import bulkcopy
from .errors import ConfigError, ReplicatorError
from .model import Lsn, TableMapping, TableState
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
       now()
"""
STANDBY_HINT = (
    "the source is a standby and cancelled the copy's query to replay WAL: set "
    "hot_standby_feedback = on (or raise max_standby_streaming_delay) on the standby and copy again"
)


class NoState:
    """The state store of a snapshot-only copy: it records nothing (see the module contract)."""

    def set_table(
        self,
        conn: object,
        source: str,
        target: str,
        state: TableState,
        sync_lsn: Optional[int] = None,
        rows_copied: Optional[int] = None,
        layout: Optional[str] = None,
    ) -> None:
        return None


@dataclass
class Snapshot:
    """The exported snapshot every table is copied at."""

    name: str
    standby: bool  # exported on a hot standby
    lsn: Lsn  # the WAL position it sees (on a standby: replayed up to)
    taken: dt.datetime  # the source's clock when it was taken


@dataclass
class CopySummary(Summary):
    snapshot: Optional[Snapshot] = None


def export(conn: psycopg.Connection) -> Snapshot:
    """Open a REPEATABLE READ, READ ONLY transaction on ``conn`` and export its snapshot; the
    snapshot is importable while that transaction stays open (keep ``conn`` idle)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    row = conn.execute(EXPORT_SQL).fetchone()
    assert row is not None
    name, standby, lsn, taken = row
    return Snapshot(name, bool(standby), Lsn.parse(str(lsn)), taken)


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
                stats = self._copy(snap)
                copy_seconds = time.monotonic() - t_copy
        return CopySummary(
            tables=len(self.mappings),
            rows_copied=stats.total_rows,
            seconds=time.monotonic() - t0,
            copy_seconds=copy_seconds,
            counts=dict(stats.rows),
            applied_lsn=snap.lsn,
            snapshot=snap,
        )

    def _copy(self, snap: Snapshot) -> bulkcopy.CopyStats:
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
                telemetry=self.telemetry,
            )
        except BaseException as e:
            self._say_unfinished(e, snap)
            raise

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

    def _say_unfinished(self, e: BaseException, snap: Snapshot) -> None:
        """Add to a failure's message which tables were not finished (and the standby hint)."""
        done = {m.label for m in self.mappings if self.telemetry.table(m.label).state == "s"}
        todo = [m.label for m in self.mappings if m.label not in done]
        note = (
            f"not finished: {', '.join(todo)} (may hold part of their rows; copying again clears "
            f"and copies them anew)"
            if todo
            else ""
        )
        if snap.standby and "conflict with recovery" in str(e):
            note = f"{STANDBY_HINT}; {note}" if note else STANDBY_HINT
        if not note:
            return
        log.warning("%s", note)
        if isinstance(e, ReplicatorError) and e.args:
            e.args = (f"{e.args[0]}; {note}",) + e.args[1:]
