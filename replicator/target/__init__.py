"""Targets by SQLAlchemy dialect name: ``open_target(url)`` picks the class, else the generic one.

A new database is one module that subclasses :class:`replicator.target.base.Target` and is listed
in ``_MODULES``; modules are imported lazily so a missing optional driver only matters when used.
"""
from __future__ import annotations

import importlib

import sqlalchemy as sa

from ..errors import ConfigError
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


def target_class(url: str) -> type[Target]:
    """The Target subclass for a URL's dialect (``mysql+pymysql`` → mysql)."""
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as e:
        raise ConfigError(f"target {url.split('://')[0]!r}...: not an SQLAlchemy URL ({e}); "
                          "e.g. duckdb:///replica.duckdb or mysql+pymysql://user@host/db") from None
    if backend not in _MODULES:
        return Target
    module, cls = _MODULES[backend]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def open_target(url: str | None) -> Target:
    """A Target for ``url`` (the embedded DuckDB default when None).  Nothing is connected yet."""
    url = url or DEFAULT_URL
    return target_class(url)(url)
