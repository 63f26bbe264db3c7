"""Snapshot copy phase, source side: import an exported snapshot and COPY a table out of it.

Contract: :func:`snapshot_connection` returns a connection inside a REPEATABLE READ, READ ONLY
transaction that sees exactly the exported snapshot, so every table copied through it is consistent
with the slot's consistent point.  Output is streamed in bounded chunks: memory never holds a table.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, Optional

import psycopg
from psycopg import sql

from ..dsn import redact, source_conninfo
from ..errors import SourceError, SourceUnavailable
from ..model import TableSchema

CHUNK_BYTES = 8 << 20
ROWS_PER_BATCH = 5000


def connect(dsn: str, **kw: Any) -> psycopg.Connection:
    """A normal source connection with the pinned session settings (UTC, ISO, hex bytea)."""
    try:
        return psycopg.connect(source_conninfo(dsn), **kw)
    except psycopg.OperationalError as e:
        raise SourceUnavailable(f"cannot connect to the source: {redact(e)}".strip()) from None


def snapshot_connection(dsn: str, snapshot: Optional[str]) -> psycopg.Connection:
    """A connection whose open transaction uses ``snapshot`` (or a fresh one when None)."""
    conn = connect(dsn)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if snapshot:
        try:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        except psycopg.Error as e:
            conn.close()
            raise SourceError(
                f"cannot import exported snapshot {snapshot}: {e}; the slot's "
                f"snapshot is valid only while its creating session is idle"
            ) from None
    return conn


def label_session(conn: psycopg.Connection, name: str) -> None:
    """Set application_name so that pg_stat_activity / pg_stat_progress_copy show what runs."""
    conn.execute("SELECT set_config('application_name', %s, false)", (name[:63],))


def copy_progress(conn: psycopg.Connection, stream: str) -> dict[str, int]:
    """Rows copied so far per table, for the copies of ``stream`` running right now."""
    prefix = f"replicator {stream} copy "
    rows = conn.execute(
        "SELECT a.application_name, p.tuples_processed FROM pg_stat_progress_copy p "
        "JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE %s",
        (prefix.replace("_", "\\_") + "%",),
    ).fetchall()
    return {name[len(prefix) :]: int(n) for name, n in rows}


def row_estimate(conn: psycopg.Connection, t: TableSchema) -> int:
    """The planner's row estimate (pg_class.reltuples, summed over partitions); 0 when unknown."""
    row = conn.execute(
        "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
        "WHERE c.oid = %s::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree(%s::regclass))",
        (sql.Identifier(t.schema, t.name).as_string(conn),) * 2,
    ).fetchone()
    return int(row[0]) if row else 0


def _partitioned(t: TableSchema) -> sql.Composed:
    """A condition, constant for the query: ``t`` is a partitioned table (relkind 'p')."""
    return sql.SQL(
        "(SELECT c.relkind = 'p' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {})"
    ).format(sql.Literal(t.schema), sql.Literal(t.name))


def own_rows_select(t: TableSchema, select: sql.Composable, where: str = "") -> sql.Composed:
    """``SELECT <select>`` over the rows that belong to ``t`` itself, filtered by ``where``.

    A plain table is read with ``ONLY``: the rows of inheritance children are not its rows
    (pgoutput publishes a child's changes as the child's, and a replicated child is copied as its
    own table).  A partitioned table is read whole: its rows live in its partitions and are
    published through the root, and ``ONLY`` on a partitioned root reads nothing.  The choice is
    made by the server while planning (a one-time filter on the second branch of a UNION ALL),
    so a branch that does not apply reads no table."""
    name = sql.Identifier(t.schema, t.name)
    cond = sql.SQL(" AND ({})").format(sql.SQL(where)) if where else sql.SQL("")
    return sql.SQL(
        "SELECT {s} FROM ONLY {t} WHERE NOT {p}{w} UNION ALL SELECT {s} FROM {t} WHERE {p}{w}"
    ).format(s=select, t=name, p=_partitioned(t), w=cond)


