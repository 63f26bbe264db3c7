"""Prometheus metrics of one running pipeline (``--metrics-port``), and the slot watcher.

The exporter has its own registry and serves it from a background HTTP server (127.0.0.1 unless
``--metrics-host``).  Every scrape reads :class:`replicator.telemetry.Telemetry` as it is at that
moment (a custom collector: nothing to keep in sync); the slot figures come from
:class:`SlotWatcher`, a thread that asks the source for the slot's row in ``pg_replication_slots``
every 10 s over a connection of its own.  Neither ever raises into the pipeline: a failed slot
query is counted (``replicator_errors_total{kind="slot_check"}``) and tried again.

Metrics (``rate(replicator_changes_applied_total[1m])`` is changes/s):

==========================================  =======  =============================================
name                                        type     meaning
==========================================  =======  =============================================
replicator_stream_info{stream}              gauge    1; the stream name as a label
replicator_start_time_seconds               gauge    process start, epoch seconds
replicator_table_state{table,target,state}  gauge    1 for the table's state (i, d, s, r), 0 others
replicator_table_rows_copied{table}         gauge    rows copied by the snapshot copy
replicator_table_bytes_copied{table}        gauge    bytes copied (COPY text; 0 for row-mode targets)
replicator_table_rows_estimate{table}       gauge    the source's row estimate when the copy began
replicator_table_changes_applied_total      counter  row changes applied per table
replicator_changes_applied_total            counter  row changes applied
replicator_transactions_applied_total       counter  source transactions applied
replicator_batches_total                    counter  target transactions (batches) committed
replicator_last_batch_changes               gauge    row changes in the last batch
replicator_last_batch_seconds               gauge    seconds the last batch took to collect and apply
replicator_applied_lsn                      gauge    last applied LSN (as a byte position)
replicator_server_wal_end_lsn               gauge    source WAL end the walsender last reported
replicator_lag_bytes                        gauge    WAL bytes between the source's end and applied
replicator_lag_seconds                      gauge    now - commit time of the last applied tx (0 if
                                                     caught up; absent while unknown)
replicator_last_commit_timestamp_seconds    gauge    source commit time of the last applied tx
replicator_slot_exists / _active            gauge    the slot is there / a walsender uses it
replicator_slot_retained_wal_bytes          gauge    pg_current_wal_lsn() - restart_lsn
replicator_slot_safe_wal_size_bytes         gauge    WAL left before the slot is invalidated (absent
                                                     when max_slot_wal_keep_size is unlimited)
replicator_slot_wal_status{status}          gauge    1 for reserved/extended/unreserved/lost
replicator_slot_confirmed_flush_lsn         gauge    the slot's confirmed position
replicator_slot_checked_timestamp_seconds   gauge    when the slot figures were read
replicator_errors_total{kind}               counter  retried errors by exception type, and
                                                     slot_check (failed slot queries)
process_*                                   -        the exporter process (memory, CPU, fds)
==========================================  =======  =============================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .dsn import redact
from .errors import ConfigError
from .model import Lsn
from .telemetry import Telemetry

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    import psycopg
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

STATES = ("i", "d", "s", "r")
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
SLOT_INTERVAL = 10.0  # seconds between slot queries once the slot exists
SLOT_FIRST_INTERVAL = 1.0  # ... and until it exists (it is created a moment after start)

_SLOT_QUERY = """
SELECT s.slot_name IS NOT NULL, s.active, s.wal_status, s.safe_wal_size,
       s.confirmed_flush_lsn::text, w.lsn::text, (w.lsn - s.restart_lsn)::bigint
FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                  ELSE pg_current_wal_lsn() END AS lsn) w
LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


@dataclass(frozen=True)
class SlotFigures:
    """The slot's row as read at ``checked_at`` (epoch seconds)."""

    checked_at: float
    exists: bool
    active: Optional[bool] = None
    wal_status: Optional[str] = None
    safe_wal_size: Optional[int] = None
    confirmed_flush_lsn: int = 0
    current_lsn: int = 0
    retained_bytes: Optional[int] = None


