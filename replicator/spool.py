"""Spool of streamed in-progress transactions (pgoutput protocol 2, issue 16).

The source streams a large transaction while it runs, in blocks (StreamStart … StreamStop)
interleaved with other transactions; nothing of it may be applied before its StreamCommit.  Its
changes go to a file per transaction in the spool directory, and are replayed at StreamCommit as
one ordinary source transaction (TxBegin at the commit LSN, the changes, TxCommit at the end LSN)
through the same Replayer as any other: net-change reduction, chunked flushes inside one open
target transaction, the applied LSN in the same target commit, exactly once.

Contracts:
* Memory is bounded: changes are written in pickled chunks of at most ``CHUNK_EVENTS`` changes;
  the replay reads one chunk at a time.  The spool's total size is bounded by ``limit_bytes``
  (SpoolFull names the transaction and the option).
* StreamAbort of the whole transaction removes its file; of a subtransaction, it cuts the file at
  the first change tagged with that subxid (as PostgreSQL's own apply worker does: only that
  subtransaction and the ones nested in it have changes after that point).
* A spool never outlives the process's stream: :meth:`Spool.clear` at the start of every stream
  removes what a previous process left (the source streams those transactions again, from their
  first block, because nothing past a spooled change was confirmed as applied).
* Two threads: the receiving thread writes blocks (:meth:`start`, :meth:`add`, :meth:`stop`,
  :meth:`abort`), the applier replays committed transactions (:meth:`replay`) and reads the
  figures; a transaction is replayed only after its last block was written (its StreamCommit
  comes after its last StreamStop), and the table of transactions is changed under a lock.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from .errors import ReplicatorError
from .failpoints import failpoint
from .model import ChangeKind, Lsn, RowChange, StreamAbort, StreamCommit, StreamStart, TxBegin, TxCommit

log = logging.getLogger(__name__)

CHUNK_EVENTS = 2000
KINDS = (ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE)
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}


class SpoolFull(ReplicatorError):
    """The spooled in-progress transactions outgrew ``--spool-limit``."""


@dataclass
class _Tx:
    """One streamed transaction's spool file, its unwritten chunk, and where each of its
    subtransactions' changes begin (file offset of their chunk, index in it)."""

    xid: int
    path: Path
    started: float = field(default_factory=time.time)
    size: int = 0
    changes: int = 0
    buffer: list = field(default_factory=list)
    subs: dict[int, tuple[int, int]] = field(default_factory=dict)


def _pack(ev: Any) -> Any:
    if type(ev) is RowChange:
        return (_KIND_INDEX[ev.kind], ev.table, ev.new, ev.old, ev.old_is_key, ev.xid)
    return ev  # a Truncate or a RelationInfo: rare, kept as it is


def _unpack(item: Any, lsn: Lsn) -> Any:
    if type(item) is tuple:
        kind, table, new, old, old_is_key, xid = item
        return RowChange(KINDS[kind], table, new, old, old_is_key, lsn, xid)
    return replace(item, lsn=lsn)


