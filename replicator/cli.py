"""Command line: check, migrate, mirror, status.

Domain errors become exit codes and one-line messages in the command line and only there
(:func:`replicator.cli_common.handle_errors`); nothing printed contains a password (messages pass
through :func:`replicator.dsn.redact`).

This module holds the group (global options, logging, the connect timeout) and adds the commands:
``cli_run`` (migrate, mirror) and ``cli_ops`` (check, init, demo, drop, resync, status, verify);
the options, settings resolution and error handling they share live in ``cli_common``.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from .cli_common import POSITIVE, _side_of  # noqa: F401  (_side_of: reached as cli._side_of)
from .cli_ops import check, demo, drop, init, resync, status, verify
from .cli_run import copy, migrate, mirror
from .dsn import CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, redact, remember_secrets

log = logging.getLogger("replicator")


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


for _command in (check, init, demo, copy, migrate, mirror, drop, resync, status, verify):
    main.add_command(_command)


def run() -> None:
    """The process entry point (console script, ``python -m replicator``): the CLI, then a quick
    exit.  Everything the command wrote is committed and closed by then (targets close their
    connections at the end of each transaction); what is skipped is the interpreter's teardown
    of every imported module (~0.2 s of the fixed cost of a short ``migrate``).  A command that
    registered exit handlers (``demo``: its throwaway server) exits the normal way."""
    try:
        main()
        code: str | int | None = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, (str, int)) or e.code is None else 1
    if "replicator.devserver" in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
