"""The human form of the status document (:func:`replicator.status.collect`).

Contracts:

* :func:`render` shows every field of the document (README, "status --json") and nothing that is
  not in it: a header (stream and target state, applied LSN, last commit, lag, the slot), a table
  of tables, then one ``warning:`` line per warning.
* No Python spelling reaches the text: unknown or absent values are ``—``, booleans are words
  (``yes``/``no``, ``active``/``inactive``), sizes are human (``216 B``, ``1.2 MB``: decimal units,
  as in the progress display), durations too (``0.4 s``, ``3 min 12 s``, ``2 h 5 min``), times are
  UTC ISO 8601 to the second with their age (``2026-11-20T23:03:58Z (12 s ago)``).
* Pure: the age is measured from ``now`` (default: the clock), nothing else is read.
* The label ``applied LSN: `` is followed by the LSN itself (the demo's test and people grep it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from . import humanize

UNKNOWN = "—"

#: what each per-table state means here (the lifecycle i → d → s → r)
STATE_MEANING = {"i": "waiting", "d": "copying", "s": "copied", "r": "ready"}

#: the stream line's note on ``target_state``
TARGET_STATE_NOTE = {
    "found": "state found on the target",
    "none": "no state on this target",
    "busy": "target busy: a running copy holds the file, see warnings",
    "error": "target cannot be read, see warnings",
}

_LABEL_WIDTH = len("retained WAL")


# ------------------------------------------------------------------ values


def text(value: Any) -> str:
    """Any document value for people: ``—`` for None or an empty string, ``yes``/``no`` for a
    boolean, ``str()`` otherwise (LSNs, names and states are strings already)."""
    if value is None or value == "":
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def human_size(n: Optional[float]) -> str:
    """Bytes in decimal units: ``216 B``, ``24.6 kB``, ``1.2 MB``, ``3.4 GB``; ``—`` when unknown.
    Negative sizes keep their sign."""
    if n is None or isinstance(n, bool):
        return UNKNOWN
    return humanize.size(n)


def human_duration(seconds: Optional[float]) -> str:
    """Seconds for people: ``0 s``, ``< 0.1 s``, ``0.4 s``, ``42 s``, ``3 min 12 s``, ``2 h 5 min``,
    ``3 d 4 h``; ``—`` when unknown.  Negative durations count as 0."""
    if seconds is None or isinstance(seconds, bool):
        return UNKNOWN
    s = max(0.0, float(seconds))
    if s == 0:
        return "0 s"
    if s < 0.05:
        return "< 0.1 s"
    if s < 9.95:
        return f"{s:.1f} s"
    whole = int(round(s))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def parse_utc(stamp: Optional[str]) -> Optional[dt.datetime]:
    """An ISO 8601 time of the document as an aware UTC datetime; None when absent or not ISO.
    A time without an offset is UTC (the document writes ``…Z``)."""
    if not stamp:
        return None
    try:
        t = dt.datetime.fromisoformat(stamp[:-1] if stamp.endswith(("Z", "z")) else stamp)
    except (TypeError, ValueError):
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def human_time(stamp: Optional[str], now: Optional[dt.datetime] = None) -> str:
    """``2026-11-20T23:03:58Z (12 s ago)``: UTC to the second, with the age measured from ``now``
    (aware; default the clock).  ``—`` when absent; a string that is not ISO 8601 as it is."""
    t = parse_utc(stamp)
    if t is None:
        return text(stamp)
    now = now or dt.datetime.now(dt.timezone.utc)
    age = (now - t).total_seconds()
    when = "in the future" if age < -1 else f"{human_duration(age)} ago"
    return f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')} ({when})"


def human_count(n: Optional[int]) -> str:
    """A count with thousands separators (``100,000``); ``—`` when unknown."""
    if n is None or isinstance(n, bool):
        return UNKNOWN
    return f"{n:,}"


def human_percent(p: Optional[float]) -> str:
    """``42.5%``; ``—`` when unknown (a table not being copied has no copy progress)."""
    if p is None or isinstance(p, bool):
        return UNKNOWN
    return f"{p:.1f}%"


def human_state(state: Optional[str]) -> str:
    """A table state with its meaning: ``r (streaming)``; an unknown letter as it is."""
    if not state:
        return UNKNOWN
    meaning = STATE_MEANING.get(state)
    return f"{state} ({meaning})" if meaning else state


def human_sync_lsn(lsn: Optional[str]) -> str:
    """A table's sync LSN; ``—`` while it has none (``0/0``: set when its copy is done)."""
    return UNKNOWN if lsn in (None, "", "0/0") else str(lsn)


# ------------------------------------------------------------------ header


def _line(label: str, value: str) -> str:
    return f"{label:>{_LABEL_WIDTH}}: {value}"


def stream_lines(doc: dict, now: Optional[dt.datetime] = None) -> list[str]:
    """Stream name and target state, applied LSN, last source commit (with its age), lag."""
    state = doc.get("target_state")
    note = TARGET_STATE_NOTE.get(state or "", f"target state {text(state)}")
    return [
        _line("stream", f"{text(doc.get('name'))} ({note})"),
        _line("applied LSN", text(doc.get("applied_lsn"))),
        _line("last commit", human_time(doc.get("last_commit_time"), now)),
        _line("lag", lag_text(doc.get("lag"))),
        _line("in progress", in_progress_text(doc.get("in_progress"), now)),
    ]


