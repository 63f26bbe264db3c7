"""``mode: history`` on a target (replicator/modes.py): append versions, close the previous ones,
carry unchanged TOAST values, TRUNCATE as tombstones; in SQLAlchemy Core, for every database.

Contracts, for one flush of a table's versions (in source order) in the batch's transaction:
* Versions of one key are chained in memory: each one's ``_valid_to``/``_valid_to_lsn`` is the
  next one's ``_valid_from``/``_valid_from_lsn``; the last stays open (NULL).
* Before any is inserted, the key's version that is current on the target (from an earlier
  flush or the snapshot) is closed at the first one's commit time and LSN.  A version that must
  have a predecessor (an UPDATE's, a tombstone) and finds none is divergence: TargetError naming
  the table, key and LSN (``on_missing_row: skip`` skips it).
* Versions with every value known are inserted set-based; a version with UNCHANGED (TOAST)
  values is inserted from its predecessor row (the key's latest version before it), one by one
  in source order, after those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import TargetError
from ..model import UNCHANGED, ChangeKind, RowChange, TableMapping
from .mode_ops import IN_CHUNK

MUST = ("update", "delete")  # the ops whose version replaces a current one


class _Flush:
    """One flush of one history table: positions, converters, the chains."""

    def __init__(self, target, m: TableMapping):
        assert m.mode is not None
        self.target, self.m = target, m
        self.t = target.table(m)
        self.applier = target.applier(m)
        self.names = list(m.view.column_names)
        self.pos = {role: self.names.index(name) for role, name in m.mode.columns}
        mode_names = {name for _, name in m.mode.columns}
        self.key_names = [k for k in m.view.key if k not in mode_names]
        self.key_idx = [self.names.index(k) for k in self.key_names]

    def col(self, role: str) -> sa.Column:
        return self.t.c[self.names[self.pos[role]]]

    def value(self, role: str, row: Sequence) -> Any:
        i = self.pos[role]
        return self.applier.convert(i, row[i])

    def key_of(self, row: Sequence) -> tuple:
        return tuple(self.applier.convert(i, row[i]) for i in self.key_idx)

    def key_match(self, keys: list[tuple], table=None):
        t = self.t if table is None else table
        cols = [t.c[k] for k in self.key_names]
        if len(cols) == 1:
            return cols[0].in_([k[0] for k in keys])
        return sa.tuple_(*cols).in_(keys)


def apply(target, conn: Connection, m: TableMapping, changes: Sequence[RowChange]) -> None:
    """Apply one flush of a history table's versions (see the module contract)."""
    f = _Flush(target, m)
    rows = [list(ch.new or ()) for ch in changes]
    chains: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        chains.setdefault(tuple(r[j] for j in f.key_idx), []).append(i)
    vf, vfl, vt, vtl = (f.pos[r] for r in ("valid_from", "valid_from_lsn", "valid_to", "valid_to_lsn"))
    for chain in chains.values():
        for a, b in zip(chain, chain[1:]):
            rows[a][vt], rows[a][vtl] = rows[b][vf], rows[b][vfl]
    _close(f, conn, [(rows[c[0]], changes[c[0]]) for c in chains.values()])
    full = [RowChange(ChangeKind.INSERT, ch.table, tuple(r), lsn=ch.lsn) for r, ch in zip(rows, changes)]
    known = [v for v in full if UNCHANGED not in v.new]  # type: ignore[operator]
    if known:
        target.apply(conn, m, known)
    for v in full:
        if UNCHANGED in v.new:  # type: ignore[operator]
            _carry(f, conn, v)


def _close(f: _Flush, conn: Connection, firsts: list[tuple[list, RowChange]]) -> None:
    """Close each key's current version at its first new version's commit; check those that
    must have one (grouped by commit, chunks of keys)."""
    groups: dict[tuple, list[tuple[tuple, RowChange]]] = {}
    for row, ch in firsts:
        must = row[f.pos["op"]] in MUST and ch.old is None
        groups.setdefault((row[f.pos["valid_from"]], row[f.pos["valid_from_lsn"]], must), []).append(
            (f.key_of(row), ch)
        )
    for (when, lsn, must), items in groups.items():
        for i in range(0, len(items), IN_CHUNK):
            chunk = items[i : i + IN_CHUNK]
            keys = [k for k, _ in chunk]
            current = sa.and_(f.col("valid_to_lsn").is_(None), f.key_match(keys))
            if must:
                _check_current(f, conn, chunk, current)
            values = {
                f.col("valid_to"): f.applier.convert(f.pos["valid_to"], when),
                f.col("valid_to_lsn"): f.applier.convert(f.pos["valid_to_lsn"], lsn),
            }
            conn.execute(sa.update(f.t).where(current).values(values))


