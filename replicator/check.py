"""Preflight: everything that would stop a migration or a mirror, found before anything is created.

:func:`preflight` only reads.  It returns one line per problem, each naming the setting, table or
privilege and the fix; an empty list means go.  The problem finders are problems.py's, shared
with planning (planner.py), so ``check`` reports what a start would stop at.
"""

from __future__ import annotations

from typing import Optional

from .errors import CheckError, ConfigError, ReplicatorError
from .model import TableMapping
from .options import Options
from .planner import Planner
from .problems import name_problems, server_problems, table_problems
from .source import catalog, snapshot


def preflight(
    source: str, tables: Optional[list[str]] = None, target_url: Optional[str] = None, mapping_config=None
) -> list[str]:
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
        problems += name_problems(
            _planner(source, tables, target_url).target, [TableMapping(s, s.name) for s in schemas]
        )
        problems += target_problems(source, tables, target_url)
    return list(dict.fromkeys(problems))


def _preflight_mapping(source, tables, target_url, cfg) -> list[str]:
    """With a mapping, the pipeline's own planning checks every entry (read only)."""
    with snapshot.connect(source) as conn:
        problems = server_problems(conn, cfg.name or "replicator")
    found = problems + target_problems(source, tables, target_url, cfg, privileges=True)
    return list(dict.fromkeys(found))  # planning repeats the server checks


def _planner(source: str, tables, target_url: Optional[str], cfg=None) -> Planner:
    """Plans as stream "replicator" does (a mapping's own name is not used here)."""
    return Planner.for_options(Options(source=source, target=target_url, tables=tables, mapping=cfg))


def target_problems(source: str, tables, target_url: str, cfg=None, privileges=False) -> list[str]:
    """What planning finds (mapping, names, existing target tables), read only; the existing
    tables are looked at only when the target exists (an embedded file is never created)."""
    from .target import target_exists

    try:
        p = _planner(source, tables, target_url, cfg)
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
        keep = conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"
        ).fetchone()
        if keep and keep[0] == "-1":
            out.append(
                "max_slot_wal_keep_size is unlimited: a stopped mirror's slot keeps WAL until the "
                "source's disk is full; set a limit, e.g. ALTER SYSTEM SET "
                "max_slot_wal_keep_size = '50GB' and SELECT pg_reload_conf()"
            )
        for row in blocker_rows(conn, conn.info.backend_pid):
            if row[3] >= long_transaction_s:
                out.append(f"long-running transaction would delay slot creation: {describe_blocker(row)}")
        out += _tls_warning(conn)
        out += [
            f"{t[1]}.{t[2]} is UNLOGGED and is not replicated: its changes are not in WAL "
            f"(ALTER TABLE … SET LOGGED to replicate it)"
            for t in catalog.list_tables(conn)
            if catalog.unlogged(t)
        ]
    return out


def _tls_warning(conn) -> list[str]:
    host = conn.info.host or ""
    if host.startswith("/") or host in LOCAL_HOSTS:
        return []
    mode = conn.info.get_parameters().get("sslmode") or ""
    if conn.pgconn.ssl_in_use and mode in ("verify-ca", "verify-full"):
        return []
    return [
        f"the connection to source host {host} is not verified TLS (sslmode={mode or 'prefer'}, "
        f"TLS {'on' if conn.pgconn.ssl_in_use else 'off'}): use sslmode=verify-full and "
        f"sslrootcert=… in the source DSN"
    ]