class Spool:
    """The in-progress streamed transactions of one stream, in ``directory``."""

    def __init__(self, directory: Path, limit_bytes: int):
        self.dir, self.limit = Path(directory), limit_bytes
        self.txs: dict[int, _Tx] = {}
        self.current: Optional[_Tx] = None  # the transaction of the open stream block
        self.bytes = 0  # written to the spool's files, all transactions
        self._lock = threading.Lock()

    # ------------------------------------------------------------ figures (status, metrics)
    def figures(self) -> tuple[int, int, Optional[float]]:
        """In-progress transactions, spooled bytes, and when the oldest one's first block
        arrived (epoch seconds; None: none)."""
        with self._lock:
            return len(self.txs), self.bytes, min((t.started for t in self.txs.values()), default=None)

    # ------------------------------------------------------------ events
    def clear(self) -> None:
        """Remove every spool file (a new stream sends in-progress transactions again)."""
        with self._lock:
            self.txs.clear()
            self.bytes = 0
        self.current = None
        if self.dir.is_dir():
            for p in self.dir.glob("xid-*.spool"):
                p.unlink(missing_ok=True)

    def start(self, ev: StreamStart) -> None:
        """A block of ``ev.xid`` begins; its first block (re)starts the transaction's file."""
        tx = self.txs.get(ev.xid)
        if tx is None or ev.first:
            if tx is not None:
                self._drop(tx)
            self.dir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            tx = _Tx(ev.xid, self.dir / f"xid-{ev.xid}-{int(now)}.spool", now)
            tx.path.write_bytes(b"")
            with self._lock:
                self.txs[ev.xid] = tx
        self.current = tx

    def add(self, ev: Any) -> None:
        """A change (or Relation, Truncate) of the open block."""
        tx = self.current
        assert tx is not None, "a change outside a stream block reached the spool"
        if ev.xid != tx.xid and ev.xid not in tx.subs:
            tx.subs[ev.xid] = (tx.size, len(tx.buffer))
        tx.buffer.append(_pack(ev))
        tx.changes += 1
        if len(tx.buffer) >= CHUNK_EVENTS:
            self._write(tx)

    def stop(self) -> None:
        """The open block ends: its changes are written out."""
        if self.current is not None:
            self._write(self.current)
        self.current = None

    def abort(self, ev: StreamAbort) -> None:
        """Discard the transaction, or the subtransaction from its first change on."""
        tx = self.txs.get(ev.xid)
        if tx is None:
            return
        if ev.subxid == ev.xid:
            self._drop(tx)
            log.info("streamed transaction %d aborted: %d spooled change(s) discarded", ev.xid, tx.changes)
            return
        cut = tx.subs.get(ev.subxid)
        if cut is not None:
            self._cut(tx, *cut)

    def replay(self, ev: StreamCommit) -> Iterator[Any]:
        """The committed transaction as ordinary events (TxBegin, its changes with the commit
        LSN, TxCommit); its file is removed once they have all been read."""
        tx = self.txs.get(ev.xid)
        failpoint("stream.replay")
        yield TxBegin(ev.commit_lsn, ev.commit_time, ev.xid)
        if tx is not None:
            self._write(tx)
            with open(tx.path, "rb") as f:
                while True:
                    try:
                        chunk = pickle.load(f)
                    except EOFError:
                        break
                    for item in chunk:
                        yield _unpack(item, ev.commit_lsn)
            self._drop(tx)
        yield TxCommit(ev.commit_lsn, ev.end_lsn, ev.commit_time)

    # ------------------------------------------------------------ files
    def _write(self, tx: _Tx) -> None:
        if not tx.buffer:
            return
        data = pickle.dumps(tx.buffer, protocol=pickle.HIGHEST_PROTOCOL)
        if self.bytes + len(data) > self.limit:
            raise SpoolFull(
                f"the spool of in-progress streamed transactions ({self.dir}) would pass "
                f"{self.limit} bytes with transaction {tx.xid} ({tx.changes} changes so far): raise "
                f"--spool-limit, free disk space, or turn streaming off (--no-stream-in-progress)"
            )
        with open(tx.path, "ab") as f:
            f.write(data)
        tx.size += len(data)
        with self._lock:
            self.bytes += len(data)
        tx.buffer = []
        failpoint("stream.spooled")

    def _cut(self, tx: _Tx, offset: int, index: int) -> None:
        """Keep what came before position (``offset``, ``index``): the chunk at ``offset`` (or
        the unwritten one) is cut at ``index``, everything after it dropped."""
        if offset >= tx.size:  # in the unwritten chunk
            tx.buffer = tx.buffer[:index]
        else:
            with open(tx.path, "rb") as f:
                f.seek(offset)
                kept = pickle.load(f)[:index]
            with open(tx.path, "r+b") as f:
                f.truncate(offset)
            with self._lock:
                self.bytes -= tx.size - offset
            tx.size, tx.buffer = offset, kept
        tx.subs = {s: at for s, at in tx.subs.items() if at < (offset, index)}
        self._write(tx)

    def _drop(self, tx: _Tx) -> None:
        tx.path.unlink(missing_ok=True)
        with self._lock:
            if self.txs.get(tx.xid) is tx:
                del self.txs[tx.xid]
                self.bytes -= tx.size
        if self.current is tx:
            self.current = None


def spooling(opts) -> Optional[Spool]:
    """The spool of a run's stream, emptied (see the contract), or None when ``opts`` turn
    streaming of in-progress transactions off."""
    if not opts.stream_in_progress:
        return None
    spool = Spool(Path(opts.spool_dir) if opts.spool_dir else default_dir(opts.name), opts.spool_limit)
    spool.clear()
    return spool


def on_disk(directory: Path) -> dict[str, Any]:
    """What a running mirror's spool holds, read from its files (``status``): transactions,
    bytes, and the epoch second the oldest one's first block arrived (None: none)."""
    files = list(directory.glob("xid-*-*.spool")) if directory.is_dir() else []
    starts = [int(p.stem.rsplit("-", 1)[1]) for p in files if p.stem.rsplit("-", 1)[1].isdigit()]
    sizes = []
    for p in files:
        try:
            sizes.append(p.stat().st_size)
        except OSError:  # applied and removed meanwhile
            continue
    return {
        "transactions": len(files),
        "spooled_bytes": sum(sizes),
        "oldest_start": min(starts, default=None),
    }


def default_dir(stream: str) -> Path:
    """The spool directory of stream ``stream`` when no option names one."""
    import tempfile

    return (
        Path(os.environ.get("REPLICATOR_SPOOL_DIR") or tempfile.gettempdir()) / f"replicator-{stream}-spool"
    )
