"""The one registry of test targets, and the ``REPLICATOR_TEST_TARGETS`` filter.

Every test that runs against several target databases takes its kinds from here, never from a list
of its own; every per-kind URL fixture (``sqlite_target_url`` …) is named here.

* :data:`KINDS` -- kind → :class:`Kind` (its URL fixture, what it is), in the order tests run.
* :data:`NATIVE` -- the databases with their own Target subclass (sqlite, duckdb, mysql, pg);
  :data:`ALL` adds ``generic``: the base ``Target`` class (the generic SQLAlchemy path, the one any
  other dialect takes) driving SQLite through a ``generic+sqlite:///…`` URL.  The conformance
  suites (target, types, migrate, mirror) run over :data:`ALL`, other multi-target tests over
  :data:`NATIVE`.
* ``REPLICATOR_TEST_TARGETS=duckdb,pg`` (commas or spaces; unset or empty: every kind) keeps only
  those kinds: :func:`params` leaves the others out of a parametrization, and :func:`require`
  (called by every per-kind fixture in tests/conftest.py) skips a test that needs one of them.
  An unknown name is a usage error naming the known kinds (checked when pytest starts).

Use: ``@pytest.mark.parametrize("kind", targets.params("duckdb", "pg"))`` with
``request.getfixturevalue(targets.fixture(kind))``; or the shared ``target_url`` fixture of
tests/conftest.py (over :data:`NATIVE`; a module widens it with
``target_kind = targets.kind_fixture(*targets.ALL)``).  Code that opens a target URL with
SQLAlchemy itself goes through :func:`engine_url` (``generic+`` is the replicator's, not a dialect).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

ENV = "REPLICATOR_TEST_TARGETS"
GENERIC_PREFIX = "generic+"


@dataclasses.dataclass(frozen=True)
class Kind:
    """One test target: ``name`` (the test id), its function-scoped URL fixture, a description."""

    name: str
    fixture: str
    about: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("sqlite", "sqlite_target_url", "SQLiteTarget on a file in tmp_path"),
        Kind("duckdb", "duckdb_target_url", "DuckDBTarget on a file in tmp_path"),
        Kind("mysql", "mysql_target_url", "MySQLTarget on a fresh database of the MariaDB server"),
        Kind("pg", "pg_target_url", "PostgresTarget on a fresh database of the target PostgreSQL"),
        Kind("generic", "generic_target_url", "the base Target (generic SQLAlchemy path) on SQLite"),
    )
}
NATIVE: tuple[str, ...] = ("sqlite", "duckdb", "mysql", "pg")
ALL: tuple[str, ...] = NATIVE + ("generic",)

#: What the generic path stores in another form than the source's on SQLite, by value family, and
#: why: the conformance suites compare these in that form (or leave them out, saying so).
GENERIC_FORMS: dict[str, str] = {
    "numeric": "SQLite has no DECIMAL: SQLAlchemy's Numeric stores a float (digits beyond a double "
    "and trailing zeros are lost; NaN and ±Infinity are refused, as a generic dialect may "
    "not hold them)",
    "uuid": "SQLAlchemy's Uuid on a dialect without a UUID type is CHAR(32): hex without dashes",
    "-0": "SQLite's REAL stores -0 as 0",
}


def selected() -> tuple[str, ...]:
    """The kinds ``REPLICATOR_TEST_TARGETS`` lets run (all when unset); unknown names are a
    :class:`pytest.UsageError`."""
    raw = os.environ.get(ENV, "").replace(",", " ").split()
    if not raw:
        return tuple(KINDS)
    unknown = [n for n in raw if n not in KINDS]
    if unknown:
        raise pytest.UsageError(
            f"{ENV}: unknown target kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}"
        )
    return tuple(k for k in KINDS if k in raw)


def enabled(kind: str) -> bool:
    return kind in selected()


def require(kind: str) -> None:
    """Skip the calling test when ``kind`` is filtered out by ``REPLICATOR_TEST_TARGETS``."""
    if not enabled(kind):
        pytest.skip(f"target {kind} left out by {ENV}={os.environ.get(ENV, '')}")


def params(*kinds: str) -> list:
    """``pytest.param(kind, id=kind)`` of each of ``kinds`` (default :data:`NATIVE`) that the
    filter keeps, for ``parametrize`` or ``fixture(params=…)``."""
    unknown = [k for k in kinds if k not in KINDS]
    assert not unknown, f"not a test target kind: {unknown}"
    return [pytest.param(k, id=k) for k in (kinds or NATIVE) if enabled(k)]


def fixture(kind: str) -> str:
    """The name of ``kind``'s URL fixture (for ``request.getfixturevalue``)."""
    return KINDS[kind].fixture


def kind_fixture(*kinds: str):
    """A ``target_kind`` fixture parametrized over ``kinds`` (default :data:`NATIVE`); assign it to
    ``target_kind`` in a test module to choose the kinds its ``target_url`` tests run against."""

    @pytest.fixture(params=params(*kinds))
    def target_kind(request) -> str:
        return request.param

    return target_kind


def engine_url(url: str) -> str:
    """The SQLAlchemy URL a test opens to read a target (``generic+sqlite:///f`` → ``sqlite:///f``)."""
    return url[len(GENERIC_PREFIX) :] if url.startswith(GENERIC_PREFIX) else url
