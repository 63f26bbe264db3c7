"""`replicator migrate` with and without a terminal: the live display only on a tty (run under
`script`), no control characters when output is captured, none with --no-progress."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import psycopg
import pytest

from tests.integration.test_migrate import replicator

CONTROL = ("\x1b", "\r")


@pytest.fixture
def small_db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        c.execute("ANALYZE t")
    return source_db


def on_terminal(*args: str) -> str:
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal; returns what the terminal got."""
    if not shutil.which("script"):
        pytest.skip("script(1) (util-linux) is not installed")
    cmd = shlex.join([sys.executable, "-m", "replicator", *args])
    cp = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
    )
    assert cp.returncode == 0, cp.stdout[-3000:]
    return cp.stdout


def test_captured_output_has_no_progress_noise(small_db, sqlite_target_url):
    cp = replicator("migrate", "--source", small_db, "--target", sqlite_target_url)
    assert "migrated 1 table(s): 20000 rows copied" in cp.stdout
    assert not any(c in cp.stdout + cp.stderr for c in CONTROL)
    assert "tables:" not in cp.stderr  # the live display's lines are not logged as such
    assert "copied public.t → t: 20000 rows" in cp.stderr  # the plain log line


def test_terminal_gets_the_live_display(small_db, sqlite_target_url):
    out = on_terminal("migrate", "--source", small_db, "--target", sqlite_target_url)
    assert "\x1b[" in out  # drawn and redrawn
    assert "tables: 1 " in out and "(of 1); 20,000 rows copied" in out  # the final frame stays
    assert "applied" in out and "lag" in out
    assert "migrated 1 table(s)" in out


def test_no_progress_on_a_terminal(small_db, sqlite_target_url):
    out = on_terminal("migrate", "--no-progress", "--source", small_db, "--target", sqlite_target_url)
    assert "\x1b" not in out and "tables:" not in out
    assert "migrated 1 table(s)" in out
