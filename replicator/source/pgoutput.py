"""Sans-IO decoder for PostgreSQL ``pgoutput`` logical replication messages, protocol version 1.

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

Stream/two-phase messages of protocol versions 2+ ('S', 'E', 'c', 'A', 'b', 'P', 'K', 'r', 'p') are
rejected with a DecodeError naming them: we only request proto_version '1'.

The message values are the dataclasses of ``pgoutput_messages`` (importable from here too).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Union

from ..errors import DecodeError
from ..model import UNCHANGED, Lsn
from .pgoutput_messages import (
    NEWER_TYPES,
    TYPE_NAMES,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    RelationColumn,
    Truncate,
    TypeInfo,
    Update,
)

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def pg_time(micros: int) -> datetime:
    """PostgreSQL TimestampTz (µs since 2000-01-01 UTC) -> aware UTC datetime (OverflowError if out of range)."""
    return PG_EPOCH + timedelta(microseconds=micros)


def pg_micros(when: datetime) -> int:
    """Aware datetime -> µs since 2000-01-01 UTC."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass a timezone-aware datetime")
    return (when - PG_EPOCH) // _ONE_US


# ---------------------------------------------------------------------------------------------------
# Decoding helpers

_IDENTITIES = frozenset("dnfi")

_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_LSN = struct.Struct(">Q").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_I16 = struct.Struct(">h").unpack_from
_COLTAIL = struct.Struct(">Ii").unpack_from
_MSGHEAD = struct.Struct(">BQ").unpack_from
_TRUNCHEAD = struct.Struct(">iB").unpack_from


def _err(mt: str, off: int, what: str, buf: bytes) -> DecodeError:
    name = TYPE_NAMES.get(mt, "unknown")
    return DecodeError(
        f"pgoutput {name} message {mt!r}: {what} at byte offset {off} (message length {len(buf)})"
    )


def _need(buf: bytes, off: int, size: int, mt: str, what: str) -> None:
    if off + size > len(buf):
        raise _err(mt, off, f"truncated: {what} needs {size} bytes, {max(len(buf) - off, 0)} left", buf)


_last_time: list = [None, None]  # (µs, datetime) of the last call: Commit repeats Begin's time


def _time(micros: int, mt: str, off: int, buf: bytes) -> datetime:
    if micros == _last_time[0]:
        last: datetime = _last_time[1]
        return last
    try:
        when = PG_EPOCH + timedelta(microseconds=micros)
        _last_time[0], _last_time[1] = micros, when
        return when
    except OverflowError:
        raise _err(mt, off, f"timestamp {micros} µs out of range", buf) from None


def _cstr(buf: bytes, off: int, mt: str, what: str) -> tuple[str, int]:
    try:
        end = buf.index(b"\0", off)
    except ValueError:
        raise _err(mt, off, f"truncated: {what} string has no NUL terminator", buf) from None
    try:
        return buf[off:end].decode(), end + 1
    except UnicodeDecodeError as e:
        raise _err(mt, off + e.start, f"invalid UTF-8 in {what} string", buf) from None


def _tuple(buf: bytes, off: int, mt: str) -> tuple[tuple, int]:
    """TupleData at ``off`` -> (values, offset after it); DecodeError naming the column if malformed.

    The hot path: 't', 'n' and 'u' columns are decoded inline (no call per column); only the rare
    'b' columns and the error messages go through helpers.
    """
    n = len(buf)
    if off + 2 > n:
        raise _err(mt, off, "truncated: TupleData column count missing", buf)
    (ncols,) = _I16(buf, off)
    if ncols < 0:
        raise _err(mt, off, f"negative TupleData column count {ncols}", buf)
    off += 2
    vals: list = []
    append = vals.append
    a = i = 0
    try:
        for i in range(ncols):
            kind = buf[off]
            if kind == 116:  # 't'
                (ln,) = _I32(buf, off + 1)
                a = off + 5
                off = a + ln
                if ln < 0 or off > n:
                    raise _badlen(buf, a - 4, ln, i, mt)
                append(buf[a:off].decode())
            elif kind == 110:  # 'n'
                append(None)
                off += 1
            elif kind == 117:  # 'u'
                append(UNCHANGED)
                off += 1
            else:  # 'b' (never requested by proto_version '1' clients) or a bad kind byte
                value, off = _binary(buf, off, kind, i, mt)
                append(value)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise _broken(buf, off, a, i, ncols, mt, e) from None
    return tuple(vals), off


