"""Slot and publication phase: create, inspect, validate and drop them.

Contracts:
* :func:`create_slot` returns the consistent point and the exported snapshot name; the replication
  connection that created it must stay idle until every copy worker imported the snapshot.
* :func:`check_slot` raises :class:`SlotLostError` when the slot is gone, invalidated
  (``wal_status = 'lost'``) or belongs to another system: never recreate it silently (invariant 5).
* Names reaching SQL are quoted with psycopg.sql; slot names are validated by the config.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Optional

import psycopg
from psycopg import sql

from .. import stopping
from ..dsn import redact, source_conninfo
from ..errors import SlotLostError, SourceError, SourceUnavailable
from ..model import Lsn, PublishedTable
from .rows import one

log = logging.getLogger(__name__)


def client_name(stream: str) -> str:
    """The application_name of this process's replication connections: it names the stream and
    this process's pid, so whoever finds the slot in use can tell which client holds it."""
    return f"replicator {stream[:32]} pid {os.getpid()}"


def replication_connection(dsn: str, app_name: Optional[str] = None) -> psycopg.Connection:
    """A logical replication connection (autocommit: slot creation fails inside BEGIN)."""
    extra = {"application_name": app_name} if app_name else {}
    try:
        return psycopg.connect(source_conninfo(dsn, **extra), replication="database", autocommit=True)
    except psycopg.OperationalError as e:
        raise SourceUnavailable(
            f"cannot open a replication connection to the source: {redact(e)}; "
            "the role needs the REPLICATION attribute and pg_hba.conf must allow it"
        ) from None


def identify_system(repl: psycopg.Connection) -> tuple[str, int, Lsn]:
    """(system identifier, timeline, current WAL flush position) of the source."""
    sysid, tli, xlogpos, _db = one(repl.execute("IDENTIFY_SYSTEM"), "IDENTIFY_SYSTEM")
    return str(sysid), int(tli), Lsn.parse(xlogpos)


BLOCKERS_SQL = """
SELECT pid, usename, state, extract(epoch FROM now() - xact_start)::int, left(query, 60)
FROM pg_stat_activity
WHERE pid <> %s AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
  AND backend_type = 'client backend'
ORDER BY xact_start
"""


def blocker_rows(conn: psycopg.Connection, exclude_pid: int = 0) -> list[tuple]:
    """(pid, user, state, age seconds, query) of open transactions slot creation must wait for."""
    return conn.execute(BLOCKERS_SQL, (exclude_pid,)).fetchall()


def describe_blocker(row: tuple) -> str:
    pid, user, state, age, query = row
    return f"pid {pid} ({user}, {state}, transaction open {age}s: {query!r})"


def blockers(conn: psycopg.Connection, exclude_pid: int = 0) -> list[str]:
    """Open transactions that slot creation must wait for, one line each (pid first)."""
    return [describe_blocker(r) for r in blocker_rows(conn, exclude_pid)]


def create_slot(
    repl: psycopg.Connection,
    slot: str,
    temporary: bool = False,
    timeout: float = 300.0,
    dsn: Optional[str] = None,
) -> tuple[Lsn, str]:
    """CREATE_REPLICATION_SLOT … LOGICAL pgoutput (SNAPSHOT 'export') → (consistent point, snapshot).

    Creation waits until every transaction running at its start has ended (pgcopydb once hung 5
    hours on this).  After ``timeout`` seconds it is cancelled and the error names the blocking
    pids (found through a normal connection to ``dsn``)."""
    q = sql.SQL("CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput (SNAPSHOT 'export')").format(
        sql.Identifier(slot), sql.SQL("TEMPORARY " if temporary else "")
    )
    found: list[str] = []
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch_creation, args=(repl, dsn, found, timeout, done), name="slot-timeout", daemon=True
    )
    watcher.start()
    try:
        _name, lsn, snapshot, _plugin = one(repl.execute(q), "CREATE_REPLICATION_SLOT")
    except psycopg.errors.QueryCanceled:
        stopping.check(f"creating replication slot {slot} (nothing was created)")
        raise SourceError(
            f"creating replication slot {slot} waited {timeout:.0f}s for open "
            f"transactions to end: {'; '.join(found) or 'none found any more'}. End or "
            f"commit them (or pg_terminate_backend(pid)) and run again"
        ) from None
    except psycopg.Error as e:
        raise SourceError(f"cannot create replication slot {slot}: {e}".strip()) from None
    finally:
        done.set()
        watcher.join()
    log.info("created %sslot %s at %s (snapshot %s)", "temporary " if temporary else "", slot, lsn, snapshot)
    return Lsn.parse(lsn), snapshot


