"""Command line: the commands around a stream, ``check``, ``init``, ``demo``, ``drop``,
``resync``, ``status`` and ``verify``; ``replicator.cli`` adds them to the group.

Each resolves its settings with :func:`replicator.cli_common.resolve_settings` and leaves errors to
:func:`replicator.cli_common.handle_errors` (exit codes, one redacted line each).
"""

from __future__ import annotations

import json
import sys

import click

from .cli_common import (
    POSITIVE,
    POSITIVE_INT,
    SOURCE_KINDS,
    TARGET_KINDS,
    Command,
    examples,
    handle_errors,
    mapping_option,
    name_option,
    resolve_settings,
    say,
    source_option,
    split_tables,
    tables_option,
    target_option,
)
from .dsn import redact
from .errors import ReplicatorError


@click.command(
    cls=Command,
    short_help="Preflight: the tables it would copy, and every problem.",
    epilog=examples(
        """
# every table of the source: rows, size, identity, problems and their fixes
replicator check --source postgresql://app@db.internal/shop
""",
        """
# some tables, for a MySQL/MariaDB target, as JSON
replicator check --source 'host=db.internal user=app dbname=shop' \\
  --target mysql+pymysql://app@mysql.internal/shop \\
  --tables 'public.order_*' --json
""",
    ),
)
@source_option(required=False)
@target_option
@tables_option
@mapping_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: tables, problems, warnings.")
@handle_errors
def check(source, target, tables, mapping, as_json):
    """Preflight: the tables it would replicate and how, and every problem, before anything exists.

    Lists each table (rows estimate, size, replica identity, how UPDATE/DELETE locate rows on
    the target) with its problems, then the server's problems and warnings.  Exit 1 when a
    problem would stop migrate or mirror.
    """
    from . import check_plan
    from .check import preflight, warnings

    source, target, _name, cfg = resolve_settings(source, target, "replicator", mapping)
    problems = preflight(source, split_tables(tables), target, cfg)
    try:
        rows = check_plan.table_plan(source, split_tables(tables), target, cfg)
    except ReplicatorError:  # a selection or mapping error: it is among the problems already
        rows = []
    check_plan.attach_problems(rows, problems)
    found = warnings(source)
    if as_json:
        doc = {"ok": not problems, "tables": rows, "problems": problems, "warnings": found}
        doc["hints"] = check_plan.hints(rows)
        click.echo(redact(json.dumps(doc, indent=2)))
    else:
        if rows:
            click.echo(redact(check_plan.render(rows)) + "\n")
        for w in found:
            click.echo(f"warning: {redact(w)}")
        for p in problems:
            click.echo(f"problem: {redact(p)}")
        for h in check_plan.hints(rows):
            click.echo(f"hint: {h}")
    if problems:
        sys.exit(1)
    if not as_json:
        click.echo(f"ok: ready to replicate {len(rows)} table(s)")


@click.command(
    cls=Command,
    short_help="Print a commented YAML mapping of the source, to edit.",
    epilog=examples(
        """
# write the mapping of every table, edit it, then run with it
replicator init --source postgresql://app@db.internal/shop > mapping.yaml
replicator migrate --mapping mapping.yaml
""",
        """
# a mapping aimed at SQLite
replicator init --source postgresql://app@db.internal/shop \\
  --target sqlite:///shop.db > mapping.yaml
""",
    ),
)
@source_option()
@click.option(
    "--target",
    "target_url",
    default="duckdb:///replica.duckdb",
    show_default=True,
    metavar="URL",
    help=f"Target URL written into the mapping: {TARGET_KINDS}.",
)
@click.option("--name", default="replicator", show_default=True, help="Stream name written into the mapping.")
@handle_errors
def init(source, target_url, name):
    """Print a complete, commented mapping of the source as it is (redirect it to a file)."""
    from .init import render_mapping

    click.echo(render_mapping(source, target_url, name), nl=False)


@click.command(
    cls=Command,
    short_help="Try it: pgbench on a throwaway PostgreSQL, mirrored.",
    epilog=examples(
        """
# a throwaway PostgreSQL with pgbench, mirrored into ./demo.duckdb
replicator demo
""",
        """
# ten times the data, thirty seconds of load
replicator demo --scale 10 --seconds 30
""",
        """
# your own scratch database (pgbench_* tables are made there), into SQLite
replicator demo --source postgresql://app@db.internal/scratch \\
  --target sqlite:///demo.db
""",
    ),
)
@click.option(
    "--source",
    default=None,
    metavar="DSN",
    help=f"Use this PostgreSQL database instead of a throwaway server "
    f"(pgbench_* tables are created there when missing): {SOURCE_KINDS}.",
)
@click.option(
    "--target",
    default=None,
    metavar="URL",
    help=f"Target URL: {TARGET_KINDS} [default: duckdb:///demo.duckdb in the current directory, "
    f"replaced on each run].",
)
@click.option(
    "--seconds",
    default=5.0,
    show_default=True,
    type=POSITIVE,
    help="Seconds of pgbench workload while mirroring.",
)
@click.option(
    "--scale", default=1, show_default=True, type=POSITIVE_INT, help="pgbench scale (100,000 accounts each)."
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Progress display on a terminal."
)
@handle_errors
def demo(source, target, seconds, scale, progress):
    """Try it: a throwaway PostgreSQL with pgbench, mirrored into DuckDB under load, then checked."""
    from .demo import run

    sys.exit(run(source, target, seconds=seconds, scale=scale, progress=progress, out=click.echo))


