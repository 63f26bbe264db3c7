"""Schema changes while mirroring: a Relation whose columns differ from what the target has.

Contract (called by the replay phase inside the open target transaction, only for changes that
are applied, never for transactions the snapshot already holds):
* ADD COLUMN: the column is added on the target with its mapped type and filled from then on;
  existing target rows get the value the source gave its existing rows (``attmissingval`` of a
  non-volatile DEFAULT).  A volatile default (the source rewrote the table) cannot be reproduced
  row by row: the table must be re-synced, and the error says so.
* DROP COLUMN: the column stays on the target; rows inserted from then on get NULL there, rows
  already present keep their values.
* A renamed column, a changed type, or a dropped key column stop the stream with a
  :class:`SchemaChanged` error naming the table, what changed, the LSN and the re-sync command.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import SourceError
from .model import Column, RelationInfo, TableMapping, TableSchema

log = logging.getLogger(__name__)


class SchemaChanged(SourceError):
    """A schema change that cannot be applied incrementally (rename, type change, rewrite)."""


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    retyped: list[tuple[str, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.renamed or self.retyped)


def diff(known: TableSchema, rel: RelationInfo) -> Diff:
    """Compare the columns the target has (source names) with the Relation's, position-aware:
    a name that changed at the same position with nothing else moving is a rename."""
    old = [(c.name, c.type_oid) for c in known.columns]
    new = list(rel.columns)
    old_names, new_names = [n for n, _ in old], [n for n, _ in new]
    d = Diff(added=[n for n in new_names if n not in old_names],
             dropped=[n for n in old_names if n not in new_names])
    if d.added and d.dropped and len(old) == len(new):
        d.renamed = [(o, n) for (o, _), (n, _) in zip(old, new) if o != n]
        d.added, d.dropped = [], []
    types = dict(old)
    d.retyped = [(n, types[n], t) for n, t in new if n in types and types[n] != t]
    return d


def refuse(m: TableMapping, rel: RelationInfo, d: Diff) -> None:
    """Raise SchemaChanged for what cannot be applied incrementally."""
    what = []
    if d.renamed:
        what.append("renamed " + ", ".join(f"{o} → {n}" for o, n in d.renamed))
    if d.retyped:
        what.append("changed type of " + ", ".join(f"{n} (type oid {a} → {b})" for n, a, b in d.retyped))
    keys = [c for c in d.dropped if c in m.source_table.key]
    if keys:
        what.append(f"dropped key column(s) {', '.join(keys)}")
    if d.added and new_order_conflict(m.source_table, rel):
        what.append("columns reordered")
    if what:
        raise SchemaChanged(_stop(m, rel, "; ".join(what)))


def new_order_conflict(known: TableSchema, rel: RelationInfo) -> bool:
    """Added columns must come after the kept ones (ALTER TABLE ADD COLUMN appends)."""
    kept = [n for n, _ in rel.columns if n in known.column_names]
    return [n for n, _ in rel.columns][:len(kept)] != kept


def _stop(m: TableMapping, rel: RelationInfo, what: str) -> str:
    return (f"{m.label} changed on the source at LSN {rel.lsn}: {what}. The stream stops before "
            f"applying it (nothing after it is confirmed). Re-sync the table with: replicator resync "
            f"--tables {m.label}  (it is copied again with its new columns; other tables are "
            f"not touched), then start the mirror again")


def evolve(target, conn, m: TableMapping, rel: RelationInfo, d: Diff,
           describe: Callable[[str], TableSchema],
           missing_value: Callable[[str, str], tuple[bool, Optional[str]]]) -> TableMapping:
    """Apply ADD/DROP COLUMN to the target; returns the mapping to use from now on."""
    refuse(m, rel, d)
    current = describe(m.label) if d.added else None
    added: list[Column] = []
    for name in d.added:
        col = current.column(name)
        has_default, value = missing_value(m.label, name)
        if has_default and value is None and not target_empty(target, conn, m):
            raise SchemaChanged(_stop(m, rel, f"added column {name} with a volatile default (the "
                                      f"source rewrote the table, so existing rows' values are unknown)"))
        added.append(col)
    new_m = remap(m, [n for n, _ in rel.columns], added)
    if added:
        import sqlalchemy as sa
        t = target.table(m)
        had = {c["name"] for c in sa.inspect(conn).get_columns(t.name, schema=t.schema)}
        added = [c for c in added if c.name not in had]  # a replayed Relation: already there
        target.add_columns(conn, new_m, [c.name for c in added])
        for c in added:
            has_default, value = missing_value(m.label, c.name)
            if has_default and value is not None:
                target.fill_column(conn, new_m, c.name, value)
        log.warning("%s: added column(s) %s on the target %s", m.label, ", ".join(c.name for c in added),
                    target.display(new_m))
    if d.dropped:
        target.forget(new_m)
        log.warning("%s: column(s) %s dropped on the source at LSN %s: they stay on the target and "
                    "get NULL in rows inserted from now on", m.label, ", ".join(d.dropped), rel.lsn)
    return new_m


def target_empty(target, conn, m: TableMapping) -> bool:
    import sqlalchemy as sa
    t = target.table(m)
    return conn.execute(sa.select(sa.literal(1)).select_from(t).limit(1)).first() is None


def remap(m: TableMapping, names: list[str], added: list[Column]) -> TableMapping:
    """The mapping for the Relation's column list: kept columns keep their target names."""
    pairs = {c.name: (c, v) for c, v in zip(m.source_table.columns, m.source.columns)}
    pairs.update({c.name: (c, c) for c in added})
    cols = [pairs[n] for n in names]
    origin = dataclasses.replace(m.source_table, columns=tuple(c for c, _ in cols))
    view = dataclasses.replace(m.source, columns=tuple(v for _, v in cols))
    return dataclasses.replace(m, source=view, origin=origin)


def layout_of(m: TableMapping) -> str:
    """The column layout of ``m`` (source column → target column), as JSON for the state table."""
    import json
    return json.dumps([[dataclasses.asdict(c), dataclasses.asdict(v)]
                       for c, v in zip(m.source_table.columns, m.source.columns)])


def with_layout(m: TableMapping, layout: Optional[str]) -> TableMapping:
    """``m`` with the column layout the target has applied (None: ``m`` as it is)."""
    if not layout:
        return m
    import json
    pairs = [(Column(**c), Column(**v)) for c, v in json.loads(layout)]
    origin = dataclasses.replace(m.source_table, columns=tuple(c for c, _ in pairs))
    view = dataclasses.replace(m.source, columns=tuple(v for _, v in pairs))
    return dataclasses.replace(m, source=view, origin=origin)
