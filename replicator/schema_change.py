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
* The Relation message says which columns the changes after it were written with; today's
  catalog may be ahead of it (a lagging mirror: the column added and dropped since, the table
  dropped).  Added columns are typed from the message (type OID and typmod); a column's identity
  is its attnum, recorded in the applied layout, which tells a rename (attnum kept) from a DROP
  and an ADD.  What the catalog no longer knows stops with the resync command, never a KeyError.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Optional

from . import modes
from .errors import SourceError
from .model import Column, RelationInfo, TableMapping, TableSchema

log = logging.getLogger(__name__)


class SchemaChanged(SourceError):
    """A schema change that cannot be applied incrementally (rename, type change, rewrite)."""


#: ``diff(now=NOT_READ)``: today's catalog was not consulted (the position decides renames)
NOT_READ = object()


@dataclass
class Diff:
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    retyped: list[tuple[str, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.renamed or self.retyped)


def diff(known: TableSchema, rel: RelationInfo, now=NOT_READ) -> Diff:
    """Compare the columns the target has (``known``, source names) with the Relation's.

    A column of ``known`` missing from the Relation was renamed when its attnum (``known.attnums``)
    is still a live column of ``now``, today's table: an attribute keeps its attnum through a
    rename and a dropped one never comes back, so it existed, under another name, when the
    Relation was sent.  Otherwise it was dropped (maybe renamed first; the source has it no more
    either way); ``now`` None (the table is gone) says the same.  Without attnums (a layout of
    an older version) or with ``now`` NOT_READ, the position decides: the same number of columns
    with names changed in place is a rename."""
    old = [(c.name, c.type_oid) for c in known.columns]
    new = list(rel.columns)
    old_names, new_names = [n for n, _ in old], [n for n, _ in new]
    d = Diff(
        added=[n for n in new_names if n not in old_names],
        dropped=[n for n in old_names if n not in new_names],
    )
    ids = dict(known.attnums)
    if d.added and d.dropped and (now is NOT_READ or any(o not in ids for o in d.dropped)):
        if len(old) == len(new):
            d.renamed = [(o, n) for o, n in zip(old_names, new_names) if o != n]
            d.added, d.dropped = [], []
    elif d.added and d.dropped and now is not None:
        live = {a: n for n, a in now.attnums}
        d.renamed = [
            (o, _renamed_to(o, live[ids[o]], old_names, new_names, d.added))
            for o in d.dropped
            if ids[o] in live
        ]
        d.dropped = [o for o in d.dropped if ids[o] not in live]
        d.added = [n for n in d.added if n not in {to for _, to in d.renamed}]
    types = dict(old)
    d.retyped = [(n, types[n], t) for n, t in new if n in types and types[n] != t]
    return d


def _renamed_to(old: str, today: str, old_names: list[str], new_names: list[str], added: list[str]) -> str:
    """The Relation's name of renamed column ``old`` (called ``today`` in today's catalog)."""
    if today in added:
        return today
    i = old_names.index(old)
    if len(old_names) == len(new_names) and new_names[i] in added:
        return new_names[i]
    return f"another name (today {today})"


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
        raise SchemaChanged(stop_message(m, rel, "; ".join(what)))


def new_order_conflict(known: TableSchema, rel: RelationInfo) -> bool:
    """Added columns must come after the kept ones (ALTER TABLE ADD COLUMN appends)."""
    kept = [n for n, _ in rel.columns if n in known.column_names]
    return [n for n, _ in rel.columns][: len(kept)] != kept


def stop_message(m: TableMapping, rel: RelationInfo, what: str) -> str:
    """The error text: table, change, LSN, and the resync command."""
    return (
        f"{m.label} changed on the source at LSN {rel.lsn}: {what}. The stream stops before "
        f"applying it (nothing after it is confirmed). Re-sync the table with: replicator resync "
        f"--tables {m.label}  (it is copied again with its new columns; other tables are "
        f"not touched), then start the mirror again"
    )


_stop = stop_message


def evolve(target, conn, m: TableMapping, rel: RelationInfo, d: Diff, today) -> TableMapping:
    """Apply ADD/DROP COLUMN to the target; returns the mapping to use from now on.

    ``today`` is a :class:`replicator.source.catalog.Today`: the source's catalog now, which may
    be ahead of ``rel``.  Added columns are typed from the Relation message (its type OID and
    typmod); the catalog only adds what it still knows about them (attnum, NOT NULL, the value
    existing rows got).  Raises SchemaChanged (table, change, LSN, resync command) for what
    cannot be followed, before anything is changed on the target."""
    now = today.table(rel.relid or m.source_table.oid) if d.added or d.renamed else NOT_READ
    d = diff(m.source_table, rel, now)
    refuse(m, rel, d)
    added, ids = _added_columns(m, rel, d, now, today)
    fills = _fill_values(target, conn, m, rel, added, ids, today)
    new_m = remap(m, [n for n, _ in rel.columns], added, ids)
    if added:
        _add_on_target(target, conn, m, new_m, added, fills)
    if d.dropped:
        target.forget(new_m)
        log.warning(
            "%s: column(s) %s dropped on the source at LSN %s: they stay on the target and "
            "get NULL in rows inserted from now on",
            m.label,
            ", ".join(d.dropped),
            rel.lsn,
        )
    return new_m


def _added_columns(
    m: TableMapping, rel: RelationInfo, d: Diff, now, today
) -> tuple[list[Column], dict[str, int]]:
    """The added columns as the Relation typed them, and the attnums the catalog still proves."""
    types = {
        n: (t, rel.type_mods[i] if i < len(rel.type_mods) else -1) for i, (n, t) in enumerate(rel.columns)
    }
    known_ids = {a for _, a in m.source_table.attnums}
    now_ids = dict(now.attnums) if now not in (None, NOT_READ) else {}
    added, ids = [], {}
    for name in d.added:
        oid, mod = types[name]
        cur = _column_of(now, name)
        if (
            cur is not None
            and cur.type_oid == oid
            and (mod == -1 or cur.type_mod == mod)
            and now_ids.get(name) not in known_ids
        ):
            added.append(cur)
            ids[name] = now_ids[name]
            continue
        col = today.column(name, oid, mod)
        if col is None:
            raise SchemaChanged(
                stop_message(
                    m, rel, f"added column {name} of type oid {oid}, a type the source no longer has"
                )
            )
        added.append(col)
    return added, ids


def _column_of(now, name: str) -> Optional[Column]:
    if now in (None, NOT_READ):
        return None
    return next((c for c in now.columns if c.name == name), None)


def _fill_values(
    target, conn, m: TableMapping, rel: RelationInfo, added: list[Column], ids: dict[str, int], today
) -> dict[str, Optional[str]]:
    """The value existing target rows get in each added column (None: NULL)."""
    fills: dict[str, Optional[str]] = {}
    unknown = []
    for c in added:
        if c.name not in ids:
            unknown.append(c.name)
            fills[c.name] = None
            continue
        has_default, value = today.missing_value(rel.relid or m.source_table.oid, ids[c.name])
        if has_default and value is None and not target_empty(target, conn, m):
            raise SchemaChanged(
                stop_message(
                    m,
                    rel,
                    f"added column {c.name} with a volatile default "
                    f"(the source rewrote the table, so existing rows' "
                    f"values are unknown)",
                )
            )
        fills[c.name] = value if has_default else None
    if unknown and not target_empty(target, conn, m):
        log.warning(
            "%s: column(s) %s added at LSN %s are no longer in the source's catalog (dropped "
            "since): the value rows already there had in them cannot be known, they get "
            "NULL on the target",
            m.label,
            ", ".join(unknown),
            rel.lsn,
        )
    return fills


def _add_on_target(
    target, conn, m: TableMapping, new_m: TableMapping, added: list[Column], fills: dict[str, Optional[str]]
) -> None:
    import sqlalchemy as sa

    t = target.table(m)
    had = {c["name"] for c in sa.inspect(conn).get_columns(t.name, schema=t.schema)}
    todo = [c for c in added if c.name not in had]  # a replayed Relation: already there
    target.add_columns(conn, new_m, [c.name for c in todo])
    for c in todo:
        if fills.get(c.name) is not None:
            target.fill_column(conn, new_m, c.name, fills[c.name])
    log.warning(
        "%s: added column(s) %s on the target %s",
        m.label,
        ", ".join(c.name for c in added),
        target.display(new_m),
    )


def target_empty(target, conn, m: TableMapping) -> bool:
    import sqlalchemy as sa

    t = target.table(m)
    return conn.execute(sa.select(sa.literal(1)).select_from(t).limit(1)).first() is None


def remap(
    m: TableMapping, names: list[str], added: list[Column], attnums: Optional[dict[str, int]] = None
) -> TableMapping:
    """The mapping for the Relation's column list: kept columns keep their target names and
    attnums; added ones take ``attnums`` where known."""
    pairs = {c.name: (c, v) for c, v in zip(m.source_table.columns, m.view.columns)}
    pairs.update({c.name: (c, c) for c in added})
    cols = [pairs[n] for n in names]
    ids = {**dict(m.source_table.attnums), **(attnums or {})}
    origin = dataclasses.replace(
        m.source_table,
        columns=tuple(c for c, _ in cols),
        attnums=tuple((n, ids[n]) for n in names if n in ids),
    )
    view = dataclasses.replace(m.view, columns=tuple(v for _, v in cols))
    return modes.extended(dataclasses.replace(m, view=view, origin=origin))


def layout_of(m: TableMapping) -> str:
    """The column layout of ``m`` as JSON for the state table: one ``[source column, target
    column, attnum]`` per column (attnum null when unknown; older layouts have pairs)."""
    import json

    ids = dict(m.source_table.attnums)
    return json.dumps(
        [
            [dataclasses.asdict(c), dataclasses.asdict(v), ids.get(c.name)]
            for c, v in zip(m.source_table.columns, m.view.columns)
        ]
    )


def with_layout(m: TableMapping, layout: Optional[str]) -> TableMapping:
    """``m`` with the column layout the target has applied (None: ``m`` as it is).  A layout
    without attnums (an older version's) leaves them unknown: renames are then told by position."""
    if not layout:
        return m
    import json

    items = json.loads(layout)
    pairs = [(Column(**it[0]), Column(**it[1])) for it in items]
    ids = tuple((it[0]["name"], it[2]) for it in items if len(it) > 2 and it[2] is not None)
    origin = dataclasses.replace(m.source_table, columns=tuple(c for c, _ in pairs), attnums=ids)
    view = dataclasses.replace(m.view, columns=tuple(v for _, v in pairs))
    return modes.extended(dataclasses.replace(m, view=view, origin=origin))


def refuse_all(target, conn, m: TableMapping, ev: RelationInfo, d) -> TableMapping:
    """The Replayer's default: no catalog at hand, so any change stops with the resync command."""
    refuse(m, ev, d)
    raise SchemaChanged(f"{m.label}: columns changed at LSN {ev.lsn}; re-sync it")


class Follower:
    """Follows a source schema change on the target: the Replayer's collaborator for a Relation
    message that differs from the applied layout.  It evolves the target table, records the new
    layout in the state table (the caller's transaction), and reads today's source catalog only
    for what the message lacks; anything it cannot follow stops with the table, the LSN and the
    resync command (SchemaChanged), never a KeyError."""

    def __init__(self, dsn: str, store):
        self.dsn, self.store = dsn, store

    def __call__(self, target, conn, m: TableMapping, ev: RelationInfo, d) -> TableMapping:
        from .source import catalog, snapshot

        today = catalog.Today(lambda: snapshot.connect(self.dsn))
        try:
            new_m = evolve(target, conn, m, ev, d, today)
        except (LookupError, ValueError, TypeError) as e:
            raise SchemaChanged(
                stop_message(m, ev, f"the change could not be followed ({type(e).__name__}: {e})")
            ) from e
        finally:
            today.close()
        self.store.set_layout(conn, m.label, layout_of(new_m))
        return new_m