def _watch_creation(
    repl: psycopg.Connection, dsn: Optional[str], found: list[str], timeout: float, done: threading.Event
) -> None:
    """Cancel slot creation after ``timeout`` seconds (naming the blockers) or on a stop request."""
    deadline = time.monotonic() + timeout
    while not done.wait(0.2):
        if stopping.requested():
            repl.cancel_safe()
            return
        if time.monotonic() >= deadline:
            if dsn:
                try:
                    with psycopg.connect(source_conninfo(dsn), autocommit=True) as c:
                        found.extend(blockers(c, repl.info.backend_pid))
                except psycopg.Error:
                    pass
            repl.cancel_safe()
            return


def slot_info(conn: psycopg.Connection, slot: str) -> Optional[dict]:
    """The pg_replication_slots row of ``slot`` as a dict (plus ``this_database``), or None."""
    cur = conn.execute(
        "SELECT slot_name, slot_type, plugin, database, active, active_pid, restart_lsn,"
        " confirmed_flush_lsn, wal_status, safe_wal_size, pg_current_wal_lsn() AS current_lsn,"
        " current_database() AS this_database"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description or ()], row))


_CLIENT_PID = re.compile(r"\bpid (\d+)")


def holder(conn: psycopg.Connection, walsender_pid: Optional[int]) -> str:
    """Who holds a slot, for people: the client's application name, address and (when it is one of
    ours, which put it in its application name) the client's own pid, not the walsender's."""
    if not walsender_pid:
        return "no process (the slot is not in use right now)"
    row = conn.execute(
        "SELECT application_name, client_addr, client_port FROM pg_stat_activity WHERE pid = %s",
        (walsender_pid,),
    ).fetchone()
    if row is None:
        return f"a process that just left (walsender pid {walsender_pid})"
    app, addr, port = row
    m = _CLIENT_PID.search(app or "")
    who = f"client pid {m[1]}" if m else "client pid unknown"
    where = f"{addr}:{port}" if addr else "a local socket"
    return f"'{app or '?'}' ({who}) from {where}, walsender pid {walsender_pid}"


def check_slot(
    info: Optional[dict],
    slot: str,
    name: str,
    system_id: str,
    expected_system: str,
    applied: Optional[Lsn] = None,
) -> dict:
    """Raise SlotLostError unless the slot exists, is usable, is a pgoutput slot of this database
    on the recorded system, and has not confirmed more than the target applied (``applied``)."""
    resync = (
        f"run 'replicator drop --name {name}' and start again to re-copy every table "
        f"(data applied so far stays on the target)"
    )
    if expected_system and system_id != expected_system:
        raise SlotLostError(
            f"source system identifier is {system_id}, but stream {name} was "
            f"started on {expected_system}: this is another server; {resync}"
        )
    if info is None:
        raise SlotLostError(
            f"replication slot {slot} no longer exists on the source, so changes "
            f"since the last applied LSN may be lost; {resync}"
        )
    _check_usable(info, slot, name, applied, resync)
    return info


def _check_usable(info: dict, slot: str, name: str, applied: Optional[Lsn], resync: str) -> None:
    """The checks of :func:`check_slot` on an existing slot's ``info``: raise SlotLostError
    (ending with ``resync``) if it was invalidated, is not this database's pgoutput slot, or has
    confirmed more than ``applied``."""
    if info.get("wal_status") == "lost":
        raise SlotLostError(
            f"replication slot {slot} was invalidated (wal_status = lost: WAL it "
            f"needed was removed, see max_slot_wal_keep_size); {resync}"
        )
    if (
        info.get("slot_type", "logical") != "logical"
        or info.get("plugin") != "pgoutput"
        or info.get("database") != info.get("this_database", info.get("database"))
    ):
        raise SlotLostError(
            f"replication slot {slot} is not the pgoutput slot of database "
            f"{info.get('this_database')} this stream created (type "
            f"{info.get('slot_type')}, plugin {info.get('plugin')}, database "
            f"{info.get('database')}); {resync}"
        )
    confirmed = info.get("confirmed_flush_lsn")
    if applied is not None and confirmed and Lsn.parse(confirmed) > applied:
        raise SlotLostError(
            f"replication slot {slot} has confirmed {confirmed}, beyond {applied}, "
            f"the last position this target applied: another client consumed "
            f"changes this target never got (a second stream named {name}?), or "
            f"the target was restored from a backup; {resync}"
        )


def publication_exists(conn: psycopg.Connection, pub: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)).fetchone() is not None


