"""Input errors at the command line (issue 9, "Trust"): every connection gives up after the connect
timeout; no password reaches any output, whatever fails and however it is logged; bad options and
URLs are refused (exit 2) before any slot, publication, table or file exists; looking (status,
check) never creates a target file; hints and messages are true.

Every subprocess runs through :func:`run`, which kills it (its whole process group) when the test
ends, pass or fail; every wait has a deadline."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass

import psycopg
import pytest

from tests.integration.test_migrate import slots_and_publications

CANARY = "S3cr3tCanary"


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


def run(*args: str, env: dict | None = None, timeout: float = 90) -> Result:
    """``python -m replicator *args``; killed (process group) if it outlives ``timeout`` or the test."""
    p = subprocess.Popen([sys.executable, "-m", "replicator", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                         start_new_session=True)
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=10)
    return Result(p.returncode, out, err, time.monotonic() - t0)


def with_password(url: str, password: str) -> str:
    """``scheme://user@…`` → ``scheme://user:password@…`` (written as given, not encoded)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def other_db(url: str, db: str) -> str:
    base, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{base}/{db}" + (f"?{query}" if query else "")


@pytest.fixture
def silent_port():
    """A TCP port on 127.0.0.1 that completes handshakes and then never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def keyed_db(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    return source_db


def nothing_created(dsn: str, tmp_path) -> None:
    assert slots_and_publications(dsn) == ([], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


# --------------------------------------------------------------------------- A. connect timeout
def test_a_source_that_never_answers_fails_within_the_connect_timeout(silent_port):
    src = f"postgresql://u:{CANARY}@127.0.0.1:{silent_port}/db"
    for args, env in ((["--connect-timeout", "2", "check", "--source", src], None),
                      (["check", "--source", src], {"REPLICATOR_CONNECT_TIMEOUT": "2"})):
        r = run(*args, env=env, timeout=60)
        assert r.code == 1 and r.seconds < 15, (r.code, r.seconds, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.err
        assert f"127.0.0.1:{silent_port}" in lines[0] and "--connect-timeout" in lines[0], lines[0]
        assert CANARY not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "postgresql"])
def test_a_target_that_never_answers_fails_within_the_connect_timeout(keyed_db, silent_port, scheme):
    target = f"{scheme}://u:{CANARY}@127.0.0.1:{silent_port}/db"
    r = run("--connect-timeout", "2", "check", "--source", keyed_db, "--target", target, timeout=60)
    assert r.code == 1 and r.seconds < 15, (r.code, r.seconds, r.err)
    assert "target" in r.err and f"127.0.0.1:{silent_port}" in r.err and "--connect-timeout" in r.err, r.err
    assert CANARY not in r.text and "Traceback" not in r.text
    assert slots_and_publications(keyed_db) == ([], [])
