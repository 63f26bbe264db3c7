"""Fixtures of the fault-injection suite: per-test tallies, the report, and private servers.

Tests that crash or reconfigure a server never use the shared session servers: they get their own
instance here (settings noted on each fixture), so a fault never leaks into another test.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import REPORT, Tally

# leftover mirror and pgbench processes are ended after every test by tests/conftest.py
from tests.servers import MariaDBServer, PostgresServer

# committed work survives a crash (pg_ctl stop -m immediate); a stalled walsender is dropped in 5s
FAULT_SOURCE_SETTINGS = {"synchronous_commit": "on", "wal_sender_timeout": "5s"}


@pytest.fixture
def tally(request):
    """Count faults injected and rows compared; recorded in the report when the test passes."""
    t = Tally()
    yield t
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and (t.faults or t.rows):
        REPORT.add(request.node.nodeid, t.faults, t.rows, t.note)
        print(f"\n{request.node.name}: {t.faults} fault(s) injected, {t.rows} rows compared")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep


def pytest_terminal_summary(terminalreporter):
    if REPORT.lines:
        terminalreporter.section("fault injection")
        for line in REPORT.lines:
            terminalreporter.write_line(line)
        terminalreporter.write_line(REPORT.summary())


def _managed_or_skip(env_var):
    import os

    if os.environ.get(env_var):
        pytest.skip(f"{env_var} points at an external server: this test must stop and restart its own")


@pytest.fixture(scope="module")
def fault_pg():
    """A private source PostgreSQL (synchronous_commit=on, wal_sender_timeout=5s) that tests may
    crash, restart and reconfigure; shared by the tests of one module."""
    _managed_or_skip("REPLICATOR_TEST_PG_DSN")
    with PostgresServer(name="fault-source", settings=FAULT_SOURCE_SETTINGS) as srv:
        yield srv


@pytest.fixture
def fault_db(fault_pg, request):
    """A fresh database on ``fault_pg`` (the server is started again if a test left it down)."""
    from tests.servers import unique_name

    if not fault_pg.is_running():
        fault_pg.start()
    name = unique_name("src", request.node.name, maxlen=60)
    dsn = fault_pg.create_database(name)
    yield dsn
    if not fault_pg.is_running():
        fault_pg.start()
    try:
        fault_pg.drop_database(name)
    except Exception:
        pass


@pytest.fixture(scope="module")
def fault_pg_target():
    """A private PostgreSQL target (synchronous_commit=on: a crash loses no committed batch)."""
    _managed_or_skip("REPLICATOR_TEST_PG_TARGET_DSN")
    with PostgresServer(name="fault-pg-target", settings={"synchronous_commit": "on"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def fault_mariadb():
    """A private MariaDB target that flushes InnoDB's log at each commit (a SIGKILL loses no
    committed batch)."""
    _managed_or_skip("REPLICATOR_TEST_MYSQL_URL")
    with MariaDBServer(name="fault-mariadb", options={"innodb-flush-log-at-trx-commit": 1}) as srv:
        yield srv
