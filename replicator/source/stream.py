"""Stream phase: START_REPLICATION over psycopg's replication connection, frames in, feedback out.

The waiting lives here; the parsing is sans-IO (frames.py, pgoutput.py).  Contract: feedback is
sent only with positions the caller passes; this module never advances the slot on its own
(psycopg2 did, TRAPS.md).  One thread at a time uses a stream: while streaming, the receiving
thread (receive.py) is its ``owner``, and only the owner closes it.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Optional, Union

import psycopg
from psycopg import sql

from ..dsn import redact
from ..errors import SlotLostError, SourceError, TransientError
from ..model import Lsn
from .frames import Keepalive, XLogData, parse_frame, standby_status_update
from .rows import one
from .slot import replication_connection

log = logging.getLogger(__name__)


def _seconds(setting: str) -> float:
    """A PostgreSQL duration setting ('60s', '1min', '500ms', '0') in seconds; 0 → 60."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    num = "".join(ch for ch in setting if ch.isdigit() or ch == ".")
    unit = setting[len(num) :].strip() or "ms"
    value = float(num or 0) * units.get(unit, 1)
    return value or 60.0


def start_replication_command(
    slot: str,
    start_lsn: Lsn,
    publications: list[str],
    proto_version: int = 1,
    conn: Optional[psycopg.Connection] = None,
) -> sql.Composed:
    """START_REPLICATION … LOGICAL for pgoutput: ``proto_version`` 1, or 2 with ``streaming 'on'``
    (PostgreSQL 14+: large transactions arrive while they run, in stream blocks that the decoder,
    pgoutput_stream.py, understands; the applier must spool them until their Stream Commit).
    ``conn`` quotes the publication names (None: quoting without a connection)."""
    if proto_version not in (1, 2):
        raise ValueError(f"pgoutput proto_version {proto_version}: only 1 and 2 are supported")
    options = sql.SQL("proto_version {}").format(sql.Literal(str(proto_version)))
    if proto_version >= 2:
        options = sql.SQL("{}, streaming 'on'").format(options)
    return sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({}, publication_names {})").format(
        sql.Identifier(slot),
        sql.SQL(str(Lsn(start_lsn))),
        options,
        sql.Literal(",".join(sql.Identifier(p).as_string(conn) for p in publications)),
    )


