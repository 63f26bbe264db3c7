"""Preflight: everything that would stop a migration or a mirror, found before anything is created.

:func:`preflight` only reads.  It returns one line per problem, each naming the setting, table or
privilege and the fix; an empty list means go.
"""
from __future__ import annotations

from typing import Optional

import psycopg
from psycopg import sql

from .errors import CheckError, ConfigError, ReplicatorError
from .source import catalog, snapshot

SETTINGS_SQL = """
SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_replication),
       r.rolreplication OR r.rolsuper, current_user, pg_encoding_to_char(d.encoding),
       current_setting('server_version_num')::int
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
"""


def server_problems(conn: psycopg.Connection, slot: str = "replicator") -> list[str]:
    """wal_level, slot and walsender headroom, REPLICATION attribute, encoding.  Slots: the stream's
    own (unless it exists) plus one temporary slot (a migrate's count fence, a re-sync) must fit."""
    (wal_level, max_slots, used_slots, max_senders, used_senders, can_repl, user, enc,
     version) = conn.execute(SETTINGS_SQL).fetchone()
    ours = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()[0]
    out = []
    if wal_level != "logical":
        out.append(f"wal_level is {wal_level!r}: set wal_level = logical in postgresql.conf "
                   f"(ALTER SYSTEM SET wal_level = logical) and restart the server")
    if used_slots - ours + 2 > max_slots:
        out.append(f"max_replication_slots = {max_slots} and {used_slots} are in use: replicator needs "
                   f"{2 - ours} more (its slot and a temporary one); raise max_replication_slots "
                   f"(restart needed) or drop unused slots")
    if used_senders >= max_senders:
        out.append(f"max_wal_senders = {max_senders} and {used_senders} are in use: raise max_wal_senders")
    if not can_repl:
        out.append(f"role {user} lacks the REPLICATION attribute: ALTER ROLE {user} REPLICATION")
    if enc != "UTF8":
        out.append(f"database encoding is {enc}: replicator needs a UTF8 source database")
    if version < 150000:
        out.append(f"PostgreSQL {version // 10000} is not supported: use PostgreSQL 15 or newer")
    return out


def publish_problems(conn: psycopg.Connection, pub: str, tables) -> list[str]:
    """What publishing ``tables`` needs from this role: CREATE on the database for a new
    publication, ownership of every table (PostgreSQL lets only owners publish a table) and of an
    existing publication that must change (none of that when the publication already lists
    them); and that no table is UNLOGGED (never publishable: :func:`unlogged_problems`)."""
    from .model import PublishedTable
    from .source import slot as slots
    wanted = [t if isinstance(t, PublishedTable) else PublishedTable(t.schema, t.name) for t in tables]
    if not wanted:
        return []
    out = unlogged_problems(conn, wanted)
    if out or slots.publication_matches(conn, pub, wanted):
        return out
    user, db = conn.info.user, conn.info.dbname
    owner_hint = (f"or have the tables' owner run CREATE PUBLICATION {pub} FOR TABLE … (an existing "
                  f"publication listing exactly the replicated tables is used as it is)")
    row = conn.execute("SELECT pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication "
                       "WHERE pubname = %s", (pub,)).fetchone()
    if row is None and not conn.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]:
        out.append(f"role {user} cannot create publication {pub}: GRANT CREATE ON DATABASE "
                   f"{sql.Identifier(db).as_string(conn)} TO {sql.Identifier(user).as_string(conn)}, {owner_hint}")
    if row is not None and not row[0]:
        out.append(f"publication {pub} belongs to another role and must change: ALTER PUBLICATION "
                   f"{pub} OWNER TO {sql.Identifier(user).as_string(conn)}, or drop it")
    for t in wanted:
        name = sql.Identifier(t.schema, t.name).as_string(conn)
        if not conn.execute("SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class "
                            "WHERE oid = %s::regclass", (name,)).fetchone()[0]:
            out.append(f"{t.schema}.{t.name}: role {user} does not own it and PostgreSQL lets only the "
                       f"owner publish a table: ALTER TABLE {name} OWNER TO "
                       f"{sql.Identifier(user).as_string(conn)}, {owner_hint}")
    return out


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
        if not conn.execute("SELECT has_table_privilege(%s, 'SELECT')", (name,)).fetchone()[0]:
            out.append(f"{t.qualified}: no SELECT privilege: GRANT SELECT ON {name} TO {conn.info.user}")
        p = catalog.identity_problem(t)
        if p:
            out.append(p)
    return out


