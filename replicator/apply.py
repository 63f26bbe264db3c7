"""Apply phase: source transactions → grouped target transactions with the progress row inside.

Contracts (DESIGN.md invariants 1–3):
* A transaction whose commit record starts below the applied position (``final_lsn < applied``) was
  applied before: it is skipped whole.  Positions are commit *end* LSNs.
* A change of a table in state ``s`` is skipped when its transaction's ``final_lsn`` is below the
  table's sync LSN (the copy already holds it); at or above, it is applied.  Tables reach ``r`` once
  the applied position reaches their sync LSN.
* Several source transactions may share one target transaction; one is never split across two.  A
  huge one is flushed in chunks into the open target transaction and committed once.
* ``commit()`` writes the data, the applied end LSN and the state changes in one target
  transaction; only then may the caller confirm that LSN to the source.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from sqlalchemy.engine import Connection

from . import modes, schema_change, shadow
from .failpoints import failpoint
from .model import (
    Lsn,
    RelationInfo,
    RowChange,
    TableMapping,
    TableProgress,
    TableState,
    Truncate,
    TxBegin,
    TxCommit,
)
from .netchange import NetChanges
from .state import StateStore
from .target import mode_ops
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .source.changes import Event
    from .target.base import Target

log = logging.getLogger(__name__)


class Replayer:
    """Feeds neutral events into a Target; owns the open target transaction of the current batch."""

    def __init__(
        self,
        target: Target,
        store: StateStore,
        mappings: dict[str, TableMapping],
        progress: dict[str, TableProgress],
        applied: Lsn,
        batch_rows: int = 50_000,
        batch_seconds: float = 1.0,
        chunk_rows: int = 10_000,
        telemetry: Optional[Telemetry] = None,
        evolve: Optional[Callable[..., TableMapping]] = None,
    ):
        """``evolve(target, conn, mapping, relation, diff) -> mapping`` follows a schema change
        inside the open batch (schema_change.Follower); by default any change stops the stream.
        ``mappings`` is this stream's one copy while it runs: a schema change replaces entries."""
        self.target, self.store = target, store
        self.mappings, self.progress = mappings, progress
        self.evolve = evolve or schema_change.refuse_all
        self.applied = Lsn(applied)
        self.batch_rows, self.batch_seconds, self.chunk_rows = batch_rows, batch_seconds, chunk_rows
        self.pending: dict[str, NetChanges] = {}
        self.pending_rows = 0  # changes held in ``pending`` (after reduction)
        self.batch_seen: Counter = Counter()  # changes received per table in this batch
        self.in_tx = self.skip_tx = False
        self.tx_lsn = Lsn(0)
        self.tx_time: Optional[datetime] = None  # the commit time of the transaction being read
        self.tx_rows = 0
        self.batch_txs = self.batch_changes = 0
        self.batch_start = 0.0
        self.last_end: Optional[Lsn] = None
        self.last_commit_time: Optional[datetime] = None
        self.conn: Optional[Connection] = None
        self._stack: Optional[contextlib.ExitStack] = None
        self.total_changes = 0
        self.telemetry = telemetry or Telemetry()
        self.batch_tables: Counter = Counter()
        self.resync_pending = False
        #: the mappings of tables in state r: ``wanted`` gives them for every applied transaction
        #: (cleared when a mapping or a state changes other than to r)
        self._ready_maps: dict[str, TableMapping] = {}

    # ------------------------------------------------------------ events
    def handle(self, ev: Event) -> None:
        """One event of the stream, in order (dispatched on its type: the hot path)."""
        if type(ev) is RowChange:
            self.on_change(ev)
        elif type(ev) is TxBegin:
            self.on_begin(ev)
        elif type(ev) is TxCommit:
            self.on_commit(ev)
        elif type(ev) is Truncate:
            self.on_truncate(ev)
        elif type(ev) is RelationInfo:
            self.on_relation(ev)

    def on_begin(self, ev: TxBegin) -> None:
        self.in_tx, self.tx_lsn, self.tx_rows, self.tx_time = True, ev.final_lsn, 0, ev.commit_time
        self.skip_tx = ev.final_lsn < self.applied
        if not self.batch_txs:
            self.batch_start = time.monotonic()

    def wanted(self, table: str) -> Optional[TableMapping]:
        """The mapping when this table's change at the current transaction must be applied."""
        if self.skip_tx:
            return None
        p = self.progress.get(table)
        if p is None or p.state in (TableState.INIT, TableState.DATASYNC):
            return None
        if p.state is TableState.SYNCDONE and self.tx_lsn < p.sync_lsn:
            return None
        return self.mappings.get(table)

    def on_change(self, ch: RowChange) -> None:
        """Fold a change into its table's net changes; flush when ``chunk_rows`` are held."""
        table = ch.table
        m = self._ready_maps.get(table)
        if m is None or self.skip_tx:
            m = self.wanted(table)
            if m is None:
                return
            if self.progress[table].state is TableState.READY:
                self._ready_maps[table] = m
        net = self.pending.get(table)
        if net is None:
            names = m.view.column_names
            net = self.pending[table] = NetChanges([names.index(k) for k in m.view.key])
        if m.mode is None:
            self.pending_rows += net.add(ch)
        else:  # what the mode makes of it (modes.py), folded the same way
            for v in modes.changed(m, ch, self.tx_time, self.tx_rows):
                self.pending_rows += net.add(v)
        self.batch_seen[table] += 1
        self.tx_rows += 1
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def on_truncate(self, ev: Truncate) -> None:
        ms = [m for m in (self.wanted(t) for t in ev.tables) if m is not None]
        if ms:
            self.flush()
            conn = self.open()  # re-reads the states: a table set back by resync is skipped now
            ms = [m for m in ms if self.wanted(m.label) is not None]
            plain = [m for m in ms if m.mode is None]
            if plain:
                self.target.truncate(conn, plain)
            for m in ms:
                if m.mode is not None:  # marks or tombstones (target/mode_ops.py)
                    mode_ops.truncate(self.target, conn, m, self.tx_lsn, self.tx_time, self.tx_rows)
            self.tx_rows += 1

    def on_relation(self, ev: RelationInfo) -> None:
        """A table's columns as the source now has them: adapt the target (schema_change.py)."""
        m = self.wanted(ev.table)
        if m is None:
            return  # skipped transaction or table: what the target has is not touched
        d = schema_change.diff(m.source_table, ev)
        if not d:
            return
        self.flush()  # pending changes of this batch use the old column layout
        conn = self.open()
        if self.wanted(ev.table) is None:  # set back by resync (states re-read by open)
            return
        self.mappings[ev.table] = self.evolve(self.target, conn, m, ev, d)
        self._ready_maps.clear()

    def on_commit(self, ev: TxCommit) -> None:
        self.in_tx = False
        if self.skip_tx:
            self.skip_tx = False
            return
        self.last_end, self.last_commit_time = ev.end_lsn, ev.commit_time
        self.batch_txs += 1
        self.batch_changes += self.tx_rows

    # ------------------------------------------------------------ target transaction
    def open(self) -> Connection:
        """The open target connection of this batch (opened on first use).

        Table states are read again in this transaction: a table that ``replicator resync`` set
        back to i/d is skipped from now on, and ``resync_pending`` asks the caller to re-copy it."""
        if self.conn is None:
            self._stack = contextlib.ExitStack()
            self.conn = self._stack.enter_context(self.target.connect())
            self._reread_states(self.conn)
        return self.conn

    def _reread_states(self, conn: Connection) -> None:
        for label, p in self.store.load_tables(conn).items():
            mine = self.progress.get(label)
            if (
                mine is not None
                and p.state in (TableState.INIT, TableState.DATASYNC)
                and mine.state not in (TableState.INIT, TableState.DATASYNC)
            ):
                log.info(
                    "%s was set back to '%s' (resync): its changes are skipped until it is copied again",
                    label,
                    p.state.value,
                )
                mine.state = p.state
                self._ready_maps.clear()
                self.pending.pop(label, None)
                self.resync_pending = True
        self.pending_rows = sum(len(v) for v in self.pending.values())

    def flush(self) -> None:
        """Apply pending changes into the open target transaction (no commit)."""
        if not self.pending:
            return
        conn = self.open()
        for table, net in self.pending.items():
            m = self.mappings[table]
            if m.mode is None:
                self.target.apply(conn, m, net.drain())
            else:
                mode_ops.apply(self.target, conn, m, net.drain())
        self.batch_tables.update(self.batch_seen)
        self.total_changes += sum(self.batch_seen.values())
        self.batch_seen.clear()
        self.pending.clear()
        self.pending_rows = 0

    def due(self) -> bool:
        """A batch should be committed now (only ever true between source transactions)."""
        if self.in_tx or not self.batch_txs:
            return False
        return (
            self.batch_changes + self.pending_rows >= self.batch_rows
            or time.monotonic() - self.batch_start >= self.batch_seconds
        )

    def caught_up_due(self, seconds: float) -> bool:
        """Between source transactions, a batch at least ``seconds`` old is waiting."""
        return not self.in_tx and bool(self.batch_txs) and time.monotonic() - self.batch_start >= seconds

    def commit(self) -> Optional[Lsn]:
        """Commit the batch with its progress row; returns the new applied LSN (None: nothing)."""
        if self.in_tx or not self.batch_txs:
            return None
        self.flush()
        assert self.last_end is not None  # set by the batch's first commit
        conn = self.open()
        self.store.set_applied(conn, self.last_end, self.last_commit_time)
        ready = self._ready(self.last_end)
        self.store.mark_ready(conn, ready)
        failpoint("apply.before_commit")
        self.close(commit=True)
        failpoint("apply.committed")
        for t in ready:
            self.progress[t].state = TableState.READY
        self.applied = self.last_end
        ct = self.last_commit_time.timestamp() if self.last_commit_time else None
        self.telemetry.batch_committed(
            sum(self.batch_tables.values()),
            self.batch_txs,
            time.monotonic() - self.batch_start,
            int(self.applied),
            ct,
            dict(self.batch_tables),
        )
        for t in ready:
            self.telemetry.table(t).state = "r"
        self.batch_tables.clear()
        self.batch_txs = self.batch_changes = 0
        self._swap_in(ready)
        return self.applied

    def advance_idle(self, position: Lsn) -> None:
        """With nothing pending, record ``position`` (the server's WAL end) as applied, and make
        tables whose sync LSN it reached ready, in one target transaction; only then may the
        caller confirm it (follow.py)."""
        if self.in_tx or self.batch_txs or position < self.applied:
            return
        ready = self._ready(position)
        if position == self.applied and not ready:
            return
        conn = self.open()
        self.store.mark_ready(conn, ready)
        self.store.set_applied(conn, position, self.last_commit_time)
        self.close(commit=True)
        for t in ready:
            self.progress[t].state = TableState.READY
            self.telemetry.table(t).state = "r"
        self.applied = Lsn(position)
        self.telemetry.applied_lsn = int(position)
        self._swap_in(ready)

    def _swap_in(self, ready: list[str]) -> None:
        """Tables re-synced beside their live copy take its place once ``ready`` is committed
        (shadow.py; no batch is open here)."""
        if ready and shadow.swap_ready(
            self.target, self.store, self.mappings, self.progress, ready, self.telemetry
        ):
            self._ready_maps.clear()

    def would_ready(self, position: Lsn) -> bool:
        """Some table in ``s`` has its sync LSN at or below ``position`` (at or past the applied
        position).  A table whose sync LSN equals the applied position is ready at once: every
        transaction still to come commits after it, so ``s`` and ``r`` treat them alike (on a
        quiet source the walsender's position stays at the slot's start, which is the copy's
        sync LSN, until the server writes WAL again: up to 15 s, or never)."""
        return position >= self.applied and bool(self._ready(position))

    def _ready(self, position: Lsn) -> list[str]:
        return [
            t for t, p in self.progress.items() if p.state is TableState.SYNCDONE and p.sync_lsn <= position
        ]

    def close(self, commit: bool = False) -> None:
        """End the open target transaction: commit, or roll back (commit=False)."""
        stack, self._stack, self.conn = self._stack, None, None
        if stack is None:
            return
        if commit:
            stack.close()
        else:
            stack.__exit__(RuntimeError, RuntimeError("rolled back"), None)
        if not commit:
            self.batch_tables.clear()
            self.batch_seen.clear()
            self.pending.clear()
            self.pending_rows = 0
            self.batch_txs = self.batch_changes = 0
