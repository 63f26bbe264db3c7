"""Snapshot copy phase: N workers import one exported snapshot and bulk-load tables into the target.

Contracts:
* Every worker imports the snapshot before the first table is copied; the caller keeps the
  exporting replication connection idle until :func:`copy_tables` returns.
* Per table: state ``d`` is committed first; then, in ONE target transaction, the table's target
  rows are cleared, the rows loaded, and state ``s`` with the sync LSN and row count written.  A
  crash mid-table therefore leaves ``d`` and the table is copied again from a fresh snapshot.
* Bytes move straight from COPY to the target's loader in bounded chunks.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, Sequence

from . import schema_change
from .failpoints import failpoint
from .model import Lsn, TableMapping, TableState
from .source import snapshot
from .state import StateStore
from .telemetry import Telemetry

log = logging.getLogger(__name__)


class CopyStats:
    """Rows and seconds per table (thread-safe enough: one writer per table)."""

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _counted(data: Iterable, fig, bytes_mode: bool) -> Iterator:
    """Pass chunks through, keeping the table's copy progress figures current."""
    rows = nbytes = 0
    for chunk in data:
        failpoint("copy.chunk", fig.source)
        if bytes_mode:
            nbytes += len(chunk)
            rows += chunk.count(b"\n")
        else:
            rows += len(chunk)
        fig.rows_copied, fig.bytes_copied = rows, nbytes
        yield chunk


def _copy_one(sc, target, store: StateStore, m: TableMapping, sync_lsn: Lsn, stats: CopyStats,
              telemetry: Telemetry) -> None:
    t0 = time.monotonic()
    fig = telemetry.table(m.label)
    fig.target, fig.state, fig.copy_started = target.display(m), "d", time.time()
    fig.rows_estimate = snapshot.row_estimate(sc, m.source_table)
    snapshot.label_session(sc, f"replicator {telemetry.name} copy {m.label}")  # for status
    with target.connect() as conn:
        store.set_table(conn, m.label, target.display(m), TableState.DATASYNC)
    q = snapshot.copy_query(m.source_table, target.copy_expressions(m), target.copy_options, m.where)
    with target.connect() as conn:
        target.clear(conn, m)
        bytes_mode = target.copy_mode == "bytes"
        data = snapshot.copy_bytes(sc, q) if bytes_mode else snapshot.copy_rows(sc, q)
        n = target.load_copy(conn, m, _counted(data, fig, bytes_mode))
        failpoint("copy.loaded", m.label)
        store.set_table(conn, m.label, target.display(m), TableState.SYNCDONE, sync_lsn, n,
                        layout=schema_change.layout_of(m))
    stats.rows[m.label] = n
    stats.seconds[m.label] = time.monotonic() - t0
    fig.state, fig.rows_copied = "s", n
    log.info("copied %s → %s: %d rows in %.1fs", m.label, target.display(m), n, stats.seconds[m.label])


def copy_tables(dsn: str, target, store: StateStore, mappings: Sequence[TableMapping],
                snapshot_name: Optional[str], sync_lsn: Lsn, jobs: int = 2,
                imported: Optional[Callable[[], None]] = None,
                telemetry: Optional[Telemetry] = None) -> CopyStats:
    """Copy ``mappings`` at ``snapshot_name`` with ``jobs`` workers; ``imported`` fires once every
    worker holds the snapshot (the exporting connection may be used again after that)."""
    stats = CopyStats()
    telemetry = telemetry or Telemetry()
    work: "queue.Queue[TableMapping]" = queue.Queue()
    for m in mappings:
        work.put(m)
    n = max(1, min(jobs, len(mappings)))
    barrier = threading.Barrier(n, action=imported)

    def worker() -> None:
        sc = None
        try:
            sc = snapshot.snapshot_connection(dsn, snapshot_name)
        finally:
            barrier.wait() if sc is not None else barrier.abort()
        with sc:
            while True:
                try:
                    m = work.get_nowait()
                except queue.Empty:
                    return
                _copy_one(sc, target, store, m, sync_lsn, stats, telemetry)

    with ThreadPoolExecutor(n, thread_name_prefix="copy") as pool:
        futures = [pool.submit(worker) for _ in range(n)]
        errors = [f.exception() for f in futures]
    real = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if real or any(errors):
        raise (real or [e for e in errors if e])[0]
    return stats
