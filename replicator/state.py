"""The target-side state: per-table lifecycle and per-stream progress.

Two tables, created on first run in the target's default schema:

``replicator_state_tables`` (stream, source_table, target_table, state, sync_lsn, rows_copied,
updated_at, layout): one row per replicated table, state ``i``/``d``/``s``/``r`` as in
pg_subscription_rel; ``layout`` is the column list the target has applied (JSON), so a restart
reads a replayed Relation against what the target has, not against today's catalog.

``replicator_state_streams`` (stream, slot, system_id, applied_lsn, commit_time, applied_at): one row
per stream (``--name``); ``applied_lsn`` is the end LSN of the last source transaction committed on
the target.

Contract: every write here runs on the caller's connection, inside the caller's transaction, so the
progress row commits atomically with the data it describes (DESIGN.md invariant 2).  LSNs are stored
as BIGINT.  No DSN, URL or password is ever stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from .errors import SlotLostError
from .model import Lsn, StreamProgress, TableProgress, TableState

TABLES = "replicator_state_tables"
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
STREAMS = "replicator_state_streams"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class StateStore:
    """Reads and writes the state tables of one stream on one target."""

    def __init__(self, stream: str, schema: Optional[str] = None):
        self.stream = stream
        md = sa.MetaData(schema=schema)
        self.tables = sa.Table(
            TABLES,
            md,
            sa.Column("stream", sa.String(200), primary_key=True),
            sa.Column("source_table", sa.String(400), primary_key=True),
            sa.Column("target_table", sa.String(400), nullable=False),
            sa.Column("state", sa.String(1), nullable=False),
            sa.Column("sync_lsn", sa.BigInteger, nullable=False, default=0),
            sa.Column("rows_copied", sa.BigInteger, nullable=False, default=0),
            sa.Column("updated_at", sa.DateTime),
            sa.Column("layout", LONG_TEXT),  # a wide table's layout outgrows MySQL's TEXT
        )
        self.streams = sa.Table(
            STREAMS,
            md,
            sa.Column("stream", sa.String(200), primary_key=True),
            sa.Column("slot", sa.String(200), nullable=False),
            sa.Column("system_id", sa.String(40), nullable=False),
            sa.Column("applied_lsn", sa.BigInteger, nullable=False, default=0),
            sa.Column("commit_time", sa.DateTime),
            sa.Column("applied_at", sa.DateTime),
            sa.Column("publications", sa.Text),
        )
        self.metadata = md

    def ensure(self, conn: Connection) -> None:
        """Create both tables when missing, and add columns newer versions need (idempotent)."""
        self.metadata.create_all(conn, checkfirst=True)
        q = conn.dialect.identifier_preparer
        for table, column in ((self.tables, "layout"), (self.streams, "publications")):
            cols = {c["name"]: c for c in sa.inspect(conn).get_columns(table.name, schema=table.schema)}
            if column not in cols:  # state tables written by an older version
                conn.exec_driver_sql(
                    f"ALTER TABLE {q.format_table(table)} ADD COLUMN {column} "
                    f"{LONG_TEXT.compile(dialect=conn.dialect)}"
                )
            elif (
                conn.dialect.name in ("mysql", "mariadb")
                and column == "layout"
                and not isinstance(cols[column]["type"], mysql.LONGTEXT)
            ):
                conn.exec_driver_sql(f"ALTER TABLE {q.format_table(table)} MODIFY {column} LONGTEXT")

    def exists(self, conn: Connection) -> bool:
        return sa.inspect(conn).has_table(STREAMS, schema=self.metadata.schema)

    # ------------------------------------------------------------ per table
    def load_tables(self, conn: Connection) -> dict[str, TableProgress]:
        q = sa.select(self.tables).where(self.tables.c.stream == self.stream)
        return {
            r.source_table: TableProgress(
                r.source_table,
                r.target_table,
                TableState(r.state),
                Lsn(r.sync_lsn),
                r.rows_copied,
                r.updated_at,
                r.layout,
            )
            for r in conn.execute(q)
        }

    def replicated_targets(self, conn: Connection) -> dict[str, str]:
        """Every target table some stream on this target replicates (its display name, as
        ``target_table`` holds it, lower-cased) → that stream; {} without state tables."""
        if not sa.inspect(conn).has_table(TABLES, schema=self.metadata.schema):
            return {}
        q = sa.select(self.tables.c.target_table, self.tables.c.stream)
        return {r.target_table.lower(): r.stream for r in conn.execute(q)}

    def set_table(
        self,
        conn: Connection,
        source: str,
        target: str,
        state: TableState,
        sync_lsn: Optional[int] = None,
        rows_copied: Optional[int] = None,
        layout: Optional[str] = None,
    ) -> None:
        """Upsert one table's row (UPDATE, then INSERT when absent: portable to every dialect)."""
        values: dict[str, str | int | dt.datetime] = {
            "target_table": target,
            "state": state.value,
            "updated_at": _now(),
        }
        if layout is not None:
            values["layout"] = layout
        if sync_lsn is not None:
            values["sync_lsn"] = int(sync_lsn)
        if rows_copied is not None:
            values["rows_copied"] = int(rows_copied)
        t = self.tables
        where = sa.and_(t.c.stream == self.stream, t.c.source_table == source)
        if conn.execute(sa.update(t).where(where).values(values)).rowcount == 0:
            values.setdefault("sync_lsn", 0)
            values.setdefault("rows_copied", 0)
            conn.execute(sa.insert(t).values(stream=self.stream, source_table=source, **values))

    def set_layout(self, conn: Connection, source: str, layout: str) -> None:
        """Record the column layout the target has from now on (same transaction as the DDL)."""
        t = self.tables
        conn.execute(
            sa.update(t)
            .where(t.c.stream == self.stream, t.c.source_table == source)
            .values(layout=layout, updated_at=_now())
        )

    def mark_ready(self, conn: Connection, sources: list[str]) -> None:
        if sources:
            t = self.tables
            conn.execute(
                sa.update(t)
                .where(t.c.stream == self.stream, t.c.source_table.in_(sources))
                .values(state=TableState.READY.value, updated_at=_now())
            )

    def forget_table(self, conn: Connection, source: str) -> None:
        t = self.tables
        conn.execute(sa.delete(t).where(t.c.stream == self.stream, t.c.source_table == source))

    # ------------------------------------------------------------ per stream
    def load_stream(self, conn: Connection) -> Optional[StreamProgress]:
        r = conn.execute(sa.select(self.streams).where(self.streams.c.stream == self.stream)).first()
        if r is None:
            return None
        pubs = getattr(r, "publications", None)
        return StreamProgress(
            r.stream,
            r.slot,
            r.system_id,
            Lsn(r.applied_lsn),
            r.applied_at,
            r.commit_time,
            {"publications": None if pubs is None else [x for x in pubs.split(",") if x]},
        )

    def init_stream(self, conn: Connection, slot: str, system_id: str, applied_lsn: int) -> None:
        """Claim ``slot`` for this stream: committed BEFORE the slot is created, this row is what
        proves the slot ours later (DESIGN.md invariant 11)."""
        s = self.streams
        conn.execute(sa.delete(s).where(s.c.stream == self.stream))
        conn.execute(
            sa.insert(s).values(
                stream=self.stream,
                slot=slot,
                system_id=system_id,
                applied_lsn=int(applied_lsn),
                applied_at=_now(),
                publications="",
            )
        )

    def add_publication(self, conn: Connection, pub: str, pubs: list[str]) -> list[str]:
        """Record that this stream created publication ``pub`` (so only it is ever dropped)."""
        pubs = sorted(set(pubs) | {pub})
        s = self.streams
        conn.execute(sa.update(s).where(s.c.stream == self.stream).values(publications=",".join(pubs)))
        return pubs

    def clear_slot(self, conn: Connection) -> None:
        """Mark the stream finished (migration done, slot dropped); a later start begins afresh."""
        s = self.streams
        conn.execute(sa.update(s).where(s.c.stream == self.stream).values(slot="", applied_at=_now()))

    def set_applied(self, conn: Connection, lsn: int, commit_time: Optional[dt.datetime]) -> None:
        """Record the end LSN of the last applied source transaction (same txn as its data)."""
        s = self.streams
        ct = commit_time.astimezone(dt.timezone.utc).replace(tzinfo=None) if commit_time else None
        done = conn.execute(
            sa.update(s)
            .where(s.c.stream == self.stream, s.c.slot != "")
            .values(applied_lsn=int(lsn), commit_time=ct, applied_at=_now())
        )
        if done.rowcount == 0:  # never apply data without its progress row
            raise SlotLostError(
                f"the state of stream {self.stream} was removed from the target "
                f"(replicator drop?) while it ran: stopping; start it again to "
                f"copy every table afresh"
            )

    def drop(self, conn: Connection) -> None:
        """Remove this stream's rows; drop the tables when no other stream uses them."""
        if not self.exists(conn):
            return
        conn.execute(sa.delete(self.tables).where(self.tables.c.stream == self.stream))
        conn.execute(sa.delete(self.streams).where(self.streams.c.stream == self.stream))
        if conn.execute(sa.select(sa.func.count()).select_from(self.streams)).scalar() == 0:
            self.metadata.drop_all(conn, checkfirst=True)