def _binary(buf: bytes, off: int, kind: int, i: int, mt: str) -> tuple[bytes, int]:
    """Column ``i`` of kind ``kind`` at ``off`` that is not 't', 'n' or 'u': a 'b' value -> (bytes,
    offset after it); DecodeError for any other kind byte or a bad length.  Running out of bytes
    raises IndexError / struct.error, which :func:`_tuple` reports for column ``i`` at ``off``."""
    if kind != 98:  # 'b'
        raise _badkind(buf, off, kind, i, mt)
    (ln,) = _I32(buf, off + 1)
    a = off + 5
    end = a + ln
    if ln < 0 or end > len(buf):
        raise _badlen(buf, off + 1, ln, i, mt)
    return buf[a:end], end


def _badlen(buf: bytes, off: int, ln: int, i: int, mt: str) -> DecodeError:
    """The error for column ``i`` whose length word at ``off`` is negative or runs past the end."""
    if ln < 0:
        return _err(mt, off, f"negative value length {ln} in TupleData column {i}", buf)
    return _err(
        mt, off, f"truncated: TupleData column {i} value of {ln} bytes, {len(buf) - off - 4} left", buf
    )


def _badkind(buf: bytes, off: int, kind: int, i: int, mt: str) -> DecodeError:
    """The error for column ``i`` whose kind byte at ``off`` is none of 'n', 'u', 't', 'b'."""
    return _err(
        mt,
        off,
        f"bad TupleData kind byte {bytes((kind,))!r} in column {i} (expected 'n', 'u', 't' or 'b')",
        buf,
    )


def _broken(buf: bytes, off: int, a: int, i: int, ncols: int, mt: str, e: Exception) -> DecodeError:
    """The error for a TupleData that ran out of bytes (IndexError, struct.error) at column ``i``
    starting at ``off``, or whose text value starting at ``a`` is not UTF-8 (UnicodeDecodeError)."""
    if isinstance(e, UnicodeDecodeError):
        return _err(mt, a + e.start, f"invalid UTF-8 in text value of column {i}", buf)
    return _err(mt, off, f"truncated: TupleData column {i} of {ncols}", buf)


# ---------------------------------------------------------------------------------------------------
# One function per message type: buf -> (message, offset after it)


def _begin(buf: bytes) -> tuple[Begin, int]:
    _need(buf, 1, 20, "B", "Begin body")
    lsn, ts, xid = _BEGIN(buf, 1)
    return Begin(Lsn(lsn), _time(ts, "B", 9, buf), xid), 21


def _commit(buf: bytes) -> tuple[Commit, int]:
    _need(buf, 1, 25, "C", "Commit body")
    flags, lsn, end, ts = _COMMIT(buf, 1)
    return Commit(flags, Lsn(lsn), Lsn(end), _time(ts, "C", 18, buf)), 26


def _origin(buf: bytes) -> tuple[Origin, int]:
    _need(buf, 1, 8, "O", "origin LSN")
    (lsn,) = _LSN(buf, 1)
    name, off = _cstr(buf, 9, "O", "origin name")
    return Origin(Lsn(lsn), name), off


def _relation(buf: bytes) -> tuple[Relation, int]:
    _need(buf, 1, 4, "R", "relation id")
    (relid,) = _U32(buf, 1)
    ns, off = _cstr(buf, 5, "R", "namespace")
    name, off = _cstr(buf, off, "R", "relation name")
    _need(buf, off, 3, "R", "replica identity and column count")
    ident = chr(buf[off])
    if ident not in _IDENTITIES:
        raise _err("R", off, f"unknown replica identity {ident!r} (expected d, n, f or i)", buf)
    (ncols,) = _I16(buf, off + 1)
    if ncols < 0:
        raise _err("R", off + 1, f"negative column count {ncols}", buf)
    off += 3
    cols = []
    for i in range(ncols):
        _need(buf, off, 1, "R", f"column {i} flags")
        flags = buf[off]
        cname, off = _cstr(buf, off + 1, "R", f"column {i} name")
        _need(buf, off, 8, "R", f"column {i} type")
        oid, typmod = _COLTAIL(buf, off)
        off += 8
        cols.append(RelationColumn(flags, cname, oid, typmod))
    return Relation(relid, ns, name, ident, tuple(cols)), off


def _type(buf: bytes) -> tuple[TypeInfo, int]:
    _need(buf, 1, 4, "Y", "type oid")
    (oid,) = _U32(buf, 1)
    ns, off = _cstr(buf, 5, "Y", "namespace")
    name, off = _cstr(buf, off, "Y", "type name")
    return TypeInfo(oid, ns, name), off


