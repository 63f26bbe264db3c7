"""Re-sync beside the live table, the target's side: shadow names and the swap (issue 15).

``replicator resync`` copies a table into its *shadow*, a table beside the live one named
``<name>__resync`` (cut short with a hash where the database's name limit needs it:
:func:`~.names.beside`, by the target's ``name_problem``), while readers go on reading the live
table; once the shadow is ready it takes the live table's place (``Target.swap_table``).  When
and with which state rows is :mod:`replicator.shadow`'s business.

Contracts:
* :func:`shadow` is the only maker of shadow mappings; it remembers, per target object, which
  live table each shadow stands for, so :func:`unshadow` finds the live mapping again (a shadow
  name cut short cannot be read back).
* :func:`drop_and_rename` runs in the caller's transaction and does nothing when the shadow is
  gone: a swap made once is never made twice.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model import TableMapping
from . import names

if TYPE_CHECKING:
    from .base import Target

SHADOW = "__resync"  # the copy being made beside the live table
PARKED = "__resync_old"  # where MySQL's RENAME TABLE puts the old table until it is dropped


def shadow(target: Target, m: TableMapping) -> TableMapping:
    """``m`` written to its shadow table instead (same schema)."""
    sh = dataclasses.replace(m, target_name=names.beside(m.target_name, SHADOW, target.name_problem))
    target.shadows[target.table_key(sh)] = m.target_name
    return sh


def unshadow(target: Target, m: TableMapping) -> Optional[TableMapping]:
    """The live table's mapping of shadow mapping ``m`` (None: ``m`` is no shadow)."""
    live = target.shadows.get(target.table_key(m))
    return None if live is None else dataclasses.replace(m, target_name=live)


def parked_name(target: Target, name: str) -> str:
    return names.beside(name, PARKED, target.name_problem)


def exists(conn: Connection, m: TableMapping) -> bool:
    return sa.inspect(conn).has_table(m.target_name, schema=m.target_schema)


def quoted(conn: Connection, name: str, schema: Optional[str]) -> str:
    """A table name, schema-qualified and quoted by the dialect."""
    t = sa.Table(name, sa.MetaData(), schema=schema, quote=True)
    return conn.dialect.identifier_preparer.format_table(t)


def drop_and_rename(conn: Connection, live: TableMapping, sh: TableMapping) -> None:
    """``DROP TABLE`` the live table (when there), ``ALTER TABLE <shadow> RENAME TO`` its name,
    in the caller's transaction; nothing when the shadow is gone (swapped in already)."""
    if not exists(conn, sh):
        return
    q = conn.dialect.identifier_preparer
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quoted(conn, live.target_name, live.target_schema)}")
    conn.exec_driver_sql(
        f"ALTER TABLE {quoted(conn, sh.target_name, sh.target_schema)} RENAME TO {q.quote_identifier(live.target_name)}"
    )


def drop(conn: Connection, m: TableMapping) -> None:
    """``DROP TABLE IF EXISTS`` the table of ``m`` (a shadow left by an earlier re-sync, or merged
    into its live table), with its ``<table>_current`` view when it has a mode."""
    if m.mode is not None:
        conn.exec_driver_sql(
            f"DROP VIEW IF EXISTS {quoted(conn, m.target_name + '_current', m.target_schema)}"
        )
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quoted(conn, m.target_name, m.target_schema)}")