def _check_current(f: _Flush, conn: Connection, chunk: list[tuple[tuple, RowChange]], current) -> None:
    """Every key of ``chunk`` (distinct keys) has a current version, else divergence (or skip);
    the missing ones are looked up one by one only then."""
    have = conn.execute(sa.select(sa.func.count()).select_from(f.t).where(current)).scalar()
    if have == len(chunk) or f.m.on_missing_row == "skip":
        return
    missing = [(k, ch) for k, ch in chunk if not _has_current(f, conn, k)]
    if missing:
        key, ch = missing[0]
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(f.key_names, key))
        raise TargetError(
            f"{f.m.label}: no current version of key {shown} in history table "
            f"{f.target.display(f.m)} to close at LSN {ch.lsn} (the target diverged from the "
            f"source; {len(missing)} key(s) in this batch): run 'replicator verify', then resync"
        )


def _has_current(f: _Flush, conn: Connection, key: tuple) -> bool:
    where = sa.and_(f.col("valid_to_lsn").is_(None), f.key_match([key]))
    return bool(conn.execute(sa.select(sa.func.count()).select_from(f.t).where(where)).scalar())


def _carry(f: _Flush, conn: Connection, v: RowChange) -> None:
    """Insert version ``v`` taking its UNCHANGED values from its predecessor (the key's latest
    version before it on the target)."""
    assert v.new is not None
    prev = f.t.alias("prev")
    lsn, seq = f.value("valid_from_lsn", v.new), f.value("seq", v.new)
    exprs = [
        prev.c[name] if val is UNCHANGED else sa.literal(f.applier.convert(i, val), f.t.c[name].type)
        for i, (name, val) in enumerate(zip(f.names, v.new))
    ]
    p_lsn, p_seq = prev.c[f.names[f.pos["valid_from_lsn"]]], prev.c[f.names[f.pos["seq"]]]
    earlier = sa.or_(p_lsn < lsn, sa.and_(p_lsn == lsn, p_seq < seq))
    sel = (
        sa.select(*exprs)
        .where(f.key_match([f.key_of(v.new)], prev), earlier)
        .order_by(p_lsn.desc(), p_seq.desc())
        .limit(1)
    )
    n = conn.execute(sa.insert(f.t).from_select(f.names, sel)).rowcount
    if n == 0 and f.m.on_missing_row != "skip":
        raise TargetError(
            f"{f.m.label}: a version at LSN {v.lsn} has unchanged TOAST values but its key has no "
            f"earlier version in history table {f.target.display(f.m)} to take them from (the "
            f"target diverged from the source): run 'replicator verify', then resync"
        )


def truncate(target, conn: Connection, m: TableMapping, when: Any, lsn: Any, seq: int) -> None:
    """A TRUNCATE: a tombstone for every key whose current version is live (at ``when``/``lsn``,
    PostgreSQL text, position ``seq``), and those versions closed."""
    f = _Flush(target, m)
    live = sa.and_(f.col("valid_to_lsn").is_(None), f.col("op") != "delete")
    given = {"valid_from": when, "valid_from_lsn": lsn, "seq": str(seq), "op": "delete"}
    by_index = {f.pos[role]: f.applier.convert(f.pos[role], v) for role, v in given.items()}
    exprs = [
        f.t.c[name]
        if name in f.key_names
        else sa.literal(by_index.get(i), f.t.c[name].type)
        if i in by_index
        else sa.null()
        for i, name in enumerate(f.names)
    ]
    conn.execute(sa.insert(f.t).from_select(f.names, sa.select(*exprs).where(live)))
    close = {
        f.col("valid_to"): by_index[f.pos["valid_from"]],
        f.col("valid_to_lsn"): by_index[f.pos["valid_from_lsn"]],
    }
    conn.execute(sa.update(f.t).where(live).values(close))  # the tombstones are not live