class ReplicationStream:
    """One START_REPLICATION session on ``slot`` for the given publications.

    ``proto_version``: the pgoutput protocol requested, 1 (the default) or 2 (adds ``streaming
    'on'``; the ChangeDecoder then yields StreamStart … StreamCommit/StreamAbort events, which
    the applier must handle before anyone asks for 2)."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publications: list[str],
        app_name: Optional[str] = None,
        proto_version: int = 1,
    ):
        self.dsn, self.slot, self.publications = dsn, slot, list(publications)
        self.app_name = app_name
        if proto_version not in (1, 2):
            raise ValueError(f"pgoutput proto_version {proto_version}: only 1 and 2 are supported")
        self.proto_version = proto_version
        self.conn: Optional[psycopg.Connection] = None
        self.received = 0  # the highest WAL start received (an int: set per frame)
        self.last_status = 0.0
        #: when the last frame arrived (or the reader last chose not to read: receive.py)
        self.last_frame = time.monotonic()
        #: the thread using the connection while streaming (receive.py); None: the caller's
        self.owner: Optional[threading.Thread] = None
        #: silence after which the connection is taken for dead (2 × wal_sender_timeout, ≥ 10 s)
        self.dead_after = 120.0

    def start(self, start_lsn: Lsn = Lsn(0)) -> None:
        """Begin streaming from ``start_lsn`` (0/0: the slot's confirmed position)."""
        self.conn = replication_connection(self.dsn, self.app_name)
        timeout = one(self.conn.execute("SHOW wal_sender_timeout"), "wal_sender_timeout")[0]
        self.dead_after = max(10.0, 2 * _seconds(timeout))
        q = start_replication_command(
            self.slot, Lsn(start_lsn), self.publications, self.proto_version, self.conn
        )
        try:
            self.conn.execute(q)
        except psycopg.errors.UndefinedObject as e:
            raise SlotLostError(f"replication slot {self.slot} does not exist: {e}") from None
        except psycopg.errors.ObjectInUse as e:
            raise TransientError(f"replication slot {self.slot} is in use by another process: {e}") from None
        except psycopg.Error as e:
            raise SourceError(f"START_REPLICATION on slot {self.slot} failed: {redact(e)}") from None
        self.last_frame = time.monotonic()
        log.info("streaming from slot %s at %s", self.slot, Lsn(start_lsn))

    def recv(self, timeout: float, wake: Optional[int] = None) -> Union[XLogData, Keepalive, None]:
        """The next frame, or None when nothing arrived within ``timeout`` seconds (0: none is
        there; what the socket holds is still read, so a reader draining a burst gets all of it)
        or when the file descriptor ``wake`` became readable (the caller drains it).

        Draining keeps the GIL (libpq reads its non-blocking socket directly); only a real wait
        (select) releases it: a receiving thread that released it after every read would wait up
        to the switch interval (5 ms) each time to get it back from a busy applier."""
        pg = self._conn().pgconn
        deadline: Optional[float] = None
        while True:
            n, data = pg.get_copy_data(1)
            if n > 0:
                self.last_frame = time.monotonic()
                frame = parse_frame(bytes(data))
                if type(frame) is XLogData and frame.start > self.received:
                    self.received = frame.start
                return frame
            if n < 0:
                self._ended()
            if deadline is None:  # first read what the socket holds already, without waiting
                deadline = time.monotonic() + timeout
                self._consume(pg)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._check_alive()
                return None
            sock = pg.socket
            ready, _, _ = select.select([sock] if wake is None else [sock, wake], [], [], left)
            if sock in ready:
                self._consume(pg)
            if wake is not None and wake in ready:
                return None

    def _consume(self, pg: psycopg.pq.abc.PGconn) -> None:
        try:
            pg.consume_input()
        except psycopg.OperationalError as e:
            raise TransientError(f"replication connection lost: {redact(e)}") from None

    def _check_alive(self) -> None:
        """We ask for keepalives every second while idle: long silence means a dead connection
        (a half-open TCP path never errors by itself)."""
        silent = time.monotonic() - self.last_frame
        if silent > self.dead_after:
            raise TransientError(
                f"no message from the source on slot {self.slot} for {silent:.0f}s "
                f"(more than 2 × wal_sender_timeout): reconnecting"
            )

    def _ended(self) -> None:
        res = self._conn().pgconn.get_result()
        msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
        if "does not exist" in msg or "invalidated" in msg or "removed" in msg:
            raise SlotLostError(f"replication slot {self.slot}: {msg}")
        raise TransientError(
            f"the source ended replication on slot {self.slot}: {msg or 'connection closed'}"
        )

    def send_status(self, flush: Lsn, reply: bool = False) -> None:
        """Standby Status Update with write = received and flush = apply = ``flush``."""
        pg = self._conn().pgconn
        write = Lsn(max(self.received, flush))
        try:
            pg.put_copy_data(standby_status_update(write, flush, flush, reply))
            pg.flush()
        except psycopg.OperationalError as e:
            raise TransientError(f"replication connection lost: {redact(e)}") from None
        self.last_status = time.monotonic()

    def _conn(self) -> psycopg.Connection:
        if self.conn is None:
            raise TransientError(f"the replication connection for slot {self.slot} is not open")
        return self.conn

    def close(self) -> None:
        """Close the connection (idempotent).  While another thread that is still running owns
        the stream this does nothing: that thread closes it when it ends, so the libpq
        connection is never used by two threads at once."""
        owner = self.owner
        if owner is not None and owner is not threading.current_thread() and owner.is_alive():
            return
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None
