"""Modes of a mapping entry: what a source change does to its target table.

* ``mirror`` (the default, no :class:`~replicator.model.Mode`): the target holds what the source
  holds.
* ``soft_delete``: a DELETE marks the row instead of removing it (``_deleted`` true, with the
  source commit time and commit LSN of the delete in ``_deleted_at`` / ``_deleted_lsn``); a later
  INSERT of the same key replaces the marked row, unmarked; UPDATEs apply as in ``mirror``; a
  TRUNCATE marks every row not yet marked.  A ``<table>_current`` view shows the unmarked rows
  with the replicated columns, as ``mirror`` would hold them; ``verify`` compares that view.

Contracts:
* The mode's columns are the last columns of the mapping's view, after the replicated ones,
  described as PostgreSQL columns (``boolean``, ``timestamp with time zone``, ``bigint``) whose
  values are given as PostgreSQL text, so every target types, converts, stages and bulk-loads
  them as it does any column.  The source table (``origin``) has none of them: the snapshot copy
  outputs a constant for each (``Column.source_sql``: not deleted).
* :func:`changed` rewrites a change before net-change reduction, so a batch's reduction works on
  what the target must end with; everything is applied in the batch's target transaction, with
  the applied LSN (exactly once, as for ``mirror``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Optional

from .config import MODE_COLUMNS
from .model import UNCHANGED, ChangeKind, Column, Mode, RowChange, TableMapping

#: role → (type OID, PostgreSQL type, NOT NULL, the snapshot copy's constant)
SOFT_DELETE_TYPES = {
    "deleted": (16, "boolean", True, "false"),
    "deleted_at": (1184, "timestamp with time zone", False, "NULL::timestamptz"),
    "deleted_lsn": (20, "bigint", False, "NULL::bigint"),
}


def mode_of(kind: str, names: tuple[tuple[str, str], ...] = ()) -> Optional[Mode]:
    """The Mode of an entry's ``mode:`` and its column names (defaults where not renamed)."""
    if kind == "mirror":
        return None
    chosen = {**MODE_COLUMNS[kind], **dict(names)}
    return Mode(kind, tuple((role, chosen[role]) for role in MODE_COLUMNS[kind]))


def mode_columns(mode: Mode) -> tuple[Column, ...]:
    """The mode's columns as the view describes them (see the module contract)."""
    return tuple(
        Column(name, oid, pg_type, not_null=not_null, source_sql=const)
        for (role, name), (oid, pg_type, not_null, const) in (
            (rc, SOFT_DELETE_TYPES[rc[0]]) for rc in mode.columns
        )
    )


def extended(m: TableMapping) -> TableMapping:
    """``m`` with its mode's columns at the end of the view (replacing any it had); ``m`` itself
    without a mode.  The origin is kept apart, so source-side SQL never sees those columns."""
    if m.mode is None:
        return m
    base = plain(m)
    view = dataclasses.replace(base.view, columns=base.view.columns + mode_columns(m.mode))
    return dataclasses.replace(base, view=view, origin=base.source_table)


def plain(m: TableMapping) -> TableMapping:
    """``m``'s view without its mode's columns (what the source has, renamed)."""
    cols = tuple(c for c in m.view.columns if not c.source_sql)
    if len(cols) == len(m.view.columns):
        return m
    return dataclasses.replace(m, view=dataclasses.replace(m.view, columns=cols))


def compared(m: TableMapping) -> TableMapping:
    """What ``verify`` compares with the source: for a table with a mode, its ``<table>_current``
    view (the unmarked rows, the replicated columns); ``m`` itself otherwise."""
    if m.mode is None:
        return m
    return dataclasses.replace(plain(m), target_name=f"{m.target_name}_current", mode=None)


def lsn_text(lsn: int) -> str:
    return str(int(lsn))


def time_text(t: Optional[datetime]) -> Optional[str]:
    """A commit time as PostgreSQL's text of a timestamptz (UTC)."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


NOT_DELETED = ("f", None, None)


def changed(m: TableMapping, ch: RowChange, commit_time: Optional[datetime]) -> RowChange:
    """``ch`` as the mode applies it to the extended view: an INSERT or UPDATE carries the
    unmarked mode values; a DELETE becomes an UPDATE of the mode columns only, located by the
    key (the other columns stay as they are)."""
    if ch.kind is not ChangeKind.DELETE:
        assert ch.new is not None
        return RowChange(ch.kind, ch.table, ch.new + NOT_DELETED, _widened(ch.old), ch.old_is_key, ch.lsn)
    assert ch.old is not None
    n = len(ch.old)
    keys = set(m.view.key)
    idx = {i for i, c in enumerate(m.view.columns[:n]) if c.name in keys}
    new = tuple(ch.old[i] if i in idx else UNCHANGED for i in range(n))
    return RowChange(ChangeKind.UPDATE, ch.table, new + marks(ch.lsn, commit_time), None, True, ch.lsn)


def _widened(old: Optional[tuple]) -> Optional[tuple]:
    """An UPDATE's old identity, as wide as the extended view (the mode columns unknown)."""
    return None if old is None else old + (None, None, None)


def marks(lsn: int, commit_time: Optional[datetime]) -> tuple[str, Optional[str], str]:
    """The mode values of a row marked deleted at a commit (PostgreSQL text)."""
    return ("t", time_text(commit_time), lsn_text(lsn))
