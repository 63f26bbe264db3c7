"""`replicator init`: a complete, commented mapping of the source as it is, ready to edit.

Every table gets an entry with its size, replica identity and any problem `check` would report; a
table that cannot replicate UPDATE/DELETE is written as ``insert_only: true`` with the fix in a
comment, so the file works as written.  The source DSN is never written: it comes from --source or REPLICATOR_SOURCE.
"""

from __future__ import annotations

import datetime as dt
import json

from .model import TableSchema
from .source import catalog, snapshot

IDENTITY = catalog.IDENTITY_WORDS


def _q(s: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(s, ensure_ascii=False)


def _describe(t: TableSchema, rows: int) -> str:
    ident = IDENTITY[t.identity]
    key = f", key ({', '.join(t.key)})" if t.key else ""
    return f"{t.qualified}: ~{rows:,} rows, {len(t.columns)} columns, REPLICA IDENTITY {ident}{key}"


def _entry(t: TableSchema, rows: int) -> list[str]:
    lines = [f"  # {_describe(t, rows)}", f"  - source: {_q(t.qualified)}", f"    target: {_q(t.name)}"]
    problem = catalog.identity_problem(t)
    if problem:
        lines[1:1] = [f"  # PROBLEM: {problem}", "  # Until then only INSERT and TRUNCATE are replicated:"]
        lines.append("    insert_only: true")
    else:
        lines.append("    # mode: mirror  # or soft_delete (deletes mark rows), history (every version kept)")
    lines.append("    # columns: {exclude: [], rename: {}, types: {}, policy: {}}")
    lines.append('    # where: "<row filter on replica identity columns>"')
    return lines


def render_mapping(source: str, target: str, name: str) -> str:
    with snapshot.connect(source) as c:
        listed = catalog.list_tables(c)
        tables = [t for t in listed if not catalog.unlogged(t)]  # not in WAL: cannot be streamed
        skipped = [t for t in listed if catalog.unlogged(t)]
        schemas = catalog.load_schemas(c, tables)
        rows: dict[int, int] = dict(
            c.execute(
                "SELECT oid, greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = ANY(%s)",
                ([t[0] for t in tables],),
            ).fetchall()
        )
        db = c.info.dbname
    out = [
        f"# Mapping of database {db} written by 'replicator init' on {dt.date.today()}.",
        "# Edit freely: entries are tried in order and the first match wins. Reference: README.md.",
        "# source: the --source option or REPLICATOR_SOURCE (keep passwords out of this file;",
        "#         'source: ${SOME_VARIABLE}' reads one from the environment)",
        f"target: {_q(target)}",
        f"name: {_q(name)}",
        "defaults:",
        "  on_missing_row: error",
        "tables:",
    ]
    for t in schemas:
        out += _entry(t, rows.get(t.oid, 0))
    for table in skipped:
        out.append(f"  # left out: {catalog.unlogged_problem(table[1], table[2])}")
    if not schemas:
        out.append("  # the source has no user tables yet; add entries such as:")
        out.append('  - include: "public.*"')
    return "\n".join(out) + "\n"
