"""SQLite and MySQL/MariaDB targets, change path: rows staged in a temporary table, then applied
with one statement per run and kind.

Contract: as :class:`~.set_apply.SetApplier`.  Values are what the generic path binds: each
column's loader (value policy included) composed with its SQLAlchemy bind processor, handed to the
driver's own ``executemany`` as tuples (pymysql sends multi-row INSERTs; sqlite3 loops in C).
INSERT runs go straight into the table.  UPDATE and DELETE runs stage their keys (and new values)
in a temporary table made from the target table's own columns (``CREATE … AS SELECT … WHERE 1 =
0``: the same types, collations and SQLite affinities) plus a row number ``_rp_n`` (created once
per connection, emptied after each use), then run UPDATE … FROM / JOIN, or DELETE by key from the
staged rows; the staged keys without a target row are found by an anti-join and named by number.
Nothing here commits; temporary tables do not end a MySQL transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from .set_apply import SetApplier

_SERIALS = itertools.count(1)  # one per applier made in this process


class StagedApplier(SetApplier):
    """The SQLite / MySQL applier of one mapped table."""

    def __init__(self, target, m):
        super().__init__(target, m)
        self._binds: list | None = None
        self._text: dict[Any, str] = {}
        self._serial = next(_SERIALS)
        self._stages: dict[tuple, str] = {}

    # ------------------------------------------------------------ values
    def _bound(self, conn: Connection, idx: tuple, rows: list) -> list[tuple]:
        """Row-wise values (already loaded) of columns ``idx`` through their bind processors."""
        if self._binds is None:
            d = conn.dialect
            self._binds = [c.type.dialect_impl(d).bind_processor(d) for c in self.cols]
        procs = [(j, self._binds[i]) for j, i in enumerate(idx) if self._binds[i] is not None]
        if not procs:
            return [tuple(r) for r in rows]
        out = []
        for r in rows:
            r = list(r)
            for j, f in procs:
                if r[j] is not None:
                    r[j] = f(r[j])
            out.append(tuple(r))
        return out

    def _marks(self, conn: Connection, n: int) -> str:
        return ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * n)

    # ------------------------------------------------------------ SQL text
    def _names(self, conn: Connection) -> tuple[str, list[str]]:
        q = conn.dialect.identifier_preparer
        return q.format_table(self.t), [q.quote_identifier(c.name) for c in self.cols]

    def _stage_name(self, idx: tuple) -> str:
        """Unique in this process per applier (a mapping, with its columns as they are: after a
        schema change a pooled connection may still hold the old layout's tables) and columns."""
        if idx not in self._stages:
            self._stages[idx] = f"_rp_stage_{self._serial}_{len(self._stages)}"
        return self._stages[idx]

    def _stage(self, conn: Connection, idx: tuple, rows: list) -> str:
        """Fill the temporary table of columns ``idx`` (keys first) with numbered ``rows``."""
        name = self._stage_name(idx)
        if ("stage", idx) not in self._text:
            table, names = self._names(conn)
            cols = ", ".join(f"t.{names[i]} AS s{j}" for j, i in enumerate(idx))
            self._text[("stage", idx)] = (
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} AS SELECT 0 AS _rp_n, {cols} FROM {table} AS t WHERE 1 = 0"
            )
            staged = ", ".join(f"s{j}" for j in range(len(idx)))
            self._text[("fill", idx)] = (
                f"INSERT INTO {name} (_rp_n, {staged}) VALUES ({self._marks(conn, len(idx) + 1)})"
            )
        conn.exec_driver_sql(self._text[("stage", idx)])
        bound = self._bound(conn, idx, rows)
        conn.exec_driver_sql(self._text[("fill", idx)], [(n, *r) for n, r in enumerate(bound)])
        return name

    def _clear(self, conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"DELETE FROM {name}")

    def _match(self, conn: Connection) -> str:
        names = self._names(conn)[1]
        return " AND ".join(f"t.{names[i]} = s.s{j}" for j, i in enumerate(self.key_idx))

    def _sql(self, conn: Connection, what: str, stage: str, set_idx: tuple = ()) -> str:
        table, names = self._names(conn)
        nk, match = len(self.key_idx), self._match(conn)
        if what == "update" and not set_idx:
            return f"SELECT count(*) FROM {table} AS t JOIN {stage} AS s ON {match}"
        if what == "update" and conn.dialect.name == "sqlite":
            sets = ", ".join(f"{names[i]} = s.s{nk + j}" for j, i in enumerate(set_idx))
            return f"UPDATE {table} AS t SET {sets} FROM {stage} AS s WHERE {match}"
        if what == "update":
            sets = ", ".join(f"t.{names[i]} = s.s{nk + j}" for j, i in enumerate(set_idx))
            return f"UPDATE {table} AS t JOIN {stage} AS s ON {match} SET {sets}"
        if what == "missing":
            return f"SELECT s._rp_n FROM {stage} AS s WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {match})"
        if conn.dialect.name == "sqlite":
            keys = ", ".join(names[i] for i in self.key_idx)
            staged = ", ".join(f"s{j}" for j in range(nk))
            return f"DELETE FROM {table} WHERE ({keys}) IN (SELECT {staged} FROM {stage})"
        return f"DELETE t FROM {table} AS t JOIN {stage} AS s ON {match}"

    # ------------------------------------------------------------ set-based
    def insert_set(self, conn, rows: list[Sequence]) -> None:
        table, names = self._names(conn)
        head = f"INSERT INTO {table} ({', '.join(names)})"
        if conn.dialect.paramstyle != "qmark":  # pymysql formats the statement with %
            head = head.replace("%", "%%")
        sql = f"{head} VALUES ({self._marks(conn, len(names))})"
        conn.exec_driver_sql(sql, self._bound(conn, tuple(range(len(self.cols))), rows))

    def update_set(self, conn, set_idx: tuple, keys: list[tuple], values: list[Sequence]) -> int:
        idx = tuple(self.key_idx) + set_idx
        stage = self._stage(conn, idx, [k + tuple(v) for k, v in zip(keys, values)])
        result = conn.exec_driver_sql(self._sql(conn, "update", stage, set_idx))
        found = result.scalar() if not set_idx else result.rowcount
        self._clear(conn, stage)
        return int(found or 0)

    def missing_keys(self, conn, keys: list[tuple]) -> list[int]:
        stage = self._stage(conn, tuple(self.key_idx), keys)
        rows = [r[0] for r in conn.exec_driver_sql(self._sql(conn, "missing", stage))]
        self._clear(conn, stage)
        return rows

    def delete_set(self, conn, keys: list[tuple]) -> list[int]:
        stage = self._stage(conn, tuple(self.key_idx), keys)
        missing = [r[0] for r in conn.exec_driver_sql(self._sql(conn, "missing", stage))]
        conn.exec_driver_sql(self._sql(conn, "delete", stage))
        self._clear(conn, stage)
        return missing
