"""Re-sync of a table with a mode (issue 15): the re-copied shadow merged into the live table, so
the past the live table keeps survives the re-sync.  SQLAlchemy Core, for every database.

A mirror-mode re-sync swaps the shadow in for the live table (swap.py).  A history or soft_delete
table keeps what the source no longer has, so its shadow (the snapshot copy at the re-sync's sync
LSN ``S``, with the versions or marks the stream wrote since) is merged into the live table instead,
which is never dropped (its ``<table>_current`` view stays):

* history: a current version of the live table whose key's snapshot version holds the same values
  continues: it takes that snapshot version's end (``_valid_to``/``_valid_to_lsn``, NULL while it
  is current) and the snapshot version is left out; a current version whose row changed or vanished
  while the stream did not follow the table is closed at ``S`` (at the snapshot's time), and a
  live tombstone of a key that came back is closed there too; then every other version of the shadow
  is added.  The chain of each key stays closed version by version.
* soft_delete: a key the shadow holds takes the shadow's row (marked or not); an unmarked row whose
  key the shadow lacks vanished while the stream did not follow it: it is marked deleted at ``S``
  (``_deleted_lsn``), at the snapshot's time where known; rows marked before are kept.

Contracts: :func:`merge` runs in the caller's transaction (the caller drops the shadow and records
the state row); columns the shadow has and the live table lacks are added first (the only DDL;
MySQL commits it by itself, and it is idempotent), then DML only; every step is set-based (no row goes through Python); it is not
idempotent, so the caller commits it with the state row that names the live table again.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import TableMapping


class _Pair:
    """The live table and its shadow, with the column roles of their mode."""

    def __init__(self, target, live: TableMapping, sh: TableMapping):
        assert live.mode is not None
        self.target, self.mode = target, live.mode
        self.live, self.sh = target.table(live), target.table(sh)
        mode_names = {name for _, name in live.mode.columns}
        self.key = [k for k in live.view.key if k not in mode_names]
        self.data = [c for c in live.view.column_names if c not in mode_names]
        self.applier = target.applier(live)
        self.names = list(live.view.column_names)

    def c(self, t: sa.Table, role: str) -> sa.Column:
        return t.c[self.mode.name(role)]

    def same_key(self) -> Any:
        return sa.and_(*[self.live.c[k] == self.sh.c[k] for k in self.key])

    def same_values(self) -> Any:
        return sa.and_(*[self.live.c[c].is_not_distinct_from(self.sh.c[c]) for c in self.data])

    def convert(self, role: str, text: str) -> Any:
        i = self.names.index(self.mode.name(role))
        return self.applier.convert(i, text)

    def snapshot_time(self, conn: Connection, role: str) -> Any:
        """When the shadow's snapshot was taken, as the mode's time column ``role`` holds it: the
        snapshot versions' ``_valid_from`` (history); else now (no version tells it)."""
        if self.mode.kind == "history":
            snap = self.c(self.sh, "op") == "snapshot"
            t = conn.execute(sa.select(sa.func.min(self.c(self.sh, "valid_from"))).where(snap)).scalar()
            if t is not None:
                return t
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        return self.convert(role, now)


def merge(target, conn: Connection, live: TableMapping, sh: TableMapping, sync_lsn: int) -> None:
    """Merge shadow ``sh`` (copied at ``sync_lsn``, then followed) into the live table of ``live``."""
    target.add_columns(conn, live, live.view.column_names)  # columns the source gained (MySQL: commits)
    p = _Pair(target, live, sh)
    if p.mode.kind == "history":
        _history(p, conn, int(sync_lsn))
    else:
        _soft_delete(p, conn, int(sync_lsn))


def _history(p: _Pair, conn: Connection, s: int) -> None:
    live, sh = p.live, p.sh
    when = p.snapshot_time(conn, "valid_to")
    is_open = p.c(live, "valid_to_lsn").is_(None)
    tomb = p.c(live, "op") == "delete"
    snap = sa.and_(p.same_key(), p.c(sh, "op") == "snapshot")
    close = {p.c(live, "valid_to"): when, p.c(live, "valid_to_lsn"): s}
    unchanged = sa.exists().where(snap, p.same_values())
    conn.execute(sa.update(live).where(is_open, sa.not_(tomb), sa.not_(unchanged)).values(close))
    conn.execute(sa.update(live).where(is_open, tomb, sa.exists().where(snap)).values(close))
    ends = {
        p.c(live, role): sa.select(p.c(sh, role)).where(snap).limit(1).scalar_subquery()
        for role in ("valid_to", "valid_to_lsn")
    }
    conn.execute(sa.update(live).where(is_open, sa.not_(tomb)).values(ends))
    continued = sa.exists().where(
        p.same_key(),
        p.c(live, "op") != "delete",
        p.c(live, "valid_from_lsn") < s,
        p.c(live, "valid_to_lsn").is_not_distinct_from(p.c(sh, "valid_to_lsn")),
        p.same_values(),
    )
    conn.execute(sa.delete(sh).where(p.c(sh, "op") == "snapshot", continued))
    _insert_all(p, conn)


def _soft_delete(p: _Pair, conn: Connection, s: int) -> None:
    live = p.live
    marked = p.c(live, "deleted")
    held = sa.exists().where(p.same_key())
    marks = {
        marked: sa.true(),
        p.c(live, "deleted_at"): p.snapshot_time(conn, "deleted_at"),
        p.c(live, "deleted_lsn"): s,
    }
    conn.execute(sa.update(live).where(marked == sa.false(), sa.not_(held)).values(marks))
    conn.execute(sa.delete(live).where(held))
    _insert_all(p, conn)


def _insert_all(p: _Pair, conn: Connection) -> None:
    names = [c.name for c in p.sh.columns if c.name in p.live.c]
    conn.execute(sa.insert(p.live).from_select(names, sa.select(*[p.sh.c[n] for n in names])))
