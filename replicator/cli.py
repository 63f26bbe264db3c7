"""Command line: the ``replicator`` group and its commands.

Domain errors become exit codes and one-line messages in the command line and only there
(:func:`replicator.cli_common.handle_errors`); nothing printed contains a password (messages pass
through :func:`replicator.dsn.redact`).

This module holds the group (global options, logging, the connect timeout), the ``completion``
command, and adds the commands of ``cli_run`` (copy, migrate, mirror) and ``cli_ops`` (check, init,
demo, drop, resync, status, verify); the options, settings resolution and error handling they
share live in ``cli_common``.

Contracts: the global options work before the command and after it (:func:`add_global_options`);
every command's ``--help`` ends with examples that parse (tests/unit/test_cli_help.py); the
program is ``replicator`` in usage lines and shell completion, however it was started
(:func:`run`).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys

import click

from .cli_common import POSITIVE, Command, Group, _side_of, examples  # noqa: F401  (_side_of: cli._side_of)
from .cli_ops import check, demo, drop, init, resync, status, verify
from .cli_run import copy, migrate, mirror
from .dsn import CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, redact, remember_secrets

log = logging.getLogger("replicator")


#: click's shell completion protocol: the variable the completion scripts set (prog name "replicator")
COMPLETE_VAR = "_REPLICATOR_COMPLETE"
#: the cycle collector's generation-0 threshold in a replicator process (Python's default: 700).
#: Copying and applying allocate millions of short-lived tuples that reference counting frees;
#: with the default, collections that find nothing took about 30% of a mirror's CPU (a 2M-row
#: streamed transaction into SQLite: 36.5 -> 24.3 CPU-s, bench/bench_stream.py). Cyclic garbage
#: is still collected, every 100,000 allocations instead of every 700.
GC_THRESHOLD = (100_000, 50, 100)
SHELLS = ("bash", "zsh", "fish")
#: the group's -v count, which a subcommand's -v adds to
_VERBOSE = "replicator.verbose"
VERBOSE_HELP = "More log output (-v info, -vv debug); before or after the command, counts add up."
LOG_FORMAT_HELP = "Log lines on stderr: text, or one JSON object per line [env REPLICATOR_LOG_FORMAT]."
TIMEOUT_HELP = f"Seconds every connection attempt (source and target) may take [env {CONNECT_TIMEOUT_ENV}]."


@click.group(
    cls=Group,
    epilog=examples(
        """
# check first: settings, privileges, the tables it would copy and how
replicator check --source postgresql://app@db.internal/shop
""",
        """
# copy a database into DuckDB, catch up with the changes made meanwhile
replicator migrate --source postgresql://app@db.internal/shop \\
  --target duckdb:///shop.duckdb
""",
        """
# mirror it into MySQL/MariaDB, change by change, until SIGTERM (Ctrl-C)
replicator mirror --source postgresql://app@db.internal/shop \\
  --target mysql+pymysql://app@mysql.internal/shop
