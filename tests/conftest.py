"""Shared pytest fixtures: throwaway database servers and per-test databases.

Session-scoped servers (started lazily, only when a test asks for them, and
stopped/removed at session end):

* ``pg_server``        -- PostgresServer used as replication SOURCE
                          (wal_level=logical); env override REPLICATOR_TEST_PG_DSN
* ``pg_target_server`` -- a second, separate PostgresServer used as TARGET;
                          env override REPLICATOR_TEST_PG_TARGET_DSN
* ``mariadb_server``   -- MariaDBServer; env override REPLICATOR_TEST_MYSQL_URL

Function-scoped, each a fresh database that is dropped after the test:

* ``source_db``         -- libpq DSN (``postgresql://postgres@127.0.0.1:PORT/db``)
                           of a new database on ``pg_server``; its replication
                           slots are dropped (walsenders terminated) at teardown
* ``pg_target_url``     -- ``postgresql+psycopg://postgres@127.0.0.1:PORT/db`` on
                           ``pg_target_server``
* ``mysql_target_url``  -- ``mysql+pymysql://root@127.0.0.1:PORT/db?charset=utf8mb4&local_infile=1``
* ``duckdb_target_url`` -- ``duckdb:///<tmp_path>/t.duckdb``
* ``sqlite_target_url`` -- ``sqlite:///<tmp_path>/t.sqlite``
* ``generic_target_url`` -- ``generic+sqlite:///<tmp_path>/t.generic.sqlite``: the base Target
                           (the generic SQLAlchemy path) on SQLite
* ``target_kind``, ``target_url`` -- parametrized over the target kinds of ``tests/targets.py``
                           (the registry: native kinds here; a module widens it by defining its own
                           ``target_kind = targets.kind_fixture(*targets.ALL)``)

Each per-kind URL fixture, and the target servers, skip the test when ``REPLICATOR_TEST_TARGETS``
leaves their kind out (tests/targets.py).  The server library itself is ``tests/servers.py``.

Child processes (``replicator`` through ``tests/procs.py``, background pgbench runs) are ended at
the end of every test, passed or failed: those the test body started as soon as the body ends
(before its databases are dropped), any others by the autouse fixture ``_end_processes``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

try:
    from tests.servers import MariaDBServer, PostgresServer, unique_name
except ImportError:  # e.g. run with an unusual rootdir / import mode
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.servers import MariaDBServer, PostgresServer, unique_name
from tests import procs, targets


def pytest_configure(config):
    targets.selected()  # an unknown kind in REPLICATOR_TEST_TARGETS is a usage error, at once


# ------------------------------------------------------------------ child processes


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Processes the test body started and left running end with the body, pass or fail (a
    failed assertion skips the test's own cleanup), before fixtures drop their databases."""
    before = procs.running()
    try:
        return (yield)
    finally:
        procs.end_all(keep=before)


@pytest.fixture(autouse=True)
def _end_processes():
    """Whatever is still running when the test's fixtures are torn down (started by a fixture,
    or left by a failed setup) is ended too: no test leaves a process behind."""
    yield
    procs.end_all()


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="session")
def pg_server():
    """The source PostgreSQL server (wal_level=logical)."""
    server = PostgresServer.from_env("REPLICATOR_TEST_PG_DSN", name="pg-source")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pg_target_server():
    """A second, independent PostgreSQL server used as a replication target."""
    targets.require("pg")
    server = PostgresServer.from_env("REPLICATOR_TEST_PG_TARGET_DSN", name="pg-target")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mariadb_server():
    """A MariaDB server (root, empty password, LOCAL INFILE enabled)."""
    targets.require("mysql")
    server = MariaDBServer.from_env("REPLICATOR_TEST_MYSQL_URL", name="mariadb")
    try:
        yield server
    finally:
        server.cleanup()


# ---------------------------------------------------------- per-test databases


def _db_name(request, prefix: str) -> str:
    return unique_name(prefix, request.node.name, maxlen=60)


def _drop(drop, name: str, what: str) -> None:
    try:
        drop(name)
    except Exception as e:  # a leaked database must not fail the test itself
        warnings.warn(f"could not drop {what} database {name!r}: {e!r}", RuntimeWarning, stacklevel=2)


@pytest.fixture
def source_db(pg_server, request):
    """libpq DSN of a fresh, uniquely named database on ``pg_server``."""
    name = _db_name(request, "src")
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        _drop(pg_server.drop_database, name, "source")


@pytest.fixture
def fresh_pgbench(source_db):
    """A newcomer's database: pgbench as `pgbench -i` leaves it (pgbench_history has no key),
    plus some history."""
    from tests.servers import pgbench_init, pgbench_run

    pgbench_init(source_db, scale=1)
    pgbench_run(source_db, transactions=100, clients=2, builtin="tpcb-like")
    return source_db


@pytest.fixture
def pg_target_url(pg_target_server, request):
    """SQLAlchemy URL of a fresh database on ``pg_target_server``."""
    targets.require("pg")
    name = _db_name(request, "tgt")
    pg_target_server.create_database(name)
    try:
        yield pg_target_server.sqlalchemy_url(name)
    finally:
        _drop(pg_target_server.drop_database, name, "target")


@pytest.fixture
def mysql_target_url(mariadb_server, request):
    """SQLAlchemy URL of a fresh database on ``mariadb_server``."""
    targets.require("mysql")
    name = _db_name(request, "tgt")
    url = mariadb_server.create_database(name)
    try:
        yield url
    finally:
        _drop(mariadb_server.drop_database, name, "MariaDB target")


@pytest.fixture
def duckdb_target_url(tmp_path):
    """SQLAlchemy URL of a new DuckDB file in the test's tmp_path."""
    targets.require("duckdb")
    return f"duckdb:///{tmp_path / 't.duckdb'}"


@pytest.fixture
def sqlite_target_url(tmp_path):
    """SQLAlchemy URL of a new SQLite file in the test's tmp_path."""
    targets.require("sqlite")
    return f"sqlite:///{tmp_path / 't.sqlite'}"


@pytest.fixture
def generic_target_url(tmp_path):
    """A new SQLite file in the test's tmp_path, opened by the base Target (generic path)."""
    targets.require("generic")
    return f"generic+sqlite:///{tmp_path / 't.generic.sqlite'}"


# ------------------------------------------------------------------ every target

target_kind = targets.kind_fixture(*targets.NATIVE)


@pytest.fixture
def target_url(target_kind, request):
    """The URL of a fresh target of ``target_kind`` (one test per kind the filter keeps)."""
    return request.getfixturevalue(targets.fixture(target_kind))
