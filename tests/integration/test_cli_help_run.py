"""The global options after the command, and shell completion, in a real ``python -m replicator``
process (the entry point :func:`replicator.cli.run`, as the console script runs it).

Contracts: ``-vv`` after the command raises the log level of a real run as it does before it, and
``--log-format json`` after it turns the log lines into JSON (``verify`` against a ``copy``); the process answers click's
completion protocol under ``_REPLICATOR_COMPLETE`` and names itself ``replicator`` in usage
lines, however it was started.
"""

from __future__ import annotations

import json

import psycopg

from tests import procs


def _debug_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " DEBUG replicator." in line]


def test_verbose_and_log_format_after_the_command_apply_to_a_real_run(source_db, tmp_path):
    """``verify`` logs each table's scan at DEBUG: shown with -vv before or after the command."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders VALUES (1, 2)")
    target = f"sqlite:///{tmp_path}/shop.db"
    procs.run("copy", "--source", source_db, "--target", target, "--no-progress", timeout=120, check=True)
    verify = ("verify", "--source", source_db, "--target", target)

    plain = procs.run(*verify, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert not _debug_lines(plain.stderr), plain.stderr

    after = procs.run(*verify, "-vv", timeout=120)
    before = procs.run("-vv", *verify, timeout=120)
    for cp in (after, before):
        assert cp.returncode == 0, cp.stderr
        assert "public.orders: OK" in cp.stdout
        assert any("public.orders: scanned" in line for line in _debug_lines(cp.stderr)), cp.stderr

    as_json = procs.run(*verify, "-vv", "--log-format", "json", timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    docs = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert any(d["level"] == "DEBUG" and d["logger"].startswith("replicator.") for d in docs), docs


def test_completion_protocol_and_program_name_of_the_real_process():
    env = {"_REPLICATOR_COMPLETE": "bash_complete", "COMP_WORDS": "replicator mi", "COMP_CWORD": "1"}
    cp = procs.run("completion", env=env, timeout=60)  # the arguments are ignored in this mode
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["plain,migrate", "plain,mirror"]

    cp = procs.run("completion", "bash", timeout=60)
    assert cp.returncode == 0 and "_REPLICATOR_COMPLETE=bash_complete" in cp.stdout

    cp = procs.run("migrate", "--jobs", "two", timeout=60)
    assert cp.returncode == 2
    assert "Usage: replicator migrate" in cp.stderr and "'--jobs'" in cp.stderr
