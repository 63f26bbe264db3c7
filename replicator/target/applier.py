"""Row-change apply for statement-based targets (SQLite, MySQL, PostgreSQL, any SQLAlchemy dialect).

Contract: changes of one table are applied in source order inside the caller's transaction.
Consecutive changes of the same shape run as one executemany.  UPDATE/DELETE locate rows by the
table's key (old key when the source sent one, else the new tuple's key); a key-less FULL-identity
table matches all old columns NULL-safely and touches exactly one row even among duplicates.  A
change that finds no row raises :class:`DivergenceError` (or is logged and skipped when the mapping
says ``on_missing_row: skip``).  ``UNCHANGED`` (TOAST) columns are left out of the SET list.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import sqlalchemy as sa

from ..errors import DivergenceError, ValueRangeError
from ..model import UNCHANGED, ChangeKind, RowChange, TableMapping

log = logging.getLogger(__name__)
P = "_rp_"  # bind-name prefix that no sane column name collides with


def new_row(ch: RowChange) -> tuple:
    """The new tuple of an INSERT or UPDATE (only a DELETE has none)."""
    assert ch.new is not None, f"{ch.kind.name} without a new tuple"
    return ch.new


def identity_row(ch: RowChange) -> tuple:
    """What locates a change's row: the old identity the source sent, else the new tuple."""
    row = ch.old if ch.old is not None else ch.new
    assert row is not None, f"{ch.kind.name} with neither an old nor a new tuple"
    return row


def _shape(ch: RowChange) -> tuple:
    if ch.kind is ChangeKind.UPDATE:
        return (ch.kind, tuple(i for i, v in enumerate(new_row(ch)) if v is UNCHANGED))
    return (ch.kind,)


