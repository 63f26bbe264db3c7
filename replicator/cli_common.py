"""What the command modules share: option types and decorators, settings resolution, and the
error handling that turns domain errors into exit codes and one-line messages.

Only the command line (``cli`` and the ``cli_*`` modules) imports this module; nothing printed
here contains a password (messages pass through :func:`replicator.dsn.redact`).
"""

from __future__ import annotations

import functools
import math
import sys

import click

from .dsn import CONNECT_TIMEOUT_ENV, remember_secrets
from .errors import CheckError, ReplicatorError, SourceError, TargetError


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


class ExamplesHelp:
    """Mixin for click commands and groups: the epilog is an "Examples:" section at the end of
    ``--help``, set like "Options:"; its ``\\b`` paragraphs (:func:`examples`) are never rewrapped."""

    epilog: str | None

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.epilog:
            with formatter.section("Examples"):
                formatter.write_text(self.epilog)


class Command(ExamplesHelp, click.Command):
    """A command whose epilog is its examples (``@click.command(cls=Command, epilog=examples(…))``)."""


class Group(ExamplesHelp, click.Group):
    """The group, with its examples the same way."""


def examples(*blocks: str) -> str:
    """An epilog of examples: each block a ``# what it does`` line and a command line (continued
    with a trailing backslash), kept as written; tests/unit/test_cli_help.py parses every
    ``replicator …`` line with the real CLI, so an example cannot name an option that does not
    exist.  Realistic hosts, never a password."""
    return "\n\n".join("\b\n" + b.strip("\n") for b in blocks)


#: what --source accepts (dsn.parse_source)
SOURCE_KINDS = (
    "a libpq URL (postgresql://app@db.internal/shop) or key=value DSN "
    "('host=db.internal user=app dbname=shop'); a password is best kept in ~/.pgpass or PGPASSWORD"
)
#: what a target URL may be (target.check_url): the four native targets, then the generic path
TARGET_KINDS = (
    "duckdb:///file.duckdb, sqlite:///file.db, mysql+pymysql://user@host/db (MySQL/MariaDB), "
    "postgresql://user@host/db (PostgreSQL), or any other SQLAlchemy URL whose driver is installed"
)


def source_option(required=True):
    """--source [env REPLICATOR_SOURCE]; ``required=False`` when a mapping file may give it."""
    return click.option(
        "--source",
        envvar="REPLICATOR_SOURCE",
        required=required,
        metavar="DSN",
        help=f"Source PostgreSQL: {SOURCE_KINDS} [env REPLICATOR_SOURCE].",
    )


target_option = click.option(
    "--target",
    envvar="REPLICATOR_TARGET",
    default=None,
    metavar="URL",
    help=f"Target URL: {TARGET_KINDS} [env REPLICATOR_TARGET; default duckdb:///replica.duckdb].",
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
    """--source, --target, --tables, --name, --mapping, --jobs, --batch-rows, --batch-seconds and
    --slot-timeout, in that order (migrate, mirror): the keyword arguments of
    :func:`pipeline_options`."""
    for opt in reversed(
        [
            source_option(required=False),
            target_option,
            tables_option,
            name_option,
            mapping_option,
            *_tuning_options(),
        ]
    ):
        f = opt(f)
    return f


def jobs_option(f):
    """--jobs: parallel copy workers."""
    return click.option(
        "--jobs", default=2, show_default=True, type=POSITIVE_INT, help="Parallel copy workers."
    )(f)


def _tuning_options() -> list:
    """Fresh --jobs, --batch-rows, --batch-seconds and --slot-timeout decorators, in that order."""
    return [
        jobs_option,
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
        *_stream_options(),
    ]


def _stream_options() -> list:
    """--stream-in-progress/--no-stream-in-progress, --spool-dir, --spool-limit."""
    return [
        click.option(
            "--stream-in-progress/--no-stream-in-progress",
            default=True,
            show_default=True,
            help="Receive large transactions while they run (pgoutput protocol 2) and spool "
            "them until they commit, instead of all at once at their commit.",
        ),
        click.option(
            "--spool-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Where in-progress transactions wait for their commit [default: "
            "<temp dir>/replicator-<name>-spool, or env REPLICATOR_SPOOL_DIR].",
        ),
        click.option(
            "--spool-limit",
            type=POSITIVE_INT,
            default=50 << 30,
            show_default=True,
            help="Bytes the spool may hold at most; past it the stream stops, naming the transaction.",
        ),
    ]


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
                say("problem", p, e.exit_code)
            for h in e.hints:
                say("hint", h, e.exit_code)
            sys.exit(e.exit_code)
        except ReplicatorError as e:
            side = (
                "source" if isinstance(e, SourceError) else "target" if isinstance(e, TargetError) else None
            )
            say("error", f"{e}{_timeout_hint(e, side, kw)}", e.exit_code)
            sys.exit(e.exit_code)
        except Exception as e:  # a driver error that no phase translated: one line, no secrets
            side = _side_of(e)
            if side is None:
                raise
            orig = getattr(e, "orig", None) or e
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            say("error", f"{side} database: {first}{_timeout_hint(orig, side, kw)}", 1)
            sys.exit(1)

    return wrapper


def say(kind: str, message: object, exit_code: int) -> None:
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


def split_tables(value):
    """``--tables`` as a list of stripped, non-empty names; None when not given (all tables)."""
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


def pipeline_options(
    source,
    target,
    tables,
    name,
    mapping,
    jobs,
    batch_rows,
    batch_seconds,
    slot_timeout,
    stream_in_progress=True,
    spool_dir=None,
    spool_limit=50 << 30,
    keep_slot=False,
):
    """The Options of a migrate or mirror run from :func:`run_options`' values, settings resolved
    by :func:`resolve_settings` (so ConfigError or UsageError before anything connects)."""
    from .pipeline import Options

    source, target, name, cfg = resolve_settings(source, target, name, mapping)
    return Options(
        source=source,
        target=target,
        tables=split_tables(tables),
        name=name,
        jobs=jobs,
        keep_slot=keep_slot,
        batch_rows=batch_rows,
        batch_seconds=batch_seconds,
        mapping=cfg,
        slot_timeout=slot_timeout,
        stream_in_progress=stream_in_progress,
        spool_dir=spool_dir,
        spool_limit=spool_limit,
    )
