"""Stream phase: START_REPLICATION over psycopg's replication connection, frames in, feedback out.

The waiting lives here; the parsing is sans-IO (frames.py, pgoutput.py).  Contract: feedback is
sent only with positions the caller passes; this module never advances the slot on its own
(psycopg2 did, TRAPS.md).
"""
from __future__ import annotations

import logging
import select
import time
from typing import Optional, Union

import psycopg
from psycopg import sql

from ..dsn import redact
from ..errors import SlotLostError, SourceError, TransientError
from ..model import Lsn
from .frames import Keepalive, XLogData, parse_frame, standby_status_update
from .slot import replication_connection

log = logging.getLogger(__name__)


class ReplicationStream:
    """One START_REPLICATION session on ``slot`` for the given publications."""

    def __init__(self, dsn: str, slot: str, publications: list[str]):
        self.dsn, self.slot, self.publications = dsn, slot, list(publications)
        self.conn: Optional[psycopg.Connection] = None
        self.received = Lsn(0)
        self.last_status = 0.0

    def start(self, start_lsn: Lsn = Lsn(0)) -> None:
        """Begin streaming from ``start_lsn`` (0/0: the slot's confirmed position)."""
        self.conn = replication_connection(self.dsn)
        q = sql.SQL("START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})").format(
            sql.Identifier(self.slot), sql.SQL(str(Lsn(start_lsn))),
            sql.Literal(",".join(sql.Identifier(p).as_string(self.conn) for p in self.publications)))
        try:
            self.conn.execute(q)
        except psycopg.errors.UndefinedObject as e:
            raise SlotLostError(f"replication slot {self.slot} does not exist: {e}") from None
        except psycopg.errors.ObjectInUse as e:
            raise TransientError(f"replication slot {self.slot} is in use by another process: {e}") from None
        except psycopg.Error as e:
            raise SourceError(f"START_REPLICATION on slot {self.slot} failed: {redact(e)}") from None
        log.info("streaming from slot %s at %s", self.slot, Lsn(start_lsn))

    def recv(self, timeout: float) -> Union[XLogData, Keepalive, None]:
        """The next frame, or None when nothing arrived within ``timeout`` seconds."""
        pg = self.conn.pgconn
        deadline = time.monotonic() + timeout
        while True:
            n, data = pg.get_copy_data(1)
            if n > 0:
                frame = parse_frame(bytes(data))
                if isinstance(frame, XLogData):
                    self.received = max(self.received, frame.start)
                return frame
            if n < 0:
                self._ended()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([pg.socket], [], [], left)
            if ready:
                try:
                    pg.consume_input()
                except psycopg.OperationalError as e:
                    raise TransientError(f"replication connection lost: {redact(e)}") from None

    def _ended(self) -> None:
        res = self.conn.pgconn.get_result()
        msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
        if "does not exist" in msg or "invalidated" in msg or "removed" in msg:
            raise SlotLostError(f"replication slot {self.slot}: {msg}")
        raise TransientError(f"the source ended replication on slot {self.slot}: {msg or 'connection closed'}")

    def send_status(self, flush: Lsn, reply: bool = False) -> None:
        """Standby Status Update with write = received and flush = apply = ``flush``."""
        pg = self.conn.pgconn
        write = max(self.received, flush)
        try:
            pg.put_copy_data(standby_status_update(write, flush, flush, reply))
            pg.flush()
        except psycopg.OperationalError as e:
            raise TransientError(f"replication connection lost: {redact(e)}") from None
        self.last_status = time.monotonic()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None
