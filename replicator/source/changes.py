"""Decode phase: pgoutput messages → the neutral model (TxBegin, RowChange, Truncate, TxCommit,
and for streamed transactions StreamStart, StreamStop, StreamCommit, StreamAbort).

Holds the Relation cache (relid → table) and checks every tuple against it, so a tuple whose column
count disagrees never reaches a target.  Contract: every Relation of a mapped table is passed on as
a :class:`RelationInfo` before any change that uses it; comparing it with the target's columns is
the replay phase's job (only it knows whether the transaction is applied or skipped).

Protocol version 2 (streaming): the decoder knows whether it is inside a stream block
(``in_stream``, between StreamStart and StreamStop); there the events carry the (sub)transaction
``xid`` the message carried, and ``lsn`` 0 (the commit LSN comes with StreamCommit).  A Relation
inside a block updates the cache at once (the changes after it in the block are written with it)
and is passed on as a RelationInfo tagged with its xid.  Nothing here buffers: what to keep until
StreamCommit, and what a StreamAbort discards, is the applier's business.  One decoder per
START_REPLICATION session (the block state does not survive a reconnect).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Optional, Union

from ..model import (
    ChangeKind,
    Lsn,
    RelationInfo,
    RowChange,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    TableSchema,
    Truncate,
    TxBegin,
    TxCommit,
)
from . import pgoutput as po
from .pgoutput_wire import time_at, tuple_at

Event = Union[
    TxBegin, TxCommit, RowChange, Truncate, RelationInfo, StreamStart, StreamStop, StreamCommit, StreamAbort
]
INSERT, UPDATE, DELETE = ChangeKind.INSERT, ChangeKind.UPDATE, ChangeKind.DELETE
_SLOW = object()  # a fused path's answer: take the full decoder
_U32 = struct.Struct(">I").unpack_from
_XID_RELID = struct.Struct(">II").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from


class ChangeDecoder:
    """Turns pgoutput payloads into events for the tables in ``tables`` (qualified name → schema).

    Changes of relations that are not mapped are dropped (they can only appear while a
    publication is being narrowed).  ``abort_info``: Stream Abort messages carry abort LSN and
    time (only when proto_version '4' with streaming 'parallel' was requested, PostgreSQL 16+).
    """

    def __init__(self, tables: dict[str, TableSchema], abort_info: bool = False):
        self.tables = tables
        self.abort_info = abort_info
        self.relations: dict[int, po.Relation] = {}
        self.names: dict[int, Optional[str]] = {}
        self.lsn = Lsn(0)
        #: inside a stream block (after StreamStart, before StreamStop)
        self.in_stream = False
        self._on: dict[type, Callable[[Any], Optional[Event]]] = {
            po.Insert: self._insert,
            po.Update: self._update,
            po.Delete: self._delete,
            po.Begin: self._begin,
            po.Commit: self._commit,
            po.Relation: self._relation,
            po.Truncate: self._truncate,
            po.StreamStart: self._stream_start,
            po.StreamStop: self._stream_stop,
            po.StreamCommit: self._stream_commit,
            po.StreamAbort: self._stream_abort,
        }
        #: relid → column count of its Relation message (the fused paths check tuples by it)
        self.widths: dict[int, int] = {}
        #: the fused paths by type byte, outside and inside stream blocks; ``_fast`` is the one
        #: in use (switched by StreamStart/StreamStop, so ``feed`` never tests the state)
        self._fast_out: dict[int, Callable[[bytes], Any]] = {
            73: self._fast_insert,
            85: self._fast_update,
            66: self._fast_begin,
            67: self._fast_commit,
        }
        self._fast_in: dict[int, Callable[[bytes], Any]] = {
            73: self._fast_insert_in_stream,
            85: self._fast_update_in_stream,
        }
        self._fast = self._fast_out

    def feed(self, payload: bytes | memoryview) -> Optional[Event]:
        """The event of one pgoutput message; None for messages with nothing to apply (Origin,
        Type, logical messages, changes of tables that are not mapped).

        The messages of every change and transaction (I, U, B, C; I and U inside stream
        blocks) take a fused path that builds the event straight from the bytes; anything it
        does not expect (a malformed or unusual message, an unknown relation) goes through
        :func:`pgoutput.decode`, which names what is wrong."""
        buf = payload if type(payload) is bytes else bytes(payload)
        fast = self._fast.get(buf[0]) if buf else None
        if fast is not None:
            try:
                ev = fast(buf)
            except (IndexError, struct.error, UnicodeDecodeError, po.DecodeError, KeyError, OverflowError):
                ev = _SLOW
            if ev is not _SLOW:
                event: Optional[Event] = ev
                return event
        msg = po.decode(buf, self.in_stream, self.abort_info)
        handler = self._on.get(type(msg))
        return handler(msg) if handler is not None else None

    # ------------------------------------------------------------ fused fast paths
    def _row(self, buf: bytes, off: int, mt: str) -> tuple:
        """The tuple at ``off``, which must end the message."""
        values, end = tuple_at(buf, off, mt)
        if end != len(buf):
            raise po.DecodeError("trailing bytes")
        return values

    def _fast_insert(self, buf: bytes) -> Any:
        relid = _U32(buf, 1)[0]
        name = self.names[relid]
        if buf[5] != 78 or not name:
            return _SLOW
        new = self._row(buf, 6, "I")
        if len(new) != self.widths[relid]:
            return _SLOW
        return RowChange(INSERT, name, new, None, True, self.lsn)

    def _fast_update(self, buf: bytes) -> Any:
        relid = _U32(buf, 1)[0]
        name = self.names[relid]
        if buf[5] != 78 or not name:
            return _SLOW  # an old tuple ('K'/'O') or an unmapped table: the full path
        new = self._row(buf, 6, "U")
        if len(new) != self.widths[relid]:
            return _SLOW
        return RowChange(UPDATE, name, new, None, True, self.lsn)

    def _fast_insert_in_stream(self, buf: bytes) -> Any:
        xid, relid = _XID_RELID(buf, 1)
        name = self.names[relid]
        if buf[9] != 78 or not name:
            return _SLOW
        new = self._row(buf, 10, "I")
        if len(new) != self.widths[relid]:
            return _SLOW
        return RowChange(INSERT, name, new, None, True, self.lsn, xid)

    def _fast_update_in_stream(self, buf: bytes) -> Any:
        xid, relid = _XID_RELID(buf, 1)
        name = self.names[relid]
        if buf[9] != 78 or not name:
            return _SLOW
        new = self._row(buf, 10, "U")
        if len(new) != self.widths[relid]:
            return _SLOW
        return RowChange(UPDATE, name, new, None, True, self.lsn, xid)

    def _fast_begin(self, buf: bytes) -> Any:
        if len(buf) != 21:
            return _SLOW
        lsn, ts, xid = _BEGIN(buf, 1)
        self.lsn = Lsn(lsn)
        return TxBegin(self.lsn, time_at(ts, "B", 9, buf), xid)

    def _fast_commit(self, buf: bytes) -> Any:
        if len(buf) != 26:
            return _SLOW
        _flags, lsn, end, ts = _COMMIT(buf, 1)
        return TxCommit(Lsn(lsn), Lsn(end), time_at(ts, "C", 18, buf))

    # ------------------------------------------------------------ the full path
    def _insert(self, msg: po.Insert) -> Optional[Event]:
        name = self._name(msg.relid)
        if not name:
            return None
        po.check_tuple(self.relations[msg.relid], msg.new)
        return RowChange(INSERT, name, msg.new, None, True, self.lsn, msg.xid)

    def _update(self, msg: po.Update) -> Optional[Event]:
        name = self._name(msg.relid)
        if not name:
            return None
        rel = self.relations[msg.relid]
        po.check_tuple(rel, msg.new)
        if msg.old is not None:
            po.check_tuple(rel, msg.old)
        return RowChange(UPDATE, name, msg.new, msg.old, msg.old_kind != "O", self.lsn, msg.xid)

    def _delete(self, msg: po.Delete) -> Optional[Event]:
        name = self._name(msg.relid)
        if not name:
            return None
        po.check_tuple(self.relations[msg.relid], msg.old)
        return RowChange(DELETE, name, None, msg.old, msg.old_kind != "O", self.lsn, msg.xid)

    def _begin(self, msg: po.Begin) -> Optional[Event]:
        self.lsn = msg.final_lsn
        return TxBegin(msg.final_lsn, msg.commit_time, msg.xid)

    def _commit(self, msg: po.Commit) -> Optional[Event]:
        return TxCommit(msg.commit_lsn, msg.end_lsn, msg.commit_time)

    def _truncate(self, msg: po.Truncate) -> Optional[Event]:
        names = tuple(n for n in (self._name(r) for r in msg.relids) if n)
        return Truncate(names, msg.cascade, msg.restart_identity, self.lsn, msg.xid) if names else None

    def _stream_start(self, msg: po.StreamStart) -> Optional[Event]:
        self.in_stream, self._fast, self.lsn = True, self._fast_in, Lsn(0)
        return StreamStart(msg.xid, msg.first_segment)

    def _stream_stop(self, msg: po.StreamStop) -> Optional[Event]:
        self.in_stream, self._fast = False, self._fast_out
        return StreamStop()

    def _stream_commit(self, msg: po.StreamCommit) -> Optional[Event]:
        return StreamCommit(msg.xid, msg.commit_lsn, msg.end_lsn, msg.commit_time)

    def _stream_abort(self, msg: po.StreamAbort) -> Optional[Event]:
        return StreamAbort(msg.xid, msg.subxid, msg.abort_lsn, msg.abort_time)

    def _name(self, relid: int) -> Optional[str]:
        try:
            return self.names[relid]
        except KeyError:
            raise po.DecodeError(f"change for relation {relid} arrived before its Relation message") from None

    def _relation(self, rel: po.Relation) -> Optional[Event]:
        """Remember the relation; for a mapped table, announce its columns (the replay phase
        decides whether they differ from what the target has, and what to do)."""
        ns = rel.namespace or "pg_catalog"
        name = f"{ns}.{rel.name}"
        self.relations[rel.relid] = rel
        self.widths[rel.relid] = len(rel.columns)
        mapped = name in self.tables
        self.names[rel.relid] = name if mapped else None
        if not mapped:
            return None
        return RelationInfo(
            name,
            tuple((c.name, c.type_oid) for c in rel.columns),
            self.lsn,
            tuple(c.type_mod for c in rel.columns),
            rel.relid,
            rel.xid,
        )
