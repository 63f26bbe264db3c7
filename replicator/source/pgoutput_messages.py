"""The pgoutput message values :func:`replicator.source.pgoutput.decode` returns.

Contract: plain slotted dataclasses with no behaviour beyond field access (and
:attr:`RelationColumn.is_key`), frozen except the five made once per change or transaction
(Begin, Commit, Insert, Update, Delete: a frozen dataclass costs twice as much to build), which
nothing changes either; they hold already-decoded Python values, so building one does no
parsing and no I/O.  ``TYPE_NAMES`` and ``TWO_PHASE_TYPES`` name the type bytes (for error
messages).  Field meanings and wire order are documented in :mod:`replicator.source.pgoutput`
(protocol version 1) and :mod:`replicator.source.pgoutput_stream` (version 2 streaming), which
re-export every name here (``po.Insert`` and so on).

``xid`` (the last field of Relation, TypeInfo, Insert, Update, Delete, Truncate, LogicalMessage)
is the (sub)transaction id a message carries inside a stream block (between Stream Start and
Stream Stop, protocol version 2+); 0 outside stream blocks, where the wire has no such field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Union

from ..model import Lsn

#: message type byte -> name, for the messages this decoder decodes (versions 1 and 2)
TYPE_NAMES = {
    "B": "Begin",
    "C": "Commit",
    "O": "Origin",
    "R": "Relation",
    "Y": "Type",
    "I": "Insert",
    "U": "Update",
    "D": "Delete",
    "T": "Truncate",
    "M": "Message",
    "S": "Stream Start",
    "E": "Stream Stop",
    "c": "Stream Commit",
    "A": "Stream Abort",
}
#: type bytes of the two-phase messages (protocol version 3, option two_phase): named, then refused
TWO_PHASE_TYPES = {
    "b": "Begin Prepare",
    "P": "Prepare",
    "K": "Commit Prepared",
    "r": "Rollback Prepared",
    "p": "Stream Prepare",
}


@dataclass(slots=True)
class Begin:
    final_lsn: Lsn
    commit_time: datetime
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: Lsn
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    flags: int
    name: str
    type_oid: int
    type_mod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]
    xid: int = 0


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str
    xid: int = 0


@dataclass(slots=True)
class Insert:
    relid: int
    new: tuple
    xid: int = 0


@dataclass(slots=True)
class Update:
    relid: int
    old: Optional[tuple]
    old_kind: Optional[str]
    new: tuple
    xid: int = 0


@dataclass(slots=True)
class Delete:
    relid: int
    old: tuple
    old_kind: str
    xid: int = 0


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int = 0


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: Lsn
    prefix: str
    content: bytes
    xid: int = 0


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int
    #: only with protocol version 4 and streaming 'parallel' (PostgreSQL 16+); else None
    abort_lsn: Optional[Lsn] = None
    abort_time: Optional[datetime] = None


Message = Union[
    Begin,
    Commit,
    Origin,
    Relation,
    TypeInfo,
    Insert,
    Update,
    Delete,
    Truncate,
    LogicalMessage,
    StreamStart,
    StreamStop,
    StreamCommit,
    StreamAbort,
]