def relation(conn: psycopg.Connection, t: TableSchema) -> sql.Composed:
    """``t`` as a FROM item reading its own rows: ``ONLY t`` unless it is partitioned (see
    :func:`own_rows_select`); for queries that need one FROM item (ORDER BY, system columns)."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (t.schema, t.name),
    ).fetchone()
    name = sql.Identifier(t.schema, t.name)
    return sql.SQL("{}").format(name) if row and row[0] == "p" else sql.SQL("ONLY {}").format(name)


def copy_query(t: TableSchema, exprs: Sequence[str], options: str, where: str = "") -> sql.Composed:
    """``COPY (SELECT <exprs> FROM t [WHERE …]) TO STDOUT (<options>)``; ``{col}`` → quoted name.
    One expression per column of ``t``; expressions beyond them are output as they are (a
    target's own extra output columns).  Reads the rows of ``t`` itself, never those of
    inheritance children (:func:`own_rows_select`)."""
    cols = [
        sql.SQL(e.replace("{col}", "{}")).format(sql.Identifier(c.name)) if "{col}" in e else sql.SQL(e)
        for e, c in zip(exprs, t.columns)
    ]
    cols += [sql.SQL(e) for e in exprs[len(t.columns) :]]
    q = own_rows_select(t, sql.SQL(", ").join(cols), where)
    return sql.SQL("COPY ({}) TO STDOUT ({})").format(q, sql.SQL(options))


def copy_bytes(conn: psycopg.Connection, query: sql.Composed, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Stream COPY output in chunks of about ``chunk`` bytes, each ending at a row boundary."""
    buf = bytearray()
    with conn.cursor().copy(query) as cp:
        for data in cp:
            buf += data
            if len(buf) >= chunk:
                cut = buf.rfind(b"\n") + 1
                yield bytes(buf[:cut])
                del buf[:cut]
    if buf:
        yield bytes(buf)


_ESC = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape_match(m: re.Match[str]) -> str:
    if m.group(1):
        return chr(int(m.group(1), 8))
    if m.group(2):
        return chr(int(m.group(2), 16))
    c: str = m.group(3)
    return _SIMPLE.get(c, c)


def parse_text_line(line: str) -> tuple:
    """One COPY text-format line → tuple of PostgreSQL text values (None for ``\\N``)."""
    out: list[Optional[str]] = []
    for f in line.split("\t"):
        if f == "\\N":
            out.append(None)
        elif "\\" in f:
            out.append(_ESC.sub(_unescape_match, f))
        else:
            out.append(f)
    return tuple(out)


def copy_rows(
    conn: psycopg.Connection, query: sql.Composed, batch: int = ROWS_PER_BATCH
) -> Iterator[list[tuple]]:
    """Stream a COPY in text format as batches of tuples of PostgreSQL text values."""
    rows: list[tuple] = []
    tail = ""
    for chunk in copy_bytes(conn, query, chunk=1 << 20):
        text = tail + chunk.decode("utf-8")
        lines = text.split("\n")
        tail = lines.pop()
        rows.extend(parse_text_line(ln) for ln in lines)
        while len(rows) >= batch:
            yield rows[:batch]
            rows = rows[batch:]
    if tail:
        rows.append(parse_text_line(tail))
    if rows:
        yield rows


class CopyOut:
    """One ``COPY … TO STDOUT`` of the snapshot, read once, the way the target's loader wants it:
    :meth:`chunks` (the raw output in chunks of about ``chunk`` bytes, each ending at a row
    boundary, in the format the query asked for) or :meth:`rows` (batches of PostgreSQL text
    tuples; text format only).  ``watch`` sees every chunk or batch before the loader does
    (progress, abort checks: it may raise).  Closed before the end, the COPY is cancelled on the
    server first, so the connection is free at once instead of reading the rest of the table."""

    def __init__(
        self,
        conn: psycopg.Connection,
        query: sql.Composed,
        chunk: int = CHUNK_BYTES,
        watch: Optional[Callable[[object], None]] = None,
    ):
        self.conn, self.query, self.chunk, self.watch = conn, query, chunk, watch
        self._it: Optional[Generator[Any, None, None]] = None

    def chunks(self) -> Iterator[bytes]:
        return self._read(copy_bytes(self.conn, self.query, self.chunk))

    def rows(self) -> Iterator[list[tuple]]:
        return self._read(copy_rows(self.conn, self.query))

    def close(self) -> None:
        if self._it is not None:
            self._it.close()

    def _read(self, data: Iterator[Any]) -> Generator[Any, None, None]:
        if self._it is not None:
            raise RuntimeError("a COPY output is read once")
        self._it = self._guarded(data)
        return self._it

    def _guarded(self, data: Iterator[Any]) -> Generator[Any, None, None]:
        finished = False
        try:
            for item in data:
                if self.watch is not None:
                    self.watch(item)
                yield item
            finished = True
        finally:
            if not finished:
                self.conn.cancel_safe()
                with contextlib.suppress(Exception):
                    data.close()  # type: ignore[attr-defined]  # a generator here
