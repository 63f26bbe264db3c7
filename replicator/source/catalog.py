"""Catalog phase: which tables exist, their columns, types, keys and replica identity.

Reads pg_catalog only (no writes).  Partitions are not listed on their own: a partitioned table is
replicated through its root (the publication uses ``publish_via_partition_root``).  Generated
columns are left out (with a warning naming them) because PostgreSQL before 18 does not publish
them: a copied value could never be kept current.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Optional

import psycopg

from ..errors import ConfigError
from ..model import Column, Identity, TableSchema

log = logging.getLogger(__name__)

TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relpersistence
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
ORDER BY n.nspname, c.relname
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), a.atttypmod,
       a.attnotnull, a.attgenerated <> '', t.typtype,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE 0 END,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE '' END,
       CASE WHEN bt.typcategory = 'A' THEN bt.typelem ELSE 0 END, bt.typtype,
       a.attndims, CASE WHEN et.typtype = 'd' THEN et.typbasetype ELSE 0 END, coalesce(et.typdelim, ','),
       a.attnum
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

KEYS_SQL = """
SELECT i.indrelid, i.indisprimary, i.indisreplident,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_index i
WHERE i.indrelid = ANY(%s) AND (i.indisprimary OR i.indisreplident)
"""


class SourceTable(tuple):
    """``(oid, schema, name, relreplident)`` of a source table, with its ``persistence`` ('p'
    permanent, 'u' unlogged) as an attribute: it unpacks and compares as the 4-tuple."""

    persistence: str

    def __new__(cls, oid: int, schema: str, name: str, ident: str, persistence: str = "p") -> SourceTable:
        t = super().__new__(cls, (oid, schema, name, ident))
        t.persistence = persistence
        return t


def list_tables(conn: psycopg.Connection) -> list[tuple[int, str, str, str]]:
    """(oid, schema, name, relreplident) of every user table, partition roots only, as
    :class:`SourceTable`.  Temporary tables are never listed (no other session can read them);
    unlogged ones are (so that naming one gets its own refusal) and :func:`select_tables` leaves
    them out."""
    return [SourceTable(*r) for r in conn.execute(TABLES_SQL)]


def unlogged(t: tuple) -> bool:
    return getattr(t, "persistence", "p") == "u"


def unlogged_problem(schema: str, name: str) -> str:
    """Why an UNLOGGED table cannot be replicated, with the fix."""
    q = ".".join('"' + n.replace('"', '""') + '"' for n in (schema, name))
    return (
        f"{schema}.{name} is UNLOGGED: its changes are not written to WAL, so logical "
        f"replication cannot stream them (PostgreSQL refuses to publish it); run ALTER TABLE "
        f"{q} SET LOGGED, or leave it out (--tables, or exclude it from the mapping)"
    )


def select_tables(all_tables: list[tuple], patterns: Optional[Iterable[str]]) -> list[tuple]:
    """Filter by ``schema.table`` names or globs; a name that matches nothing is a ConfigError.

    Unlogged tables (:func:`unlogged`): left out of the default selection and of a glob's matches
    with a logged note; named exactly (or the only match of a glob), a ConfigError with the fix."""
    if not patterns:
        _note_unlogged([t for t in all_tables if unlogged(t)])
        return [t for t in all_tables if not unlogged(t)]
    chosen, seen, skipped = [], set(), []
    for pat in patterns:
        pat = pat if "." in pat else f"public.{pat}"
        hits = [t for t in all_tables if fnmatchcase(f"{t[1]}.{t[2]}", pat)]
        if not hits:
            raise ConfigError(
                f"table {pat!r} (from --tables) does not exist on the source; "
                f"check the name; 'replicator check --source …' without --tables lists every table"
            )
        if all(unlogged(t) for t in hits) or not any(ch in pat for ch in "*?["):
            bad = [t for t in hits if unlogged(t)]
            if bad:
                raise ConfigError(f"{unlogged_problem(bad[0][1], bad[0][2])} (named by --tables {pat!r})")
        skipped += [t for t in hits if unlogged(t) and t not in skipped]
        for t in hits:
            if t[0] not in seen and not unlogged(t):
                seen.add(t[0])
                chosen.append(t)
    _note_unlogged(skipped)
    return chosen


def _note_unlogged(tables: list[tuple]) -> None:
    for t in tables:
        log.warning(
            "%s.%s is UNLOGGED and left out: its changes are not in WAL (ALTER TABLE … "
            "SET LOGGED to replicate it)",
            t[1],
            t[2],
        )


def load_schemas(conn: psycopg.Connection, tables: list[tuple]) -> list[TableSchema]:
    """TableSchema for each (oid, schema, name, relreplident), in the given order."""
    oids = [t[0] for t in tables]
    cols, attnums, generated = _load_columns(conn, oids)
    pks: dict[int, tuple] = {}
    idents: dict[int, tuple] = {}
    for relid, is_pk, is_ident, names in conn.execute(KEYS_SQL, (oids,)):
        if is_pk:
            pks[relid] = tuple(names)
        if is_ident:
            idents[relid] = tuple(names)
    out = []
    for oid, schema, name, ident in (t[:4] for t in tables):
        if oid in generated:
            log.warning(
                "%s.%s: generated column(s) %s are not replicated: PostgreSQL before 18 does "
                "not publish them, so their target values would go stale (docs/types.md)",
                schema,
                name,
                ", ".join(generated[oid]),
            )
        identity = Identity(ident)
        key = idents.get(oid, ()) if identity is Identity.INDEX else pks.get(oid, ())
        if identity is Identity.NOTHING:
            key = ()
        out.append(
            TableSchema(
                schema=schema,
                name=name,
                columns=tuple(cols[oid]),
                identity=identity,
                key=key,
                oid=oid,
                primary_key=pks.get(oid, ()),
                attnums=tuple(attnums[oid]),
            )
        )
    return out


def _load_columns(
    conn: psycopg.Connection, oids: list[int]
) -> tuple[dict[int, list[Column]], dict[int, list[tuple[str, int]]], dict[int, list[str]]]:
    """One query (``COLUMNS_SQL``) for the columns of the tables ``oids``, per table oid: the
    published columns, their (name, attnum), and the names of the generated columns left out
    (not published before PostgreSQL 18).  Every oid has an entry in the first two, in order."""
    cols: dict[int, list[Column]] = {o: [] for o in oids}
    attnums: dict[int, list[tuple[str, int]]] = {o: [] for o in oids}
    generated: dict[int, list[str]] = {}
    for r in conn.execute(COLUMNS_SQL, (oids,)):
        if r[6]:  # generated: not published before PostgreSQL 18
            generated.setdefault(r[0], []).append(r[1])
            continue
        attnums[r[0]].append((r[1], r[15]))
        cols[r[0]].append(
            Column(
                name=r[1],
                type_oid=r[2],
                type_name=r[3],
                type_mod=r[4],
                not_null=r[5],
                type_kind=r[11] if r[7] == "d" else r[7],
                base_oid=r[8],
                base_name=r[9],
                elem_oid=r[10],
                ndims=r[12],
                elem_base_oid=r[13],
                elem_delim=r[14],
            )
        )
    return cols, attnums, generated


#: REPLICA IDENTITY as PostgreSQL spells it (ALTER TABLE … REPLICA IDENTITY …)
IDENTITY_WORDS = {
    Identity.DEFAULT: "DEFAULT",
    Identity.FULL: "FULL",
    Identity.INDEX: "USING INDEX",
    Identity.NOTHING: "NOTHING",
}


def identity_problem(t: TableSchema) -> Optional[str]:
    """Why UPDATE/DELETE of ``t`` cannot be replicated (None when they can), with the fix."""
    if t.insert_only:
        return None
    q = f'"{t.schema}"."{t.name}"'
    if t.identity is Identity.NOTHING:
        return (
            f"{t.qualified}: REPLICA IDENTITY NOTHING, so UPDATE/DELETE cannot be replicated; "
            f"run ALTER TABLE {q} REPLICA IDENTITY FULL (or DEFAULT with a primary key), "
            f"or declare the table insert-only in the mapping"
        )
    if t.identity is Identity.DEFAULT and not t.key:
        return (
            f"{t.qualified}: no primary key and REPLICA IDENTITY DEFAULT, so UPDATE/DELETE "
            f"cannot be replicated (and fail on the source once published); add a primary key, "
            f"or run ALTER TABLE {q} REPLICA IDENTITY FULL"
        )
    return None


# ------------------------------------------------------------ today's catalog, for schema changes

TABLE_BY_OID_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %s AND c.relkind IN ('r', 'p')
"""

