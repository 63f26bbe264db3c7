"""Sans-IO decoder for PostgreSQL ``pgoutput`` logical replication messages, protocol versions 1 and 2.

Reference: PostgreSQL docs, "Logical Replication Message Formats"
(protocol-logicalrep-message-formats).  All integers are big-endian.  ``String`` is NUL-terminated
UTF-8.  LSN = unsigned Int64.  TS = signed Int64, microseconds since 2000-01-01 00:00 UTC.
Offsets are byte offsets from the start of the message (the type byte is offset 0).

Fields in wire order ([...] optional, N x (...) repeated):

 offset 0     1                9                 17           21
        +-----+----------------+-----------------+------------+
  Begin | 'B' | final_lsn LSN  | commit_time TS  | xid Int32  |
        +-----+----------------+-----------------+------------+
  offset 0     1          2                10               18                26
         +-----+----------+----------------+----------------+-----------------+
  Commit | 'C' | flags u8 | commit_lsn LSN | end_lsn LSN    | commit_time TS  |
         +-----+----------+----------------+----------------+-----------------+
  Origin   | 'O' | commit_lsn LSN | name String |
  Relation | 'R' | relid Int32 | namespace String | name String | replident u8 | ncols Int16 |
               ncols x ( | flags u8 | name String | type_oid Int32 | type_mod Int32 | )
               (namespace '' means pg_catalog; replident 'd','n','f','i'; flags & 1: key column;
               generated columns are not sent)
  Type     | 'Y' | type_oid Int32 | namespace String | name String |
  Insert   | 'I' | relid Int32 | 'N' | TupleData |
  Update   | 'U' | relid Int32 | ['K' | TupleData  or  'O' | TupleData] | 'N' | TupleData |
               ('K': the key changed, non-key columns are 'n'; 'O': REPLICA IDENTITY FULL)
  Delete   | 'D' | relid Int32 | 'K' or 'O' | TupleData |
  Truncate | 'T' | nrels Int32 | options u8 (1 CASCADE, 2 RESTART IDENTITY) | nrels x relid Int32 |
  Message  | 'M' | flags u8 (1 transactional) | lsn LSN | prefix String | len Int32 | len bytes |

  TupleData | ncols Int16 | ncols x column |   where column is one of
        | 'n' |                               NULL                   -> None
        | 'u' |                               unchanged TOAST value  -> UNCHANGED
        | 't' | len Int32 | len bytes |       text representation    -> str (UTF-8)
        | 'b' | len Int32 | len bytes |       binary representation  -> bytes

Protocol version 2 (PostgreSQL 14+, ``streaming 'on'``) adds the stream messages 'S', 'E', 'c', 'A'
and, inside a stream block, an ``xid Int32`` after the type byte of 'R', 'Y', 'I', 'U', 'D', 'T',
'M' (outside stream blocks, version 2 messages are byte for byte the layouts above): see
:mod:`replicator.source.pgoutput_stream`.  :func:`decode` is stateless: the caller says
whether the message is inside a stream block (``in_stream``; ChangeDecoder tracks it).  The
two-phase messages of version 3 ('b', 'P', 'K', 'r', 'p') are refused with a DecodeError naming
them: we never request ``two_phase``.

The message values are the dataclasses of ``pgoutput_messages`` (importable from here too); the
wire primitives (TupleData, strings, times) are in ``pgoutput_wire``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Union

from ..errors import DecodeError
from ..model import Lsn
from .pgoutput_messages import (
    TWO_PHASE_TYPES,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    RelationColumn,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TypeInfo,
    Update,
)
from .pgoutput_stream import stream_abort, stream_abort_info, stream_commit, stream_start, stream_stop
from .pgoutput_wire import I16, I32, PG_EPOCH, U32, cstr, err, need, pg_micros, pg_time, time_at, tuple_at

__all__ = [
    "PG_EPOCH",
    "Begin",
    "Commit",
    "DecodeError",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "Relation",
    "RelationColumn",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TypeInfo",
    "Update",
    "check_tuple",
    "decode",
    "pg_micros",
    "pg_time",
]

# ---------------------------------------------------------------------------------------------------
# One function per message type: (buf, body offset o, xid) -> (message, offset after it).  ``o`` is
# 1, or 5 inside a stream block for the messages that carry the xid there (then ``xid`` is it).

_IDENTITIES = frozenset("dnfi")

_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_LSN = struct.Struct(">Q").unpack_from
_COLTAIL = struct.Struct(">Ii").unpack_from
_MSGHEAD = struct.Struct(">BQ").unpack_from
_TRUNCHEAD = struct.Struct(">iB").unpack_from


def _begin(buf: bytes, o: int, xid: int) -> tuple[Begin, int]:
    need(buf, 1, 20, "B", "Begin body")
    lsn, ts, txid = _BEGIN(buf, 1)
    return Begin(Lsn(lsn), time_at(ts, "B", 9, buf), txid), 21


def _commit(buf: bytes, o: int, xid: int) -> tuple[Commit, int]:
    need(buf, 1, 25, "C", "Commit body")
    flags, lsn, end, ts = _COMMIT(buf, 1)
    return Commit(flags, Lsn(lsn), Lsn(end), time_at(ts, "C", 18, buf)), 26


def _origin(buf: bytes, o: int, xid: int) -> tuple[Origin, int]:
    need(buf, 1, 8, "O", "origin LSN")
    (lsn,) = _LSN(buf, 1)
    name, off = cstr(buf, 9, "O", "origin name")
    return Origin(Lsn(lsn), name), off


def _relation(buf: bytes, o: int, xid: int) -> tuple[Relation, int]:
    need(buf, o, 4, "R", "relation id")
    (relid,) = U32(buf, o)
    ns, off = cstr(buf, o + 4, "R", "namespace")
    name, off = cstr(buf, off, "R", "relation name")
    need(buf, off, 3, "R", "replica identity and column count")
    ident = chr(buf[off])
    if ident not in _IDENTITIES:
        raise err("R", off, f"unknown replica identity {ident!r} (expected d, n, f or i)", buf)
    (ncols,) = I16(buf, off + 1)
    if ncols < 0:
        raise err("R", off + 1, f"negative column count {ncols}", buf)
    off += 3
    cols = []
    for i in range(ncols):
        need(buf, off, 1, "R", f"column {i} flags")
        flags = buf[off]
        cname, off = cstr(buf, off + 1, "R", f"column {i} name")
        need(buf, off, 8, "R", f"column {i} type")
        oid, typmod = _COLTAIL(buf, off)
        off += 8
        cols.append(RelationColumn(flags, cname, oid, typmod))
    return Relation(relid, ns, name, ident, tuple(cols), xid), off


def _type(buf: bytes, o: int, xid: int) -> tuple[TypeInfo, int]:
    need(buf, o, 4, "Y", "type oid")
    (oid,) = U32(buf, o)
    ns, off = cstr(buf, o + 4, "Y", "namespace")
    name, off = cstr(buf, off, "Y", "type name")
    return TypeInfo(oid, ns, name, xid), off


def _insert(buf: bytes, o: int, xid: int) -> tuple[Insert, int]:
    if len(buf) < o + 5:
        need(buf, o, 5, "I", "relation id and 'N'")
    (relid,) = U32(buf, o)
    if buf[o + 4] != 78:
        raise err("I", o + 4, f"expected 'N' but got {buf[o + 4 : o + 5]!r}", buf)
    new, off = tuple_at(buf, o + 5, "I")
    return Insert(relid, new, xid), off


def _update(buf: bytes, o: int, xid: int) -> tuple[Update, int]:
    if len(buf) < o + 5:
        need(buf, o, 5, "U", "relation id and tuple kind")
    (relid,) = U32(buf, o)
    k = buf[o + 4]
    if k == 78:  # 'N'
        new, off = tuple_at(buf, o + 5, "U")
        return Update(relid, None, None, new, xid), off
    if k == 75 or k == 79:  # 'K' / 'O'
        old, off = tuple_at(buf, o + 5, "U")
        if off >= len(buf):
            raise err("U", off, "truncated: 'N' and new tuple missing after the old tuple", buf)
        if buf[off] != 78:
            raise err("U", off, f"expected 'N' after the old tuple but got {buf[off : off + 1]!r}", buf)
        new, off = tuple_at(buf, off + 1, "U")
        return Update(relid, old, "K" if k == 75 else "O", new, xid), off
    raise err("U", o + 4, f"expected 'K', 'O' or 'N' but got {buf[o + 4 : o + 5]!r}", buf)


def _delete(buf: bytes, o: int, xid: int) -> tuple[Delete, int]:
    if len(buf) < o + 5:
        need(buf, o, 5, "D", "relation id and tuple kind")
    (relid,) = U32(buf, o)
    k = buf[o + 4]
    if k != 75 and k != 79:
        raise err("D", o + 4, f"expected 'K' or 'O' but got {buf[o + 4 : o + 5]!r}", buf)
    old, off = tuple_at(buf, o + 5, "D")
    return Delete(relid, old, "K" if k == 75 else "O", xid), off


def _truncate(buf: bytes, o: int, xid: int) -> tuple[Truncate, int]:
    need(buf, o, 5, "T", "relation count and options")
    nrels, opts = _TRUNCHEAD(buf, o)
    if nrels < 0:
        raise err("T", o, f"negative relation count {nrels}", buf)
    need(buf, o + 5, 4 * nrels, "T", f"{nrels} relation ids")
    relids = struct.unpack_from(f">{nrels}I", buf, o + 5)
    return Truncate(relids, bool(opts & 1), bool(opts & 2), xid), o + 5 + 4 * nrels


def _message(buf: bytes, o: int, xid: int) -> tuple[LogicalMessage, int]:
    need(buf, o, 9, "M", "flags and LSN")
    flags, lsn = _MSGHEAD(buf, o)
    prefix, off = cstr(buf, o + 9, "M", "prefix")
    need(buf, off, 4, "M", "content length")
    (ln,) = I32(buf, off)
    if ln < 0:
        raise err("M", off, f"negative content length {ln}", buf)
    off += 4
    need(buf, off, ln, "M", "content")
    return LogicalMessage(bool(flags & 1), Lsn(lsn), prefix, buf[off : off + ln], xid), off + ln


_Parser = Callable[[bytes, int, int], tuple[Message, int]]
_DISPATCH: dict[int, _Parser] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
    ord("S"): stream_start,
    ord("E"): stream_stop,
    ord("c"): stream_commit,
    ord("A"): stream_abort,
}
#: the messages that carry the (sub)transaction xid after their type byte inside a stream block
_XID_IN_STREAM = frozenset(b"RYIUDTM")
#: the messages that never appear inside a stream block
_NOT_IN_STREAM = frozenset(b"BCScA")


def decode(
    data: Union[bytes, bytearray, memoryview], in_stream: bool = False, abort_info: bool = False
) -> Message:
    """Decode one pgoutput message (the payload of an XLogData frame), protocol version 1 or 2.

    ``in_stream``: the message is inside a stream block (a Stream Start came and its Stream Stop
    has not: the Stream Stop itself is decoded with ``in_stream`` True), so the change messages
    carry an xid.  ``abort_info``: Stream Abort carries abort LSN and time (proto_version '4'
    with streaming 'parallel' was requested).  Raises :class:`DecodeError` naming the message
    type and byte offset for anything malformed, including a message that cannot be where
    ``in_stream`` says it is.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf:
        raise DecodeError("pgoutput message is empty (byte offset 0)")
    t = buf[0]
    fn = _DISPATCH.get(t)
    if fn is None:
        mt = chr(t)
        if mt in TWO_PHASE_TYPES:
            raise DecodeError(
                f"pgoutput {TWO_PHASE_TYPES[mt]} message {mt!r} at byte offset 0 belongs to two-phase "
                "decoding (protocol version 3, option two_phase), which this decoder never requests"
            )
        raise DecodeError(f"unknown pgoutput message type {buf[:1]!r} at byte offset 0")
    o, xid = 1, 0
    if in_stream:
        if t in _XID_IN_STREAM:
            need(buf, 1, 4, chr(t), "transaction id (inside a stream block)")
            o, (xid,) = 5, U32(buf, 1)
        elif t in _NOT_IN_STREAM:
            raise err(
                chr(t), 0, "not allowed inside a stream block (after Stream Start, before Stream Stop)", buf
            )
    elif t == 69:  # 'E'
        raise err("E", 0, "not allowed outside a stream block (no Stream Start before it)", buf)
    if t == 65 and abort_info:
        fn = stream_abort_info
    try:
        msg, off = fn(buf, o, xid)
    except (IndexError, struct.error, OverflowError) as e:  # safety net: the parsers check bounds
        raise err(chr(t), len(buf), f"malformed ({type(e).__name__}: {e})", buf) from None
    if off != len(buf):
        raise err(chr(t), off, f"{len(buf) - off} trailing bytes after the message", buf)
    return msg


def check_tuple(rel: Relation, values: tuple) -> None:
    """Raise DecodeError if a tuple's column count disagrees with its Relation message."""
    if len(values) != len(rel.columns):
        raise DecodeError(
            f"relation {rel.namespace}.{rel.name} (relid {rel.relid}): tuple column count mismatch, "
            f"expected {len(rel.columns)} (from its Relation message), got {len(values)}; the "
            "stream is corrupt or a Relation message was missed"
        )
