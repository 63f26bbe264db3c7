"""Targets by SQLAlchemy dialect name: ``open_target(url)`` picks the class, else the generic one.

A new database is one module that subclasses :class:`replicator.target.base.Target` and is listed
in ``_MODULES``; modules are imported lazily so a missing optional driver only matters when used.

Contracts:

* :func:`check_url` refuses, as :class:`ConfigError` (exit 2) and before anything is created, a
  URL SQLAlchemy cannot parse, a scheme without an installed dialect or driver, an in-memory
  DuckDB/SQLite database (the replica would vanish at exit) and a MySQL URL without a database.
  Its messages never quote the URL (it may hold a password).
* ``open_target(url, must_exist=True)`` raises :class:`TargetError` when an embedded target's file
  does not exist, instead of letting the driver create an empty one (status, check, drop, verify).
* ``generic+<URL>`` (e.g. ``generic+sqlite:///f.sqlite``) opens ``<URL>`` with the base
  :class:`Target`, the generic SQLAlchemy path, even where a subclass exists (the test-suite proves
  that path with it).
* Nothing here connects.
"""

from __future__ import annotations

import importlib
import os
from typing import overload

import sqlalchemy as sa

from ..dsn import MISPLACED, password_misplaced
from ..errors import ConfigError, TargetError
from .base import Target

DEFAULT_URL = "duckdb:///replica.duckdb"

_MODULES = {
    "duckdb": ("duckdb", "DuckDBTarget"),
    "sqlite": ("sqlite", "SQLiteTarget"),
    "mysql": ("mysql", "MySQLTarget"),
    "mariadb": ("mysql", "MySQLTarget"),
    "postgresql": ("postgres", "PostgresTarget"),
    "postgres": ("postgres", "PostgresTarget"),
}
EMBEDDED = ("duckdb", "sqlite")
GENERIC = "generic+"  # generic+<URL>: the base Target on <URL>, whatever its dialect
SUPPORTED = (
    "duckdb:///path.duckdb, sqlite:///path.sqlite, mysql+pymysql://user@host/db (also "
    "mysql://, mariadb://), postgresql://user@host/db, or any installed SQLAlchemy dialect "
    "with its driver"
)


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        scheme = url.split("://")[0] if "://" in url else "(none)"
        raise ConfigError(
            f"the target URL (scheme {scheme}) is not an SQLAlchemy URL: write "
            f"{SUPPORTED}; percent-encode special characters of a password "
            f"(@ as %40, / as %2F, % as %25)"
        ) from None


def check_url(url: str | None) -> sa.URL:
    """The parsed target URL (without ``generic+``), after the checks in the module docstring."""
    url = _generic_inner(url)
    u = _parse(url or DEFAULT_URL)
    if password_misplaced(url or "", u.password):
        raise ConfigError(f"the password in the target URL {MISPLACED}")
    backend = u.get_backend_name()
    if backend in EMBEDDED and (u.database or ":memory:").startswith((":memory:", "file::memory:")):
        raise ConfigError(
            f"target {u.drivername}:// without a file is an in-memory database: the "
            f"replica would be lost at exit; give a file path, e.g. "
            f"{backend}:///replica.{backend}"
        )
    if backend in ("mysql", "mariadb") and not u.database:
        raise ConfigError(
            f"the target {u.drivername}:// URL names no database: put the database "
            f"name in the URL, e.g. {u.drivername}://user@host/mydb"
        )
    if backend not in _MODULES:
        _check_dialect(u)
    return u


def _check_dialect(u: sa.URL) -> None:
    try:
        dialect = u.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise ConfigError(f"target scheme {u.drivername}:// is not supported here: use {SUPPORTED}") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise ConfigError(
            f"target scheme {u.drivername}://: its driver is not installed ({e}); "
            f"install it, or use {SUPPORTED}"
        ) from None


@overload
def _generic_inner(url: str) -> str: ...
@overload
def _generic_inner(url: str | None) -> str | None: ...
def _generic_inner(url: str | None) -> str | None:
    """``<URL>`` of ``generic+<URL>``, else ``url`` as it is."""
    return url[len(GENERIC) :] if url and url.startswith(GENERIC) else url


def target_class(url: str) -> type[Target]:
    """The Target subclass for a URL's dialect (``mysql+pymysql`` → mysql; ``generic+`` → Target)."""
    backend = check_url(url).get_backend_name()
    if url.startswith(GENERIC) or backend not in _MODULES:
        return Target
    module, cls = _MODULES[backend]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def open_target(url: str | None, must_exist: bool = False) -> Target:
    """A Target for ``url`` (the embedded DuckDB default when None).  Nothing is connected yet.
    ``must_exist``: an embedded target whose file is missing is a TargetError (never created)."""
    url = url or DEFAULT_URL
    target = target_class(url)(_generic_inner(url))
    if must_exist and not target_exists(target):
        raise TargetError(
            f"target file {target.url.database} does not exist: check the --target path (nothing was created)"
        )
    return target


def target_exists(target: Target) -> bool:
    """False only for an embedded target whose file is missing (opening it would create it)."""
    if target.url.get_backend_name() not in EMBEDDED:
        return True
    return os.path.exists(target.url.database or "")
