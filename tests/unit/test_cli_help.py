"""Help that teaches, checked through the real click CLI without servers.

Contracts:

* every command's ``--help`` (and the group's) ends with an "Examples:" section of two or three
  examples, and every ``replicator …`` line in it parses with the real CLI (group options, the
  command, its options, their types, required options), its URLs pass the checks ``migrate``
  makes before connecting, and none holds a password;
* the group's command list shows each summary whole, on one line, never cut off with "...";
* every URL option names what it accepts;
* -v/--verbose, --log-format and --connect-timeout work before and after the command, with their
  environment variables as before (the command line after the command wins);
* ``replicator completion`` prints click's scripts, and click's completion protocol completes
  commands and options;
* a hint that says where to list the tables names a command that exists.
"""

from __future__ import annotations

import logging
import os
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from replicator import cli, logs
from replicator.cli import main
from replicator.dsn import CONNECT_TIMEOUT_ENV, parse_source
from replicator.errors import ConfigError
from replicator.target import check_url

COMMANDS = sorted(main.commands)
ENV = (
    "REPLICATOR_SOURCE",
    "REPLICATOR_TARGET",
    "REPLICATOR_MAPPING",
    "REPLICATOR_LOG_FORMAT",
    CONNECT_TIMEOUT_ENV,
)
SHELL_OPERATORS = {">", ">>", "|", ";", "&&", "||"}


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """No REPLICATOR_* variable from outside; the connect timeout variable (which the group sets)
    and the root logger (which it configures) are restored afterwards."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logs.setup(0, "text")  # the default format again (the module keeps the last one)
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, env: dict | None = None) -> click.testing.Result:
    """``replicator *args`` in-process, as :func:`replicator.cli.run` calls it, 80 columns wide."""
    return CliRunner().invoke(
        main, list(args), env=env, prog_name="replicator", complete_var=cli.COMPLETE_VAR, terminal_width=80
    )


def help_text(*command: str) -> str:
    r = invoke(*command, "--help")
    assert r.exit_code == 0, r.output
    return r.output


def parse(argv: list[str]) -> click.Context:
    """The subcommand's context for ``replicator argv``: the group's options and the command's
    parsed and converted as the real CLI does (resilient parsing off), nothing invoked."""
    ctx = main.make_context("replicator", list(argv))
    name = argv[len(argv) - len(ctx.args) - 1]  # the group stops at the command's name
    cmd_name, cmd, rest = main.resolve_command(ctx, [name, *ctx.args])
    assert cmd is not None and cmd_name is not None
    return cmd.make_context(cmd_name, rest, parent=ctx)


def example_lines(help: str) -> list[str]:
    """The ``replicator …`` command lines of the Examples section, continuations joined; a line
    like ``eval "$(replicator completion bash)"`` gives its inner command."""
    assert "\nExamples:\n" in help, help
    block = re.sub(r"\\\n\s*", "", help.split("\nExamples:\n", 1)[1])
    lines = []
    for line in block.splitlines():
        line = line.strip()
        inner = re.search(r"\$\((replicator [^)]*)\)", line)
        line = inner[1] if inner else line
        if line.startswith("replicator "):
            lines.append(line)
    return lines


def argv_of(line: str) -> list[str]:
    """The arguments of an example line (after ``replicator``, up to a shell redirection)."""
    words = shlex.split(line, comments=True)
    assert words[0] == "replicator"
    cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
    return words[1:cut]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_ends_with_two_or_three_examples(command):
    help = help_text(*([command] if command else []))
    sections = re.findall(r"^(\w+):$", help, re.M)
    assert sections[-1] == "Examples", sections
    examples = help.split("\nExamples:\n", 1)[1]
    assert 2 <= len(re.findall(r"^\s+# ", examples, re.M)) <= 3, examples
    assert all(len(line) <= 80 for line in help.splitlines()), help


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_example_parses_with_the_real_cli(command):
    lines = example_lines(help_text(*([command] if command else [])))
    assert lines
    for line in lines:
        ctx = parse(argv_of(line))
        assert ctx.command.name in COMMANDS
        params = ctx.params
        if params.get("source"):
            parse_source(params["source"])
        for url in (params.get("target"), params.get("target_url")):
            if url:
                check_url(url)
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@|password", line), f"a password in {line!r}"


def test_a_wrong_example_would_fail():
    """The parse above is not vacuous: an unknown option, a bad value, a missing required option."""
    with pytest.raises(click.NoSuchOption):
        parse(["copy", "--source", "postgresql://app@db.internal/shop", "--taget", "duckdb:///x.duckdb"])
    with pytest.raises(click.BadParameter):
        parse(["migrate", "--jobs", "0"])
    with pytest.raises(click.MissingParameter):
        parse(["init"])
    with pytest.raises(click.UsageError):
        parse(["migrat"])


def test_command_list_is_not_cut_off():
    help = help_text()
    listing = help.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [line.split()[0] for line in listing]
    assert names == COMMANDS, listing  # one line each: no summary wraps
    for line in listing:
        assert not line.rstrip().endswith("..."), line
    for name in COMMANDS:
        assert main.commands[name].short_help, f"{name} has no short_help"


def _option(command: str, name: str) -> click.Option:
    return next(p for p in main.commands[command].params if name in p.opts and isinstance(p, click.Option))


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "completion"])
def test_url_options_name_what_they_accept(command):
    opts = {o for p in main.commands[command].params for o in p.opts}
    if "--target" in opts:
        text = _option(command, "--target").help or ""
        for scheme in ("duckdb:///", "sqlite:///", "mysql+pymysql://", "postgresql://", "SQLAlchemy URL"):
            assert scheme in text, f"{command} --target: {scheme} not named in {text!r}"
        assert "MySQL/MariaDB" in text
    if "--source" in opts:
        text = _option(command, "--source").help or ""
        assert "libpq URL" in text and "key=value DSN" in text, text


MISSING = "duckdb:///missing-target.duckdb"  # status on a missing file: exit 1 without a server


@pytest.mark.parametrize(
    "args, level",
    [
        (["status", "--target", MISSING], logging.INFO),
        (["status", "--target", MISSING, "-vv"], logging.DEBUG),
        (["-vv", "status", "--target", MISSING], logging.DEBUG),
        (["-v", "status", "--target", MISSING, "-v"], logging.DEBUG),
        (["status", "--verbose", "--verbose", "--target", MISSING], logging.DEBUG),
    ],
)
def test_verbose_before_or_after_the_command(args, level, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(*args)
    assert r.exit_code == 1, r.output
    assert logging.getLogger().level == level


@pytest.mark.parametrize(
    "args, env, json_line",
    [
        (["--log-format", "json", "status", "--target", MISSING], {}, True),
        (["status", "--target", MISSING, "--log-format", "json"], {}, True),
        (["status", "--target", MISSING], {"REPLICATOR_LOG_FORMAT": "json"}, True),
        (["status", "--target", MISSING, "--log-format", "text"], {"REPLICATOR_LOG_FORMAT": "json"}, False),
        (["--log-format", "json", "status", "--log-format", "text", "--target", MISSING], {}, False),
    ],
)
def test_log_format_before_or_after_the_command(args, env, json_line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(*args, env=env)
    assert r.exit_code == 1
    last = r.output.strip().splitlines()[-1]
    assert last.startswith('{"ts"') if json_line else last.startswith("error: target file"), r.output


@pytest.mark.parametrize(
    "args, env, seconds",
    [
        (["status", "--target", MISSING], {}, 10.0),
        (["--connect-timeout", "4", "status", "--target", MISSING], {}, 4.0),
        (["status", "--target", MISSING, "--connect-timeout", "3"], {}, 3.0),
        (["status", "--target", MISSING], {CONNECT_TIMEOUT_ENV: "7"}, 7.0),
        (["status", "--target", MISSING, "--connect-timeout", "3"], {CONNECT_TIMEOUT_ENV: "7"}, 3.0),
    ],
)
def test_connect_timeout_before_or_after_the_command(args, env, seconds, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr("replicator.status.collect", lambda *a: seen.append(os.environ[CONNECT_TIMEOUT_ENV]))
    r = invoke(*args, env=env)
    assert seen == [repr(seconds)], r.output


def test_a_bad_global_option_after_the_command_is_that_commands_usage_error():
    r = invoke("status", "--log-format", "xml")
    assert r.exit_code == 2
    assert "Usage: replicator status" in r.output and "Invalid value for '--log-format'" in r.output
    r = invoke("migrate", "--connect-timeout", "0")
    assert r.exit_code == 2 and "'--connect-timeout'" in r.output and "above 0" in r.output


def test_completion_prints_the_script():
    r = invoke("completion", "bash")
    assert r.exit_code == 0 and "_REPLICATOR_COMPLETE=bash_complete" in r.output
    for shell in ("zsh", "fish"):
        r = invoke("completion", shell)
        assert r.exit_code == 0 and f"{shell}_complete" in r.output, r.output


def _complete(words: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (click's protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_REPLICATOR_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    r = invoke(env=env)
    assert r.exit_code == 0, r.output
    return [line.split(",", 1)[1] for line in r.output.splitlines()]


def test_completion_offers_commands_and_options():
    assert _complete("replicator mi") == ["migrate", "mirror"]
    assert "--log-format" in _complete("replicator migrate --log")
    assert _complete("replicator migrate --log-format ") == ["text", "json"]


def test_list_the_tables_hints_name_a_real_command():
    """The hints of an unknown table name ``replicator check --source …``, which parses."""
    from replicator.config import parse as parse_mapping
    from replicator.mapping import resolve
    from replicator.source.catalog import select_tables

    messages = []
    for fail in (
        lambda: select_tables([(1, "public", "orders", "r")], ["public.nope"]),
        lambda: resolve(parse_mapping("tables:\n  - source: zzz.qqq\n", "m.yaml"), []),
    ):
        with pytest.raises(ConfigError) as e:
            fail()
        messages.append(str(e.value))
    for message in messages:
        (command,) = re.findall(r"'(replicator [^']+)'", message)
        assert command.startswith("replicator check --source"), message
        parse(argv_of(command.replace("…", "postgresql://app@db.internal/shop")))