def ensure_publication(
    conn: psycopg.Connection, pub: str, tables: Sequence[PublishedTable], insert_only: bool = False
) -> None:
    """Make publication ``pub`` list exactly ``tables`` (column lists and row filters included);
    ``insert_only`` publishes INSERT and TRUNCATE only.  ``tables`` must not be empty."""
    if publication_matches(conn, pub, tables):
        return  # as it is: no ALTER (which only the publication's owner may run)
    items = sql.SQL(", ").join(_published(t) for t in tables)
    if publication_exists(conn, pub):
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(pub), items))
    else:
        publish = "insert, truncate" if insert_only else "insert, update, delete, truncate"
        conn.execute(
            sql.SQL(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = {}, publish_via_partition_root = true)"
            ).format(sql.Identifier(pub), items, sql.Literal(publish))
        )
    conn.commit()


PUBLISHED_SQL = """
SELECT p.schemaname, p.tablename, p.rowfilter IS NULL,
       cardinality(p.attnames) = (SELECT count(*) FROM pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                    AND a.attgenerated = '')
FROM pg_publication_tables p
JOIN pg_namespace n ON n.nspname = p.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
WHERE p.pubname = %s
"""


def publication_matches(conn: psycopg.Connection, pub: str, tables: Sequence[PublishedTable]) -> bool:
    """The publication exists and lists exactly ``tables``, all columns, no row filters (only
    then can it be used as it is; tables with column lists or filters are always set again)."""
    if any(t.columns is not None or t.where for t in tables):
        return False
    rows = conn.execute(PUBLISHED_SQL, (pub,)).fetchall()
    return (
        bool(rows)
        and all(r[2] and r[3] for r in rows)
        and {(r[0], r[1]) for r in rows} == {(t.schema, t.name) for t in tables}
    )


def _published(t: PublishedTable) -> sql.Composable:
    q: sql.Composable = sql.Identifier(t.schema, t.name)
    if t.columns is not None:
        q = sql.SQL("{} ({})").format(q, sql.SQL(", ").join(sql.Identifier(c) for c in t.columns))
    if t.where:
        q = sql.SQL("{} WHERE ({})").format(q, sql.SQL(t.where))
    return q


def drop_slot(conn: psycopg.Connection, slot: str, terminate: bool = False, wait: float = 5.0) -> bool:
    """Drop the slot if it exists; True when dropped.  A walsender attached to it is terminated
    only with ``terminate`` (again each time its client reconnects); otherwise it gets ``wait``
    seconds to go (our own closed connection's walsender lingers a moment), then a slot still in
    use is an error naming who holds it."""
    deadline = time.monotonic() + wait
    while True:
        info = slot_info(conn, slot)
        if info is None:
            return False
        if info["active_pid"] and terminate:
            conn.execute("SELECT pg_terminate_backend(%s)", (info["active_pid"],))
        elif info["active_pid"] and time.monotonic() >= deadline:
            raise SourceError(
                f"replication slot {slot} is in use by "
                f"{holder(conn, info['active_pid'])}: stop that process first"
            )
        if not info["active_pid"] or terminate:
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                conn.commit()
                return True
            except psycopg.errors.ObjectInUse:
                conn.rollback()
        if time.monotonic() >= deadline + (10 if terminate else 0):
            raise SourceError(f"replication slot {slot} is still in use; stop the process using it and retry")
        time.sleep(0.1)


def drop_publication(conn: psycopg.Connection, pub: str) -> None:
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
    conn.commit()


def current_lsn(conn: psycopg.Connection) -> Lsn:
    return Lsn.parse(one(conn.execute("SELECT pg_current_wal_lsn()"), "the WAL position")[0])


def catchup_lsn(conn: psycopg.Connection, timeout: float = 30.0) -> Lsn:
    """A position every transaction committed so far ends at or before, once it is flushed.

    ``pg_current_wal_lsn()`` is the *write* position: with asynchronous commit, committed
    transactions may lie beyond it.  The insert position covers them; we wait until it is flushed
    so the walsender can read up to it.
    """
    with conn.transaction():
        # a synchronous commit of our own flushes the WAL past the insert position at once
        conn.execute("SET LOCAL synchronous_commit = on")
        target = Lsn.parse(
            one(conn.execute("SELECT pg_current_wal_insert_lsn()"), "the WAL insert position")[0]
        )
        conn.execute("SELECT pg_current_xact_id()")
    deadline = time.monotonic() + timeout
    while (
        Lsn.parse(one(conn.execute("SELECT pg_current_wal_flush_lsn()"), "the WAL flush position")[0])
        < target
    ):
        if time.monotonic() > deadline:
            raise SourceError(f"source WAL was not flushed up to {target} within {timeout:.0f}s")
        time.sleep(0.02)
    return target


def reached(position: Lsn, target: Lsn) -> bool:
    """``position`` (a record end) covers ``target`` (an insert position).

    When the last record ended exactly on a WAL page boundary, the insert position lies after the
    next page's header (24 bytes, 40 at a segment start) although no record follows.
    """
    return position >= target or (position % 8192 == 0 and target - position <= 40)