class SlotWatcher:
    """Reads the slot's figures from the source every ``interval`` seconds in a daemon thread."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        interval: float = SLOT_INTERVAL,
        first_interval: float = SLOT_FIRST_INTERVAL,
    ):
        self.dsn, self.slot = dsn, slot
        self.interval, self.first_interval = interval, first_interval
        self.figures: Optional[SlotFigures] = None
        self.errors = 0
        self._conn: Optional[psycopg.Connection] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._failing = False

    def start(self) -> SlotWatcher:
        self._thread = threading.Thread(target=self._run, name="slot-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            found = self.figures is not None and self.figures.exists
            self._stop.wait(self.interval if found else self.first_interval)

    def poll(self) -> Optional[SlotFigures]:
        """One query; on failure the last figures stay and the error is counted."""
        try:
            if self._conn is None:
                from .source import snapshot

                self._conn = snapshot.connect(
                    self.dsn, autocommit=True, connect_timeout=10, application_name="replicator_metrics"
                )
                self._conn.execute("SET statement_timeout = '5s'")
            row = self._conn.execute(_SLOT_QUERY, (self.slot,)).fetchone()
        except Exception as e:  # noqa: BLE001  never into the pipeline: count, log once per failing streak
            self.errors += 1
            (log.debug if self._failing else log.warning)(
                "cannot read slot %s from the source (retrying every %.0fs): %s",
                self.slot,
                self.interval,
                redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__),
            )
            self._failing = True
            self._close()
            return self.figures
        self._failing = False
        assert row is not None  # the query's FROM is one row (the slot is LEFT JOINed to it)
        exists, active, wal_status, safe, confirmed, current, retained = row
        self.figures = SlotFigures(
            checked_at=time.time(),
            exists=bool(exists),
            active=active,
            wal_status=wal_status,
            safe_wal_size=int(safe) if safe is not None else None,
            confirmed_flush_lsn=int(Lsn.parse(confirmed)) if confirmed else 0,
            current_lsn=int(Lsn.parse(current)) if current else 0,
            retained_bytes=int(retained) if retained is not None else None,
        )
        return self.figures

    def _close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001  (a scrape never fails the run)
                pass


def lag_figures(
    tel: Telemetry, slot: Optional[SlotFigures] = None, now: Optional[float] = None
) -> tuple[Optional[int], Optional[float]]:
    """(lag bytes, lag seconds), None where unknown.

    Bytes: from the newest known source WAL end (the walsender's, or the slot query's) to the
    newest known applied position (the pipeline's applied LSN, or the slot's confirmed position,
    which an idle stream moves past the last applied commit).  Seconds: 0 when caught up, else
    now - the source commit time of the last applied transaction.
    """
    now = time.time() if now is None else now
    end, applied = tel.server_wal_end, tel.applied_lsn
    if slot is not None and slot.exists:
        end, applied = max(end, slot.current_lsn), max(applied, slot.confirmed_flush_lsn)
    if not end or not applied:
        return None, None
    nbytes = max(0, end - applied)
    if nbytes == 0:
        return 0, 0.0
    if tel.last_commit_time is None:
        return nbytes, None
    return nbytes, max(0.0, now - tel.last_commit_time)


class TelemetryCollector:
    """A prometheus_client collector reading Telemetry (and the slot watcher) at scrape time."""

    def __init__(self, tel: Telemetry, slot: Optional[SlotWatcher] = None):
        self.tel, self.slot = tel, slot

    def collect(self) -> Iterator:
        """Every family, in a fixed order: stream, tables, totals, lag, errors, then the slot's.
        The tables and the slot figures are each read once per scrape."""
        tel = self.tel
        tables = list(tel.tables.values())  # copy workers may add tables meanwhile
        yield from _stream_families(tel)
        yield from _table_families(tables)
        yield from _total_families(tel)
        yield from _spool_families(tel)
        figs = self.slot.figures if self.slot is not None else None
        yield from _lag_families(tel, figs)
        yield _error_family(tel, self.slot)
        if figs is not None:
            yield from _slot_families(figs)


def _gauge(name: str, doc: str, value: Optional[float] = None, labels: Optional[list[str]] = None):
    """A GaugeMetricFamily: with ``value`` for an unlabelled gauge, else add_metric per label set."""
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, doc, value=value, labels=labels)


def _counter(name: str, doc: str, value: Optional[float] = None, labels: Optional[list[str]] = None):
    """A CounterMetricFamily (prometheus_client appends ``_total`` to ``name``)."""
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, doc, value=value, labels=labels)


def _stream_families(tel: Telemetry) -> Iterator:
    """replicator_stream_info{stream} and replicator_start_time_seconds."""
    info = _gauge(
        "replicator_stream_info", "The stream (slot, publication and state rows) name.", labels=["stream"]
    )
    info.add_metric([tel.name], 1)
    yield info
    yield _gauge("replicator_start_time_seconds", "Start of this run, epoch seconds.", tel.started)


def _table_families(tables: list) -> Iterator:
    """Per-table state, rows and bytes copied, row estimate and changes applied, one sample per
    table of ``tables`` (the state family: one per state, 1 for the current one)."""
    state = _gauge(
        "replicator_table_state",
        "1 for the table's current state (i, d, s, r), else 0.",
        labels=["table", "target", "state"],
    )
    rows = _gauge("replicator_table_rows_copied", "Rows copied by the snapshot copy.", labels=["table"])
    nbytes = _gauge(
        "replicator_table_bytes_copied",
        "Bytes copied by the snapshot copy (COPY text).",
        labels=["table"],
    )
    est = _gauge(
        "replicator_table_rows_estimate",
        "The source's row estimate when the copy began.",
        labels=["table"],
    )
    changes = _counter("replicator_table_changes_applied", "Row changes applied per table.", labels=["table"])
    for t in tables:
        for s in STATES:
            state.add_metric([t.source, t.target, s], 1 if t.state == s else 0)
        rows.add_metric([t.source], t.rows_copied)
        nbytes.add_metric([t.source], t.bytes_copied)
        est.add_metric([t.source], t.rows_estimate)
        changes.add_metric([t.source], t.changes_applied)
    yield from (state, rows, nbytes, est, changes)


def _spool_families(tel: Telemetry) -> Iterator:
    """Large source transactions streamed while they run, spooled until they commit (spool.py)."""
    yield _gauge("replicator_streamed_transactions", "In-progress transactions spooled.", tel.streamed_txs)
    yield _gauge("replicator_spooled_bytes", "Bytes those transactions hold in the spool.", tel.spooled_bytes)
    if tel.oldest_streamed is not None:
        age = time.time() - tel.oldest_streamed
        yield _gauge("replicator_oldest_streamed_seconds", "Age of the oldest of them.", age)


def _total_families(tel: Telemetry) -> Iterator:
    """The stream's totals: changes, transactions and batches applied, the last batch, the applied
    LSN and the source's WAL end."""
    yield _counter("replicator_changes_applied", "Row changes applied (all tables).", tel.changes_applied)
    yield _counter(
        "replicator_transactions_applied", "Source transactions applied.", tel.transactions_applied
    )
    yield _counter("replicator_batches", "Target transactions (batches) committed.", tel.batches)
    yield _gauge(
        "replicator_last_batch_changes",
        "Row changes in the last committed batch.",
        tel.last_batch_changes,
    )
    yield _gauge(
        "replicator_last_batch_seconds",
        "Seconds the last batch took to collect and apply.",
        tel.last_batch_seconds,
    )
    yield _gauge(
        "replicator_applied_lsn", "Last applied source LSN, as a WAL byte position.", tel.applied_lsn
    )
    yield _gauge(
        "replicator_server_wal_end_lsn",
        "Source WAL end last reported by the walsender.",
        tel.server_wal_end,
    )


