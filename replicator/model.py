"""The neutral change model shared by source/ and target/.

Nothing here does I/O.  The source side turns catalog rows and pgoutput messages into these types;
the target side consumes them.  Values travel as PostgreSQL's *text* rendering (``str``), ``None``
for SQL NULL, or the :data:`UNCHANGED` sentinel for an unchanged TOAST column (``'u'`` in a pgoutput
tuple).  Keeping the text form until the target means the copy path (COPY ... TO STDOUT text/CSV)
and the change path (pgoutput text tuples) start from identical bytes; each target converts them
through one type map (``target/typemap.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Protocol, Union


class Lsn(int):
    """A WAL position.  ``str(Lsn)`` is PostgreSQL's ``X/Y`` form; ``Lsn.parse`` reads it back."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str | int | None) -> Lsn:
        if text is None:
            return cls(0)
        if isinstance(text, int):
            return cls(text)
        hi, _, lo = str(text).partition("/")
        if not _:
            raise ValueError(f"not an LSN: {text!r} (expected the X/Y form)")
        return cls((int(hi, 16) << 32) | int(lo, 16))

    def __str__(self) -> str:
        return f"{int(self) >> 32:X}/{int(self) & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"


class _Unchanged:
    """Sentinel for an unchanged TOASTed value: the target keeps what it has."""

    _instance = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __bool__(self) -> bool:
        return False


UNCHANGED = _Unchanged()

Value = Union[str, None, _Unchanged]


class Identity(str, enum.Enum):
    """pg_class.relreplident."""

    DEFAULT = "d"
    NOTHING = "n"
    FULL = "f"
    INDEX = "i"


@dataclass(frozen=True)
class Column:
    """One source column.  ``type_name`` is ``format_type(atttypid, atttypmod)``, e.g. ``numeric(12,2)``.

    ``base_oid``/``base_name`` resolve domains to their base type; ``elem_oid`` is the element type of
    an array (0 otherwise); ``type_kind`` is pg_type.typtype ('b' base, 'e' enum, 'r' range, 'c'
    composite, 'd' domain resolved, 'm' multirange).  For arrays, ``ndims`` is the declared number
    of dimensions (pg_attribute.attndims: 0 when undeclared, e.g. a domain over an array),
    ``elem_base_oid`` the element's base type when the element is a domain (0 otherwise) and
    ``elem_delim`` the element type's array delimiter (``;`` for box).
    """

    name: str
    type_oid: int
    type_name: str
    type_mod: int = -1
    not_null: bool = False
    base_oid: int = 0
    base_name: str = ""
    elem_oid: int = 0
    type_kind: str = "b"
    generated: bool = False
    ndims: int = 0
    elem_base_oid: int = 0
    elem_delim: str = ","
    #: a target type expression chosen by the mapping (``types:``); overrides the type map
    target_type: str = ""
    #: what to do with a value the target cannot hold: error | null | clamp | text
    policy: str = "error"
    #: a column the source table does not have (a mode's column, modes.py): the SQL constant the
    #: snapshot copy outputs for it; "" for every replicated column
    source_sql: str = ""

    @property
    def oid(self) -> int:
        """The type that decides the mapping: the domain's base type, else the column's type."""
        return self.base_oid or self.type_oid


