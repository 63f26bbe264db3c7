"""Mapping resolution: a validated mapping file + the source catalog → the list of TableMappings.

Contract: read-only; every problem is a ConfigError pointing at the file position of the entry,
column or key involved, with a hint.  Entries are tried in order and the first that matches a
table wins.  The rules PostgreSQL 15 imposes on publications are checked here, because breaking
them makes the *source application's* UPDATE/DELETE fail once the table is published:
a column list must contain the replica identity columns (all columns under FULL), and a row filter
may only use replica identity columns.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from fnmatch import fnmatchcase

from . import modes
from .config import Entry, MappingConfig
from .errors import ConfigError
from .model import Identity, PublishedTable, TableMapping, TableSchema
from .source.catalog import identity_problem


def _qualify(name: str) -> str:
    return name if "." in name else f"public.{name}"


def matches(entry: Entry, t: TableSchema) -> bool:
    if entry.source is not None:
        return _qualify(entry.source) == t.qualified
    assert entry.include is not None  # an entry has exactly one of source and include (config.py)
    return fnmatchcase(t.qualified, _qualify(entry.include)) and not any(
        fnmatchcase(t.qualified, _qualify(x)) for x in entry.exclude
    )


def resolve(cfg: MappingConfig, schemas: list[TableSchema], capture: bool = True) -> list[TableMapping]:
    """The mappings of every table some entry selects, in catalog order; ``capture`` False (a
    snapshot-only copy) skips the checks that only following changes needs (replica identity)."""
    names = [t.qualified for t in schemas]
    for e in cfg.tables:
        if not any(matches(e, t) for t in schemas):
            what = e.source or e.include
            assert what is not None  # an entry has exactly one of source and include (config.py)
            hint = difflib.get_close_matches(_qualify(what), names, 1)
            raise ConfigError(
                f"{e.where_is('source' if e.source else 'include')}: {what!r} matches no "
                f"table on the source"
                + (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else "; 'replicator check --source …' without --mapping lists every table"
                )
            )
    out = []
    for t in schemas:
        entry = next((e for e in cfg.tables if matches(e, t)), None)
        if entry is not None:
            out.append(build(entry, t, capture))
    _check_targets(out, {m.label: e for m in out for e in cfg.tables if matches(e, m.source_table)})
    return out


def _check_targets(ms: list[TableMapping], entries: dict) -> None:
    seen: dict[tuple, TableMapping] = {}
    for m in ms:
        k = ((m.target_schema or "").lower(), m.target_name.lower())
        if k in seen:
            other = seen[k]
            raise ConfigError(
                f"{entries[m.label].pos}: {m.label} and {other.label} (entry at "
                f"{entries[other.label].pos}) both map to target table "
                f"{m.target_name!r}: give one of them another 'target:'"
            )
        seen[k] = m


def _column_check(e: Entry, t: TableSchema, path: tuple, names, excluded=()) -> None:
    have = t.column_names
    for n in names:
        if n not in have:
            hint = difflib.get_close_matches(n, have, 1)
            raise ConfigError(
                f"{e.where_is(*path, n)}: column {n!r} does not exist in {t.qualified}"
                + (f"; did you mean {hint[0]!r}?" if hint else f"; its columns: {', '.join(have)}")
            )
        if n in excluded:
            raise ConfigError(
                f"{e.where_is(*path, n)}: column {n!r} of {t.qualified} is excluded "
                f"(columns.exclude), so it cannot also be used here"
            )


def build(e: Entry, t: TableSchema, capture: bool = True) -> TableMapping:
    """One TableMapping: the target view (renamed, typed) and the origin (source names);
    ``capture`` as for :func:`resolve`."""
    excluded = set(e.columns_exclude)
    _column_check(e, t, ("columns", "exclude"), e.columns_exclude)
    rename, types, policy = dict(e.rename), dict(e.types), dict(e.policy)
    for path, names in (
        (("columns", "rename"), rename),
        (("columns", "types"), types),
        (("columns", "policy"), policy),
        (("key",), e.key),
    ):
        _column_check(e, t, path, names, excluded)
    key = e.key or t.key
    if capture:
        _identity_check(e, t, key, excluded)
    kept = tuple(c for c in t.columns if c.name not in excluded)
    final = [rename.get(c.name, c.name) for c in kept]
    dup = next((n for n in final if final.count(n) > 1), None)
    if dup:
        raise ConfigError(
            f"{e.where_is('columns', 'rename')}: two columns of {t.qualified} would "
            f"both be called {dup!r} on the target: rename one of them differently"
        )
    pk = t.primary_key if not excluded & set(t.primary_key) else ()
    origin = dataclasses.replace(t, columns=kept, key=key, primary_key=pk, insert_only=e.insert_only)
    view = _view(origin, rename, types, policy)
    schema, _, name = (e.target or t.name).rpartition(".")
    column_list = origin.column_names if excluded else None
    mode = modes.mode_of(e.mode, e.mode_names)
    if mode is not None:
        _mode_check(e, view, mode)
    return modes.extended(
        TableMapping(
            view,
            name,
            schema or None,
            e.on_missing_row,
            origin=origin,
            where=e.where,
            column_list=column_list,
            mode=mode,
        )
    )


def _mode_check(e: Entry, view: TableSchema, mode) -> None:
    """A mode locates rows by key, and its columns need names the table does not use."""
    if not view.key:
        raise ConfigError(
            f"{e.where_is('mode')}: mode {mode.kind} of {view.qualified} needs a key to find a "
            f"row again (a primary key, a replica identity index, or 'key:' in this entry)"
        )
    for role, name in mode.columns:
        if name in view.column_names:
            raise ConfigError(
                f"{e.where_is(mode.kind, role)}: {view.qualified} already has a column {name!r}: "
                f"name the mode's {role} column differently ({mode.kind}: {{{role}: …}})"
            )


def _view(origin: TableSchema, rename: dict, types: dict, policy: dict) -> TableSchema:
    """The target view of ``origin`` (the kept source columns, its key chosen): columns, key and
    primary key renamed by ``rename``; each column with its ``types`` entry ("": the type map's)
    and its ``policy`` ("error" unless given).  Source names are the keys of the three dicts."""
    view_cols = tuple(
        dataclasses.replace(
            c,
            name=rename.get(c.name, c.name),
            target_type=types.get(c.name, ""),
            policy=policy.get(c.name, "error"),
        )
        for c in origin.columns
    )
    return dataclasses.replace(
        origin,
        columns=view_cols,
        key=tuple(rename.get(k, k) for k in origin.key),
        primary_key=tuple(rename.get(k, k) for k in origin.primary_key),
    )


def _identity_check(e: Entry, t: TableSchema, key: tuple, excluded: set) -> None:
    if e.insert_only:
        return
    if e.key and t.identity is not Identity.FULL and not set(e.key) <= set(t.key):
        raise ConfigError(
            f"{e.where_is('key')}: the declared key of {t.qualified} must be part of its "
            f"replica identity ({', '.join(t.key) or 'none'}), else PostgreSQL does not "
            f"send it for DELETE: run ALTER TABLE {_quoted(t)} REPLICA IDENTITY FULL, "
            f"or set insert_only: true"
        )
    problem = None if e.key else identity_problem(t)
    if problem:
        raise ConfigError(
            f"{e.pos}: {problem}; or set insert_only: true in this entry (INSERTs only), or copy "
            f"the tables once without following changes ('replicator copy --mapping …')"
        )
    ident = set(t.column_names) if t.identity is Identity.FULL else set(t.key)
    if excluded & ident:
        cols = ", ".join(sorted(excluded & ident))
        raise ConfigError(
            f"{e.where_is('columns', 'exclude')}: {t.qualified} cannot exclude {cols}: "
            f"PostgreSQL requires a published column list to contain the replica "
            f"identity ({'all columns under REPLICA IDENTITY FULL' if t.identity is Identity.FULL else 'the key'}); "
            f"keep them, give the table a primary key, or set insert_only: true"
        )
    if e.where and t.identity is not Identity.FULL:
        used = [c for c in t.column_names if c not in ident and _mentions(e.where, c)]
        if used:
            raise ConfigError(
                f"{e.where_is('where')}: the row filter of {t.qualified} uses "
                f"{', '.join(used)}, outside its replica identity: PostgreSQL would "
                f"then refuse UPDATE/DELETE on the source. Run ALTER TABLE {_quoted(t)} "
                f"REPLICA IDENTITY FULL, filter on key columns, or set insert_only: true"
            )


def _mentions(expr: str, column: str) -> bool:
    return re.search(rf'(?<![\w"]){re.escape(column)}(?![\w"])|"{re.escape(column)}"', expr) is not None


def _quoted(t: TableSchema) -> str:
    return '"' + t.schema.replace('"', '""') + '"."' + t.name.replace('"', '""') + '"'


def publications(ms: list[TableMapping]) -> tuple[list[PublishedTable], list[PublishedTable]]:
    """(tables published for all changes, tables published for INSERT and TRUNCATE only)."""
    full: list[PublishedTable] = []
    ins: list[PublishedTable] = []
    for m in ms:
        src = m.source_table
        p = PublishedTable(src.schema, src.name, m.column_list, m.where)
        (ins if src.insert_only else full).append(p)
    return full, ins
