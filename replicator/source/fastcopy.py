"""Snapshot copy, source side, fast path: COPY output read in large buffers through asyncpg.

psycopg hands COPY output over one row per Python call (libpq returns one CopyData message per
call); asyncpg hands it over in socket-sized buffers, which makes reading a table three times
cheaper (issue 12).  psycopg stays for replication and catalog work.

Contract: a :class:`FastSession` holds one asyncpg connection, driven by its own event-loop
thread, inside a ``REPEATABLE READ, READ ONLY`` transaction that imported the exported snapshot,
with the same pinned session settings as every other source connection
(``dsn.SOURCE_SETTINGS``): the bytes a COPY returns are the bytes the psycopg path would return.
:meth:`FastSession.copy_out` streams one COPY in chunks of about ``chunk`` bytes, each ending at
a newline; at most ``QUEUE_CHUNKS`` chunks wait between the reader and the loader.  Stopping
early (the consumer closes the iterator, or :meth:`FastSession.cancel`) cancels the COPY on the
server, so the worker is free at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Generator
from typing import Any, Optional

from psycopg import sql

from ..dsn import redact
from ..errors import SourceError, SourceUnavailable, TransientError
from ..model import TableSchema

QUEUE_CHUNKS = 2
CLOSE_SECONDS = 10.0
_END = object()

# COPY options a target may ask for, as asyncpg's copy_from_query keywords
_OPTIONS = {"FORMAT": "format", "NULL": "null", "ENCODING": "encoding", "DELIMITER": "delimiter"}


def copy_keywords(options: str) -> dict[str, str]:
    """``FORMAT csv, NULL '\\N'`` → ``{"format": "csv", "null": "\\N"}`` (asyncpg's keywords)."""
    out: dict[str, str] = {}
    for part in options.split(","):
        key, _, value = part.strip().partition(" ")
        value = value.strip()
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1].replace("''", "'")
        if key.upper() not in _OPTIONS:
            raise ValueError(f"COPY option {key!r} has no asyncpg keyword")
        out[_OPTIONS[key.upper()]] = value
    return out


class _Stopped(Exception):
    """The consumer stopped reading: the sink ends the COPY (asyncpg cancels it on the server)."""


class FastSession:
    """One snapshot session for the copy workers (see the module docstring)."""

    def __init__(self, params: dict[str, Any], snapshot: Optional[str]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="copy-read", daemon=True)
        self._thread.start()
        self._running: Optional[Any] = None
        try:
            self._conn = self._call(self._open(params, snapshot))
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro: Any, timeout: Optional[float] = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _query(self, coro: Any) -> Any:
        """The result of a query on the session; its failure as the COPY's would be reported."""
        try:
            return self._call(coro)
        except Exception as e:  # noqa: BLE001  (every driver error is translated)
            raise _translated(e) from None

    async def _open(self, params: dict[str, Any], snapshot: Optional[str]) -> Any:
        import asyncpg

        try:
            conn = await asyncpg.connect(**params)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as e:
            raise SourceUnavailable(f"cannot connect to the source: {redact(e)}".strip()) from None
        _keepalive(conn)
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot:
            try:
                await conn.execute(f"SET TRANSACTION SNAPSHOT {_literal(snapshot)}")
            except asyncpg.PostgresError as e:
                await conn.close()
                raise SourceError(
                    f"cannot import exported snapshot {snapshot}: {e}; the slot's "
                    f"snapshot is valid only while its creating session is idle"
                ) from None
        return conn

    def label(self, name: str) -> None:
        """Set application_name, so pg_stat_activity / pg_stat_progress_copy show what runs."""
        self._query(
            self._conn.execute(f"SELECT set_config('application_name', {_literal(name[:63])}, false)")
        )

    def row_estimate(self, t: TableSchema) -> int:
        """The planner's row estimate (see ``snapshot.row_estimate``)."""
        from .snapshot import ROW_ESTIMATE

        name = sql.Identifier(t.schema, t.name).as_string(None)
        return int(self._query(self._conn.fetchval(ROW_ESTIMATE.format(p="$1"), name)) or 0)

    def fetch(self, query: str) -> list[tuple]:
        """Rows of ``query`` (no parameters) inside the snapshot."""
        return [tuple(r) for r in self._query(self._conn.fetch(query))]

    def copy_out(
        self, select: sql.Composable, options: str, chunk: int, watch: Optional[Callable[[object], None]]
    ) -> Any:
        """The COPY of ``select`` in ``options`` format as a ``model.CopyOutput``."""
        from .snapshot import Output

        text, keywords = select.as_string(None), copy_keywords(options)
        return Output(lambda size: self._chunks(text, keywords, size), chunk, watch)

    def cancel(self) -> None:
        """Cancel the running COPY, if any (from any thread): its reader raises SourceError."""
        running = self._running
        if running is not None:
            running.cancel()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._conn.close(timeout=CLOSE_SECONDS), CLOSE_SECONDS + 1)
        with contextlib.suppress(Exception):
            self._conn.terminate()
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()

    def _chunks(self, select: str, keywords: dict[str, str], chunk: int) -> Generator[bytes, None, None]:
        box: queue.Queue[Any] = queue.Queue(QUEUE_CHUNKS)
        stopped = threading.Event()

        def put(item: Any) -> None:
            while True:
                if stopped.is_set():
                    raise _Stopped
                with contextlib.suppress(queue.Full):
                    box.put(item, timeout=0.2)
                    return

        future = asyncio.run_coroutine_threadsafe(self._read(select, keywords, chunk, put), self._loop)
        self._running = future
        try:
            while (item := box.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped.set()
            with contextlib.suppress(BaseException):
                future.result(CLOSE_SECONDS)
            self._running = None

    async def _read(self, select: str, keywords: dict[str, str], chunk: int, put: Callable) -> None:
        buf = bytearray()

        async def sink(data: bytes) -> None:
            buf.extend(data)
            if len(buf) >= chunk:
                cut = buf.rfind(b"\n") + 1
                put(bytes(buf[:cut]))
                del buf[:cut]

        try:
            await self._conn.copy_from_query(select, output=sink, **keywords)
            if buf:
                put(bytes(buf))
            put(_END)
        except _Stopped:
            return
        except asyncio.CancelledError:
            put(SourceError("the snapshot COPY was cancelled"))
        except Exception as e:  # noqa: BLE001  (handed to the reading thread, which raises it)
            put(_translated(e))


def _translated(e: Exception) -> Exception:
    """An asyncpg failure as the psycopg path would report it: a lost connection or a server
    shutting down is transient (worth a retry), any other server error a SourceError."""
    import asyncpg

    first = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    code = str(getattr(e, "sqlstate", "") or "")
    lost = isinstance(e, (OSError, asyncpg.InterfaceError)) or code.startswith(("08", "57P"))
    if lost:
        return TransientError(f"the source connection was lost during the snapshot COPY: {first}")
    return SourceError(first)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keepalive(conn: Any) -> None:
    """TCP keepalives as on every psycopg source connection (``dsn.TCP_KEEPALIVES``): a dead TCP
    path is noticed even while the server is silent.  asyncpg has no option for it."""
    with contextlib.suppress(Exception):
        sock = conn._transport.get_extra_info("socket")  # noqa: SLF001  (asyncpg has no public hook)
        if sock is None or sock.family == socket.AF_UNIX:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
