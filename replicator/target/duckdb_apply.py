"""DuckDB target, change path: set-based apply through an Arrow staging relation.

Contract (as every applier, target/applier.py): one table's changes in source order inside the
caller's transaction.  Consecutive changes of one kind run as one statement over the staged rows
(INSERT … SELECT, UPDATE … FROM, DELETE … USING … RETURNING); fewer rows matched than staged is
divergence, named by the missing keys.  Updates of one key within a run are coalesced (later
values win, UNCHANGED keeps an earlier one).  Key-less FULL-identity tables are changed one row
at a time, exactly one row each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..model import UNCHANGED, ChangeKind, RowChange
from .applier import GenericApplier, identity_row, new_row
from .duckdb_plan import DONE, STAGE, Plan, _stage, _unregister
from .set_apply import runs

if TYPE_CHECKING:
    import pyarrow as pa


class DuckDBApplier(GenericApplier):
    """The DuckDB applier of one mapped table (its SQL is the target's :class:`Plan`)."""

    def apply(self, conn: sa.Connection, changes: Sequence[RowChange]) -> None:
        """Apply the table's changes in order, set-based per run of one kind."""
        m = self.m
        p, raw = self.target.plan(m), self.target.raw(conn)
        if p.loaded:
            changes = self._loaded(p, changes)
        for kind, run in runs(changes, p.key_idx):
            lsn = run[0].lsn
            with self.target.errors(m, f"changes from LSN {lsn}"):
                if kind is ChangeKind.INSERT:
                    self._insert_run(raw, p, run)
                elif not p.key_idx:
                    for ch in run:
                        self._apply_one(raw, p, ch)
                elif kind is ChangeKind.UPDATE:
                    self._update_run(raw, p, run)
                elif kind is ChangeKind.DELETE:
                    self._delete_run(raw, p, run)
                else:  # key change, alone
                    self._update_rows(raw, p, {p.key_of(run[0]): new_row(run[0])}, run, keys=True)

    def _loaded(self, p: Plan, changes: Sequence[RowChange]) -> list[RowChange]:
        """Changes with the array JSON form and value policies applied to the columns that have
        them (a refused value raises ValueRangeError naming column, key and LSN)."""
        a = self

        def load(ch: RowChange, values):
            if values is None:
                return None
            out = list(values)
            for i in p.loaded:
                out[i] = a.convert(i, out[i], ch)
            return tuple(out)

        return [dataclasses.replace(ch, new=load(ch, ch.new), old=load(ch, ch.old)) for ch in changes]

    def _insert_run(self, raw, p: Plan, run: list[RowChange]) -> None:
        raw.register(STAGE, _stage({f"c{i}": list(c) for i, c in enumerate(zip(*(ch.new for ch in run)))}))
        try:
            raw.execute(f"{p.insert_sql} FROM {STAGE}").fetchall()
        finally:
            _unregister(raw, STAGE)

    def _update_run(self, raw, p: Plan, run: list[RowChange]) -> None:
        """Coalesce by key (later values win, UNCHANGED keeps an earlier one) and update set-wise."""
        merged: dict[tuple, tuple] = {}
        for ch in run:
            key, new = p.key_of(ch), new_row(ch)
            vals = merged.get(key)
            merged[key] = (
                new if vals is None else tuple(o if v is UNCHANGED else v for o, v in zip(vals, new))
            )
        self._update_rows(raw, p, merged, run, keys=False)

    def _update_rows(self, raw, p: Plan, rows: dict[tuple, tuple], run, keys: bool) -> None:
        """UPDATE rows (key → new values), one statement per set of UNCHANGED columns."""
        groups: dict[tuple, list[tuple]] = {}
        skip = set() if keys else set(p.key_idx)
        every = tuple(i for i in range(len(p.cols)) if i not in skip)
        for key, vals in rows.items():
            pat = tuple(i for i in every if vals[i] is not UNCHANGED) if UNCHANGED in vals else every
            groups.setdefault(pat, []).append(key)
        for set_idx, group in groups.items():
            data = {f"k{j}": [k[j] for k in group] for j in range(len(p.key_idx))}
            data.update({f"c{i}": [rows[k][i] for k in group] for i in set_idx})
            sql = p.update_sql(set_idx) if set_idx else p.count_sql()
            self._checked(raw, p, _stage(data), sql, len(group), run, p.unsettle_sql(set_idx))

    def _delete_run(self, raw, p: Plan, run: list[RowChange]) -> None:
        keys = list(dict.fromkeys(p.key_of(ch) for ch in run))
        data = {f"k{j}": [k[j] for k in keys] for j in range(len(p.key_idx))}
        self._checked(raw, p, _stage(data), p.delete_sql(), len(keys), run)
        if len(keys) < len(run):  # the same key deleted twice in a run: the second finds nothing
            seen: set = set()
            dups = []
            for ch in run:
                k = p.key_of(ch)
                if k in seen:
                    dups.append(ch)
                seen.add(k)
            self.missing(dups, len(dups))

    def _checked(self, raw, p: Plan, stage: pa.Table, sql: str, expected: int, run, before: str = "") -> None:
        """Run ``before`` (if any), then ``sql`` against the staging rows; fewer rows matched by
        ``sql`` than staged is divergence."""
        raw.register(STAGE, stage)
        try:
            if before:
                raw.execute(before)
            done = raw.sql(sql).to_arrow_table() if "RETURNING" in sql else None
            n = done.num_rows if done is not None else raw.execute(sql).fetchall()[0][0]
            if n >= expected:
                return
            if done is not None:
                raw.register(DONE, done)
            missing = set(raw.execute(p.missing_sql(DONE if done is not None else None)).fetchall())
        finally:
            _unregister(raw, STAGE, DONE)
        chs = [ch for ch in run if p.key_of(ch) in missing]
        self.missing(chs or run[:1], expected - n)

    def _apply_one(self, raw, p: Plan, ch: RowChange) -> None:
        """Key-less FULL identity: UPDATE/DELETE exactly one row matching every sent old column."""
        old = identity_row(ch)
        match_idx = tuple(i for i, v in enumerate(old) if v is not UNCHANGED)
        found = raw.execute(p.find_one_sql(match_idx), [old[i] for i in match_idx]).fetchall()
        if not found:
            self.missing([ch], 1)
            return
        if ch.kind is ChangeKind.DELETE:
            raw.execute(p.one_row_sql(None), [found[0][0]])
            return
        new = new_row(ch)
        set_idx = tuple(i for i, v in enumerate(new) if v is not UNCHANGED)
        for cols, unsettle in ((tuple(i for i in set_idx if i in p.loose), True), (set_idx, False)):
            if cols:
                raw.execute(p.one_row_sql(cols, unsettle), [new[i] for i in cols] + [found[0][0]])
