"""The pgoutput v1 message values :func:`replicator.source.pgoutput.decode` returns.

Contract: plain slotted dataclasses with no behaviour beyond field access (and
:attr:`RelationColumn.is_key`), frozen except the five made once per change or transaction
(Begin, Commit, Insert, Update, Delete: a frozen dataclass costs twice as much to build), which
nothing changes either; they hold already-decoded Python values, so building one does no
parsing and no I/O.  ``TYPE_NAMES`` and ``NEWER_TYPES`` name the type bytes (for error messages).
Field meanings and wire order are documented in :mod:`replicator.source.pgoutput`, which
re-exports every name here (``po.Insert`` and so on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Union

from ..model import Lsn

#: message type byte -> name, for the messages protocol version 1 has
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
}
#: type bytes of protocol version 2+ messages (streaming, two-phase): named, then refused
NEWER_TYPES = {
    "S": "Stream Start",
    "E": "Stream Stop",
    "c": "Stream Commit",
    "A": "Stream Abort",
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


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    relid: int
    new: tuple


@dataclass(slots=True)
class Update:
    relid: int
    old: Optional[tuple]
    old_kind: Optional[str]
    new: tuple


@dataclass(slots=True)
class Delete:
    relid: int
    old: tuple
    old_kind: str


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: Lsn
    prefix: str
    content: bytes


Message = Union[Begin, Commit, Origin, Relation, TypeInfo, Insert, Update, Delete, Truncate, LogicalMessage]
