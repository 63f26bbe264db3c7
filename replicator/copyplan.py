"""Snapshot copy planning: which tables are copied whole, which in ctid-range pieces, in what order.

Contract:
* :func:`plan` returns the copy's work items, biggest first when several workers share them (so
  they finish together), else in the mappings' order.  A
  plain table (relkind ``r``) whose main fork holds at least two pieces' worth of pages, on a
  PostgreSQL with TID range scans (14+), is split into pieces of ``piece_pages`` heap pages read
  as ``ctid >= '(lo,0)' AND ctid < '(hi,0)'``, the last piece open-ended (rows the snapshot sees
  cannot lie beyond the pages it measured, and an open end covers them anyway); every other
  table (partitioned, small, older server) is one whole item.
* A split table's pieces share one :class:`SplitTable`: its start (state ``d`` committed, the
  target's rows cleared and committed) runs once, before any piece loads; each piece then loads
  in its own target transaction, and the piece whose commit completes the set is told so
  (:meth:`SplitTable.finished`) and writes state ``s`` with the summed row count.  A crash before
  that leaves ``d``: the table is cleared and copied again, as any table in ``d`` is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import ConfigError
from .model import TableMapping

PIECE_PAGES_ENV = "REPLICATOR_COPY_PIECE_PAGES"
# 8192 pages = 64 MB of heap: at pgbench's ~120-byte rows about 500k rows.  Measured on 2 cores
# (bench/bench_copy.py): see README "Copy engine" for the figures behind it.
DEFAULT_PIECE_PAGES = 8192
TID_RANGE_SCAN = 140000  # server_version_num from which a ctid range is read without a full scan


def piece_pages() -> int:
    """Heap pages per piece: ``REPLICATOR_COPY_PIECE_PAGES`` (tests, tuning), else the default."""
    raw = os.environ.get(PIECE_PAGES_ENV, "").strip()
    if not raw:
        return DEFAULT_PIECE_PAGES
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{PIECE_PAGES_ENV}={raw!r}: give a whole number of heap pages, at least 1")
    return int(raw)


class SplitTable:
    """The shared bookkeeping of one split table's pieces (thread-safe)."""

    def __init__(self, pieces: int):
        self.pieces, self.done, self.rows = pieces, 0, 0
        self.lock = threading.Lock()
        self._claimed = False
        self._ready = threading.Event()
        self._failed = False
        self.figures: Any = None

    def start(self, begin: Callable[[], None], aborted: Callable[[], bool]) -> None:
        """Run ``begin`` once (the first piece to arrive); later pieces wait until it has run.
        Raises ``RuntimeError`` in a waiting piece when ``begin`` failed or ``aborted()``."""
        with self.lock:
            first, self._claimed = not self._claimed, True
        if first:
            try:
                begin()
            except BaseException:
                self._failed = True
                raise
            finally:
                self._ready.set()
            return
        while not self._ready.wait(0.2):
            if aborted():
                raise RuntimeError("the copy was aborted")
        if self._failed:
            raise RuntimeError("the split table's start failed")

    def finished(self, rows: int) -> bool:
        """Count one committed piece of ``rows`` rows; True for the piece that completes the set."""
        with self.lock:
            self.done += 1
            self.rows += rows
            return self.done == self.pieces


@dataclass
class Piece:
    """One work item: table ``m`` whole (``split`` None) or its heap pages ``[lo, hi)`` (``hi``
    None: to the end)."""

    m: TableMapping
    pages: int = 0
    lo: int = 0
    hi: Optional[int] = None
    split: Optional[SplitTable] = field(default=None, repr=False)


def plan(session: Any, mappings: Sequence[TableMapping], size: int, workers: int = 2) -> list[Piece]:
    """The work items of ``mappings`` for ``workers`` workers (see the module contract);
    ``session`` answers the size query (``fetch``)."""
    sizes = _sizes(session, mappings)
    items: list[Piece] = []
    for m in mappings:
        relkind, pages = sizes.get(m.source_table.oid, ("?", 0))
        if relkind != "r" or pages < 2 * size:
            items.append(Piece(m, pages))
            continue
        bounds = list(range(0, pages, size))
        if pages - bounds[-1] < size // 2:
            bounds.pop()  # a short tail joins the previous piece
        split = SplitTable(len(bounds))
        ends: list[Optional[int]] = [*bounds[1:], None]
        items += [Piece(m, size, lo, hi, split) for lo, hi in zip(bounds, ends)]
    return sorted(items, key=lambda p: -p.pages) if workers > 1 else items


def _sizes(session: Any, mappings: Sequence[TableMapping]) -> dict[int, tuple[str, int]]:
    """{oid: (relkind, main-fork pages)} of the mapped tables; empty when the server has no TID
    range scans (nothing is split then)."""
    oids = sorted({m.source_table.oid for m in mappings if m.source_table.oid})
    if not oids:
        return {}
    rows = session.fetch(
        "SELECT c.oid::bigint, c.relkind::text, "
        "(pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint, "
        "current_setting('server_version_num')::int FROM pg_catalog.pg_class c "
        f"WHERE c.oid IN ({', '.join(str(int(o)) for o in oids)})"
    )
    if not rows or rows[0][3] < TID_RANGE_SCAN:
        return {}
    return {int(oid): (kind, int(pages)) for oid, kind, pages, _v in rows}
