"""What a person watching a run sees: copy progress per table and the live stream line.

* On a terminal (stderr is a tty, ``--log-format text``): a rich live display on stderr, redrawn
  twice a second: one bar per table being copied (rows of the estimate, bytes, rows/s, ETA), a
  summary of the tables, and in the streaming phase the stream line (applied LSN, lag, changes/s,
  batches, the slot's retained WAL).  Log lines print above it.
* Otherwise: no control characters at all, only ordinary log lines (logger
  ``replicator.progress``, INFO, with the figures as extra fields for ``--log-format json``): each
  table being copied every 30 s, the stream line every 60 s while something changes.
* ``--no-progress``: neither.

The text comes from pure functions of a :class:`~replicator.telemetry.Telemetry` (and ``now``):
:func:`copy_line`, :func:`stream_line`, :func:`tables_line`, :func:`render` (a rich renderable)
and :func:`render_text`, testable without a terminal.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from . import humanize
from .metrics import SlotFigures, lag_figures
from .model import Lsn
from .telemetry import TableFigures, Telemetry

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live

log = logging.getLogger("replicator.progress")

COPY_LINE_SECONDS = 30.0
STREAM_LINE_SECONDS = 60.0
MAX_TABLE_ROWS = 12


# ------------------------------------------------------------------ formatting (pure)


def human_bytes(n: Optional[float]) -> str:
    return "?" if n is None else humanize.size(n)


def human_duration(s: Optional[float]) -> str:
    if s is None:
        return "?"
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def copy_rates(fig: TableFigures, now: float) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(rows/s, bytes/s, ETA seconds) of a table's copy so far; None where unknown."""
    if fig.copy_started is None:
        return None, None, None
    dt = now - fig.copy_started
    if dt <= 0.05 or fig.rows_copied <= 0:
        return None, None, None
    rate = fig.rows_copied / dt
    brate = fig.bytes_copied / dt if fig.bytes_copied else None
    eta = None
    if fig.state == "d" and fig.rows_estimate > fig.rows_copied:
        eta = (fig.rows_estimate - fig.rows_copied) / rate
    elif fig.state == "d" and fig.rows_estimate:
        eta = 0.0
    return rate, brate, eta


def copy_line(fig: TableFigures, now: float) -> str:
    """``public.t: 45,000 of ~100,000 rows (45%), 4.5 MB, 30,000 rows/s, ETA 2s``."""
    rate, brate, eta = copy_rates(fig, now)
    parts = [
        f"{fig.rows_copied:,} of ~{fig.rows_estimate:,} rows"
        if fig.rows_estimate
        else f"{fig.rows_copied:,} rows"
    ]
    pct = fig.copy_percent
    if pct is not None:
        parts[0] += f" ({pct:.0f}%)"
    if fig.bytes_copied:
        parts.append(human_bytes(fig.bytes_copied))
    if rate is not None:
        parts.append(f"{rate:,.0f} rows/s")
    if eta is not None:
        parts.append(f"ETA {human_duration(eta)}")
    return f"copying {fig.source}: " + ", ".join(parts)


def tables_line(tel: Telemetry, planned: Optional[int] = None) -> str:
    """``tables: 2 ready, 1 copying, 3 waiting (6); 1,234 rows copied``."""
    tables = list(tel.tables.values())
    counts = collections.Counter(t.state for t in tables)
    waiting = counts["i"] + max(0, (planned or 0) - len(tables))
    parts = [
        f"{n} {word}"
        for n, word in (
            (counts["r"], "ready"),
            (counts["s"], "copied"),
            (counts["d"], "copying"),
            (waiting, "waiting"),
        )
        if n
    ]
    total = max(planned or 0, len(tables))
    if not total:
        return "tables: planning"
    rows = sum(t.rows_copied for t in tables)
    return f"tables: {', '.join(parts)} (of {total}); {rows:,} rows copied"


