"""Command line: check, migrate, mirror, status.

Domain errors become exit codes and one-line messages here and only here; nothing printed contains
a password (messages pass through :func:`replicator.dsn.redact`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys

import click

from .dsn import CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, redact, remember_secrets
from .errors import CheckError, ReplicatorError, SourceError, TargetError

log = logging.getLogger("replicator")


class PositiveNumber(click.ParamType):
    """A finite number above zero (``nan``, ``inf``, ``0`` and negatives are usage errors, exit 2);
    ``integer`` also refuses fractions."""

    def __init__(self, integer: bool = False):
        self.integer = integer
        self.name = "positive integer" if integer else "positive number"

    def convert(self, value, param, ctx):
        try:
            number = int(value) if self.integer else float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a {self.name}", param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{value!r}: give a {'whole' if self.integer else 'finite'} number above 0", param, ctx)
        return number


POSITIVE_INT, POSITIVE = PositiveNumber(integer=True), PositiveNumber()


def source_option(required=True):
    return click.option(
        "--source",
        envvar="REPLICATOR_SOURCE",
        required=required,
        help="Source PostgreSQL: libpq URL or keyword DSN [env REPLICATOR_SOURCE].",
    )


target_option = click.option(
    "--target",
    envvar="REPLICATOR_TARGET",
    default=None,
    help="Target SQLAlchemy URL [env REPLICATOR_TARGET; default duckdb:///replica.duckdb].",
)
name_option = click.option(
    "--name",
    default=None,
    help="Stream name (default: the mapping's name, else 'replicator'): names "
    "the slot, the publication and the state rows.",
)
mapping_option = click.option(
    "--mapping",
    envvar="REPLICATOR_MAPPING",
    default=None,
    type=click.Path(dir_okay=False),
    help="YAML mapping file [env REPLICATOR_MAPPING]; options given here "
    "override its source, target and name.",
)
tables_option = click.option(
    "--tables", default=None, help="Comma-separated schema.table names or globs (default: all)."
)


def run_options(f):
    for opt in reversed(
        [
            source_option(required=False),
            target_option,
            tables_option,
            name_option,
            mapping_option,
            click.option(
                "--jobs", default=2, show_default=True, type=POSITIVE_INT, help="Parallel copy workers."
            ),
            click.option(
                "--batch-rows",
                default=50_000,
                show_default=True,
                type=POSITIVE_INT,
                help="Changes per target transaction at most (whole source transactions).",
            ),
            click.option(
                "--batch-seconds",
                default=1.0,
                show_default=True,
                type=POSITIVE,
                help="Seconds a target transaction collects changes at most.",
            ),
            click.option(
                "--slot-timeout",
                default=300.0,
                show_default=True,
                type=POSITIVE,
                help="Seconds slot creation may wait for open source transactions before it "
                "gives up naming them.",
            ),
        ]
    ):
        f = opt(f)
    return f


def watch_options(f):
    """--metrics-port, --metrics-host, --progress/--no-progress (migrate, mirror)."""
    for opt in reversed(
        [
            click.option(
                "--metrics-port",
                type=click.IntRange(0, 65535),
                default=None,
                help="Serve Prometheus metrics on this port (0: any free port, logged).",
            ),
            click.option(
                "--metrics-host",
                default="127.0.0.1",
                show_default=True,
                help="Address the metrics endpoint listens on.",
            ),
            click.option(
                "--progress/--no-progress",
                default=True,
                show_default=True,
                help="Progress display on a terminal (periodic log lines otherwise).",
            ),
        ]
    ):
        f = opt(f)
    return f


def handle_errors(f):
    """Turn ReplicatorError (and a driver error no phase translated) into its exit code with one
    redacted line per error or problem on stderr: text, or JSON objects with --log-format json."""

    @functools.wraps(f)
    def wrapper(*a, **kw):
        try:
            return f(*a, **kw)
        except CheckError as e:
            for p in e.problems:
                _say("problem", p, e.exit_code)
            sys.exit(e.exit_code)
        except ReplicatorError as e:
            side = (
                "source" if isinstance(e, SourceError) else "target" if isinstance(e, TargetError) else None
            )
            _say("error", f"{e}{_timeout_hint(e, side, kw)}", e.exit_code)
            sys.exit(e.exit_code)
        except Exception as e:  # a driver error that no phase translated: one line, no secrets
            side = _side_of(e)
            if side is None:
                raise
            orig = getattr(e, "orig", None) or e
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            _say("error", f"{side} database: {first}{_timeout_hint(orig, side, kw)}", 1)
            sys.exit(1)

    return wrapper


def _say(kind: str, message: object, exit_code: int) -> None:
    """One line: a driver's indented hint lines (libpq's) join the line they belong to."""
    import re

    from .logs import final_line

    text = re.sub(r"\s*\n[ \t]+", " ", str(message).strip())
    click.echo(final_line(kind, text, exit_code=exit_code), err=True)


def _timeout_hint(e: BaseException, side, kw: dict) -> str:
    """For a connection attempt that got no answer: where to, and the setting that limits it."""
    text = str(e)
    if side is None or not ("timeout expired" in text or "timed out" in text and "connect" in text):
        return ""
    from .dsn import connect_timeout, endpoint

    where = endpoint(kw.get("source") if side == "source" else kw.get("target") or kw.get("target_url"))
    return (
        f" (no answer from the {side} server{' ' + where if where else ''} within "
        f"{connect_timeout():g}s: check its host, port and firewall, or allow longer with "
        f"--connect-timeout / {CONNECT_TIMEOUT_ENV})"
    )


def _side_of(e: Exception):
    """'target' for SQLAlchemy errors and psycopg errors raised in a target module (the
    PostgreSQL target drives psycopg directly), 'source' for other psycopg errors, else None."""
    import psycopg
    import sqlalchemy.exc

    if isinstance(e, sqlalchemy.exc.SQLAlchemyError):
        return "target"
    if isinstance(e, psycopg.Error):
        return _origin(e) or "source"
    return None


def _origin(e: BaseException):
    """'target' when the innermost replicator frame of ``e``'s traceback is in a target module,
    'source' when it is anywhere else (everything but the targets drives psycopg for the source)."""
    side, tb = None, e.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("replicator."):
            side = "target" if module.startswith("replicator.target") else "source"
        tb = tb.tb_next
    return side


def _tables(value):
    return [t.strip() for t in value.split(",") if t.strip()] if value else None


def resolve_settings(source, target, name, mapping_path, need_source=True):
    """(source, target, name, MappingConfig | None): command line first, then the mapping file.
    Both URLs are checked here, before anything connects (ConfigError, exit 2)."""
    from .config import load
    from .dsn import parse_source
    from .target import check_url

    cfg = load(mapping_path) if mapping_path else None
    source = source or (cfg.source if cfg else None)
    target = target or (cfg.target if cfg else None)
    remember_secrets(source, target)
    if not source and need_source:
        raise click.UsageError(
            "no source: give --source, set REPLICATOR_SOURCE, or put source: in the mapping file"
        )
    if source:
        parse_source(source)
    check_url(target)
    name = name or (cfg.name if cfg else None) or "replicator"
    return source, target, name, cfg


def _options(
    source, target, tables, name, mapping, jobs, batch_rows, batch_seconds, slot_timeout, keep_slot=False
):
    from .pipeline import Options

    source, target, name, cfg = resolve_settings(source, target, name, mapping)
    return Options(
        source=source,
        target=target,
        tables=_tables(tables),
        name=name,
        jobs=jobs,
        keep_slot=keep_slot,
        batch_rows=batch_rows,
        batch_seconds=batch_seconds,
        mapping=cfg,
        slot_timeout=slot_timeout,
    )


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="REPLICATOR_LOG_FORMAT",
    help="Log lines on stderr: text, or one JSON object per line [env REPLICATOR_LOG_FORMAT].",
)
@click.option(
    "--connect-timeout",
    type=POSITIVE,
    default=DEFAULT_CONNECT_TIMEOUT,
    show_default=True,
    envvar=CONNECT_TIMEOUT_ENV,
    help=f"Seconds every connection attempt (source and target) may take [env {CONNECT_TIMEOUT_ENV}].",
)
@click.version_option(package_name="replicator")
def main(verbose, log_format, connect_timeout):
    """Replicate PostgreSQL tables into DuckDB, SQLite, MySQL/MariaDB or PostgreSQL."""
    from .logs import setup

    remember_secrets(*sys.argv[1:], os.environ.get("REPLICATOR_SOURCE"), os.environ.get("REPLICATOR_TARGET"))
    hide_secrets_in_process_title()
    setup(verbose, log_format)
    os.environ[CONNECT_TIMEOUT_ENV] = repr(connect_timeout)  # read by dsn.connect_timeout()


def hide_secrets_in_process_title() -> None:
    """ps and /proc/PID/cmdline show the command line: rewrite it without passwords."""
    import setproctitle

    title = " ".join(sys.argv)
    if redact(title) != title:
        setproctitle.setproctitle("replicator " + redact(" ".join(sys.argv[1:])))


@main.command()
@source_option(required=False)
@target_option
@tables_option
@mapping_option
@handle_errors
def check(source, target, tables, mapping):
    """Preflight: settings, privileges, replica identity and the mapping, before anything exists."""
    from .check import preflight, warnings

    source, target, _name, cfg = resolve_settings(source, target, "replicator", mapping)
    problems = preflight(source, _tables(tables), target, cfg)
    for w in warnings(source):
        click.echo(f"warning: {redact(w)}")
    for p in problems:
        click.echo(f"problem: {redact(p)}")
    if problems:
        sys.exit(1)
    click.echo("ok: ready to replicate")


@main.command()
@source_option()
@click.option(
    "--target",
    "target_url",
    default="duckdb:///replica.duckdb",
    show_default=True,
    help="Target URL written into the mapping.",
)
@click.option("--name", default="replicator", show_default=True, help="Stream name written into the mapping.")
@handle_errors
def init(source, target_url, name):
    """Print a complete, commented mapping of the source as it is (redirect it to a file)."""
    from .init import render_mapping

    click.echo(render_mapping(source, target_url, name), nl=False)


@main.command()
@click.option(
    "--source",
    default=None,
    help="Use this PostgreSQL database instead of a throwaway server "
    "(pgbench_* tables are created there when missing).",
)
@click.option(
    "--target",
    default=None,
    help="Target URL [default: duckdb:///demo.duckdb in the current directory, replaced on each run].",
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


@main.command()
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

    opts = _options(keep_slot=keep_slot, **kw)
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


@main.command()
@run_options
@watch_options
@handle_errors
def mirror(metrics_port, metrics_host, progress, **kw):
    """Continuous mirror; SIGINT/SIGTERM finish the batch, confirm and exit 0."""
    from . import stopping
    from .pipeline import Pipeline
    from .watch import watching

    p = Pipeline(_options(**kw))
    stopping.install()  # SIGINT/SIGTERM: finish the batch, confirm, exit 0
    with watching(p, metrics_port, metrics_host, progress):
        s = p.mirror()
    click.echo(
        f"mirror stopped at {s.applied_lsn}: {s.rows_copied} rows copied, {s.changes_applied} changes applied"
    )


@main.command()
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


@main.command()
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
    click.echo(resync_tables(opts, _tables(tables)))


@main.command()
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
        _say("error", doc["warnings"][0], 1)
    if doc["target_state"] in ("none", "error"):
        sys.exit(1)


@main.command()
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
        Options(source=source, target=target, tables=_tables(tables), name=name, mapping=cfg),
        Settings(chunk_rows=chunk_rows, max_keys=max_keys, wait_seconds=wait_seconds),
    )
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else render(doc))
    sys.exit(0 if doc["equal"] else 1)
