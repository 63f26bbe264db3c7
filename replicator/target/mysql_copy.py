"""The MySQL target's copy path: LOAD DATA LOCAL INFILE of the source's COPY chunks.

Contract: :meth:`MySQLLoadData.load_copy` writes each PostgreSQL CSV chunk (``NULL 'NULL'``) to its
own temp file (removed after the load, whatever happens) and loads it with ``LOAD DATA LOCAL INFILE
... ESCAPED BY ''`` on the caller's open transaction; the source COPY is read one chunk ahead in a
thread (``PREFETCH`` chunks queued at most), so memory stays bounded.  LOCAL loads turn bad values
into warnings, so any warning fails the load: ValueRangeError naming table, column, key and value
(values the copy query marked as refused, over-long strings), TargetError otherwise;
TransientError when the connection drops.  The rest of the target is :mod:`.mysql`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import queue
import re
import tempfile
import threading
from collections.abc import Generator, Iterable

import pymysql
from sqlalchemy.engine import Connection

from ..errors import TargetError, TransientError, ValueRangeError
from ..model import CopyOutput, TableMapping
from . import value_rules
from .base import Target
from .mysql_types import HEX

PREFETCH = 2  # COPY chunks read ahead of LOAD DATA (each ≤ ~8 MB)
DATA_WARNINGS = {1264, 1265, 1292, 1366, 1406, 1048, 1101, 4025, 3819}
MARK_BYTES = value_rules.MARK.encode()


def _quote_literal(s: str) -> str:
    return "'" + pymysql.converters.escape_string(s) + "'"


class MySQLLoadData(Target):
    """The copy half of :class:`~.mysql.MySQLTarget` (its base): ``load_copy`` and its errors."""

    def load_sql(self, conn: Connection, m: TableMapping, path: str) -> str:
        q = conn.dialect.identifier_preparer
        targets, sets = [], []
        for i, c in enumerate(m.view.columns):
            if self.column_conv(c).copy == HEX:
                targets.append(f"@v{i}")
                sets.append(f"{q.quote(c.name)} = UNHEX(@v{i})")
            else:
                targets.append(q.quote(c.name))
        sql = (
            f"LOAD DATA LOCAL INFILE {_quote_literal(path)} INTO TABLE {q.format_table(self.table(m))} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
            f"ESCAPED BY '' LINES TERMINATED BY '\\n' ({', '.join(targets)})"
        )
        return sql + (f" SET {', '.join(sets)}" if sets else "")

    def copy_expressions(self, m: TableMapping) -> list[str]:
        return self.sql_copy_expressions(m)

    def load_copy(self, conn: Connection, m: TableMapping, out: CopyOutput) -> int:
        """LOAD DATA each COPY chunk through its own temp file; any warning fails the load.

        The source COPY runs one chunk ahead in a thread (``PREFETCH`` chunks queued at most), so
        reading PostgreSQL overlaps loading MySQL while memory stays bounded."""
        n = 0
        with contextlib.closing(_prefetch(out.chunks(), PREFETCH)) as chunks:
            for chunk in chunks:
                n += self._load_chunk(conn, m, chunk) if chunk else 0
        return n

    def _load_chunk(self, conn: Connection, m: TableMapping, chunk: bytes) -> int:
        if MARK_BYTES in chunk:  # a value the copy query refused (``value_rules.MARK``)
            raise self._marked_error(m, chunk)
        fd, path = tempfile.mkstemp(prefix="replicator-", suffix=".csv")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(chunk)
            loaded, warning = self._load_file(conn, m, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if warning:
            raise self._warning_error(m, chunk, warning[1], warning[2])
        return loaded

    def _load_file(self, conn: Connection, m: TableMapping, path: str) -> tuple[int, tuple | None]:
        """LOAD DATA one file on the connection's open transaction: (rows, first warning)."""
        with contextlib.closing(conn.connection.cursor()) as cur:
            try:
                cur.execute(self.load_sql(conn, m, path))
                loaded = cur.rowcount
                cur.execute("SHOW WARNINGS LIMIT 1")
                return loaded, cur.fetchone()
            except pymysql.MySQLError as e:
                code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
                if code >= 2000:  # client-side: the connection dropped
                    raise TransientError(f"{m.label}: MySQL connection lost during LOAD DATA: {e}") from None
                hint = "; the server and the client need local_infile=1" if code in (1148, 3948, 4166) else ""
                raise TargetError(
                    f"{m.label}: LOAD DATA LOCAL INFILE into {self.display(m)} failed: {e}{hint}"
                ) from None

    def _marked_error(self, m: TableMapping, chunk: bytes) -> ValueRangeError:
        """ValueRangeError for the first value of ``chunk`` the copy query marked as refused."""
        cols = m.view.column_names
        for rec in csv.reader(io.StringIO(chunk.decode("utf-8", "replace"), newline="")):
            i = next((i for i, v in enumerate(rec) if value_rules.MARK in v), None)
            if i is not None:
                key = ", ".join(f"{k}={value_rules.unmark(rec[cols.index(k)])!r}" for k in m.view.key or cols)
                rule = self.column_conv(m.view.columns[i]).rule
                return ValueRangeError(
                    f"{m.label}.{cols[i]}: value {value_rules.unmark(rec[i])[:60]!r} cannot be stored in the "
                    f"mysql target table {self.display(m)}: {rule.what if rule else 'refused'} (snapshot "
                    f"copy, key {key}); choose a value policy (error | null | clamp | text) or a column "
                    f"type in the mapping"
                )
        return ValueRangeError(
            f"{m.label}: a value cannot be stored in the mysql target table {self.display(m)} (snapshot copy)"
        )

    def _warning_error(self, m: TableMapping, chunk: bytes, code: int, msg: str) -> TargetError:
        where = re.search(r"for column (.+) at row (\d+)", msg)
        if code not in DATA_WARNINGS or not where:
            return TargetError(
                f"{m.label}: MySQL warned while loading the snapshot copy into "
                f"{self.display(m)} ({code}: {msg}); refusing a lossy load "
                f"(the target table must be empty before a copy)"
            )
        column = re.findall(r"[`']([^`']*)[`']", where.group(1))[-1:] or [where.group(1)]
        row = _csv_record(chunk, int(where.group(2)))
        cols = m.view.column_names
        value = row[cols.index(column[0])] if row and column[0] in cols else "?"
        key = ", ".join(f"{k}={row[cols.index(k)]!r}" for k in m.view.key) if row else "?"
        return ValueRangeError(
            f"{m.label}.{column[0]}: value {value[:60]!r} cannot be stored in the mysql target table "
            f"{self.display(m)}: {msg} (snapshot copy, key {key or '?'}); choose a value policy "
            f"(error | null | clamp | text) or a column type in the mapping"
        )


def _prefetch(items: Iterable, depth: int) -> Generator:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead; errors re-raise here.
    Closing the returned generator stops the thread and closes ``items`` before returning."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(x, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put((True, x)):
                    break
            else:
                put((False, None))
        except BaseException as e:  # noqa: BLE001  handed to the consumer
            put((False, e))
        finally:  # in this thread: a stopped COPY is cancelled on the thread that read it
            getattr(items, "close", lambda: None)()

    th = threading.Thread(target=produce, name="copy-prefetch", daemon=True)
    th.start()
    try:
        while True:
            more, x = q.get()
            if not more:
                if x is not None:
                    raise x
                return
            yield x
    finally:
        stop.set()
        th.join()


def _csv_record(chunk: bytes, n: int) -> list[str] | None:
    """Record ``n`` (1-based) of a CSV chunk, for error messages only."""
    for i, rec in enumerate(csv.reader(io.StringIO(chunk.decode("utf-8", "replace"), newline="")), 1):
        if i == n:
            return rec
    return None
