"""Snapshot copy planning: which tables are copied whole, which in ctid-range pieces, in what order.

Contract:
* :func:`plan` returns the copy's work items, biggest first when several workers share them (so
  they finish together), else in the mappings' order.  A
  plain table (relkind ``r``) whose main fork holds at least two pieces' worth of pages, on a
  PostgreSQL with TID range scans (14+), is split into pieces of ``piece_pages`` heap pages read
  as ``ctid >= '(lo,0)' AND ctid < '(hi,0)'``, the last piece open-ended (rows the snapshot sees
  cannot lie beyond the pages it measured, and an open end covers them anyway); every other
  table (small, older server) is one whole item.  A partitioned table is split by its leaf
  partitions (each read as ``ONLY`` the partition, a big one again in page ranges) when every
  leaf is a plain table; otherwise it is read whole through its root.
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
# 8192 pages = 64 MB of heap: at pgbench's ~120-byte rows about 500k rows, so a scale-10
# accounts table makes two pieces.  Not tuned: on the 2-core development machine a split copy
# measured within the noise of a whole one (README "Snapshot copy"); more cores were not at hand.
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
        self.started = 0.0  # time.monotonic() of the first piece's start

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
    """One work item: table ``m`` whole (``split`` None) or the heap pages ``[lo, hi)`` (``hi``
    None: to the end) of ``m`` itself or, for a partitioned table, of its leaf partition
    ``rel`` (schema, name)."""

    m: TableMapping
    pages: int = 0
    lo: int = 0
    hi: Optional[int] = None
    split: Optional[SplitTable] = field(default=None, repr=False)
    rel: Optional[tuple[str, str]] = None


def plan(session: Any, mappings: Sequence[TableMapping], size: int, workers: int = 2) -> list[Piece]:
    """The work items of ``mappings`` for ``workers`` workers (see the module contract);
    ``session`` answers the size queries (``fetch``)."""
    sizes = _sizes(session, mappings)
    leaves = _leaves(session, [o for o, (kind, _p) in sizes.items() if kind == "p"])
    items: list[Piece] = []
    for m in mappings:
        relkind, pages = sizes.get(m.source_table.oid, ("?", 0))
        parts = leaves.get(m.source_table.oid, [])
        if relkind == "p" and parts:
            pages = sum(p for _s, _n, p in parts)
        if relkind not in ("r", "p") or (relkind == "p" and not parts) or pages < 2 * size:
            items.append(Piece(m, pages))
            continue
        ranges = [(None, pages)] if relkind == "r" else [((s_, n), p) for s_, n, p in parts]
        cut = [(rel, lo, hi, p) for rel, p in ranges for lo, hi in _bounds(p, size)]
        split = SplitTable(len(cut))
        items += [Piece(m, min(p, size), lo, hi, split, rel) for rel, lo, hi, p in cut]
    return sorted(items, key=lambda p: -p.pages) if workers > 1 else items


def _bounds(pages: int, size: int) -> list[tuple[int, Optional[int]]]:
    """Page ranges ``[lo, hi)`` of ``size`` pages over ``pages`` (the last open-ended; a short
    tail joins the previous range)."""
    bounds = list(range(0, max(pages, 1), size))
    if len(bounds) > 1 and pages - bounds[-1] < size // 2:
        bounds.pop()
    ends: list[Optional[int]] = [*bounds[1:], None]
    return list(zip(bounds, ends))


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


def _leaves(session: Any, roots: Sequence[int]) -> dict[int, list[tuple[str, str, int]]]:
    """{partitioned root: [(schema, name, pages)] of its leaf partitions}.  A root with a leaf
    that is not a plain table (a foreign table: its rows are not in a heap here) is left out:
    it is copied whole through the root, as before."""
    if not roots:
        return {}
    rows = session.fetch(
        "SELECT r.root::bigint, n.nspname::text, c.relname::text, c.relkind::text, "
        "(pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint "
        f"FROM unnest(ARRAY[{', '.join(str(int(o)) for o in roots)}]::oid[]) AS r(root), "
        "pg_partition_tree(r.root::regclass) t JOIN pg_catalog.pg_class c ON c.oid = t.relid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf ORDER BY 1, 2, 3"
    )
    out: dict[int, list[tuple[str, str, int]]] = {}
    odd: set[int] = set()
    for root, schema, name, kind, pages in rows:
        out.setdefault(int(root), []).append((schema, name, int(pages)))
        if kind != "r":
            odd.add(int(root))
    return {r: parts for r, parts in out.items() if r not in odd}
