"""Status: where each table and the stream are, read from the target state and the source slot.

Works whether or not a mirror is running: the embedded target is opened only between batches, and
if it stays busy (a long copy holds a DuckDB file) the source-side figures are still reported.
Copy progress of tables in state ``d`` comes from the source's pg_stat_progress_copy.  The JSON
form is stable (README.md, "status --json"); its human form is :mod:`replicator.status_text`.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from .dsn import redact
from .errors import ReplicatorError
from .model import Lsn, TableProgress
from .source import slot as slots
from .source import snapshot
from .state import StateStore
from .status_text import render as render  # the human form (re-exported: cli, demo)
from .target import open_target

WARN_RETAINED_BYTES = 1 << 30
STATUS_LOCK_WAIT_S = 5.0


def _read_target(target_url: Optional[str], name: str):
    """(stream progress, table progress, target_state, error text).  A missing embedded target
    file is a TargetError (never created by looking); a target that cannot be read is reported
    and the source side still collected: ``busy`` for an embedded file (a running copy holds it),
    ``error`` for a server that refused."""
    target = open_target(target_url, must_exist=True)
    target.limit_lock_wait(STATUS_LOCK_WAIT_S)
    store = StateStore(name)
    try:
        with target.connect(readonly=True) as c:
            if not store.exists(c):
                return None, {}, "none", None
            stream, tables = store.load_stream(c), store.load_tables(c)
            return stream, tables, "found" if stream or tables else "none", None
    except (ReplicatorError, Exception) as e:  # noqa: BLE001  (any driver error: report, go on)
        return (
            None,
            {},
            "busy" if target.embedded else "error",
            f"cannot read the target state: {redact(str(e).splitlines()[0])}",
        )
    finally:
        target.dispose()


def collect(
    source: Optional[str],
    target_url: Optional[str],
    name: str,
    warn_retained_bytes: int = WARN_RETAINED_BYTES,
) -> dict:
    """The status document (see README 'status --json').  ``target_state``: ``found``; ``none``
    (the target holds no state for this stream); ``busy`` (an embedded file held by a running
    copy) or ``error`` (a server target refused), both explained in ``warnings``."""
    stream, tables, state, error = _read_target(target_url, name)
    doc = {
        "name": name,
        "tables": [_table_doc(p) for p in sorted(tables.values(), key=lambda p: p.source)],
        "applied_lsn": str(stream.applied_lsn) if stream else None,
        "last_commit_time": stream.commit_time.isoformat() + "Z" if stream and stream.commit_time else None,
        "slot": None,
        "lag": {"bytes": None, "seconds": None},
        "warnings": [error] if error else [],
        "target_state": state,
        "in_progress": _in_progress(name),
    }
    if source and (stream is None or stream.slot):
        _source_side(doc, source, stream.slot if stream else name, stream, warn_retained_bytes)
    return doc


def _in_progress(name: str) -> dict:
    """Large source transactions a mirror of ``name`` on this machine has spooled while they run
    (its spool directory: REPLICATOR_SPOOL_DIR or the default, spool.py); ``oldest_start`` is
    an ISO time or None."""
    from .spool import default_dir, on_disk

    found = on_disk(default_dir(name))
    start = found.pop("oldest_start")
    found["oldest_start"] = (
        dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if start else None
    )
    return found


def _table_doc(p: TableProgress) -> dict:
    return {
        "source": p.source,
        "target": p.target,
        "state": p.state.value,
        "sync_lsn": str(p.sync_lsn),
        "rows_copied": p.rows_copied,
        "copy_percent": None,
    }


def _source_side(doc: dict, source: str, slot: str, stream, warn_retained: int) -> None:
    with snapshot.connect(source) as src:
        info = slots.slot_info(src, slot)
        current = slots.current_lsn(src)
        progress = snapshot.copy_progress(src, doc["name"])
        for t in doc["tables"]:
            if t["state"] == "d" and t["source"] in progress:
                t["rows_copied"] = progress[t["source"]]
                est = _estimate(src, t["source"])
                t["copy_percent"] = round(min(100.0, 100.0 * t["rows_copied"] / est), 1) if est else None
    if info is None and stream is None:
        return
    doc["slot"] = _slot_doc(slot, info)
    applied = int(stream.applied_lsn) if stream else 0
    confirmed = int(Lsn.parse(info["confirmed_flush_lsn"])) if info and info["confirmed_flush_lsn"] else 0
    lag = max(0, int(current) - max(applied, confirmed))
    doc["lag"] = {"bytes": lag, "seconds": _lag_seconds(stream.commit_time if stream else None, lag)}
    doc["warnings"] += _slot_warnings(slot, info, warn_retained)


def _estimate(conn, label: str) -> int:
    schema, _, name = label.partition(".")
    from psycopg import sql

    row = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
        (sql.Identifier(schema, name).as_string(conn),),
    ).fetchone()
    return int(row[0]) if row and row[0] else 0


def _slot_doc(name: str, info: Optional[dict]) -> dict:
    if info is None:
        return {"name": name, "exists": False}
    retained = (
        int(Lsn.parse(info["current_lsn"])) - int(Lsn.parse(info["restart_lsn"]))
        if info["restart_lsn"]
        else None
    )
    return {
        "name": name,
        "exists": True,
        "active": info["active"],
        "confirmed_flush_lsn": info["confirmed_flush_lsn"],
        "restart_lsn": info["restart_lsn"],
        "wal_status": info["wal_status"],
        "retained_bytes": retained,
        "safe_wal_size": info["safe_wal_size"],
    }


def _slot_warnings(slot: str, info: Optional[dict], warn_retained: int) -> list[str]:
    if info is None:
        return [
            f"replication slot {slot} does not exist: the stream cannot continue; "
            f"run 'replicator drop' and start again"
        ]
    out = []
    if info["wal_status"] in ("unreserved", "lost"):
        out.append(
            f"slot {slot} wal_status is {info['wal_status']}: WAL it needs "
            f"{'was removed: re-sync required' if info['wal_status'] == 'lost' else 'is about to be removed'}"
        )
    retained = _slot_doc(slot, info)["retained_bytes"]
    if retained is not None and retained > warn_retained:
        out.append(
            f"slot {slot} retains {retained / (1 << 20):.0f} MiB of WAL on the source "
            f"(threshold {warn_retained / (1 << 20):.0f} MiB): is the mirror running?"
        )
    return out


def _lag_seconds(commit_time: Optional[dt.datetime], lag_bytes: int) -> Optional[float]:
    if lag_bytes == 0:
        return 0.0
    if commit_time is None:
        return None
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return round(max(0.0, (now - commit_time).total_seconds()), 3)
