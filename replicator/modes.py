"""Modes of a mapping entry: what a source change does to its target table.

* ``mirror`` (the default, no :class:`~replicator.model.Mode`): the target holds what the source
  holds.
* ``history``: every change appends a row version; only the previous version is updated, to
  close it.  A version holds the replicated columns plus ``_valid_from`` / ``_valid_from_lsn``
  (commit time and LSN of the change that made it; for rows of the snapshot copy the time of the
  snapshot and the table's sync LSN), ``_seq`` (its change's position in its transaction),
  ``_valid_to`` / ``_valid_to_lsn`` (NULL while current) and ``_op`` (insert, update, delete,
  snapshot).  A DELETE closes the current version and adds a tombstone (the key, NULL elsewhere,
  ``_op`` delete).  The target's key is (identity key, ``_valid_from_lsn``, ``_seq``).  Versions
  are never merged by net-change reduction (each has its own key).
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

#: in a copy constant: replaced by the table's sync LSN when the copy query is made (bulkcopy.py)
SYNC_LSN = "{sync_lsn}"
TIMESTAMPTZ = (1184, "timestamp with time zone")
#: role → (type OID, PostgreSQL type, NOT NULL, the snapshot copy's constant)
COLUMN_TYPES = {
    "deleted": (16, "boolean", True, "false"),
    "deleted_at": (*TIMESTAMPTZ, False, "NULL::timestamptz"),
    "deleted_lsn": (20, "bigint", False, "NULL::bigint"),
    "valid_from": (*TIMESTAMPTZ, False, "now()"),
    "valid_from_lsn": (20, "bigint", True, f"{SYNC_LSN}::bigint"),
    "seq": (23, "integer", True, "0"),
    "valid_to": (*TIMESTAMPTZ, False, "NULL::timestamptz"),
    "valid_to_lsn": (20, "bigint", False, "NULL::bigint"),
    "op": (25, "text", True, "'snapshot'"),
}
#: the history columns that join the identity key in the target's key
HISTORY_KEY = ("valid_from_lsn", "seq")


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
            (rc, COLUMN_TYPES[rc[0]]) for rc in mode.columns
        )
    )


def extended(m: TableMapping) -> TableMapping:
    """``m`` with its mode's columns at the end of the view (replacing any it had); ``m`` itself
    without a mode.  The origin is kept apart, so source-side SQL never sees those columns."""
    if m.mode is None:
        return m
    base = plain(m)
    cols, key = base.view.columns, base.view.key
    if m.mode.kind == "history":  # versions: a tombstone has NULL outside the key
        cols = tuple(c if c.name in key else dataclasses.replace(c, not_null=False) for c in cols)
        key = key + tuple(m.mode.name(r) for r in HISTORY_KEY)
    view = dataclasses.replace(
        base.view,
        columns=cols + mode_columns(m.mode),
        key=key,
        primary_key=key if m.mode.kind == "history" else base.view.primary_key,
    )
    return dataclasses.replace(base, view=view, origin=base.source_table)


def plain(m: TableMapping) -> TableMapping:
    """``m``'s view without its mode's columns (what the source has, renamed); the key and
    primary key as the source's."""
    if not any(c.source_sql for c in m.view.columns):
        return m
    ours = {c.name for c in m.view.columns if c.source_sql}
    origin = m.source_table
    view = dataclasses.replace(
        m.view,
        columns=tuple(c for c in m.view.columns if c.name not in ours),
        key=tuple(k for k in m.view.key if k not in ours),
        primary_key=tuple(k for k in m.view.primary_key if k not in ours) or origin.primary_key,
    )
    return dataclasses.replace(m, view=view)


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


def changed(m: TableMapping, ch: RowChange, commit_time: Optional[datetime], seq: int = 0) -> list[RowChange]:
    """``ch`` as ``m``'s mode applies it to the extended view (``seq``: its position in its
    transaction): for ``history`` the versions it appends, for ``soft_delete`` the change."""
    assert m.mode is not None
    if m.mode.kind == "history":
        return versions(m, ch, commit_time, seq)
    return [soft_deleted(m, ch, commit_time)]


def versions(m: TableMapping, ch: RowChange, commit_time: Optional[datetime], seq: int) -> list[RowChange]:
    """The versions a change appends: an INSERT or UPDATE its new row (UNCHANGED values are
    carried from the previous version when applied: target/mode_ops.py); a DELETE, or the old
    key of an UPDATE that changed it, a tombstone.  Every version is an INSERT of its own key."""
    n = len(m.source_table.columns)
    when = (time_text(commit_time), lsn_text(ch.lsn))
    out = []
    if ch.kind is ChangeKind.DELETE or (ch.old is not None and ch.new is not None):
        old = ch.old if ch.old is not None else ch.new
        assert old is not None
        moved = ch.kind is not ChangeKind.DELETE and _key_of(m, old, n) != _key_of(m, ch.new, n)
        if ch.kind is ChangeKind.DELETE or moved:
            tomb = tuple(old[i] if c in m.view.key else None for i, c in enumerate(m.view.column_names[:n]))
            row = tomb + (*when, str(seq), None, None, "delete")
            out.append(RowChange(ChangeKind.INSERT, ch.table, row, lsn=ch.lsn))
            if moved:  # the new key's first version: ``old`` says it has no previous version
                assert ch.new is not None
                row = ch.new + (*when, str(seq), None, None, "update")
                return out + [RowChange(ChangeKind.INSERT, ch.table, row, old=old, lsn=ch.lsn)]
    if ch.new is not None:
        op = "insert" if ch.kind is ChangeKind.INSERT else "update"
        row = ch.new + (*when, str(seq), None, None, op)
        out.append(RowChange(ChangeKind.INSERT, ch.table, row, lsn=ch.lsn))
    return out


def _key_of(m: TableMapping, row, n: int) -> tuple:
    names = m.view.column_names[:n]
    return tuple(row[i] for i, c in enumerate(names) if c in m.view.key)


def soft_deleted(m: TableMapping, ch: RowChange, commit_time: Optional[datetime]) -> RowChange:
    """``ch`` for ``soft_delete``: an INSERT or UPDATE carries the unmarked mode values; a DELETE
    becomes an UPDATE of the mode columns only, located by the key (the other columns stay as
    they are)."""
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
