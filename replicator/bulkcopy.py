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

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Optional

import psycopg

from . import copyplan, modes, retry, schema_change, stopping
from .dsn import redact
from .errors import ReplicatorError, SourceError, TargetError, TransientError
from .failpoints import failpoint
from .model import Lsn, TableMapping, TableState
from .source import snapshot
from .state import StateStore
from .telemetry import Telemetry

log = logging.getLogger(__name__)
COPY_MEMORY = 32 << 20  # COPY chunk bytes shared out among the workers (see chunk_bytes)


class CopyStats:
    """Rows and seconds per table (thread-safe enough: one writer per table)."""

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


class CopyAborted(Exception):
    """Another worker failed, or a stop was requested: this table's copy ends unfinished."""


def _watch(fig, abort: threading.Event, lines: bool = True) -> Callable[[object], None]:
    """The copy's watcher: keeps the table's progress figures current (rows counted by line
    ends unless the output is binary: ``lines`` False, bytes only), and ends the copy at an
    abort (another worker failed, or a stop was requested)."""

    def seen(item) -> None:
        failpoint("copy.chunk", fig.source)
        if abort.is_set():
            raise CopyAborted(fig.source)
        if isinstance(item, (bytes, bytearray)):
            fig.bytes_copied += len(item)
            fig.rows_copied += item.count(b"\n") if lines else 0
        else:
            fig.rows_copied += len(item)  # type: ignore[arg-type]

    return seen


def _named(e: BaseException, m: TableMapping, where: str, target) -> BaseException:
    """A driver error that names no table gets the table, keeping whether it is worth a retry."""
    if isinstance(e, (SourceError, TransientError)) and m.label not in str(e):
        return type(e)(f"{where} {m.label}: {e}")  # the fast reader's errors name no table
    if isinstance(e, (ReplicatorError, CopyAborted)) or not isinstance(e, Exception):
        return e
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = f"{where} {m.label}: {redact(first)}"
    if retry.is_transient(e, target):
        return TransientError(msg)
    return (SourceError if isinstance(e, psycopg.Error) else TargetError)(msg)


