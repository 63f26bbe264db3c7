"""Wire primitives of the pgoutput decoder: integers, strings, timestamps and TupleData.

Contract: pure functions over ``bytes`` (no I/O, no state but a one-entry timestamp memo); every
malformed input raises :class:`DecodeError` naming the message type (by its type byte ``mt``) and
the byte offset from the start of the message.  :mod:`replicator.source.pgoutput` (the message
parsers and ``decode``), :mod:`replicator.source.pgoutput_stream` and the fused paths of
:mod:`replicator.source.changes` share them; the layouts are documented in ``pgoutput``.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

from ..errors import DecodeError
from ..model import UNCHANGED
from .pgoutput_messages import TYPE_NAMES

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)

U32 = struct.Struct(">I").unpack_from
I32 = struct.Struct(">i").unpack_from
I16 = struct.Struct(">h").unpack_from


def pg_time(micros: int) -> datetime:
    """PostgreSQL TimestampTz (µs since 2000-01-01 UTC) -> aware UTC datetime (OverflowError if out of range)."""
    return PG_EPOCH + timedelta(microseconds=micros)


def pg_micros(when: datetime) -> int:
    """Aware datetime -> µs since 2000-01-01 UTC."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass a timezone-aware datetime")
    return (when - PG_EPOCH) // _ONE_US


def err(mt: str, off: int, what: str, buf: bytes) -> DecodeError:
    """The DecodeError for message type ``mt``: ``what`` went wrong at byte offset ``off``."""
    name = TYPE_NAMES.get(mt, "unknown")
    return DecodeError(
        f"pgoutput {name} message {mt!r}: {what} at byte offset {off} (message length {len(buf)})"
    )


def need(buf: bytes, off: int, size: int, mt: str, what: str) -> None:
    """Raise a truncation DecodeError unless ``size`` bytes (``what``) are there at ``off``."""
    if off + size > len(buf):
        raise err(mt, off, f"truncated: {what} needs {size} bytes, {max(len(buf) - off, 0)} left", buf)


_last_time: list = [None, None]  # (µs, datetime) of the last call: Commit repeats Begin's time


def time_at(micros: int, mt: str, off: int, buf: bytes) -> datetime:
    """The TimestampTz ``micros`` (read at ``off``) as an aware UTC datetime; DecodeError if out of range."""
    if micros == _last_time[0]:
        last: datetime = _last_time[1]
        return last
    try:
        when = PG_EPOCH + timedelta(microseconds=micros)
        _last_time[0], _last_time[1] = micros, when
        return when
    except OverflowError:
        raise err(mt, off, f"timestamp {micros} µs out of range", buf) from None


def cstr(buf: bytes, off: int, mt: str, what: str) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``off`` -> (text, offset after the NUL)."""
    try:
        end = buf.index(b"\0", off)
    except ValueError:
        raise err(mt, off, f"truncated: {what} string has no NUL terminator", buf) from None
    try:
        return buf[off:end].decode(), end + 1
    except UnicodeDecodeError as e:
        raise err(mt, off + e.start, f"invalid UTF-8 in {what} string", buf) from None


def tuple_at(buf: bytes, off: int, mt: str) -> tuple[tuple, int]:
    """TupleData at ``off`` -> (values, offset after it); DecodeError naming the column if malformed.

    The hot path: 't', 'n' and 'u' columns are decoded inline (no call per column); only the rare
    'b' columns and the error messages go through helpers.
    """
    n = len(buf)
    if off + 2 > n:
        raise err(mt, off, "truncated: TupleData column count missing", buf)
    (ncols,) = I16(buf, off)
    if ncols < 0:
        raise err(mt, off, f"negative TupleData column count {ncols}", buf)
    off += 2
    vals: list = []
    append = vals.append
    a = i = 0
    try:
        for i in range(ncols):
            kind = buf[off]
            if kind == 116:  # 't'
                (ln,) = I32(buf, off + 1)
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
            else:  # 'b' (never requested: we do not ask for binary) or a bad kind byte
                value, off = _binary(buf, off, kind, i, mt)
                append(value)
    except (IndexError, struct.error, UnicodeDecodeError) as e:
        raise _broken(buf, off, a, i, ncols, mt, e) from None
    return tuple(vals), off


def _binary(buf: bytes, off: int, kind: int, i: int, mt: str) -> tuple[bytes, int]:
    """Column ``i`` of kind ``kind`` at ``off`` that is not 't', 'n' or 'u': a 'b' value -> (bytes,
    offset after it); DecodeError for any other kind byte or a bad length.  Running out of bytes
    raises IndexError / struct.error, which :func:`tuple_at` reports for column ``i`` at ``off``."""
    if kind != 98:  # 'b'
        raise _badkind(buf, off, kind, i, mt)
    (ln,) = I32(buf, off + 1)
    a = off + 5
    end = a + ln
    if ln < 0 or end > len(buf):
        raise _badlen(buf, off + 1, ln, i, mt)
    return buf[a:end], end


def _badlen(buf: bytes, off: int, ln: int, i: int, mt: str) -> DecodeError:
    """The error for column ``i`` whose length word at ``off`` is negative or runs past the end."""
    if ln < 0:
        return err(mt, off, f"negative value length {ln} in TupleData column {i}", buf)
    return err(
        mt, off, f"truncated: TupleData column {i} value of {ln} bytes, {len(buf) - off - 4} left", buf
    )


def _badkind(buf: bytes, off: int, kind: int, i: int, mt: str) -> DecodeError:
    """The error for column ``i`` whose kind byte at ``off`` is none of 'n', 'u', 't', 'b'."""
    return err(
        mt,
        off,
        f"bad TupleData kind byte {bytes((kind,))!r} in column {i} (expected 'n', 'u', 't' or 'b')",
        buf,
    )


def _broken(buf: bytes, off: int, a: int, i: int, ncols: int, mt: str, e: Exception) -> DecodeError:
    """The error for a TupleData that ran out of bytes (IndexError, struct.error) at column ``i``
    starting at ``off``, or whose text value starting at ``a`` is not UTF-8 (UnicodeDecodeError)."""
    if isinstance(e, UnicodeDecodeError):
        return err(mt, a + e.start, f"invalid UTF-8 in text value of column {i}", buf)
    return err(mt, off, f"truncated: TupleData column {i} of {ncols}", buf)
