"""Sans-IO decoding of the pgoutput streaming messages (protocol version 2, PostgreSQL 14+).

With ``proto_version '2'`` and ``streaming 'on'``, a transaction whose decoded changes outgrow
``logical_decoding_work_mem`` is sent while it runs, in stream blocks; its outcome comes later:

  Stream Start | 'S' | xid Int32 | first_segment u8 (1: the first block of this xid, else 0) |
  Stream Stop  | 'E' |
  Stream Commit| 'c' | xid Int32 | flags u8 (0) | commit_lsn LSN | end_lsn LSN | commit_time TS |
  Stream Abort | 'A' | xid Int32 | subxid Int32 | [abort_lsn LSN | abort_time TS] |

- Between Stream Start and Stream Stop (a *stream block*), Relation, Type, Insert, Update, Delete,
  Truncate and Message carry ``xid Int32`` right after the type byte, then their version 1 body:
  the id of the (sub)transaction the change belongs to (a subtransaction's own xid, not the
  top-level one of Stream Start).  Origin may follow a first Stream Start and is as in version 1.
  Begin, Commit, Stream Start, Stream Commit and Stream Abort never appear inside a block.
- Outside blocks, every message is exactly as in version 1; blocks of several transactions and
  whole ordinary transactions (Begin … Commit) interleave between them.
- Stream Commit and Stream Abort come after the transaction's last block.  Stream Abort with
  ``subxid == xid`` discards the whole transaction; with another ``subxid`` only the changes of
  that subtransaction (a ``ROLLBACK TO SAVEPOINT`` whose changes had already been streamed).
- ``abort_lsn``/``abort_time`` exist only with protocol version 4 and ``streaming 'parallel'``
  (PostgreSQL 16+).  Like PostgreSQL's own reader, we decode them only when told they were
  requested (``decode(..., abort_info=True)``): the message does not say whether it has them.

Each parser takes (message, body offset, xid) like the version 1 parsers in ``pgoutput`` and
returns (message value, offset after it).
"""

from __future__ import annotations

import struct

from ..model import Lsn
from .pgoutput_messages import StreamAbort, StreamCommit, StreamStart, StreamStop
from .pgoutput_wire import err, need, time_at

_START = struct.Struct(">IB").unpack_from
_COMMIT = struct.Struct(">IBQQq").unpack_from
_ABORT = struct.Struct(">II").unpack_from
_ABORT_INFO = struct.Struct(">IIQq").unpack_from
_STOP = StreamStop()


def stream_start(buf: bytes, o: int, xid: int) -> tuple[StreamStart, int]:
    need(buf, 1, 5, "S", "Stream Start body")
    top, first = _START(buf, 1)
    if first > 1:
        raise err("S", 5, f"first-segment flag {first} (expected 0 or 1)", buf)
    return StreamStart(top, first == 1), 6


def stream_stop(buf: bytes, o: int, xid: int) -> tuple[StreamStop, int]:
    return _STOP, 1


def stream_commit(buf: bytes, o: int, xid: int) -> tuple[StreamCommit, int]:
    need(buf, 1, 29, "c", "Stream Commit body")
    top, flags, lsn, end, ts = _COMMIT(buf, 1)
    return StreamCommit(top, flags, Lsn(lsn), Lsn(end), time_at(ts, "c", 22, buf)), 30


def stream_abort(buf: bytes, o: int, xid: int) -> tuple[StreamAbort, int]:
    """Stream Abort without abort LSN and time (protocol 2 and 3, or 4 without 'parallel')."""
    need(buf, 1, 8, "A", "Stream Abort body")
    top, sub = _ABORT(buf, 1)
    return StreamAbort(top, sub), 9


def stream_abort_info(buf: bytes, o: int, xid: int) -> tuple[StreamAbort, int]:
    """Stream Abort with abort LSN and time (protocol 4 with streaming 'parallel', PostgreSQL 16+)."""
    need(buf, 1, 24, "A", "Stream Abort body with abort LSN and time")
    top, sub, lsn, ts = _ABORT_INFO(buf, 1)
    return StreamAbort(top, sub, Lsn(lsn), time_at(ts, "A", 17, buf)), 25