@dataclass
class _Copy:
    """What every copy worker shares: the target, the state store, the sync LSN, the figures
    and the abort flag."""

    target: Any
    store: StateStore
    sync_lsn: Lsn
    stats: CopyStats
    telemetry: Telemetry
    abort: threading.Event
    chunk: int = snapshot.CHUNK_BYTES

    def piece(self, sc, p: copyplan.Piece) -> None:
        """Copy work item ``p`` at the worker's snapshot session ``sc``."""
        failpoint("copy.table", p.m.label)
        if p.split is None:
            self.whole(sc, p.m)
        else:
            self.part(sc, p, p.split)

    def whole(self, sc, m: TableMapping) -> None:
        """State ``d`` committed first, then in ONE target transaction the rows cleared, loaded
        and state ``s`` (sync LSN, row count) written.  Errors name the table (:func:`_named`)."""
        t0, fig = time.monotonic(), self.figures(sc, m)
        self.label(sc, m)
        with self.target.connect() as conn:
            self.store.set_table(conn, m.label, self.target.display(m), TableState.DATASYNC)
        q = snapshot.copy_select(m.source_table, self.expressions(m), m.where)
        with self.target.connect() as conn:
            self.target.clear(conn, m)
            fig.rows_copied = fig.bytes_copied = 0
            n = _load(sc, self.target, conn, m, q, _watch(fig, self.abort, self.lines(m)), self.chunk)
            failpoint("copy.loaded", m.label)
            self.target.finish_copy(conn, m)
            self.synced(conn, m, n)
        self.done(m, fig, n, t0)

    def part(self, sc, p: copyplan.Piece, split: copyplan.SplitTable) -> None:
        """One ctid-range piece of a split table (``copyplan``): the first piece commits state
        ``d`` and the clearing; each piece loads in its own transaction; the piece that completes
        the set finishes the table and writes ``s`` with the summed count."""
        m = p.m
        split.start(lambda: self.begin_split(sc, m, split), self.abort.is_set)
        self.label(sc, m)
        q = snapshot.piece_select(m.source_table, self.expressions(m), m.where, p.lo, p.hi, p.rel)
        with self.target.connect() as conn:
            watch = _watch(split.figures, self.abort, self.lines(m))
            n = _load(sc, self.target, conn, m, q, watch, self.chunk)
            failpoint("copy.piece", m.label)
        log.debug("copied %s pages %d–%s: %d rows", m.label, p.lo, p.hi or "end", n)
        if split.finished(n):
            with self.target.connect() as conn:
                self.target.finish_copy(conn, m)
                self.synced(conn, m, split.rows)
            self.done(m, split.figures, split.rows, split.started)

    def expressions(self, m: TableMapping) -> list[str]:
        """The copy's column expressions, a mode's constants given the sync LSN (modes.py)."""
        lsn = str(int(self.sync_lsn))
        return [e.replace(modes.SYNC_LSN, lsn) for e in self.target.copy_expressions(m)]

    def begin_split(self, sc, m: TableMapping, split: copyplan.SplitTable) -> None:
        split.started, split.figures = time.monotonic(), self.figures(sc, m)
        with self.target.connect() as conn:
            self.store.set_table(conn, m.label, self.target.display(m), TableState.DATASYNC)
            self.target.clear(conn, m)
        split.figures.rows_copied = split.figures.bytes_copied = 0

    def synced(self, conn, m: TableMapping, n: int) -> None:
        """State ``s``: the sync LSN and the row count, in the caller's transaction."""
        self.store.set_table(
            conn,
            m.label,
            self.target.display(m),
            TableState.SYNCDONE,
            self.sync_lsn,
            n,
            layout=schema_change.layout_of(m),
        )

    def done(self, m: TableMapping, fig, n: int, t0: float) -> None:
        """Table ``m`` is in ``s``: ``n`` rows since ``t0`` (its first piece's start)."""
        seconds = self.stats.seconds[m.label] = time.monotonic() - t0
        self.stats.rows[m.label] = n
        fig.state, fig.rows_copied = "s", n
        log.info("copied %s → %s: %d rows in %.1fs", m.label, self.target.display(m), n, seconds)

    def figures(self, sc, m: TableMapping):
        """The table's progress figures, started (state ``d``, the source's row estimate).  For
        a split table they count the rows of all its pieces (updated from several threads: a
        lost increment only delays the figure until the table is done)."""
        fig = self.telemetry.table(m.label)
        fig.target, fig.state, fig.copy_started = self.target.display(m), "d", time.time()
        fig.rows_estimate = sc.row_estimate(m.source_table)
        return fig

    def lines(self, m: TableMapping) -> bool:
        """Whether the copy output of ``m`` is text, one row per line (not binary)."""
        return "binary" not in self.target.copy_format(m).lower()

    def label(self, sc, m: TableMapping) -> None:
        """Label the worker's source session with the table (status reads it)."""
        sc.label(f"replicator {self.telemetry.name} copy {m.label}")