def streaming(tel: Telemetry) -> bool:
    """Has the streaming phase begun (anything applied or received)?"""
    return bool(tel.batches or tel.applied_lsn or tel.server_wal_end)


def stream_line(
    tel: Telemetry, now: float, rate: Optional[float] = None, slot: Optional[SlotFigures] = None
) -> str:
    """``applied 0/1A2B3C · lag 12.3 kB, 0.4s · 1,234 changes/s · 56 batches (last: 1,000 in 0.12s) ·
    slot retained 3.1 MB (reserved)``."""
    lag_b, lag_s = lag_figures(tel, slot, now)
    parts = [f"applied {Lsn(tel.applied_lsn)}" if tel.applied_lsn else "applied: nothing yet"]
    if lag_b is None:
        parts.append("lag ?")
    else:
        parts.append(f"lag {human_bytes(lag_b)}, {'?' if lag_s is None else f'{lag_s:.1f}s'}")
    if rate is not None:
        parts.append(f"{rate:,.0f} changes/s")
    parts.append(f"{tel.changes_applied:,} changes in {tel.batches:,} batches")
    if tel.batches:
        parts[-1] += f" (last: {tel.last_batch_changes:,} in {tel.last_batch_seconds:.2f}s)"
    if slot is not None and slot.exists and slot.retained_bytes is not None:
        parts.append(f"slot retains {human_bytes(slot.retained_bytes)} ({slot.wal_status})")
    errors = sum(dict(tel.errors).values())
    if errors:
        parts.append(f"{errors} error(s) retried")
    return " · ".join(parts)


def render(
    tel: Telemetry,
    now: Optional[float] = None,
    *,
    rate: Optional[float] = None,
    slot: Optional[SlotFigures] = None,
    planned: Optional[int] = None,
    max_tables: int = MAX_TABLE_ROWS,
):
    """The live display as a rich renderable: copy bars, the tables line, the stream line."""
    from rich.console import Group
    from rich.text import Text

    now = time.time() if now is None else now
    parts: list[RenderableType] = []
    copying = [t for t in list(tel.tables.values()) if t.state == "d"]
    if copying:
        parts.append(_copy_grid(copying, now, max_tables))
    parts.append(Text(tables_line(tel, planned), style="dim" if not copying else ""))
    if streaming(tel):
        parts.append(Text(stream_line(tel, now, rate, slot), style="green"))
    return Group(*parts)


def _copy_grid(copying: list, now: float, max_tables: int):
    """A rich grid with one row per table being copied (name, bar, rows, bytes, rate, ETA), by
    source name, at most ``max_tables`` of them and then a row counting the others."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=40)
    grid.add_column(width=20)
    for _ in range(4):
        grid.add_column(no_wrap=True)
    for fig in sorted(copying, key=lambda t: t.source)[:max_tables]:
        rate_rows, brate, eta = copy_rates(fig, now)
        total = max(fig.rows_estimate, fig.rows_copied) or None
        grid.add_row(
            Text(fig.source, style="bold"),
            ProgressBar(total=total, completed=fig.rows_copied, width=20),
            Text(
                f"{fig.rows_copied:,}" + (f"/~{fig.rows_estimate:,}" if fig.rows_estimate else "") + " rows"
            ),
            Text(human_bytes(fig.bytes_copied) if fig.bytes_copied else ""),
            Text(f"{rate_rows:,.0f} rows/s" if rate_rows else "", style="cyan"),
            Text(f"ETA {human_duration(eta)}" if eta is not None else "", style="magenta"),
        )
    if len(copying) > max_tables:
        grid.add_row(Text(f"… and {len(copying) - max_tables} more", style="dim"), "", "", "", "", "")
    return grid


def render_text(tel: Telemetry, now: Optional[float] = None, width: int = 120, **kw) -> str:
    """:func:`render` as plain text (no colours, no control characters)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(
        file=buf, width=width, force_terminal=False, color_system=None, no_color=True, highlight=False
    ).print(render(tel, now, **kw))
    return buf.getvalue()