TYPE_SQL = """
SELECT format_type(t.oid, %s), t.typtype,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE 0 END,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) ELSE '' END,
       CASE WHEN bt.typcategory = 'A' THEN bt.typelem ELSE 0 END, bt.typtype,
       CASE WHEN bt.typcategory = 'A' AND t.typtype <> 'd' THEN 1 ELSE 0 END,
       CASE WHEN et.typtype = 'd' THEN et.typbasetype ELSE 0 END, coalesce(et.typdelim, ',')
FROM pg_type t
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
WHERE t.oid = %s
"""

MISSING_SQL = """
SELECT atthasdef, CASE WHEN atthasmissing THEN (attmissingval::text::text[])[1] END
FROM pg_attribute WHERE attrelid = %s AND attnum = %s AND NOT attisdropped
"""


class Today:
    """Today's catalog, read lazily through one connection (``connect()`` opens it on first use;
    ``close()`` closes it).  Used to follow a schema change whose Relation message is older than
    the catalog: every answer may be None when the catalog no longer knows it."""

    def __init__(self, connect: Callable[[], psycopg.Connection]):
        self._connect = connect
        self._conn: Optional[psycopg.Connection] = None

    def _c(self) -> psycopg.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def table(self, oid: int) -> Optional[TableSchema]:
        """The table with this OID as it is now (None: dropped since)."""
        rows = [(r[0], r[1], r[2], r[3]) for r in self._c().execute(TABLE_BY_OID_SQL, (oid,))]
        return load_schemas(self._c(), rows)[0] if rows else None

    def column(self, name: str, type_oid: int, type_mod: int) -> Optional[Column]:
        """A column ``name`` of the type a Relation message gave (None: the type is gone)."""
        r = self._c().execute(TYPE_SQL, (type_mod, type_oid)).fetchone()
        if r is None:
            return None
        return Column(
            name=name,
            type_oid=type_oid,
            type_name=r[0],
            type_mod=type_mod,
            type_kind=r[5] if r[1] == "d" else r[1],
            base_oid=r[2],
            base_name=r[3],
            elem_oid=r[4],
            ndims=r[6],
            elem_base_oid=r[7],
            elem_delim=r[8],
        )

    def missing_value(self, table_oid: int, attnum: int) -> tuple[bool, Optional[str]]:
        """(the column has a default, the text value rows that existed before it was added got;
        None when there is none or it is not recorded); (False, None) when the column is gone."""
        r = self._c().execute(MISSING_SQL, (table_oid, attnum)).fetchone()
        return (bool(r[0]), r[1]) if r else (False, None)