def in_progress_text(ip: Optional[dict], now: Optional[dt.datetime] = None) -> str:
    """Streamed transactions spooled until their commit: ``2 transactions, 1.2 GB, oldest
    started 2026-…Z (3 min 12 s ago)``; ``none``; ``—`` when not known."""
    if not ip:
        return UNKNOWN
    n = ip.get("transactions")
    if not n:
        return "none" if n == 0 else UNKNOWN
    return (
        f"{n} transaction(s) spooled, {human_size(ip.get('spooled_bytes'))}, "
        f"oldest started {human_time(ip.get('oldest_start'), now)}"
    )


def lag_text(lag: Optional[dict]) -> str:
    """``216 B, 0.4 s``; ``—`` when not measured (no source).  Lag is the stream's: 0 B while a
    table is still being copied is possible, so it does not say "caught up"."""
    lag = lag or {}
    size, seconds = lag.get("bytes"), lag.get("seconds")
    if size is None and seconds is None:
        return UNKNOWN
    return f"{human_size(size)}, {human_duration(seconds)}"


def slot_lines(slot: Optional[dict]) -> list[str]:
    """The slot: name, exists, active, wal_status; its LSNs; retained WAL and safe_wal_size.
    ``slot: —`` when it was not read (no source, or no stream and no slot)."""
    if not slot:
        return [_line("slot", UNKNOWN)]
    name = text(slot.get("name"))
    if slot.get("exists") is False:
        return [_line("slot", f"{name}: does not exist (the stream cannot continue, see warnings)")]
    return [
        _line(
            "slot", f"{name}: {active_text(slot.get('active'))}, wal_status {text(slot.get('wal_status'))}"
        ),
        _line(
            "slot LSNs",
            f"confirmed {text(slot.get('confirmed_flush_lsn'))}, restart {text(slot.get('restart_lsn'))}",
        ),
        _line(
            "retained WAL",
            f"{human_size(slot.get('retained_bytes'))}, safe_wal_size {safe_wal_text(slot)}",
        ),
    ]


def active_text(active: Optional[bool]) -> str:
    """``active (a replication connection holds it)`` / ``inactive (no process holds it)``."""
    if active is True:
        return "active (a replication connection holds it)"
    if active is False:
        return "inactive (no process holds it)"
    return f"active {text(active)}"


def safe_wal_text(slot: dict) -> str:
    """``safe_wal_size`` as a size.  PostgreSQL leaves it NULL for a lost slot and when
    ``max_slot_wal_keep_size`` is -1 (no limit): the latter is said when the slot is not lost."""
    size = slot.get("safe_wal_size")
    if size is not None:
        return human_size(size)
    if slot.get("wal_status") in ("reserved", "extended", "unreserved"):
        return "no limit (max_slot_wal_keep_size = -1)"
    return UNKNOWN


# ------------------------------------------------------------------ tables


TABLE_COLUMNS = ("SOURCE", "TARGET", "STATE", "SYNC LSN", "ROWS COPIED", "COPY")
_RIGHT_ALIGNED = {"SYNC LSN", "ROWS COPIED", "COPY"}


def table_row(t: dict) -> tuple[str, ...]:
    """One table's cells, in the order of :data:`TABLE_COLUMNS`."""
    return (
        text(t.get("source")),
        text(t.get("target")),
        human_state(t.get("state")),
        human_sync_lsn(t.get("sync_lsn")),
        human_count(t.get("rows_copied")),
        human_percent(t.get("copy_percent")),
    )


def table_lines(tables: list[dict]) -> list[str]:
    """The table of tables, columns as wide as their widest cell; no lines for no tables."""
    if not tables:
        return []
    right = {i for i, head in enumerate(TABLE_COLUMNS) if head in _RIGHT_ALIGNED}
    return humanize.aligned([TABLE_COLUMNS] + [table_row(t) for t in tables], right)


def no_tables_line(doc: dict) -> list[str]:
    """Why the table of tables is empty, when it is."""
    if doc.get("tables"):
        return []
    name = text(doc.get("name"))
    state = doc.get("target_state")
    if state == "none":
        return [
            f"(no state for stream {name} on this target: nothing replicated here "
            f"under this name yet; check --target and --name)"
        ]
    if state in ("busy", "error"):
        return [f"(the table states of stream {name} could not be read: see the warning)"]
    return [f"(no table state for stream {name} on this target)"]


# ------------------------------------------------------------------ the whole


def render(doc: dict, now: Optional[dt.datetime] = None) -> str:
    """The status document for people: header, a blank line, the table of tables (or why there
    is none), then ``warning: …`` lines.  ``now`` (aware) is when ages are measured from."""
    lines = stream_lines(doc, now) + slot_lines(doc.get("slot")) + [""]
    lines += table_lines(doc.get("tables") or []) + no_tables_line(doc)
    warnings = doc.get("warnings") or []
    if warnings:
        lines += [""] + [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
