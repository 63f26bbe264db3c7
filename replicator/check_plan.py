"""What ``check`` would replicate: one row per selected table (rows estimate, size, replica
identity, how UPDATE and DELETE locate rows on the target, the table's problems).

Contract: :func:`table_plan` only reads the source catalog (never the target: it may not exist);
tables that planning would refuse (no usable identity) are listed too, with their problem, so a
user sees the whole picture at once.  :func:`render` is the text form; the dicts are the stable
``check --json`` form (README, "check --json").
"""

from __future__ import annotations

from typing import Any, Optional

from psycopg import sql

from . import humanize, mapping
from .model import Identity, TableMapping, TableSchema
from .source import catalog, snapshot
from .target import open_target

SIZE_SQL = """
SELECT pg_total_relation_size(c.oid) + CASE WHEN c.relkind = 'p' THEN
       (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid)) ELSE 0 END
FROM pg_class c WHERE c.oid = %s::regclass
"""


def locate_by(t: TableSchema) -> str:
    """How UPDATE and DELETE of ``t`` find their row on the target, in words."""
    if t.insert_only:
        return "insert-only: UPDATE/DELETE not replicated"
    if t.key:
        kind = "primary key" if t.key == t.primary_key else "key"
        return f"{kind} ({', '.join(t.key)})"
    if t.identity is Identity.FULL:
        return "all columns (REPLICA IDENTITY FULL)"
    return "cannot: no key"


def table_plan(
    source: str, tables: Optional[list[str]], target_url: Optional[str], cfg=None
) -> list[dict[str, Any]]:
    """One dict per table ``check`` looks at: source, target, rows_estimate, bytes, identity,
    locate_by, problems (filled in by :func:`attach_problems`)."""
    target = open_target(target_url)
    with snapshot.connect(source) as conn:
        if cfg is not None:
            schemas = catalog.load_schemas(conn, catalog.list_tables(conn))
            ms = mapping.resolve(cfg, schemas, capture=False)
            if tables:
                keep = {t[0] for t in catalog.select_tables([_listed(m) for m in ms], tables)}
                ms = [m for m in ms if m.view.oid in keep]
        else:
            chosen = catalog.select_tables(catalog.list_tables(conn), tables)
            ms = [TableMapping(s, s.name) for s in catalog.load_schemas(conn, chosen)]
        return [_row(conn, target, m) for m in ms]


def _listed(m: TableMapping) -> tuple:
    return (m.view.oid, m.view.schema, m.view.name, "")


def _row(conn, target, m: TableMapping) -> dict[str, Any]:
    t = m.source_table
    name = sql.Identifier(t.schema, t.name).as_string(conn)
    size = conn.execute(SIZE_SQL, (name,)).fetchone()
    return {
        "source": m.label,
        "target": target.display(m),
        "rows_estimate": snapshot.row_estimate(conn, t),
        "bytes": int(size[0]) if size else 0,
        "identity": catalog.IDENTITY_WORDS.get(t.identity, str(t.identity)),
        "locate_by": locate_by(t),
        "problems": [],
    }


def hints(rows: list[dict[str, Any]]) -> list[str]:
    """The ways around a missing replica identity, when some table has none."""
    from .problems import IDENTITY_HINTS

    return list(IDENTITY_HINTS) if any(r["locate_by"].startswith("cannot") for r in rows) else []


def attach_problems(rows: list[dict[str, Any]], problems: list[str]) -> None:
    """Give each table the problems that name it (the lines that start ``schema.table:``)."""
    for r in rows:
        r["problems"] = [p for p in problems if p.startswith(f"{r['source']}:")]


def render(rows: list[dict[str, Any]]) -> str:
    """The table of tables, aligned; the last column says whether the table has problems (the
    problem lines themselves are printed after the table, as ``check`` always did)."""
    head = ("TABLE", "→ TARGET", "ROWS ≈", "SIZE", "IDENTITY", "UPDATE/DELETE FIND ROWS BY", "READY")
    body = [
        (
            r["source"],
            r["target"],
            f"{r['rows_estimate']:,}",
            humanize.size(r["bytes"]),
            r["identity"],
            r["locate_by"],
            f"no: {len(r['problems'])} problem(s)" if r["problems"] else "yes",
        )
        for r in rows
    ]
    return "\n".join(humanize.aligned([head, *body], right={2, 3}))
