"""Snapshot copy phase, source side: import an exported snapshot and COPY a table out of it.

Contract: :func:`snapshot_connection` returns a connection inside a REPEATABLE READ, READ ONLY
transaction that sees exactly the exported snapshot, so every table copied through it is consistent
with the slot's consistent point.  Output is streamed in bounded chunks: memory never holds a table.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Optional

import psycopg
from psycopg import sql

from ..dsn import asyncpg_params, redact, source_conninfo
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
    """Rows copied so far per table (summed over a split table's pieces), for the copies of
    ``stream`` running right now."""
    prefix = f"replicator {stream} copy "
    rows = conn.execute(
        "SELECT a.application_name, p.tuples_processed FROM pg_stat_progress_copy p "
        "JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE %s",
        (prefix.replace("_", "\\_") + "%",),
    ).fetchall()
    out: dict[str, int] = {}
    for name, n in rows:  # a split table is copied by several sessions at once: their sum
        out[name[len(prefix) :]] = out.get(name[len(prefix) :], 0) + int(n)
    return out


# the row estimate of a table (``{p}``: its quoted name as a parameter), partitions summed
ROW_ESTIMATE = (
    "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
    "WHERE c.oid = {p}::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree({p}::regclass))"
)


def row_estimate(conn: psycopg.Connection, t: TableSchema) -> int:
    """The planner's row estimate (pg_class.reltuples, summed over partitions); 0 when unknown."""
    row = conn.execute(
        ROW_ESTIMATE.format(p="%s"), (sql.Identifier(t.schema, t.name).as_string(conn),) * 2
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


def copy_select(t: TableSchema, exprs: Sequence[str], where: str = "") -> sql.Composed:
    """``SELECT <exprs> FROM t [WHERE …]``; ``{col}`` → quoted name.  One expression per column
    of ``t``; expressions beyond them are output as they are (a target's own extra output
    columns).  Reads the rows of ``t`` itself, never those of inheritance children
    (:func:`own_rows_select`)."""
    return own_rows_select(t, _output_columns(t, exprs), where)


def piece_select(
    t: TableSchema,
    exprs: Sequence[str],
    where: str,
    lo: int,
    hi: Optional[int],
    rel: Optional[tuple[str, str]] = None,
) -> sql.Composed:
    """:func:`copy_select` over the heap pages ``[lo, hi)`` of the plain table ``t`` (``hi`` None:
    to the end), or of ``rel`` (schema, name: a leaf partition of ``t``, whose columns carry the
    same names): a TID range scan reads only those pages (PostgreSQL 14+)."""
    cond: list[sql.Composable] = []
    if lo or hi is not None:
        cond.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({lo},0)")))
    if hi is not None:
        cond.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({hi},0)")))
    if where:
        cond.append(sql.SQL("({})").format(sql.SQL(where)))
    schema, name = rel or (t.schema, t.name)
    return sql.SQL("SELECT {} FROM ONLY {} WHERE {}").format(
        _output_columns(t, exprs),
        sql.Identifier(schema, name),
        sql.SQL(" AND ").join(cond or [sql.SQL("true")]),
    )


def _output_columns(t: TableSchema, exprs: Sequence[str]) -> sql.Composed:
    cols = [
        sql.SQL(e.replace("{col}", "{}")).format(sql.Identifier(c.name)) if "{col}" in e else sql.SQL(e)
        for e, c in zip(exprs, t.columns)
    ]
    cols += [sql.SQL(e) for e in exprs[len(t.columns) :]]
    return sql.SQL(", ").join(cols)


def copy_statement(select: sql.Composable, options: str) -> sql.Composed:
    """``COPY (<select>) TO STDOUT (<options>)``."""
    return sql.SQL("COPY ({}) TO STDOUT ({})").format(select, sql.SQL(options))


def copy_query(t: TableSchema, exprs: Sequence[str], options: str, where: str = "") -> sql.Composed:
    """``COPY (`` :func:`copy_select` ``) TO STDOUT (<options>)``."""
    return copy_statement(copy_select(t, exprs, where), options)


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
    return rows_of(copy_bytes(conn, query, chunk=1 << 20), batch)


def rows_of(chunks: Iterable[bytes], batch: int = ROWS_PER_BATCH) -> Iterator[list[tuple]]:
    """Text-format COPY output (chunks ending at row ends) as batches of PostgreSQL text tuples."""
    rows: list[tuple] = []
    tail = ""
    for chunk in chunks:
        text = tail + chunk.decode("utf-8")
        lines = text.split("\n")
        tail = lines.pop()
        rows.extend(parse_text_line(ln) if "\\" in ln else tuple(ln.split("\t")) for ln in lines)
        while len(rows) >= batch:
            yield rows[:batch]
            rows = rows[batch:]
    if tail:
        rows.append(parse_text_line(tail))
    if rows:
        yield rows


class Output:
    """One COPY output, read once, the way the target's loader wants it (``model.CopyOutput``):
    :meth:`chunks` (the raw output in chunks of about ``chunk`` bytes, each ending at a row
    boundary, in the format the query asked for) or :meth:`rows` (batches of PostgreSQL text
    tuples; text format only).  ``read(size)`` starts the COPY and yields its chunks; closing
    that generator early must cancel the COPY on the server.  ``watch`` sees every chunk or batch
    before the loader does (progress, abort checks: it may raise)."""

    def __init__(
        self,
        read: Callable[[int], Iterator[bytes]],
        chunk: int = CHUNK_BYTES,
        watch: Optional[Callable[[object], None]] = None,
    ):
        self._read_chunks, self.chunk, self.watch = read, chunk, watch
        self._it: Optional[Generator[Any, None, None]] = None

    def chunks(self) -> Iterator[bytes]:
        return self._read(self._read_chunks(self.chunk))

    def rows(self) -> Iterator[list[tuple]]:
        return self._read(rows_of(self._read_chunks(1 << 20)))

    def close(self) -> None:
        """End the read before its end: the COPY is cancelled on the server."""
        if self._it is not None:
            self._it.close()

    def _read(self, data: Iterator[Any]) -> Generator[Any, None, None]:
        if self._it is not None:
            raise RuntimeError("a COPY output is read once")
        self._it = self._guarded(data)
        return self._it

    def _guarded(self, data: Iterator[Any]) -> Generator[Any, None, None]:
        try:
            for item in data:
                if self.watch is not None:
                    self.watch(item)
                yield item
        finally:
            with contextlib.suppress(Exception):
                data.close()  # type: ignore[attr-defined]  # a generator: cancels an unfinished COPY


class CopyOut(Output):
    """The COPY ``query`` (a whole ``COPY … TO STDOUT`` statement) on the psycopg connection
    ``conn``, as an :class:`Output`."""

    def __init__(
        self,
        conn: psycopg.Connection,
        query: sql.Composed,
        chunk: int = CHUNK_BYTES,
        watch: Optional[Callable[[object], None]] = None,
    ):
        super().__init__(lambda size: _cancelling(conn, copy_bytes(conn, query, size)), chunk, watch)


def _cancelling(conn: psycopg.Connection, data: Iterator[bytes]) -> Generator[bytes, None, None]:
    """``data``; closed before its end, the COPY is cancelled on the server first, so the
    connection is free at once instead of reading the rest of the table."""
    finished = False
    try:
        yield from data
        finished = True
    finally:
        if not finished:
            conn.cancel_safe()
            with contextlib.suppress(Exception):
                data.close()  # type: ignore[attr-defined]


class PgSession:
    """A snapshot session on one psycopg connection (:func:`snapshot_connection`): the copy
    workers' session when the fast path (``fastcopy``) cannot serve the DSN."""

    def __init__(self, dsn: str, snapshot: Optional[str]):
        self.conn = snapshot_connection(dsn, snapshot)

    def label(self, name: str) -> None:
        label_session(self.conn, name)

    def row_estimate(self, t: TableSchema) -> int:
        return row_estimate(self.conn, t)

    def fetch(self, query: str) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(query).fetchall()]

    def copy_out(
        self, select: sql.Composable, options: str, chunk: int, watch: Optional[Callable[[object], None]]
    ) -> Output:
        return CopyOut(self.conn, copy_statement(select, options), chunk, watch)

    def cancel(self) -> None:
        self.conn.cancel_safe()

    def close(self) -> None:
        self.conn.close()


def open_session(dsn: str, snapshot: Optional[str]) -> Any:
    """A copy worker's snapshot session: asyncpg (``fastcopy.FastSession``) when it can connect
    the way libpq would (``dsn.asyncpg_params``), else psycopg (:class:`PgSession`)."""
    params = asyncpg_params(dsn)
    if params is None:
        return PgSession(dsn, snapshot)
    from .fastcopy import FastSession

    return FastSession(params, snapshot)
