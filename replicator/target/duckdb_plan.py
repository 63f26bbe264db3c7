"""DuckDB target, the SQL of one mapped table (:class:`Plan`): the copy's INSERT … SELECT with its
conversions and refusal marks, and the change path's set-based statements over an Arrow staging
relation (UPDATE … FROM, DELETE … USING … RETURNING, the divergence checks), built once per
mapping.  Used by duckdb.py only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb

from ..model import RowChange, TableMapping
from . import value_rules
from .applier import identity_row
from .duckdb_types import loose_equality

if TYPE_CHECKING:  # the change path imports it lazily (start-up time)
    import pyarrow as pa

    from .duckdb import DuckDBTarget

STAGE = "_rp_stage"  # registered Arrow staging relation (per connection)
DONE = "_rp_done"  # rows a DELETE ... RETURNING removed
REFUSED = "replicator-refused:"  # prefix of the error() a marked copy value raises


class Plan:
    """SQL for one mapped table, built once: conversions, staging statements, key handling."""

    def __init__(self, target: DuckDBTarget, m: TableMapping):
        q = target.engine.dialect.identifier_preparer
        self.m, self.cols = m, m.view.columns
        self.table = q.format_table(target.table(m))
        self.names = [q.quote_identifier(c.name) for c in self.cols]
        self.key_idx = [m.view.column_names.index(k) for k in m.view.key]
        convs = [target.column_conv(c) for c in self.cols]
        self.conv = [lambda v, c=c: c.cast.format(v=v) for c in convs]
        #: columns whose change-path text goes through Python first (array JSON, value policies)
        self.loaded = [
            i
            for i, (c, cv) in enumerate(zip(self.cols, convs))
            if cv.load is not str or (cv.rule is not None and c.policy != "text")
        ]
        self.marked = [
            i
            for i, (c, cv) in enumerate(zip(self.cols, convs))
            if cv.rule is not None and c.policy == "error"
        ]
        #: column → two unequal values of its type, where ``=`` holds between differing values
        self.loose = {i: pair for i, cv in enumerate(convs) if (pair := loose_equality(cv.ddl))}
        self.insert_sql = f"INSERT INTO {self.table} ({', '.join(self.names)}) SELECT " + ", ".join(
            self.load_sql(i) for i in range(len(self.cols))
        )
        self.key_match = self.match("_rp_t")

    def load_sql(self, i: int) -> str:
        """The conversion of loaded column ``c<i>``; a value the copy query marked as refused
        raises ``error()`` with the column number, the row's key values and the value."""
        if i not in self.marked:
            return self.conv[i](f"c{i}")
        key = ", ".join(f"coalesce(c{k}, 'NULL')" for k in self.key_idx or range(len(self.cols)))
        return (
            f"CASE WHEN starts_with(c{i}, '{value_rules.MARK}') THEN error(concat('{REFUSED}', {i}, "
            f"chr(31), concat_ws(chr(31), {key}), chr(30), c{i})) ELSE {self.conv[i](f'c{i}')} END"
        )

    def match(self, alias: str) -> str:
        """``alias``'s key columns equal the converted staged keys ``s.k0, s.k1 ...``."""
        return " AND ".join(
            f"{alias}.{self.names[i]} = {self.conv[i](f's.k{j}')}" for j, i in enumerate(self.key_idx)
        )

    def key_of(self, ch: RowChange) -> tuple:
        src = identity_row(ch)
        return tuple(src[i] for i in self.key_idx)

    def update_sql(self, set_idx: Sequence[int]) -> str:
        sets = ", ".join(f"{self.names[i]} = {self.conv[i](f's.c{i}')}" for i in set_idx)
        return f"UPDATE {self.table} AS _rp_t SET {sets} FROM {STAGE} AS s WHERE {self.key_match}"

    def unsettle(self, set_idx: Sequence[int], value) -> str:
        """SET list giving each loose-equality column of ``set_idx`` a value unequal to its new one
        (``value(i)``: the new value's SQL); '' when there is none.

        DuckDB's UPDATE leaves a stored value in place when the new one is equal to it by ``=``
        (``-0.0`` over ``0.0``, ``'32 days'`` over ``'1 mon 2 days'``), but only while the rows
        have no update of their own yet.  Running this SET first makes the real UPDATE write what
        the source sent."""
        sets = []
        for i in (i for i in set_idx if i in self.loose):
            a, b = self.loose[i]
            sets.append(f"{self.names[i]} = CASE WHEN {value(i)} = {a} THEN {b} ELSE {a} END")
        return ", ".join(sets)

    def unsettle_sql(self, set_idx: Sequence[int]) -> str:
        """The staged rows' :meth:`unsettle` UPDATE ('' when no column needs one)."""
        sets = self.unsettle(set_idx, lambda i: self.conv[i](f"s.c{i}"))
        return sets and f"UPDATE {self.table} AS _rp_t SET {sets} FROM {STAGE} AS s WHERE {self.key_match}"

    def delete_sql(self) -> str:
        keys = ", ".join(f"_rp_t.{self.names[i]}" for i in self.key_idx)
        return f"DELETE FROM {self.table} AS _rp_t USING {STAGE} AS s WHERE {self.key_match} RETURNING {keys}"

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.table} AS _rp_t JOIN {STAGE} AS s ON {self.key_match}"

    def missing_sql(self, done: str | None = None) -> str:
        """Staged keys without a target row (or, after a DELETE, without a ``done`` RETURNING row)."""
        keys = ", ".join(f"s.k{j}" for j in range(len(self.key_idx)))
        src = f"{self.table} AS _rp_t" if done is None else f"{done} AS _rp_t"
        return (
            f"SELECT {keys} FROM {STAGE} AS s WHERE NOT EXISTS (SELECT 1 FROM {src} WHERE {self.key_match})"
        )

    def find_one_sql(self, match_idx: Sequence[int]) -> str:
        """The rowid of one row whose columns ``match_idx`` hold ``$1..``, NULL-safe; a
        loose-equality column must also have the same text (``-0.0`` is not ``0.0`` here)."""
        conds = []
        for j, i in enumerate(match_idx):
            v = self.conv[i](f"${j + 1}")
            conds.append(f"{self.names[i]} IS NOT DISTINCT FROM {v}")
            if i in self.loose:
                conds.append(f"CAST({self.names[i]} AS VARCHAR) IS NOT DISTINCT FROM CAST({v} AS VARCHAR)")
        return f"SELECT rowid FROM {self.table} WHERE {' AND '.join(conds) or 'TRUE'} LIMIT 1"

    def one_row_sql(self, set_idx: Sequence[int] | None, unsettle: bool = False) -> str:
        """DELETE (``set_idx`` None) or UPDATE of the row whose rowid is the last parameter;
        ``$1..`` are the SET values.  ``unsettle``: the :meth:`unsettle` UPDATE ('' if none)."""
        one = f"rowid = ${len(set_idx or ()) + 1}"
        if set_idx is None:
            return f"DELETE FROM {self.table} WHERE {one}"
        if unsettle:
            sets = self.unsettle(set_idx, lambda i: self.conv[i](f"${set_idx.index(i) + 1}"))
        else:
            sets = ", ".join(f"{self.names[i]} = {self.conv[i](f'${j + 1}')}" for j, i in enumerate(set_idx))
        return sets and f"UPDATE {self.table} SET {sets} WHERE {one}"


def _unregister(raw, *names: str) -> None:
    """Drop staging views; after a failed statement DuckDB refuses until rollback (ours follows)."""
    for name in names:
        with contextlib.suppress(duckdb.Error):
            raw.unregister(name)


def _stage(columns: dict[str, list]) -> pa.Table:
    import pyarrow as pa  # only the change path needs it: keeps start-up fast

    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
