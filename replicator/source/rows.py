"""The one row a source query must return (a catalog lookup, a function call)."""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import SourceError


def one(cur: psycopg.Cursor[Any], what: str) -> tuple[Any, ...]:
    """The row of ``cur``; a query that returned none is a SourceError naming ``what``."""
    row = cur.fetchone()
    if row is None:
        raise SourceError(f"the source returned no row for {what}")
    return tuple(row)
