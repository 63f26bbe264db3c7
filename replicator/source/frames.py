"""Sans-IO streaming-replication CopyData frames (PostgreSQL "Streaming Replication Protocol").

Server -> client:
    XLogData 'w'
    0     1              9                17               25
    +-----+--------------+----------------+----------------+-------------------------+
    | 'w' | start LSN    | wal_end LSN    | send_time TS   | payload (pgoutput msg)  |
    +-----+--------------+----------------+----------------+-------------------------+
    Primary keepalive 'k' (18 bytes)
    0     1              9                17          18
    +-----+--------------+----------------+-----------+
    | 'k' | wal_end LSN  | send_time TS   | reply Int8|
    +-----+--------------+----------------+-----------+
Client -> server:
    Standby status update 'r' (34 bytes)
    0     1              9              17             25               33          34
    +-----+--------------+--------------+--------------+----------------+-----------+
    | 'r' | write LSN    | flush LSN    | apply LSN    | client_time TS | reply Int8|
    +-----+--------------+--------------+--------------+----------------+-----------+

LSN = unsigned Int64, TS = Int64 µs since 2000-01-01 UTC, all big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Union

from ..errors import DecodeError
from ..model import Lsn
from .pgoutput import pg_micros, pg_time

_XLOG = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">QqB")
_STATUS = struct.Struct(">cQQQqB")


class XLogData:
    """One 'w' frame: WAL ``start``/``end`` (plain ints: ``Lsn(frame.start)`` for the X/Y form),
    the server's send time and the pgoutput payload.

    A plain slotted class (one is made per change on the hot path; a frozen dataclass costs
    twice as much), with the send time kept as µs and converted when asked for."""

    __slots__ = ("start", "end", "send_micros", "payload")

    def __init__(self, start: int, end: int, send_micros: int, payload: Union[memoryview, bytes]):
        self.start, self.end, self.send_micros, self.payload = start, end, send_micros, payload

    @property
    def send_time(self) -> datetime:
        return _time(self.send_micros, "w")

    def __repr__(self) -> str:
        return f"XLogData(start={self.start!r}, end={self.end!r}, payload={bytes(self.payload[:16])!r}...)"


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: Lsn
    send_time: datetime
    reply_requested: bool


def _time(micros: int, kind: str) -> datetime:
    try:
        return pg_time(micros)
    except OverflowError:
        raise DecodeError(
            f"replication frame {kind!r}: send time {micros} µs out of range at byte offset 17"
        ) from None


def parse_frame(frame: Union[bytes, bytearray, memoryview]) -> Union[XLogData, Keepalive]:
    """Parse one CopyData payload from the walsender.  XLogData's payload is ``bytes`` when the
    frame is (a zero-copy memoryview of any other buffer)."""
    n = len(frame)
    if n == 0:
        raise DecodeError("empty replication frame (byte offset 0)")
    kind = frame[0]
    if kind == 119:  # 'w'
        if n < 25:
            raise DecodeError(
                f"replication frame 'w' (XLogData) truncated: header needs 25 bytes, "
                f"got {n} (byte offset {n})"
            )
        start, end, ts = _XLOG.unpack_from(frame, 1)
        # a bytes slice: the decoder reads bytes, and one copy here is cheaper than a view and a copy there
        return XLogData(start, end, ts, frame[25:] if type(frame) is bytes else memoryview(frame)[25:])
    if kind == 107:  # 'k'
        if n != 18:
            raise DecodeError(
                f"replication frame 'k' (keepalive) must be 18 bytes, got {n} (byte offset {min(n, 18)})"
            )
        end, ts, reply = _KEEPALIVE.unpack_from(frame, 1)
        return Keepalive(Lsn(end), _time(ts, "k"), reply != 0)
    raise DecodeError(
        f"unknown replication frame type {bytes(frame[:1])!r} at byte offset 0 "
        "(expected 'w' XLogData or 'k' keepalive)"
    )


def standby_status_update(
    write: Lsn, flush: Lsn, apply: Lsn, reply_requested: bool = False, now: Optional[datetime] = None
) -> bytes:
    """Build the 'r' frame confirming ``write``/``flush``/``apply`` positions to the walsender."""
    if now is None:
        now = datetime.now(timezone.utc)
    try:
        return _STATUS.pack(b"r", write, flush, apply, pg_micros(now), 1 if reply_requested else 0)
    except struct.error as e:
        raise ValueError(
            f"standby status update: LSN out of range (write={write}, flush={flush}, apply={apply}): {e}"
        ) from None
