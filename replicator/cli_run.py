"""Command line: the commands that replicate, ``migrate`` and ``mirror``.

Both take the shared run options (:func:`replicator.cli_common.run_options`) and the watch options
(metrics endpoint, progress display); ``replicator.cli`` adds them to the group.
"""

from __future__ import annotations

import sys

import click

from .cli_common import (
    Command,
    examples,
    handle_errors,
    jobs_option,
    mapping_option,
    pipeline_options,
    resolve_settings,
    run_options,
    source_option,
    split_tables,
    tables_option,
    target_option,
    watch_options,
)


@click.command(
    cls=Command,
    short_help="Copy every table once, from one snapshot; no changes after.",
    epilog=examples(
        """
# every table once into DuckDB (a hot standby will do as the source)
replicator copy --source postgresql://app@standby.internal/shop \\
  --target duckdb:///shop.duckdb
""",
        """
# some tables into MySQL/MariaDB, four at a time
replicator copy --source postgresql://app@db.internal/shop \\
  --target mysql+pymysql://app@mysql.internal/shop \\
  --tables 'public.order_*,public.customers' --jobs 4
""",
    ),
)
@source_option(required=False)
@target_option
@tables_option
@mapping_option
@jobs_option
@watch_options
@handle_errors
def copy(metrics_port, metrics_host, progress, **kw):
    """One-time copy of every table from one snapshot; no change capture.

    No slot, no publication, no REPLICATION privilege, no primary key needed (tables without one
    are copied as they are); works against a hot standby.  Changes made on the source after the
    snapshot are not included: use migrate or mirror to follow them.
    """
    snapshot_copy(kw, metrics_port, metrics_host, progress)


def snapshot_copy(kw: dict, metrics_port, metrics_host, progress: bool) -> None:
    """Run a snapshot-only copy (``copy``, ``migrate --snapshot-only``) and print its summary."""
    from . import stopping
    from .options import Options
    from .snapshot_only import SnapshotCopy
    from .watch import watching

    source, target, _name, cfg = resolve_settings(kw["source"], kw["target"], None, kw["mapping"])
    opts = Options(
        source=source, target=target, tables=split_tables(kw["tables"]), jobs=kw["jobs"], mapping=cfg
    )
    c = SnapshotCopy(opts)
    stopping.install()  # SIGINT/SIGTERM end the copy within seconds (exit 130)
    with watching(c, metrics_port, metrics_host, progress):
        s = c.run()
    assert s.snapshot is not None
    rate = s.rows_copied / s.copy_seconds if s.copy_seconds else 0
    where = "standby" if s.snapshot.standby else "source"
    click.echo(
        f"copied {s.tables} table(s): {s.rows_copied} rows in {s.copy_seconds:.1f}s ({rate:.0f} rows/s), "
        f"{s.seconds:.1f}s in all, from one snapshot of the {where} taken at "
        f"{s.snapshot.taken:%Y-%m-%d %H:%M:%S %Z} ({s.snapshot.lsn})"
    )
    click.echo(
        "changes made on the source after that snapshot are not included: "
        "'replicator mirror' copies and then follows them"
    )


@click.command(
    cls=Command,
    short_help="One-shot migration: copy, catch up, check counts, clean up.",
    epilog=examples(
        """
# copy into DuckDB, apply the changes made meanwhile, compare row counts
replicator migrate --source postgresql://app@db.internal/shop \\
  --target duckdb:///shop.duckdb
""",
        """
# the switch-over: sequences carried past the source's, every table verified
replicator migrate --source postgresql://app@db.internal/shop \\
  --target postgresql://app@new-db.internal/shop --cutover
""",
        """
# with a mapping file (see 'replicator init'), log lines as JSON
replicator migrate --mapping mapping.yaml --log-format json
""",
    ),
)
@run_options
@click.option(
    "--snapshot-only",
    is_flag=True,
    help="Copy from one snapshot and stop, as 'replicator copy' does (no slot, no change capture).",
)
@click.option("--keep-slot", is_flag=True, help="Keep slot and publication after the migration.")
@click.option(
    "--cutover",
    is_flag=True,
    help="After catch-up, carry sequences / identity / "
    "AUTO_INCREMENT past the source's values and verify: the moment to switch over.",
)
@watch_options
@handle_errors
def migrate(snapshot_only, keep_slot, cutover, metrics_port, metrics_host, progress, **kw):
    """One-shot migration: snapshot copy, catch-up, row-count check, clean-up."""
    if snapshot_only:
        if keep_slot or cutover or kw.get("name"):
            raise click.UsageError(
                "--snapshot-only makes no slot: --keep-slot, --cutover and --name do not apply"
            )
        return snapshot_copy(kw, metrics_port, metrics_host, progress)
    from . import stopping
    from .pipeline import Pipeline
    from .watch import watching

    opts = pipeline_options(keep_slot=keep_slot, **kw)
    opts.cutover = cutover
    p = Pipeline(opts)
    stopping.install()  # SIGINT/SIGTERM end every wait within seconds; the run cleans up (exit 130)
    with watching(p, metrics_port, metrics_host, progress):
        s = p.migrate()
    copy_rate = s.rows_copied / s.copy_seconds if s.copy_seconds else 0
    click.echo(
        f"migrated {s.tables} table(s): {s.rows_copied} rows copied in {s.copy_seconds:.1f}s "
        f"({copy_rate:.0f} rows/s), {s.changes_applied} changes applied, {s.seconds:.1f}s in "
        f"all (applied up to {s.applied_lsn})"
    )
    for line in s.cutover:
        click.echo(f"cutover: {line}")
    if cutover:
        from .verify import Settings, render
        from .verify import verify as verify_tables

        doc = verify_tables(opts, Settings(wait_seconds=0))
        click.echo(render(doc))
        if not doc["equal"]:
            click.echo("cutover: the target differs from the source (above): do not switch yet", err=True)
            sys.exit(1)
        click.echo("cutover: sequences carried and every table verified: switch the application over")


@click.command(
    cls=Command,
    short_help="Copy, then apply every change continuously until SIGTERM.",
    epilog=examples(
        """
# follow every change into MySQL/MariaDB until SIGTERM or Ctrl-C
replicator mirror --source postgresql://app@db.internal/shop \\
  --target mysql+pymysql://app@mysql.internal/shop
""",
        """
# a second stream of some tables, Prometheus metrics on port 9187
replicator mirror --source postgresql://app@db.internal/shop \\
  --target sqlite:///orders.db --tables 'public.order_*' \\
  --name orders --metrics-port 9187
""",
    ),
)
@run_options
@watch_options
@handle_errors
def mirror(metrics_port, metrics_host, progress, **kw):
    """Continuous mirror; SIGINT/SIGTERM finish the batch, confirm and exit 0."""
    from . import stopping
    from .pipeline import Pipeline
    from .watch import watching

    p = Pipeline(pipeline_options(**kw))
    stopping.install()  # SIGINT/SIGTERM: finish the batch, confirm, exit 0
    with watching(p, metrics_port, metrics_host, progress):
        s = p.mirror()
    click.echo(
        f"mirror stopped at {s.applied_lsn}: {s.rows_copied} rows copied, {s.changes_applied} changes applied"
    )