def chunk_bytes(jobs: int) -> int:
    """COPY chunk size for ``jobs`` workers: 8 MB, less with many workers, so that what the
    workers hold in memory (a few chunks each) stays about the same whatever their number."""
    return max(1 << 20, min(snapshot.CHUNK_BYTES, COPY_MEMORY // max(1, jobs)))


def _load(sc, target, conn, m: TableMapping, select, watch: Callable[[object], None], chunk: int) -> int:
    """Rows ``target.load_copy`` loaded on ``conn`` from the source COPY of ``select`` on the
    snapshot session ``sc``, in chunks of about ``chunk`` bytes.  On any failure the source COPY
    is cancelled first (the worker's connection is free at once), and the error is raised naming
    the table."""
    out = sc.copy_out(select, target.copy_format(m), chunk, watch)
    try:
        return target.load_copy(conn, m, out)
    except BaseException as e:
        out.close()  # cancels the source COPY: the worker's connection is free at once
        raise _named(e, m, f"copying {target.display(m)} from", target) from e


class _Workers:
    """The copy workers' shared state: the work queue, the abort flag, the first error, and the
    source connections a supervisor cancels when a worker fails or a stop is requested."""

    def __init__(self) -> None:
        self.work: queue.Queue[copyplan.Piece] = queue.Queue()
        self.abort = threading.Event()
        self.errors: list[BaseException] = []
        self.active: dict[int, Any] = {}  # thread → its snapshot session
        self.lock = threading.Lock()

    def fill(self, items: Sequence[copyplan.Piece]) -> None:
        for p in items:
            self.work.put(p)

    def failed(self, e: BaseException) -> None:
        with self.lock:
            if not isinstance(e, (CopyAborted, threading.BrokenBarrierError)) and not self.abort.is_set():
                self.errors.append(e)
        self.stop_all()

    def stop_all(self) -> None:
        """Abort every worker: flag it, and cancel source COPYs that may be waiting for data."""
        self.abort.set()
        with self.lock:
            conns = list(self.active.values())
        for sc in conns:
            with contextlib.suppress(Exception):
                sc.cancel()

    def supervise(self, futures) -> None:
        """Wait for the workers, aborting them all at the first error or stop request."""
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=0.5)
            if stopping.requested() and not self.abort.is_set():
                log.warning("stop requested: cancelling the copy")
                self.stop_all()


def copy_tables(
    dsn: str,
    target,
    store: StateStore,
    mappings: Sequence[TableMapping],
    snapshot_name: Optional[str],
    sync_lsn: Lsn,
    jobs: int = 2,
    imported: Optional[Callable[[], None]] = None,
    telemetry: Optional[Telemetry] = None,
) -> CopyStats:
    """Copy ``mappings`` at ``snapshot_name`` with ``jobs`` workers; ``imported`` fires once every
    worker holds the snapshot (the exporting connection may be used again after that).

    The first failure of any worker (source, target, or a stop request) cancels every source COPY
    and rolls back every open target load within seconds; it is raised naming its table."""
    stats = CopyStats()
    telemetry = telemetry or Telemetry()
    shared = _Workers()
    n = max(1, jobs)
    copier = _Copy(target, store, sync_lsn, stats, telemetry, shared.abort, chunk_bytes(n))
    size = copyplan.piece_pages()

    def planned() -> None:  # once every worker holds the snapshot
        shared.fill(copyplan.plan(next(iter(shared.active.values())), mappings, size, n))
        if imported is not None:
            imported()

    def connect():
        return snapshot.open_session(dsn, snapshot_name)

    barrier = threading.Barrier(n, action=planned)
    with target.held(), ThreadPoolExecutor(n, thread_name_prefix="copy") as pool:
        shared.supervise([pool.submit(_work, shared, barrier, connect, copier.piece) for _ in range(n)])
    if shared.errors:
        raise shared.errors[0]
    stopping.check("copying tables")
    if shared.abort.is_set():
        raise TargetError("the copy was aborted")  # a worker failed without a reportable error
    return stats


def _work(
    shared: _Workers,
    barrier: threading.Barrier,
    connect: Callable[[], Any],
    copy: Callable[[Any, copyplan.Piece], None],
) -> None:
    """One copy worker: open its snapshot session (``connect``), wait at ``barrier`` until every
    worker holds the snapshot (its action plans the work), then ``copy`` items from the queue
    (:func:`_drain`).  Its session is registered in ``shared.active`` (for planning and
    cancelling) and closed at the end; any failure aborts the others."""
    try:
        sc = connect()
    except BaseException as e:
        barrier.abort()
        shared.failed(e)
        raise
    try:
        with shared.lock:
            shared.active[threading.get_ident()] = sc
        barrier.wait()
        _drain(shared, lambda p: copy(sc, p))
    except BaseException as e:  # noqa: BLE001  (the planning failed, or the barrier broke)
        shared.failed(e)
    finally:
        with shared.lock:
            shared.active.pop(threading.get_ident(), None)
        with contextlib.suppress(Exception):
            sc.close()


def _drain(shared: _Workers, copy: Callable[[copyplan.Piece], None]) -> None:
    """Copy items from the queue until it is empty or the copy is aborted."""
    while not shared.abort.is_set():
        try:
            p = shared.work.get_nowait()
        except queue.Empty:
            return
        try:
            copy(p)
        except BaseException as e:  # noqa: BLE001  (any failure aborts the other workers, then is raised)
            shared.failed(e)
            return
