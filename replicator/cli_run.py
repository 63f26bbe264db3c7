"""Command line: the commands that replicate, ``migrate`` and ``mirror``.

Both take the shared run options (:func:`replicator.cli_common.run_options`) and the watch options
(metrics endpoint, progress display); ``replicator.cli`` adds them to the group.
"""

from __future__ import annotations

import sys

import click

from .cli_common import handle_errors, pipeline_options, run_options, watch_options


@click.command()
@run_options
@click.option("--keep-slot", is_flag=True, help="Keep slot and publication after the migration.")
@click.option(
    "--cutover",
    is_flag=True,
    help="After catch-up, carry sequences / identity / "
    "AUTO_INCREMENT past the source's values and verify: the moment to switch over.",
)
@watch_options
@handle_errors
def migrate(keep_slot, cutover, metrics_port, metrics_host, progress, **kw):
    """One-shot migration: snapshot copy, catch-up, row-count check, clean-up."""
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


@click.command()
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
