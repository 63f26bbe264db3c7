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
    p = subprocess.Popen(
        [sys.executable, "-m", "replicator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
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
    for args, env in (
        (["--connect-timeout", "2", "check", "--source", src], None),
        (["check", "--source", src], {"REPLICATOR_CONNECT_TIMEOUT": "2"}),
    ):
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


def test_the_connect_timeout_bounds_connecting_only(mysql_target_url, pg_target_url, monkeypatch):
    """MySQL's greeting is read under the timeout, which is lifted once connected: a statement
    that takes longer than it still finishes (on both server targets)."""
    import sqlalchemy as sa

    from replicator.target import open_target

    monkeypatch.setenv("REPLICATOR_CONNECT_TIMEOUT", "2")
    for url, sleep in ((mysql_target_url, "SELECT SLEEP(3)"), (pg_target_url, "SELECT pg_sleep(3)")):
        t = open_target(url)
        try:
            with t.connect() as c:
                c.execute(sa.text(sleep))
        finally:
            t.dispose()


# --------------------------------------------------------------------------- B. secrets
@pytest.fixture(scope="module")
def scram_pg():
    """A private PostgreSQL where role ``app`` must give password ``right`` (scram-sha-256)."""
    from tests.servers import PostgresServer

    if os.environ.get("REPLICATOR_TEST_PG_DSN"):
        pytest.skip("needs a private server to set pg_hba.conf")
    srv = PostgresServer(name="scram", start=False)
    try:
        hba = srv.datadir / "pg_hba.conf"
        hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        srv.start()
        srv.execute("CREATE ROLE app LOGIN REPLICATION PASSWORD 'right'")
        yield srv
    finally:
        srv.cleanup()


def _sources(source_db, scram_pg) -> dict[str, str]:
    """Source DSNs, each carrying the canary password, each failing in its own way."""
    good = with_password(source_db, CANARY)
    return {
        "bad URL syntax": with_password(source_db, f"{CANARY}%zz"),
        "unencoded @": with_password(source_db, f"{CANARY}@x"),
        "keyword DSN, unterminated": f"host=127.0.0.1 password='{CANARY} dbname=x",
        "bad host": f"postgresql://postgres:{CANARY}@no-such-host.invalid/db",
        "bad database": other_db(good, "no_such_db"),
        "auth failure": f"postgresql://app:{CANARY}@127.0.0.1:{scram_pg.port}/postgres",
        "TLS refused": f"{good}?sslmode=require",
    }


def _targets(sqlite_url, mysql_url, pg_url) -> dict[str, str]:
    return {
        "mysql wrong password": with_password(mysql_url, CANARY),
        "mysql password with %": with_password(mysql_url, f"{CANARY}%zz"),
        "mysql password with @": with_password(mysql_url, f"{CANARY}@x"),
        "postgresql bad database": other_db(with_password(pg_url, CANARY), "no_such_db"),
        "postgresql password with /": other_db(with_password(pg_url, f"{CANARY}/x"), "no_such_db"),
    }


LOG_MODES = ([], ["-vv"], ["--log-format", "json"], ["-vv", "--log-format", "json"])


def _assert_clean(r: Result, what: str, json_mode: bool) -> None:
    assert r.code in (1, 2), (what, r.code, r.err[-2000:])
    assert CANARY not in r.text, (what, r.text[-3000:])
    assert "Traceback" not in r.text, (what, r.err[-3000:])
    last = r.err.strip().splitlines()[-1]
    if json_mode:
        doc = json.loads(last)
        assert doc["kind"] in ("error", "problem") and doc["exit_code"] == r.code, last
    else:
        assert last.startswith(("error:", "problem:")), (what, last)


def test_no_password_in_any_output(
    keyed_db, scram_pg, sqlite_target_url, mysql_target_url, pg_target_url, tmp_path
):
    sqlite3.connect(tmp_path / "t.sqlite").close()  # an existing target: status reads the source
    runs = []
    for what, src in _sources(keyed_db, scram_pg).items():
        for cmd in (["check"], ["migrate"], ["status", "--json"], ["drop"]):
            runs.append((what, [*cmd, "--source", src, "--target", sqlite_target_url]))
    for what, tgt in _targets(sqlite_target_url, mysql_target_url, pg_target_url).items():
        for cmd in (["check"], ["migrate"], ["status"], ["drop"]):
            runs.append((what, [*cmd, "--source", keyed_db, "--target", tgt]))
    for i, (what, args) in enumerate(runs):
        mode = LOG_MODES[i % len(LOG_MODES)]
        r = run("--connect-timeout", "5", *mode, *args, timeout=60)
        _assert_clean(r, f"{what}: {args[0]} {mode}", "json" in mode)
    assert slots_and_publications(keyed_db) == ([], [])


# --------------------------------------------------------------------------- C. refused up front
OPTIONS = {
    "--batch-rows": "migrate",
    "--batch-seconds": "mirror",
    "--slot-timeout": "migrate",
    "--jobs": "migrate",
    "--chunk-rows": "verify",
    "--wait": "verify",
    "--connect-timeout": None,
}


def test_numeric_options_must_be_positive_and_finite(keyed_db, tmp_path):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    for option, command in OPTIONS.items():
        for value in ("nan", "0", "-1", "inf"):
            args = [option, value, "migrate"] if command is None else [command, option, value]
            r = run(*args, "--source", keyed_db, "--target", target, timeout=60)
            assert r.code == 2 and f"Invalid value for '{option}'" in r.err, (option, value, r.err)
    nothing_created(keyed_db, tmp_path)


def test_urls_that_cannot_work_are_refused_before_anything_exists(keyed_db, mysql_target_url, tmp_path):
    no_db = mysql_target_url.split("?")[0].rsplit("/", 1)[0]
    for command in ("check", "migrate", "drop", "status", "verify"):
        r = run(command, "--source", keyed_db, "--target", no_db)
        assert r.code == 2 and "put the database name in the URL" in r.err, (command, r.err)
        assert "Traceback" not in r.err
    for command in ("check", "migrate", "mirror"):
        r = run(command, "--source", keyed_db, "--target", "sqlite://")
        assert r.code == 2 and "in-memory" in r.err and "file path" in r.err, (command, r.err)
    r = run("migrate", "--source", keyed_db, "--target", f"nosuchdb://u:{CANARY}@h/x")
    assert r.code == 2 and CANARY not in r.err, r.err
    for scheme in ("duckdb", "sqlite", "mysql", "postgresql", "any installed SQLAlchemy dialect"):
        assert scheme in r.err, r.err
    for source in (f"mysql://root:{CANARY}@127.0.0.1/db", f"https://u:{CANARY}@example.com/x"):
        for command in ("check", "migrate"):
            r = run(command, "--source", source, "--target", f"sqlite:///{tmp_path / 't.sqlite'}")
            assert r.code == 2 and "must be PostgreSQL" in r.err and CANARY not in r.text, r.err
    nothing_created(keyed_db, tmp_path)


# --------------------------------------------------------------------------- D. looking creates nothing
@pytest.mark.parametrize("scheme", ["duckdb", "sqlite"])
def test_status_and_check_never_create_a_target_file(keyed_db, tmp_path, scheme):
    path = tmp_path / f"missing.{scheme}"
    target = f"{scheme}:///{path}"
    r = run("status", "--source", keyed_db, "--target", target)
    assert r.code == 1 and f"target file {path} does not exist" in r.err, r.err
    r = run("check", "--source", keyed_db, "--target", target)
    assert r.code == 0 and "ok" in r.out, r.text
    r = run("verify", "--source", keyed_db, "--target", target)
    assert r.code != 0 and "does not exist" in r.err, r.err
    assert not path.exists()
    nothing_created(keyed_db, tmp_path)


def test_drop_never_creates_a_target_file(keyed_db, tmp_path):
    path = tmp_path / "missing.duckdb"
    r = run("drop", "--source", keyed_db, "--target", f"duckdb:///{path}")
    assert not path.exists(), r.text


def test_status_of_a_target_without_state_says_so_and_exits_1(keyed_db, sqlite_target_url, tmp_path):
    sqlite3.connect(tmp_path / "t.sqlite").close()
    r = run("status", "--source", keyed_db, "--target", sqlite_target_url)
    assert r.code == 1 and "no state for stream replicator on this target" in r.out, r.text
    r = run("status", "--target", sqlite_target_url, "--json")
    assert r.code == 1 and json.loads(r.out)["target_state"] == "none", r.text


# --------------------------------------------------------------------------- E. true hints and messages
def test_an_unknown_table_points_at_a_command_that_lists_tables(keyed_db, tmp_path):
    r = run(
        "migrate",
        "--source",
        keyed_db,
        "--tables",
        "public.missing",
        "--target",
        f"sqlite:///{tmp_path / 't.sqlite'}",
    )
    assert r.code == 2 and "'replicator check --source …' without --tables" in r.err, r.err
    listing = run("check", "--source", keyed_db, "--target", f"sqlite:///{tmp_path / 't.sqlite'}")
    assert listing.code == 0 and "public.t " in listing.out, listing.text
    nothing_created(keyed_db, tmp_path)


def test_json_log_format_makes_the_final_lines_json(keyed_db, tmp_path):
    with psycopg.connect(keyed_db, autocommit=True) as c:
        c.execute("CREATE TABLE nokey (v text)")
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    for args, kind, code in (
        (["migrate", "--source", keyed_db, "--target", target], "problem", 1),
        (["migrate", "--source", keyed_db, "--tables", "nope"], "error", 2),
    ):
        r = run("--log-format", "json", *args)
        docs = [json.loads(line) for line in r.err.splitlines()]
        hints = [d for d in docs if d.get("kind") == "hint"]  # ways around a problem come last
        last = docs[-1 - len(hints)] if docs else {}
        assert docs[len(docs) - len(hints) :] == hints and (kind == "problem") == bool(hints), r.err
        assert r.code == code and last["kind"] == kind and last["exit_code"] == code, r.err
        assert ("public.nokey" if kind == "problem" else "public.nope") in last["message"], r.err
    nothing_created(keyed_db, tmp_path)


def test_check_reports_target_name_collisions_like_migrate(keyed_db, tmp_path):
    with psycopg.connect(keyed_db, autocommit=True) as c:
        c.execute('CREATE TABLE cased (id int PRIMARY KEY, "A" int, a int); CREATE TABLE nokey (v text)')
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    r = run("check", "--source", keyed_db, "--target", target)
    problems = [ln for ln in r.out.splitlines() if ln.startswith("problem:")]
    assert r.code == 1 and any("public.cased" in p and "'A' and 'a'" in p for p in problems), r.out
    assert any("public.nokey" in p for p in problems), r.out
    m = run("migrate", "--source", keyed_db, "--target", target, "--tables", "t,cased")
    assert m.code != 0 and "cased" in m.err, m.err
    assert not (tmp_path / "t.sqlite").exists()
    nothing_created(keyed_db, tmp_path)
