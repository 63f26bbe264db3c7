"""Live figures of one running pipeline: what the metrics endpoint and the progress display read.

Contract: the pipeline's phases write here (cheap attribute updates, no I/O, no locks needed for
single writes of Python values); readers (metrics.py, progress display) only read.  Nothing here
holds a DSN or a password.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TableFigures:
    source: str
    target: str = ""
    state: str = "i"
    rows_copied: int = 0
    bytes_copied: int = 0
    rows_estimate: int = 0
    copy_started: Optional[float] = None
    changes_applied: int = 0

    @property
    def copy_percent(self) -> Optional[float]:
        if self.state != "d" or not self.rows_estimate:
            return None
        return min(100.0, 100.0 * self.rows_copied / self.rows_estimate)


@dataclass
class Telemetry:
    """Counters and gauges of one stream."""

    name: str = "replicator"
    tables: dict[str, TableFigures] = field(default_factory=dict)
    applied_lsn: int = 0
    received_lsn: int = 0
    server_wal_end: int = 0
    last_commit_time: Optional[float] = None  # epoch seconds of the last applied source commit
    changes_applied: int = 0
    transactions_applied: int = 0
    batches: int = 0
    last_batch_changes: int = 0
    last_batch_seconds: float = 0.0
    retained_wal_bytes: Optional[int] = None
    errors: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    #: streamed in-progress transactions waiting in the spool for their commit (spool.py)
    streamed_txs: int = 0
    spooled_bytes: int = 0
    oldest_streamed: Optional[float] = None  # epoch seconds of its first block

    def spooled(self, txs: int, nbytes: int, oldest: Optional[float]) -> None:
        self.streamed_txs, self.spooled_bytes, self.oldest_streamed = txs, nbytes, oldest

    def table(self, source: str) -> TableFigures:
        if source not in self.tables:
            self.tables[source] = TableFigures(source)
        return self.tables[source]

    def copy_progress(self, source: str, rows: int, nbytes: int) -> None:
        t = self.table(source)
        t.rows_copied, t.bytes_copied = rows, nbytes

    def batch_committed(
        self,
        changes: int,
        txs: int,
        seconds: float,
        lsn: int,
        commit_time: Optional[float],
        per_table: dict[str, int],
    ) -> None:
        self.batches += 1
        self.changes_applied += changes
        self.transactions_applied += txs
        self.last_batch_changes, self.last_batch_seconds = changes, seconds
        self.applied_lsn = lsn
        if commit_time is not None:
            self.last_commit_time = commit_time
        for t, n in per_table.items():
            self.table(t).changes_applied += n

    @property
    def lag_bytes(self) -> int:
        return max(0, self.server_wal_end - self.applied_lsn) if self.server_wal_end else 0

    @property
    def lag_seconds(self) -> Optional[float]:
        if self.lag_bytes == 0:
            return 0.0
        if self.last_commit_time is None:
            return None
        return max(0.0, time.time() - self.last_commit_time)
