"""Decode phase: pgoutput messages → the neutral model (TxBegin, RowChange, Truncate, TxCommit).

Holds the Relation cache (relid → table) and checks every tuple against it, so a tuple whose column
count disagrees never reaches a target.  Contract: a Relation whose columns differ from the
catalog's view of the table raises :class:`SchemaChanged` before any change of that table is
returned, naming what changed.
"""
from __future__ import annotations

from typing import Optional, Union

from ..errors import SourceError
from ..model import ChangeKind, Lsn, RowChange, TableSchema, Truncate, TxBegin, TxCommit
from . import pgoutput as po

Event = Union[TxBegin, TxCommit, RowChange, Truncate]


class SchemaChanged(SourceError):
    """The source table's columns changed while streaming (``table`` is its qualified name)."""

    def __init__(self, table: str, message: str, relation: po.Relation):
        self.table = table
        self.relation = relation
        super().__init__(message)


class ChangeDecoder:
    """Turns pgoutput payloads into events for the tables in ``tables`` (qualified name → schema).

    Changes of relations that are not mapped are dropped (they can only appear while a
    publication is being narrowed).
    """

    def __init__(self, tables: dict[str, TableSchema]):
        self.tables = tables
        self.relations: dict[int, po.Relation] = {}
        self.names: dict[int, Optional[str]] = {}
        self.lsn = Lsn(0)

    def feed(self, payload) -> Optional[Event]:
        msg = po.decode(payload)
        kind = type(msg)
        if kind is po.Insert:
            name = self._name(msg.relid)
            if name:
                po.check_tuple(self.relations[msg.relid], msg.new)
                return RowChange(ChangeKind.INSERT, name, new=msg.new, lsn=self.lsn)
            return None
        if kind is po.Update:
            name = self._name(msg.relid)
            if name:
                rel = self.relations[msg.relid]
                po.check_tuple(rel, msg.new)
                if msg.old is not None:
                    po.check_tuple(rel, msg.old)
                return RowChange(ChangeKind.UPDATE, name, new=msg.new, old=msg.old,
                                 old_is_key=msg.old_kind != "O", lsn=self.lsn)
            return None
        if kind is po.Delete:
            name = self._name(msg.relid)
            if name:
                po.check_tuple(self.relations[msg.relid], msg.old)
                return RowChange(ChangeKind.DELETE, name, old=msg.old,
                                 old_is_key=msg.old_kind != "O", lsn=self.lsn)
            return None
        if kind is po.Begin:
            self.lsn = msg.final_lsn
            return TxBegin(msg.final_lsn, msg.commit_time, msg.xid)
        if kind is po.Commit:
            return TxCommit(msg.commit_lsn, msg.end_lsn, msg.commit_time)
        if kind is po.Relation:
            self._relation(msg)
            return None
        if kind is po.Truncate:
            names = tuple(n for n in (self._name(r) for r in msg.relids) if n)
            return Truncate(names, msg.cascade, msg.restart_identity, self.lsn) if names else None
        return None  # Origin, Type, Message: nothing to apply

    def _name(self, relid: int) -> Optional[str]:
        try:
            return self.names[relid]
        except KeyError:
            raise po.DecodeError(f"change for relation {relid} arrived before its Relation message") from None

    def _relation(self, rel: po.Relation) -> None:
        ns = rel.namespace or "pg_catalog"
        name = f"{ns}.{rel.name}"
        self.relations[rel.relid] = rel
        schema = self.tables.get(name)
        self.names[rel.relid] = name if schema is not None else None
        if schema is None:
            return
        got = tuple(c.name for c in rel.columns)
        want = schema.column_names
        if got != want:
            added = [c for c in got if c not in want]
            gone = [c for c in want if c not in got]
            raise SchemaChanged(name, f"columns of {name} changed on the source at LSN {self.lsn}: "
                                f"added {added or 'none'}, missing {gone or 'none'}; re-sync the table "
                                f"(replicator resync --tables {name})", rel)
        for c, rc in zip(schema.columns, rel.columns):
            if c.type_oid != rc.type_oid:
                raise SchemaChanged(name, f"type of {name}.{c.name} changed on the source at LSN "
                                    f"{self.lsn} (type oid {c.type_oid} → {rc.type_oid}); re-sync the "
                                    f"table (replicator resync --tables {name})", rel)
