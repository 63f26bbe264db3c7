"""The end point of a migration: an exact source snapshot at a WAL position, and the row counts
there.

Contract: :func:`take` creates a temporary slot with an exported snapshot, so the counts it returns
are exactly those of the transactions that commit before the returned consistent point C.  A
stream run with ``until=C, exact=True`` applies exactly those transactions (it stops before the
first one whose commit lies at or after C), so source and target counts compare exactly even
while the source keeps being written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import psycopg
import sqlalchemy as sa
from psycopg import sql

from . import retry
from .dsn import redact
from .errors import ReplicatorError, SourceError, TargetError, TransientError
from .model import Lsn, TableMapping
from .source import slot as slots
from .source import snapshot
from .target import mode_ops


def take(dsn: str, slot: str, mappings: Sequence[TableMapping], timeout: float) -> tuple[Lsn, dict[str, int]]:
    """(consistent point C, {table: source row count at C}) from a temporary slot's snapshot."""
    repl = slots.replication_connection(dsn)
    try:
        lsn, snap = slots.create_slot(
            repl, f"{slot[:40]}_fence_{os.getpid()}", temporary=True, timeout=timeout, dsn=dsn
        )
        sc = snapshot.snapshot_connection(dsn, snap)
    finally:
        repl.close()  # the snapshot is imported: the temporary slot may go
    with sc:
        return lsn, {m.label: _count(sc, m) for m in mappings}


def _count(conn, m: TableMapping) -> int:
    """Rows of the table itself (not of inheritance children), as the copy reads them; an error
    names the table (:func:`_named`)."""
    q = sql.SQL("SELECT count(*) FROM {}").format(snapshot.relation(conn, m.source_table))
    if m.where:
        q = sql.SQL("{} WHERE {}").format(q, sql.SQL(m.where))
    try:
        return conn.execute(q).fetchone()[0]
    except psycopg.Error as e:
        raise _named(e, None, f"counting the source rows of {m.label} at the end point") from e


def mismatches(target, mappings: Sequence[TableMapping], counts: dict[str, int]) -> list[str]:
    """One line per table whose target row count differs from the source count at the fence
    (a table with a mode: its current rows); an error names the table (:func:`_named`)."""
    out = []
    with target.connect(readonly=True) as conn:
        for m in mappings:
            try:
                q = sa.select(sa.func.count()).select_from(target.table(m))
                if m.mode is not None:  # the rows a mirror would hold: unmarked, or current and live
                    q = q.where(mode_ops.current_rows(target, m))
                n = conn.execute(q).scalar()
            except sa.exc.DBAPIError as e:
                raise _named(
                    e, target, f"counting the rows of target table {target.display(m)} (from {m.label})"
                ) from e
            if n != counts[m.label]:
                out.append(f"{m.label}: source {counts[m.label]}, target {n}")
    return out


def _named(e: Exception, target, what: str) -> ReplicatorError:
    """A driver error as ours, saying what was being done to which table; transient errors stay
    transient (retried), the rest are SourceError (psycopg) or TargetError."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = f"{what}: {redact(first)}; fix the table (or leave it out) and run again"
    if retry.is_transient(e, target):
        return TransientError(msg)
    return (SourceError if isinstance(e, psycopg.Error) else TargetError)(msg)