def _lag_families(tel: Telemetry, figs: Optional[SlotFigures]) -> Iterator:
    """Lag bytes, lag seconds and the last commit time, each only while known."""
    lag_b, lag_s = lag_figures(tel, figs)
    if lag_b is not None:
        yield _gauge(
            "replicator_lag_bytes", "WAL bytes from the source's end to the applied position.", lag_b
        )
    if lag_s is not None:
        yield _gauge(
            "replicator_lag_seconds",
            "Seconds since the commit of the last applied source transaction while behind; 0 when caught up.",
            lag_s,
        )
    if tel.last_commit_time is not None:
        yield _gauge(
            "replicator_last_commit_timestamp_seconds",
            "Source commit time of the last applied transaction, epoch seconds.",
            tel.last_commit_time,
        )


def _error_family(tel: Telemetry, slot: Optional[SlotWatcher]):
    """replicator_errors_total{kind}: retried errors by kind (sorted), then slot_check when a
    slot watcher runs."""
    errors = _counter("replicator_errors", "Errors retried, by kind.", labels=["kind"])
    for kind, n in sorted(dict(tel.errors).items()):
        errors.add_metric([kind], n)
    if slot is not None:
        errors.add_metric(["slot_check"], slot.errors)
    return errors


def _slot_families(figs: SlotFigures) -> Iterator:
    """The slot's figures: when read and whether it exists; the rest only when it exists, retained
    and safe WAL sizes only where known."""
    yield _gauge(
        "replicator_slot_checked_timestamp_seconds", "When the slot figures were read.", figs.checked_at
    )
    yield _gauge("replicator_slot_exists", "1 when the replication slot exists.", int(figs.exists))
    if not figs.exists:
        return
    yield _gauge("replicator_slot_active", "1 when a walsender uses the slot.", int(bool(figs.active)))
    if figs.retained_bytes is not None:
        yield _gauge(
            "replicator_slot_retained_wal_bytes",
            "WAL the slot keeps on the source: pg_current_wal_lsn() - restart_lsn.",
            figs.retained_bytes,
        )
    if figs.safe_wal_size is not None:
        yield _gauge(
            "replicator_slot_safe_wal_size_bytes",
            "WAL that may still be written before the slot is invalidated.",
            figs.safe_wal_size,
        )
    ws = _gauge("replicator_slot_wal_status", "1 for the slot's wal_status, else 0.", labels=["status"])
    for s in WAL_STATUSES:
        ws.add_metric([s], 1 if figs.wal_status == s else 0)
    yield ws
    yield _gauge(
        "replicator_slot_confirmed_flush_lsn", "The slot's confirmed_flush_lsn.", figs.confirmed_flush_lsn
    )


class MetricsExporter:
    """Serves the collector on ``http://host:port/metrics`` from a background thread."""

    def __init__(
        self, tel: Telemetry, port: int, host: str = "127.0.0.1", slot: Optional[SlotWatcher] = None
    ):
        self.tel, self.port, self.host, self.slot = tel, port, host, slot
        self.registry: Optional[CollectorRegistry] = None
        self._server: Optional[WSGIServer] = None

    def start(self) -> MetricsExporter:
        from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TelemetryCollector(self.tel, self.slot))
        ProcessCollector(registry=self.registry)
        try:
            self._server, _thread = start_http_server(self.port, self.host, self.registry)
        except OSError as e:
            raise ConfigError(
                f"--metrics-port {self.port}: cannot listen on {self.host}:{self.port}: "
                f"{e.strerror or e}; choose another port"
            ) from None
        self.port = self._server.server_port
        log.info("serving metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        s, self._server = self._server, None
        if s is not None:
            s.shutdown()
            s.server_close()
