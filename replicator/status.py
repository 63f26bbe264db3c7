"""Status: where each table and the stream are, read from the target state and the source slot.

Works whether or not a mirror is running (the embedded target is opened only between batches).
The JSON form is stable: see README.md.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

from .model import Lsn
from .source import slot as slots, snapshot
from .state import StateStore
from .target import open_target


def collect(source: Optional[str], target_url: Optional[str], name: str) -> dict:
    """The status document (see README 'status --json')."""
    target = open_target(target_url)
    store = StateStore(name)
    try:
        with target.connect() as c:
            if not store.exists(c):
                stream, tables = None, {}
            else:
                stream, tables = store.load_stream(c), store.load_tables(c)
    finally:
        target.dispose()
    doc = {
        "name": name,
        "tables": [{"source": p.source, "target": p.target, "state": p.state.value,
                    "sync_lsn": str(p.sync_lsn), "rows_copied": p.rows_copied}
                   for p in sorted(tables.values(), key=lambda p: p.source)],
        "applied_lsn": str(stream.applied_lsn) if stream else None,
        "slot": None,
        "lag": {"bytes": None, "seconds": None},
    }
    if source and stream is not None and stream.slot:
        with snapshot.connect(source) as src:
            info = slots.slot_info(src, stream.slot)
            current = slots.current_lsn(src)
        doc["slot"] = _slot_doc(stream.slot, info)
        confirmed = Lsn.parse(info["confirmed_flush_lsn"]) if info else Lsn(0)
        lag_bytes = max(0, int(current) - max(int(stream.applied_lsn), int(confirmed)))
        doc["lag"]["bytes"] = lag_bytes
        doc["lag"]["seconds"] = _lag_seconds(stream.commit_time, lag_bytes)
    return doc


def _slot_doc(name: str, info: Optional[dict]) -> dict:
    if info is None:
        return {"name": name, "exists": False}
    return {"name": name, "exists": True, "active": info["active"],
            "confirmed_flush_lsn": info["confirmed_flush_lsn"], "restart_lsn": info["restart_lsn"],
            "wal_status": info["wal_status"],
            "retained_bytes": int(Lsn.parse(info["current_lsn"])) - int(Lsn.parse(info["restart_lsn"]))
            if info["restart_lsn"] else None}


def _lag_seconds(commit_time: Optional[dt.datetime], lag_bytes: int) -> Optional[float]:
    if lag_bytes == 0:
        return 0.0
    if commit_time is None:
        return None
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return round(max(0.0, (now - commit_time).total_seconds()), 3)


def render(doc: dict) -> str:
    """The human form: one line per table, then the stream."""
    lines = [f"{'SOURCE':40} {'TARGET':30} STATE {'SYNC LSN':>14} {'ROWS COPIED':>12}"]
    for t in doc["tables"]:
        lines.append(f"{t['source']:40} {t['target']:30} {t['state']:5} {t['sync_lsn']:>14} "
                     f"{t['rows_copied']:>12}")
    if not doc["tables"]:
        lines.append(f"(no state for stream {doc['name']} on this target)")
    lines.append(f"applied LSN: {doc['applied_lsn']}")
    s = doc["slot"]
    if s:
        lines.append(f"slot {s['name']}: " + ("missing!" if not s["exists"] else
                     f"confirmed {s['confirmed_flush_lsn']}, wal_status {s['wal_status']}, "
                     f"active {s['active']}, retained {s['retained_bytes']} bytes"))
    lag = doc["lag"]
    if lag["bytes"] is not None:
        lines.append(f"lag: {lag['bytes']} bytes, {lag['seconds']} s")
    return "\n".join(lines)