# ------------------------------------------------------------------ the running display


class RateMeter:
    """Changes per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = 10.0):
        self.window = window
        self.samples: collections.deque = collections.deque()

    def add(self, t: float, value: float) -> Optional[float]:
        self.samples.append((t, value))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window:
            self.samples.popleft()
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 - t0 > 0.2 else None


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def choose_mode(enabled: bool, stream=None, log_format: str = "text") -> str:
    """``live`` (rich display), ``lines`` (periodic log lines) or ``off``."""
    if not enabled:
        return "off"
    stream = sys.stderr if stream is None else stream
    return "live" if log_format == "text" and is_terminal(stream) else "lines"


class ProgressDisplay:
    """Start/stop around a run: ``with ProgressDisplay(p.telemetry, mode=...): p.mirror()``."""

    def __init__(
        self,
        tel: Telemetry,
        mode: str = "lines",
        *,
        slot: Optional[Callable[[], Optional[SlotFigures]]] = None,
        planned: Optional[Callable[[], int]] = None,
        copy_seconds: float = COPY_LINE_SECONDS,
        stream_seconds: float = STREAM_LINE_SECONDS,
    ):
        self.tel, self.mode = tel, mode
        self.slot = slot or (lambda: None)
        self.planned = planned or (lambda: 0)
        self.copy_seconds, self.stream_seconds = copy_seconds, stream_seconds
        self.rate = RateMeter()
        self._rate: Optional[float] = None
        self._live: Optional[Live] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def renderable(self):
        now = time.time()
        self._rate = self.rate.add(now, self.tel.changes_applied)
        try:
            return render(self.tel, now, rate=self._rate, slot=self.slot(), planned=self.planned())
        except Exception as e:  # noqa: BLE001  a display problem must never stop the run
            from rich.text import Text

            return Text(f"(progress display: {e!r})")

    def start(self) -> ProgressDisplay:
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=sys.stderr, stderr=True)
            self._live = Live(
                get_renderable=self.renderable,
                console=console,
                refresh_per_second=2,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=True,
            )
            self._live.start()
        elif self.mode == "lines":
            self._thread = threading.Thread(target=self._lines, name="progress-lines", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._live is not None:
            live, self._live = self._live, None
            try:
                live.stop()
            except Exception:  # noqa: BLE001  (a display problem never stops the run)
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ProgressDisplay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _lines(self) -> None:
        last_copy = last_stream = time.monotonic()
        last_changes = self.tel.changes_applied
        while not self._stop.wait(1.0):
            now_m, now = time.monotonic(), time.time()
            rate = self.rate.add(now, self.tel.changes_applied)
            if now_m - last_copy >= self.copy_seconds:
                last_copy = now_m
                for fig in sorted(
                    (t for t in list(self.tel.tables.values()) if t.state == "d"), key=lambda t: t.source
                ):
                    r, _b, eta = copy_rates(fig, now)
                    log.info(
                        copy_line(fig, now),
                        extra={
                            "table": fig.source,
                            "rows_copied": fig.rows_copied,
                            "rows_estimate": fig.rows_estimate,
                            "bytes_copied": fig.bytes_copied,
                            "rows_per_second": r,
                            "eta_seconds": eta,
                        },
                    )
            if now_m - last_stream >= self.stream_seconds and streaming(self.tel):
                last_stream = now_m
                slot = self.slot()
                lag_b, lag_s = lag_figures(self.tel, slot, now)
                if self.tel.changes_applied != last_changes or lag_b:
                    last_changes = self.tel.changes_applied
                    log.info(
                        stream_line(self.tel, now, rate, slot),
                        extra={
                            "applied_lsn": str(Lsn(self.tel.applied_lsn)),
                            "lag_bytes": lag_b,
                            "lag_seconds": lag_s,
                            "changes_per_second": rate,
                            "changes_applied": self.tel.changes_applied,
                        },
                    )
