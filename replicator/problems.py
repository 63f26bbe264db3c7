"""Problem finders shared by ``check`` (which lists every problem) and planning (which stops at
them): the source server, the right to publish, table privileges and identities, target names.

Contract: every function only reads and returns one line per problem, each naming the setting,
table or privilege and the fix; an empty list (or None) means no problem.
"""

from __future__ import annotations

from typing import Any, Optional

import psycopg
from psycopg import sql

from .model import PublishedTable
from .source import catalog
from .source import slot as slots

SETTINGS_SQL = """
SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_replication),
       r.rolreplication OR r.rolsuper, current_user, pg_encoding_to_char(d.encoding),
       current_setting('server_version_num')::int
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
"""


def _one(conn: psycopg.Connection, query: str, params: Optional[tuple] = None) -> tuple[Any, ...]:
    """The row of a query that returns exactly one (no FROM, an aggregate, a regclass lookup)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


def server_problems(conn: psycopg.Connection, slot: str = "replicator") -> list[str]:
    """wal_level, slot and walsender headroom, REPLICATION attribute, encoding.  Slots: the stream's
    own (unless it exists) plus one temporary slot (a migrate's count fence, a re-sync) must fit."""
    (wal_level, max_slots, used_slots, max_senders, used_senders, can_repl, user, enc, version) = _one(
        conn, SETTINGS_SQL
    )
    ours = _one(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0]
    out = []
    if wal_level != "logical":
        out.append(
            f"wal_level is {wal_level!r}: set wal_level = logical in postgresql.conf "
            f"(ALTER SYSTEM SET wal_level = logical) and restart the server"
        )
    if used_slots - ours + 2 > max_slots:
        out.append(
            f"max_replication_slots = {max_slots} and {used_slots} are in use: replicator needs "
            f"{2 - ours} more (its slot and a temporary one); raise max_replication_slots "
            f"(restart needed) or drop unused slots"
        )
    if used_senders >= max_senders:
        out.append(f"max_wal_senders = {max_senders} and {used_senders} are in use: raise max_wal_senders")
    if not can_repl:
        out.append(f"role {user} lacks the REPLICATION attribute: ALTER ROLE {user} REPLICATION")
    if enc != "UTF8":
        out.append(f"database encoding is {enc}: replicator needs a UTF8 source database")
    return out + _version_problem(version)


def version_problems(conn: psycopg.Connection) -> list[str]:
    """What a snapshot-only copy needs of the server (no slot, no publication): a supported
    version; a hot standby is fine."""
    return _version_problem(_one(conn, "SELECT current_setting('server_version_num')::int")[0])


def _version_problem(version: int) -> list[str]:
    if version < 150000:
        return [f"PostgreSQL {version // 10000} is not supported: use PostgreSQL 15 or newer"]
    return []


#: printed after identity problems: the two ways around them, one line each
IDENTITY_HINTS = (
    "to copy every table once, keys or not, without following later changes: "
    "'replicator copy' with the same --source and --target",
    "to follow only the INSERTs of such a table: mark it insert_only: true in a mapping file "
    "('replicator init --source … > mapping.yaml', edit it, then --mapping mapping.yaml)",
)


def publish_problems(conn: psycopg.Connection, pub: str, tables) -> list[str]:
    """What publishing ``tables`` needs from this role: CREATE on the database for a new
    publication, ownership of every table (PostgreSQL lets only owners publish a table) and of an
    existing publication that must change (none of that when the publication already lists
    them); and that no table is UNLOGGED (never publishable: :func:`unlogged_problems`)."""
    wanted = [t if isinstance(t, PublishedTable) else PublishedTable(t.schema, t.name) for t in tables]
    if not wanted:
        return []
    out = unlogged_problems(conn, wanted)
    if out or slots.publication_matches(conn, pub, wanted):
        return out
    user = sql.Identifier(conn.info.user).as_string(conn)
    owner_hint = (
        f"or have the tables' owner run CREATE PUBLICATION {pub} FOR TABLE … (an existing "
        f"publication listing exactly the replicated tables is used as it is)"
    )
    out += _publication_rights(conn, pub, user, owner_hint)
    for t in wanted:
        name = sql.Identifier(t.schema, t.name).as_string(conn)
        if not _one(
            conn,
            "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = %s::regclass",
            (name,),
        )[0]:
            out.append(
                f"{t.schema}.{t.name}: role {conn.info.user} does not own it and PostgreSQL "
                f"lets only the owner publish a table: ALTER TABLE {name} OWNER TO {user}, "
                f"{owner_hint}"
            )
    return out


def _publication_rights(conn: psycopg.Connection, pub: str, user: str, owner_hint: str) -> list[str]:
    """CREATE on the database for a new publication; ownership of an existing one."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication WHERE pubname = %s", (pub,)
    ).fetchone()
    if row is None and not _one(conn, "SELECT has_database_privilege(current_database(), 'CREATE')")[0]:
        db = sql.Identifier(conn.info.dbname).as_string(conn)
        return [
            f"role {conn.info.user} cannot create publication {pub}: GRANT CREATE ON DATABASE "
            f"{db} TO {user}, {owner_hint}"
        ]
    if row is not None and not row[0]:
        return [
            f"publication {pub} belongs to another role and must change: ALTER PUBLICATION "
            f"{pub} OWNER TO {user}, or drop it"
        ]
    return []


UNLOGGED_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY(%s::text[]::regclass[]) AND c.relpersistence = 'u' ORDER BY 1, 2
"""


def unlogged_problems(conn: psycopg.Connection, tables) -> list[str]:
    """One line per UNLOGGED table among ``tables`` (schema/name pairs): never published."""
    names = [sql.Identifier(t.schema, t.name).as_string(conn) for t in tables]
    return [catalog.unlogged_problem(s, n) for s, n in conn.execute(UNLOGGED_SQL, (names,))]


def table_problems(conn: psycopg.Connection, schemas, pub: str = "replicator") -> list[str]:
    """SELECT privilege, a usable replica identity and the right to publish, for every table."""
    out = publish_problems(conn, pub, schemas)
    for t in schemas:
        name = sql.Identifier(t.schema, t.name).as_string(conn)
        if not _one(conn, "SELECT has_table_privilege(%s, 'SELECT')", (name,))[0]:
            out.append(f"{t.qualified}: no SELECT privilege: GRANT SELECT ON {name} TO {conn.info.user}")
        p = catalog.identity_problem(t)
        if p:
            out.append(p)
    return out


def identity_problems(schemas) -> list[str]:
    """Tables without a usable replica identity (and not insert-only)."""
    return [p for p in (catalog.identity_problem(s) for s in schemas) if p]


def target_limit_problems(target, mappings) -> list[str]:
    """Names the target cannot hold, then tables beyond its limits (planning's order)."""
    return [p for m in mappings for p in target.identifier_problems(m)] + [
        p for m in mappings for p in target.limit_problems(m)
    ]


def duplicate_target(target, mappings) -> Optional[str]:
    """The first two tables that map to one target table (names compared as the target folds
    them), or None."""
    seen: dict[str, str] = {}
    for m in mappings:
        k = target.display(m).lower()
        if k in seen:
            return (
                f"{seen[k]} and {m.label} both map to target table {target.display(m)}: "
                f"replicate one of them, or map them to different names in a mapping file"
            )
        seen[k] = m.label
    return None


def name_problems(target, mappings) -> list[str]:
    """Every target-name problem planning would stop at, table by table (``check`` lists them
    even when other problems, a missing replica identity, stop planning before it gets there)."""
    out = [x for m in mappings for x in target.identifier_problems(m) + target.limit_problems(m)]
    dup = duplicate_target(target, mappings)
    return out + ([dup] if dup else [])