def _insert(buf: bytes) -> tuple[Insert, int]:
    if len(buf) < 6:
        _need(buf, 1, 5, "I", "relation id and 'N'")
    (relid,) = _U32(buf, 1)
    if buf[5] != 78:
        raise _err("I", 5, f"expected 'N' but got {buf[5:6]!r}", buf)
    new, off = _tuple(buf, 6, "I")
    return Insert(relid, new), off


def _update(buf: bytes) -> tuple[Update, int]:
    if len(buf) < 6:
        _need(buf, 1, 5, "U", "relation id and tuple kind")
    (relid,) = _U32(buf, 1)
    k = buf[5]
    if k == 78:  # 'N'
        new, off = _tuple(buf, 6, "U")
        return Update(relid, None, None, new), off
    if k == 75 or k == 79:  # 'K' / 'O'
        old, off = _tuple(buf, 6, "U")
        if off >= len(buf):
            raise _err("U", off, "truncated: 'N' and new tuple missing after the old tuple", buf)
        if buf[off] != 78:
            raise _err("U", off, f"expected 'N' after the old tuple but got {buf[off : off + 1]!r}", buf)
        new, off = _tuple(buf, off + 1, "U")
        return Update(relid, old, "K" if k == 75 else "O", new), off
    raise _err("U", 5, f"expected 'K', 'O' or 'N' but got {buf[5:6]!r}", buf)


def _delete(buf: bytes) -> tuple[Delete, int]:
    if len(buf) < 6:
        _need(buf, 1, 5, "D", "relation id and tuple kind")
    (relid,) = _U32(buf, 1)
    k = buf[5]
    if k != 75 and k != 79:
        raise _err("D", 5, f"expected 'K' or 'O' but got {buf[5:6]!r}", buf)
    old, off = _tuple(buf, 6, "D")
    return Delete(relid, old, "K" if k == 75 else "O"), off


def _truncate(buf: bytes) -> tuple[Truncate, int]:
    _need(buf, 1, 5, "T", "relation count and options")
    nrels, opts = _TRUNCHEAD(buf, 1)
    if nrels < 0:
        raise _err("T", 1, f"negative relation count {nrels}", buf)
    _need(buf, 6, 4 * nrels, "T", f"{nrels} relation ids")
    relids = struct.unpack_from(f">{nrels}I", buf, 6)
    return Truncate(relids, bool(opts & 1), bool(opts & 2)), 6 + 4 * nrels


def _message(buf: bytes) -> tuple[LogicalMessage, int]:
    _need(buf, 1, 9, "M", "flags and LSN")
    flags, lsn = _MSGHEAD(buf, 1)
    prefix, off = _cstr(buf, 10, "M", "prefix")
    _need(buf, off, 4, "M", "content length")
    (ln,) = _I32(buf, off)
    if ln < 0:
        raise _err("M", off, f"negative content length {ln}", buf)
    off += 4
    _need(buf, off, ln, "M", "content")
    return LogicalMessage(bool(flags & 1), Lsn(lsn), prefix, buf[off : off + ln]), off + ln


_DISPATCH: dict[int, Callable[[bytes], tuple[Message, int]]] = {
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
}


def decode(data: Union[bytes, bytearray, memoryview]) -> Message:
    """Decode one pgoutput v1 message (the payload of an XLogData frame).

    Raises :class:`DecodeError` naming the message type and byte offset for anything malformed.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf:
        raise DecodeError("pgoutput message is empty (byte offset 0)")
    fn = _DISPATCH.get(buf[0])
    if fn is None:
        mt = chr(buf[0])
        if mt in NEWER_TYPES:
            raise DecodeError(
                f"pgoutput {NEWER_TYPES[mt]} message {mt!r} at byte offset 0 belongs to "
                "protocol version 2 or later; this decoder requests proto_version '1'"
            )
        raise DecodeError(f"unknown pgoutput message type {buf[:1]!r} at byte offset 0")
    try:
        msg, off = fn(buf)
    except (IndexError, struct.error, OverflowError) as e:  # safety net: the parsers check bounds
        mt = chr(buf[0])
        raise _err(mt, len(buf), f"malformed ({type(e).__name__}: {e})", buf) from None
    if off != len(buf):
        raise _err(chr(buf[0]), off, f"{len(buf) - off} trailing bytes after the message", buf)
    return msg


def check_tuple(rel: Relation, values: tuple) -> None:
    """Raise DecodeError if a tuple's column count disagrees with its Relation message."""
    if len(values) != len(rel.columns):
        raise DecodeError(
            f"relation {rel.namespace}.{rel.name} (relid {rel.relid}): tuple column count mismatch, "
            f"expected {len(rel.columns)} (from its Relation message), got {len(values)}; the "
            "stream is corrupt or a Relation message was missed"
        )