class GenericApplier:
    """Statements and converters for one mapped table, built once and reused for every batch."""

    def __init__(self, target, m: TableMapping):
        self.target, self.m = target, m
        self.t = target.table(m)
        cols = m.view.columns
        self.loaders = [target.value_loader(c) for c in cols]
        self.cols = [self.t.c[c.name] for c in cols]
        names = [c.name for c in cols]
        self.key_idx = [names.index(k) for k in m.view.key]
        self.insert_stmt = sa.insert(self.t).values(
            {c: sa.bindparam(f"{P}c{i}") for i, c in enumerate(self.cols)}
        )
        self._updates: dict[tuple, Any] = {}
        self._delete: sa.Delete | None = None

    # ------------------------------------------------------------ values
    def convert(self, i: int, v, ch: RowChange | None = None, row: Sequence | None = None):
        """One value through the column's loader; a refusal is a ValueRangeError naming table,
        column, value, key and LSN (``row``: the copied row, when there is no change)."""
        if v is None or v is UNCHANGED:
            return v
        try:
            return self.loaders[i](v)
        except (ValueError, ArithmeticError, TypeError) as e:
            raise self.range_error(i, v, e, ch, row) from None

    def range_error(self, i: int, v, why, ch: RowChange | None = None, row: Sequence | None = None):
        if ch is not None:
            where = f"key {self.key_text(ch)}, LSN {ch.lsn}"
        else:
            where = f"snapshot copy, key {self.row_key_text(row) if row is not None else '?'}"
        return ValueRangeError(
            f"{self.m.label}.{self.cols[i].name}: value {str(v)[:60]!r} cannot be stored in the "
            f"{self.target.name} target table {self.target.display(self.m)}: {why} ({where}); "
            f"choose a value policy (error | null | clamp | text) or a column type in the mapping"
        )

    def row_key_text(self, row: Sequence) -> str:
        idx = self.key_idx or range(len(self.cols))
        return ", ".join(f"{self.cols[i].name}={row[i]!r}" for i in idx)

    def row_params(self, values: Sequence, m=None, ch: RowChange | None = None) -> dict:
        row = values if ch is None else None
        return {f"{P}c{i}": self.convert(i, v, ch, row) for i, v in enumerate(values)}

    def key_values(self, ch: RowChange) -> list:
        src = identity_row(ch)
        return [self.convert(i, src[i], ch) for i in self.key_idx]

    def key_text(self, ch: RowChange | None) -> str:
        if ch is None:
            return "?"
        src = identity_row(ch)
        if self.key_idx:
            return ", ".join(f"{self.cols[i].name}={src[i]!r}" for i in self.key_idx)
        return ", ".join(f"{c.name}={v!r}" for c, v in zip(self.cols, src) if v is not UNCHANGED)

    # ------------------------------------------------------------ statements
    def update_stmt(self, unchanged: tuple):
        if unchanged not in self._updates:
            where = sa.and_(*[self.cols[i] == sa.bindparam(f"{P}k{i}") for i in self.key_idx])
            sets: dict[Any, sa.BindParameter[Any]] = {
                c: sa.bindparam(f"{P}c{i}") for i, c in enumerate(self.cols) if i not in unchanged
            }
            self._updates[unchanged] = sa.update(self.t).where(where).values(sets)
        return self._updates[unchanged]

    def delete_stmt(self):
        if self._delete is None:
            where = sa.and_(*[self.cols[i] == sa.bindparam(f"{P}k{i}") for i in self.key_idx])
            self._delete = sa.delete(self.t).where(where)
        return self._delete

    # ------------------------------------------------------------ apply
    def apply(self, conn, changes: Sequence[RowChange]) -> None:
        for shape, group in groupby(changes, key=_shape):
            run = list(group)
            kind = shape[0]
            if kind is ChangeKind.INSERT:
                self.insert_rows(conn, run)
            elif not self.key_idx:
                for ch in run:
                    self.apply_one_full(conn, ch)
            elif kind is ChangeKind.UPDATE:
                params = [self.update_params(ch, shape[1]) for ch in run]
                self.execute_checked(conn, self.update_stmt(shape[1]), params, run)
            else:
                params = [self.key_params(ch) for ch in run]
                self.execute_checked(conn, self.delete_stmt(), params, run)

    def insert_rows(self, conn, run: list[RowChange]) -> None:
        conn.execute(self.insert_stmt, [self.row_params(new_row(ch), ch=ch) for ch in run])

    def key_params(self, ch: RowChange) -> dict:
        return {f"{P}k{i}": v for i, v in zip(self.key_idx, self.key_values(ch))}

    def update_params(self, ch: RowChange, unchanged: tuple) -> dict:
        p = {f"{P}c{i}": self.convert(i, v, ch) for i, v in enumerate(new_row(ch)) if i not in unchanged}
        p.update(self.key_params(ch))
        return p

    def execute_checked(self, conn, stmt, params: list[dict], run: list[RowChange]) -> None:
        """executemany inside a savepoint; on a shortfall, redo row by row to name the missing key."""
        if len(params) == 1:
            if conn.execute(stmt, params[0]).rowcount < 1:
                self.missing(run, 1)
            return
        if not conn.dialect.supports_sane_multi_rowcount:
            for p, ch in zip(params, run):
                self.execute_checked(conn, stmt, [p], [ch])
            return
        sp = conn.begin_nested()
        if conn.execute(stmt, params).rowcount >= len(params):
            sp.commit()
            return
        sp.rollback()
        for p, ch in zip(params, run):
            self.execute_checked(conn, stmt, [p], [ch])

    def missing(self, chs: list[RowChange], count: int) -> None:
        """A change found no row: DivergenceError, or a warning under ``on_missing_row: skip``."""
        ch = chs[0]
        what = (
            f"{ch.kind.name} of {self.m.label}: no row with {self.key_text(ch)} in target "
            f"{self.target.display(self.m)} (LSN {ch.lsn})"
        )
        if self.m.on_missing_row == "skip":
            log.warning("skipped %d change(s) whose row is missing; first: %s", count, what)
            return
        raise DivergenceError(
            f"{what}: the target diverged from the source. Re-sync the table "
            f"(replicator resync --tables {self.m.label}) or set on_missing_row: skip in the mapping"
        )

    # ------------------------------------------------------------ FULL identity without key
    def match(self, ch: RowChange):
        """NULL-safe equality on every old column the source sent (exactly-one is the caller's job)."""
        old = identity_row(ch)
        return sa.and_(
            *[
                c.is_not_distinct_from(sa.literal(self.convert(i, v, ch), c.type))
                for i, (c, v) in enumerate(zip(self.cols, old))
                if v is not UNCHANGED
            ]
        )

    def apply_one_full(self, conn, ch: RowChange) -> None:
        match = self.match(ch)
        if ch.kind is ChangeKind.DELETE:
            n = self.target.delete_one(conn, self.t, match)
        else:
            sets = {
                c: self.convert(i, v, ch)
                for i, (c, v) in enumerate(zip(self.cols, new_row(ch)))
                if v is not UNCHANGED
            }
            n = self.target.update_one(conn, self.t, match, sets)
        if n < 1:
            self.missing([ch], 1)
