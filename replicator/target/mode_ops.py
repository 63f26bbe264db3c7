"""What a mode (replicator/modes.py) needs of a target beyond applying changes, written once in
SQLAlchemy Core for every database: the ``<table>_current`` view, the replacement of a marked row
by a new INSERT of its key, and TRUNCATE as marking.

Contract: every function works in the caller's open transaction (the batch's, with the applied
LSN); values go through the table's own loaders, as the changes' do.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import ChangeKind, RowChange, TableMapping

IN_CHUNK = 500  # keys per DELETE … IN (…)


def _marked_column(target, m: TableMapping) -> sa.Column:
    assert m.mode is not None
    return target.table(m).c[m.mode.name("deleted")]


def current_rows(target, m: TableMapping):
    """The condition of the rows ``<table>_current`` shows: unmarked, or current and live."""
    assert m.mode is not None
    t = target.table(m)
    if m.mode.kind == "history":
        live = t.c[m.mode.name("op")] != sa.literal_column("'delete'")  # rendered into a view
        return sa.and_(t.c[m.mode.name("valid_to_lsn")].is_(None), live)
    return sa.not_(_marked_column(target, m))


def create_current_view(target, conn: Connection, m: TableMapping, plain_columns: Sequence[str]) -> None:
    """``<table>_current``: the unmarked rows with the replicated columns (replaced if there)."""
    t = target.table(m)
    q = conn.dialect.identifier_preparer
    name = f"{m.target_name}_current"
    full = f"{q.quote(m.target_schema)}.{q.quote(name)}" if m.target_schema else q.quote(name)
    select = sa.select(*[t.c[c] for c in plain_columns]).where(current_rows(target, m))
    body = str(select.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    conn.exec_driver_sql(f"DROP VIEW IF EXISTS {full}")
    conn.exec_driver_sql(f"CREATE VIEW {full} AS {body}")


def apply(target, conn: Connection, m: TableMapping, changes: Sequence[RowChange]) -> None:
    """Apply a table's drained changes as its mode says (history: history_ops.py)."""
    assert m.mode is not None
    if m.mode.kind == "history":
        from . import history_ops

        history_ops.apply(target, conn, m, changes)
    else:
        apply_soft_delete(target, conn, m, changes)


def apply_soft_delete(target, conn: Connection, m: TableMapping, changes: Sequence[RowChange]) -> None:
    """Apply a soft_delete table's drained changes: before each run of INSERTs, the marked rows
    of their keys are removed (a key deleted before and inserted again comes back unmarked).  A
    run holds each key once: a key inserted, marked and inserted again in one batch (the net
    changes keep such a sequence as it came) is purged again before its second INSERT."""
    for is_insert, group in groupby(changes, key=lambda ch: ch.kind is ChangeKind.INSERT):
        for run in _distinct_runs(list(group), m) if is_insert else [list(group)]:
            if is_insert:
                purge_marked(target, conn, m, run)
            target.apply(conn, m, run)


def _distinct_runs(inserts: list[RowChange], m: TableMapping) -> list[list[RowChange]]:
    """``inserts`` cut into runs in which no key appears twice (order kept)."""
    names = m.view.column_names
    idx = [names.index(k) for k in m.view.key]
    runs: list[list[RowChange]] = [[]]
    seen: set[tuple] = set()
    for ch in inserts:
        assert ch.new is not None
        key = tuple(ch.new[i] for i in idx)
        if key in seen:
            runs.append([])
            seen.clear()
        seen.add(key)
        runs[-1].append(ch)
    return runs


def purge_marked(target, conn: Connection, m: TableMapping, inserts: Sequence[RowChange]) -> None:
    """Delete the marked rows whose keys ``inserts`` are about to insert."""
    applier = target.applier(m)
    t, marked = target.table(m), _marked_column(target, m)
    cols = [t.c[k] for k in m.view.key]
    keys = [tuple(applier.key_values(ch)) for ch in inserts]
    for i in range(0, len(keys), IN_CHUNK):
        chunk = keys[i : i + IN_CHUNK]
        match = cols[0].in_([k[0] for k in chunk]) if len(cols) == 1 else sa.tuple_(*cols).in_(chunk)
        conn.execute(sa.delete(t).where(marked == sa.true(), match))


def truncate(target, conn: Connection, m: TableMapping, lsn: int, commit_time, seq: int) -> None:
    """A source TRUNCATE of a table with a mode: soft_delete marks every row; history closes
    every live version with a tombstone."""
    from .. import modes

    assert m.mode is not None
    if m.mode.kind == "history":
        from . import history_ops

        history_ops.truncate(target, conn, m, modes.time_text(commit_time), modes.lsn_text(lsn), seq)
    else:
        mark_all(target, conn, m, modes.marks(lsn, commit_time))


def mark_all(target, conn: Connection, m: TableMapping, marks: tuple[str, Optional[str], str]) -> None:
    """A TRUNCATE of a soft_delete table: every unmarked row is marked with ``marks`` (the mode
    values of a delete at the TRUNCATE's commit, as PostgreSQL text)."""
    assert m.mode is not None
    applier = target.applier(m)
    t = target.table(m)
    names = [name for _role, name in m.mode.columns]
    first = len(m.view.columns) - len(names)
    values = {t.c[n]: applier.convert(first + i, v) for i, (n, v) in enumerate(zip(names, marks))}
    conn.execute(sa.update(t).where(_marked_column(target, m) == sa.false()).values(values))