@click.command(
    cls=Command,
    short_help="Remove a stream's slot, publications and target state.",
    epilog=examples(
        """
# remove the default stream's slot, publications and state; the data stays
replicator drop --source postgresql://app@db.internal/shop \\
  --target duckdb:///shop.duckdb
""",
        """
# a named stream, its tables on the target too
replicator drop --source postgresql://app@db.internal/shop \\
  --target sqlite:///orders.db --name orders --drop-tables
""",
    ),
)
@source_option(required=False)
@target_option
@name_option
@mapping_option
@click.option("--drop-tables", is_flag=True, help="Also drop the replicated tables on the target.")
@click.option("--force", is_flag=True, help="Even while a mirror holds the slot (it is terminated).")
@handle_errors
def drop(source, target, name, mapping, drop_tables, force):
    """Remove slot, publications and target-side state (target data stays unless --drop-tables)."""
    from .admin import drop as drop_stream
    from .pipeline import Options

    source, target, name, _cfg = resolve_settings(source, target, name, mapping)
    for line in drop_stream(Options(source=source, target=target, name=name), drop_tables, force):
        click.echo(line)


@click.command(
    cls=Command,
    short_help="Copy chosen tables again, from a fresh snapshot.",
    epilog=examples(
        """
# copy two tables again (a running mirror picks them up within seconds)
replicator resync --source postgresql://app@db.internal/shop \\
  --target duckdb:///shop.duckdb --tables public.orders,public.order_lines
""",
        """
# the order_* tables of the stream named orders
replicator resync --source postgresql://app@db.internal/shop \\
  --target sqlite:///orders.db --name orders --tables 'public.order_*'
""",
    ),
)
@source_option(required=False)
@target_option
@click.option("--tables", required=True, help="Comma-separated schema.table names or globs to re-copy.")
@name_option
@mapping_option
@click.option("--jobs", default=2, show_default=True, type=POSITIVE_INT, help="Parallel copy workers.")
@handle_errors
def resync(source, target, tables, name, mapping, jobs):
    """Take chosen tables back through i → d → s → r from a fresh snapshot."""
    from .admin import resync as resync_tables
    from .pipeline import Options

    source, target, name, cfg = resolve_settings(source, target, name, mapping)
    opts = Options(source=source, target=target, name=name, jobs=jobs, mapping=cfg)
    click.echo(resync_tables(opts, split_tables(tables)))


@click.command(
    cls=Command,
    short_help="Per-table state, applied LSN, slot and lag of a stream.",
    epilog=examples(
        """
# what the target holds: each table's state, the applied LSN
replicator status --target duckdb:///shop.duckdb
""",
        """
# with the slot and the lag (they need the source), as JSON for monitoring
replicator status --source postgresql://app@db.internal/shop \\
  --target mysql+pymysql://app@mysql.internal/shop --json
""",
    ),
)
@source_option(required=False)
@target_option
@name_option
@mapping_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable fields).")
@handle_errors
def status(source, target, name, mapping, as_json):
    """Per-table state and sync LSN, the applied LSN, the slot and the lag.  Exit 1 when the
    target holds no state for the stream or refuses to be read (a busy embedded file is not an
    error); a missing target file is an error and is never created."""
    from .status import collect, render

    source, target, name, _cfg = resolve_settings(source, target, name, mapping, need_source=False)
    doc = collect(source, target, name)
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else render(doc))
    if doc["target_state"] == "error":
        say("error", doc["warnings"][0], 1)
    if doc["target_state"] in ("none", "error"):
        sys.exit(1)


@click.command(
    cls=Command,
    short_help="Compare source and target: row counts, then checksums.",
    epilog=examples(
        """
# every table: counts, then checksums over key ranges; exit 1 if they differ
replicator verify --source postgresql://app@db.internal/shop \\
  --target duckdb:///shop.duckdb
""",
        """
# one table of a PostgreSQL target, up to 100 differing keys listed
replicator verify --source postgresql://app@db.internal/shop \\
  --target postgresql://app@new-db.internal/shop \\
  --tables public.orders --max-keys 100
""",
    ),
)
@source_option(required=False)
@target_option
@tables_option
@name_option
@mapping_option
@click.option(
    "--chunk-rows",
    default=10_000,
    show_default=True,
    type=POSITIVE_INT,
    help="Source keys per checksummed range.",
)
@click.option(
    "--max-keys",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Differing keys listed per table.",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=60.0,
    show_default=True,
    type=POSITIVE,
    help="Seconds the re-checks may wait, in all, for a running mirror to reach the source's position.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable fields).")
@handle_errors
def verify(source, target, tables, name, mapping, chunk_rows, max_keys, wait_seconds, as_json):
    """Compare source and target per table: row counts, then checksums over key ranges; exit 1
    naming each differing table, key range and keys."""
    from .pipeline import Options
    from .verify import Settings, render
    from .verify import verify as verify_tables

    source, target, name, cfg = resolve_settings(source, target, name, mapping)
    doc = verify_tables(
        Options(source=source, target=target, tables=split_tables(tables), name=name, mapping=cfg),
        Settings(chunk_rows=chunk_rows, max_keys=max_keys, wait_seconds=wait_seconds),
    )
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else render(doc))
    sys.exit(0 if doc["equal"] else 1)