""",
    ),
)
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="REPLICATOR_LOG_FORMAT",
    help=LOG_FORMAT_HELP,
)
@click.option(
    "--connect-timeout",
    type=POSITIVE,
    metavar="SECONDS",
    default=DEFAULT_CONNECT_TIMEOUT,
    show_default=True,
    envvar=CONNECT_TIMEOUT_ENV,
    help=TIMEOUT_HELP,
)
@click.version_option(package_name="replicator")
@click.pass_context
def main(ctx, verbose, log_format, connect_timeout):
    """Replicate PostgreSQL tables into DuckDB, SQLite, MySQL/MariaDB or PostgreSQL.

    -v, --log-format and --connect-timeout may also follow the command; 'replicator COMMAND
    --help' shows its options and examples.
    """
    from .logs import setup

    remember_secrets(*sys.argv[1:], os.environ.get("REPLICATOR_SOURCE"), os.environ.get("REPLICATOR_TARGET"))
    hide_secrets_in_process_title()
    ctx.meta[_VERBOSE] = verbose
    setup(verbose, log_format)
    os.environ[CONNECT_TIMEOUT_ENV] = repr(connect_timeout)  # read by dsn.connect_timeout()


def add_global_options(command: click.Command) -> click.Command:
    """``command`` also accepts -v/--verbose, --log-format and --connect-timeout after its name.

    Click parses them as the command's own options (so its usage errors name the command); the
    callback takes them out of its arguments and, when any was given, applies the merge: -v counts
    add to the group's, a --log-format or --connect-timeout given here wins over the group's value
    (itself the command line before the command, the environment variable, or the default)."""
    command.params += [
        click.Option(["-v", "--verbose", "sub_verbose"], count=True, help=VERBOSE_HELP),
        click.Option(
            ["--log-format", "sub_log_format"], type=click.Choice(["text", "json"]), help=LOG_FORMAT_HELP
        ),
        click.Option(
            ["--connect-timeout", "sub_connect_timeout"], type=POSITIVE, metavar="SECONDS", help=TIMEOUT_HELP
        ),
    ]
    inner = command.callback
    assert inner is not None

    @functools.wraps(inner)
    def callback(*args, sub_verbose, sub_log_format, sub_connect_timeout, **kwargs):
        from .logs import current_format, setup

        if sub_verbose or sub_log_format:
            verbose = click.get_current_context().meta.get(_VERBOSE, 0) + sub_verbose
            setup(verbose, sub_log_format or current_format())
        if sub_connect_timeout:
            os.environ[CONNECT_TIMEOUT_ENV] = repr(sub_connect_timeout)
        return inner(*args, **kwargs)

    command.callback = callback
    return command


def hide_secrets_in_process_title() -> None:
    """ps and /proc/PID/cmdline show the command line: rewrite it without passwords."""
    import setproctitle

    title = " ".join(sys.argv)
    if redact(title) != title:
        setproctitle.setproctitle("replicator " + redact(" ".join(sys.argv[1:])))


@click.command(
    cls=Command,
    short_help="Print the shell completion script (bash, zsh, fish).",
    epilog=examples(
        """
# bash: completion in this shell; put the line in ~/.bashrc to keep it
eval "$(replicator completion bash)"
""",
        """
# zsh (in ~/.zshrc)
eval "$(replicator completion zsh)"
""",
        """
# fish
replicator completion fish > ~/.config/fish/completions/replicator.fish
""",
    ),
)
@click.argument("shell", type=click.Choice(SHELLS), required=False)
def completion(shell):
    """Print the shell completion script for SHELL (default: the shell $SHELL names, else bash).

    The script asks this program for completions of commands, options and choices through
    click's protocol (environment variable _REPLICATOR_COMPLETE).
    """
    from click.shell_completion import get_completion_class

    if shell is None:
        login = os.path.basename(os.environ.get("SHELL", ""))
        shell = login if login in SHELLS else "bash"
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one of click's
    click.echo(cls(main, {}, "replicator", COMPLETE_VAR).source())


for _command in (check, init, demo, copy, migrate, mirror, drop, resync, status, verify, completion):
    main.add_command(add_global_options(_command))


def run() -> None:
    """The process entry point (console script, ``python -m replicator``): the CLI, then a quick
    exit.  Everything the command wrote is committed and closed by then (targets close their
    connections at the end of each transaction); what is skipped is the interpreter's teardown
    of every imported module (~0.2 s of the fixed cost of a short ``migrate``).  A command that
    registered exit handlers (``demo``: its throwaway server) exits the normal way.  The program
    is called ``replicator`` (usage lines, the completion variable) either way it is started.
    The cycle collector runs less often (:data:`GC_THRESHOLD`)."""
    gc.set_threshold(*GC_THRESHOLD)
    try:
        main(prog_name="replicator", complete_var=COMPLETE_VAR)
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
