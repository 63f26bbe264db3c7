"""Verify, access: read-only connections to both sides.

Contracts:

* The source is read in REPEATABLE READ, READ ONLY transactions; :func:`source_snapshot` also
  returns the WAL insert position read inside it, so every transaction the snapshot sees committed
  at or below that position.
* Server targets use the engine the target builds (its session settings: UTC, strict modes).
* **Embedded files are opened read-only and briefly.**  SQLite through a ``mode=ro`` URI (WAL: the
  mirror keeps writing while we read); DuckDB read-only with a memory limit and a spill directory
  for its sort, retried while the mirror holds the file, and on a live mirror read in slices of
  about ``slice_seconds`` (keyset pagination on the key), the file closed between slices and while
  the rows are converted, so the mirror's batches get through.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from typing import Any, Optional

import psycopg
import sqlalchemy as sa

from ..errors import TargetError
from ..model import Lsn, TableMapping
from ..source import snapshot
from .sql import TablePlan


class TargetReader:
    """Read-only access to the target: server engines as the target builds them, embedded files
    opened read-only per use (DuckDB retried while the mirror holds it)."""

    memory_limit = "256MB"
    busy_wait_s = 120.0
    slice_rows = 20_000  # first slice; later ones are sized to take about slice_seconds

    def __init__(self, target, slice_seconds: Optional[float] = None):
        self.target = target
        self.slice_seconds = slice_seconds
        self._tmp: Optional[str] = None
        self._engine = self._make_engine()

    def _make_engine(self) -> sa.Engine:
        if self.target.embedded:
            self._tmp = tempfile.mkdtemp(prefix="replicator-verify-")
        return self.target.read_only_engine(self.memory_limit, self._tmp or "")

    def close(self) -> None:
        if self._engine is not self.target.engine:
            self._engine.dispose()
        self.target.dispose()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection (a read-only file for embedded targets), waiting while the file is busy."""
        start, delay = time.monotonic(), 0.02
        while True:
            try:
                conn = self._engine.connect()
                break
            except sa.exc.DBAPIError as e:
                if not _busy(e) or time.monotonic() - start > self.busy_wait_s:
                    raise TargetError(
                        f"cannot open the target for reading: "
                        f"{str(getattr(e, 'orig', e)).strip().splitlines()[0]}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        with conn:
            yield conn

    def reflect(self, m: TableMapping) -> Optional[dict[str, Any]]:
        """Column name → reflected type of the target table; None when the table is missing."""
        with self.connect() as conn:
            insp = sa.inspect(conn)
            if not insp.has_table(m.target_name, schema=m.target_schema):
                return None
            return {c["name"]: c["type"] for c in insp.get_columns(m.target_name, schema=m.target_schema)}

    def rows(self, plan: TablePlan, lo=None, hi=None) -> Generator[tuple, None, None]:
        """Target rows in ``(lo, hi]``: one streamed statement, or slices on a live DuckDB."""
        if self.slice_seconds is None:
            with self.connect() as conn:
                for r in plan.target_raw(conn, lo, hi):
                    yield plan.target_row(r)
            return
        yield from self._sliced(plan, lo, hi, self.slice_seconds)

    def _sliced(self, plan: TablePlan, lo, hi, slice_seconds: float) -> Iterator[tuple]:
        """Keyset pagination: each slice is read with the file open, then converted with it closed.
        A slice never ends inside a run of equal keys (the next one starts past that key)."""
        after, limit = None, self.slice_rows
        kidx = plan.key_idx
        while True:
            t0 = time.monotonic()
            with self.connect() as conn:
                raw = list(plan.target_raw(conn, lo, hi, after, limit))
            held = time.monotonic() - t0
            full = len(raw) == limit
            if full:
                last = tuple(raw[-1][i] for i in kidx)
                while raw and tuple(raw[-1][i] for i in kidx) == last:
                    raw.pop()
                if not raw:
                    limit *= 2
                    continue
                after = tuple(raw[-1][i] for i in kidx)
            for r in raw:
                yield plan.target_row(r)
            if not full:
                return
            limit = int(min(max(limit * slice_seconds / max(held, 1e-3), self.slice_rows), 500_000))


def _busy(e: BaseException) -> bool:
    text = str(getattr(e, "orig", e)).lower()
    return "lock" in text or "busy" in text


# ----------------------------------------------------------------------------- source access
@contextlib.contextmanager
def source_snapshot(dsn: str) -> Iterator[tuple[psycopg.Connection, Lsn]]:
    """A REPEATABLE READ, READ ONLY transaction and the WAL insert position read inside it: every
    transaction the snapshot sees committed at or below that position."""
    conn = snapshot.connect(dsn)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        yield conn, Lsn.parse(row[0])
    finally:
        conn.close()