@dataclass(frozen=True)
class TableSchema:
    """A replicated source table as the catalog describes it.

    ``key`` is the ordered list of columns that locate a row on the target: the primary key or the
    replica-identity index, or a key the mapping declares.  It is empty for FULL identity without a
    declared key, which then locates rows by all columns (NULL-safe, exactly one row).
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    identity: Identity = Identity.DEFAULT
    key: tuple[str, ...] = ()
    oid: int = 0
    primary_key: tuple[str, ...] = ()
    insert_only: bool = False
    #: (source column name, pg_attribute.attnum) where known: a column's identity in the catalog
    #: (a renamed column keeps its attnum, an added one gets a new, greater one); may be partial
    attnums: tuple[tuple[str, int], ...] = ()

    @property
    def qualified(self) -> str:
        """``schema.name`` as a human label (not SQL: identifiers are quoted where SQL is built)."""
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Mode:
    """A mapping entry's mode other than ``mirror`` (modes.py): its kind and the target names of
    its columns, by role (e.g. ``(("deleted", "_deleted"), …)`` for ``soft_delete``)."""

    kind: str
    columns: tuple[tuple[str, str], ...]

    def name(self, role: str) -> str:
        return dict(self.columns)[role]


@dataclass(frozen=True)
class TableMapping:
    """Where one source table goes.

    ``view`` is the table *as the target sees it*: the replicated columns in source order, with
    the mapping's renames, type overrides and value policies applied, and the key and primary key
    named accordingly.  Targets only ever read ``view``.  ``origin`` is the table as it is on the
    source (None when the mapping renames nothing); source-side SQL (the copy query, the
    publication) uses :attr:`source_table`.  Tuples from the copy and the stream are positional,
    so both line up column by column.
    """

    view: TableSchema
    target_name: str
    target_schema: Optional[str] = None
    on_missing_row: str = "error"  # error | skip
    origin: Optional[TableSchema] = None
    where: str = ""
    #: the publication's column list (source names) when the mapping excludes columns
    column_list: Optional[tuple[str, ...]] = None
    #: what a change does to the target table (modes.py); None: mirror it
    mode: Optional[Mode] = None

    @property
    def label(self) -> str:
        return self.view.qualified

    @property
    def source_table(self) -> TableSchema:
        """The table with its source column names (for SQL run on the source)."""
        return self.origin or self.view


class CopyOutput(Protocol):
    """One table's ``COPY … TO STDOUT`` from the snapshot, handed to ``Target.load_copy``, which
    reads it once, in one of two forms (source/snapshot.py ``CopyOut`` is the implementation)."""

    def chunks(self) -> Iterator[bytes]:
        """The raw output in the target's ``copy_format(m)``, in bounded chunks that end at
        row boundaries (text formats; a binary output is passed on as it comes)."""

    def rows(self) -> Iterator[list[tuple]]:
        """Batches of PostgreSQL text tuples (None for NULL); only for ``FORMAT text``."""


@dataclass(frozen=True)
class PublishedTable:
    """What a publication lists for one table: optional column list and row filter."""

    schema: str
    name: str
    columns: Optional[tuple[str, ...]] = None
    where: str = ""


class ChangeKind(str, enum.Enum):
    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"


@dataclass(slots=True)
class RowChange:
    """One row-level change, in source column order.

    ``new`` holds every column for INSERT and UPDATE (``UNCHANGED`` where TOAST was not sent); it is
    None for DELETE.  ``old`` holds the identity the source sent: for DELETE always, for UPDATE only
    when the key changed (DEFAULT/INDEX, ``old_is_key`` True: non-key positions are None) or always
    under FULL identity (``old_is_key`` False).  ``lsn`` is the commit LSN of its transaction, used
    in error messages.  Inside a stream block (see :class:`StreamStart`) ``xid`` is the id of the
    (sub)transaction the change belongs to and ``lsn`` is 0 (the commit LSN is known only at
    :class:`StreamCommit`); outside stream blocks ``xid`` is 0.
    """

    kind: ChangeKind
    table: str  # source qualified name
    new: Optional[tuple] = None
    old: Optional[tuple] = None
    old_is_key: bool = True
    lsn: Lsn = Lsn(0)
    xid: int = 0


@dataclass(frozen=True)
class Truncate:
    """TRUNCATE of ``tables``; ``lsn`` and ``xid`` as in :class:`RowChange`."""

    tables: tuple[str, ...]
    cascade: bool = False
    restart_identity: bool = False
    lsn: Lsn = Lsn(0)
    xid: int = 0


@dataclass(frozen=True)
class RelationInfo:
    """The source's current column list of a table, as a Relation message announced it (names
    and type OIDs in tuple order).  Sent before the first change after any schema change.
    ``type_mods`` are the columns' typmods (same order; empty when unknown) and ``relid`` the
    table's OID, as the message carries them: what the changes after it were written with.
    ``lsn`` and ``xid`` as in :class:`RowChange`: a Relation inside a stream block belongs to the
    streamed transaction (the decoder already uses it for the changes after it)."""

    table: str
    columns: tuple[tuple[str, int], ...]
    lsn: Lsn = Lsn(0)
    type_mods: tuple[int, ...] = ()
    relid: int = 0
    xid: int = 0


@dataclass(slots=True)
class TxBegin:
    """Start of a source transaction; ``final_lsn`` is the LSN of its commit record."""

    final_lsn: Lsn
    commit_time: Optional[datetime]
    xid: int


@dataclass(slots=True)
class TxCommit:
    """End of a source transaction; ``end_lsn`` (end of the commit record) is what we persist and confirm."""

    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: Optional[datetime]


@dataclass(slots=True)
class StreamStart:
    """Start of a stream block of the in-progress (not yet committed) transaction ``xid``
    (pgoutput protocol version 2, streaming on).  Until the next :class:`StreamStop`, every
    RowChange, Truncate and RelationInfo belongs to ``xid`` or one of its subtransactions and
    carries that (sub)transaction's id in its ``xid``.  ``first``: the first block of ``xid``
    sent on this connection (after a reconnect the source streams the transaction again from
    its start, with ``first`` set).  Blocks of several transactions and whole ordinary
    transactions (TxBegin … TxCommit) interleave; nothing in a block may be applied before
    its :class:`StreamCommit`."""

    xid: int
    first: bool


@dataclass(slots=True)
class StreamStop:
    """End of the current stream block (not of the transaction)."""


@dataclass(slots=True)
class StreamCommit:
    """The streamed transaction ``xid`` committed: apply every change its blocks carried (minus
    the subtransactions a StreamAbort discarded) as one source transaction committed at
    ``commit_lsn``; ``end_lsn`` is what we persist and confirm, as for :class:`TxCommit`."""

    xid: int
    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: Optional[datetime]


@dataclass(slots=True)
class StreamAbort:
    """The streamed transaction ``xid`` aborted (``subxid == xid``: discard all of it) or only
    its subtransaction ``subxid`` rolled back: discard what its blocks carried from the first
    change tagged ``subxid`` on (only ``subxid`` and its nested subtransactions can have changes
    after that one; PostgreSQL's own worker truncates its spool file there; none tagged
    ``subxid``: nothing to discard).  ``abort_lsn``/``abort_time`` only with protocol version 4
    and streaming 'parallel' (PostgreSQL 16+); None otherwise."""

    xid: int
    subxid: int
    abort_lsn: Optional[Lsn] = None
    abort_time: Optional[datetime] = None


class TableState(str, enum.Enum):
    """pg_subscription_rel.srsubstate, the per-table lifecycle."""

    INIT = "i"
    DATASYNC = "d"
    SYNCDONE = "s"
    READY = "r"


@dataclass
class TableProgress:
    """A row of the per-table state table."""

    source: str
    target: str
    state: TableState
    sync_lsn: Lsn = Lsn(0)
    rows_copied: int = 0
    updated_at: Optional[datetime] = None
    #: the column layout the target has applied (JSON, see schema_change.layout_of)
    layout: Optional[str] = None


@dataclass
class StreamProgress:
    """The per-stream row: which slot, which source system, and the last applied commit end LSN."""

    name: str
    slot: str
    system_id: str
    applied_lsn: Lsn = Lsn(0)
    applied_at: Optional[datetime] = None
    commit_time: Optional[datetime] = None
    extra: dict = field(default_factory=dict)