def preflight(source: str, tables: Optional[list[str]] = None, target_url: Optional[str] = None,
              mapping_config=None) -> list[str]:
    """All problems found on the source (and the target, when given), each once.  Never creates
    anything, not even a missing embedded target file."""
    if mapping_config is not None:
        return _preflight_mapping(source, tables, target_url, mapping_config)
    with snapshot.connect(source) as conn:
        problems = server_problems(conn)
        try:
            chosen = catalog.select_tables(catalog.list_tables(conn), tables)
        except ConfigError as e:
            return problems + [str(e)]
        schemas = catalog.load_schemas(conn, chosen)
        if not schemas:
            problems.append("no tables selected: the source has no user tables (or --tables matched none)")
        problems += table_problems(conn, schemas)
    if target_url and schemas:
        problems += name_problems(_pipeline(source, tables, target_url), schemas)
        problems += target_problems(source, tables, target_url)
    return list(dict.fromkeys(problems))


def _preflight_mapping(source, tables, target_url, cfg) -> list[str]:
    """With a mapping, the pipeline's own planning checks every entry (read only)."""
    with snapshot.connect(source) as conn:
        problems = server_problems(conn, cfg.name or "replicator")
    found = problems + target_problems(source, tables, target_url, cfg, privileges=True)
    return list(dict.fromkeys(found))  # planning repeats the server checks


def _pipeline(source: str, tables, target_url: Optional[str], cfg=None):
    from .pipeline import Options, Pipeline
    return Pipeline(Options(source=source, target=target_url, tables=tables, mapping=cfg))


def name_problems(p, schemas) -> list[str]:
    """Target names the target cannot keep apart or hold, and tables beyond its limits, found by
    the checks ``Pipeline.plan`` runs (``identifier_problems``, ``limit_problems``,
    ``_check_target_names``) on the tables as they are, even when other problems (a missing
    replica identity) would stop planning before it gets there."""
    from .model import TableMapping
    p.mappings = [TableMapping(s, s.name) for s in schemas]
    out = [x for m in p.mappings for x in p.target.identifier_problems(m) + p.target.limit_problems(m)]
    try:
        p._check_target_names()
    except ConfigError as e:
        out.append(str(e))
    return out


def target_problems(source: str, tables, target_url: str, cfg=None, privileges=False) -> list[str]:
    """What planning finds (mapping, names, existing target tables), read only; the existing
    tables are looked at only when the target exists (an embedded file is never created)."""
    from .target import target_exists
    try:
        p = _pipeline(source, tables, target_url, cfg)
        ms = p.plan(check_target=target_url is not None and target_exists(p.target))
        if privileges:
            with snapshot.connect(source) as conn:
                return table_problems(conn, [m.source_table for m in ms])
    except CheckError as e:
        return e.problems
    except ReplicatorError as e:
        return [str(e)]
    return []


LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def warnings(source: str, long_transaction_s: int = 60) -> list[str]:
    """Things that do not stop replication but will hurt: WAL retention without a limit, old open
    transactions (slot creation waits for them), an unverified connection to a remote source."""
    from .source.slot import blocker_rows, describe_blocker
    out = []
    with snapshot.connect(source) as conn:
        keep = conn.execute("SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'").fetchone()
        if keep and keep[0] == "-1":
            out.append("max_slot_wal_keep_size is unlimited: a stopped mirror's slot keeps WAL until the "
                       "source's disk is full; set a limit, e.g. ALTER SYSTEM SET "
                       "max_slot_wal_keep_size = '50GB' and SELECT pg_reload_conf()")
        for row in blocker_rows(conn, conn.info.backend_pid):
            if row[3] >= long_transaction_s:
                out.append(f"long-running transaction would delay slot creation: {describe_blocker(row)}")
        out += _tls_warning(conn)
        out += [f"{t[1]}.{t[2]} is UNLOGGED and is not replicated: its changes are not in WAL "
                f"(ALTER TABLE … SET LOGGED to replicate it)"
                for t in catalog.list_tables(conn) if catalog.unlogged(t)]
    return out


def _tls_warning(conn) -> list[str]:
    host = conn.info.host or ""
    if host.startswith("/") or host in LOCAL_HOSTS:
        return []
    mode = conn.info.get_parameters().get("sslmode") or ""
    if conn.pgconn.ssl_in_use and mode in ("verify-ca", "verify-full"):
        return []
    return [f"the connection to source host {host} is not verified TLS (sslmode={mode or 'prefer'}, "
            f"TLS {'on' if conn.pgconn.ssl_in_use else 'off'}): use sslmode=verify-full and "
            f"sslrootcert=… in the source DSN"]
