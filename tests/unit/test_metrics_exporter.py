"""The Prometheus exporter over a hand-made Telemetry: names, labels, values; lag rules."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.errors import ConfigError
from replicator.metrics import MetricsExporter, SlotFigures, lag_figures
from replicator.telemetry import Telemetry


def scrape(port: int) -> dict:
    """{(sample name, frozenset(labels)): value}"""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


class FakeSlot:
    errors = 1
    figures = SlotFigures(
        checked_at=1.0,
        exists=True,
        active=True,
        wal_status="reserved",
        safe_wal_size=None,
        confirmed_flush_lsn=5000,
        current_lsn=9000,
        retained_bytes=4096,
    )


def test_exporter_serves_telemetry():
    tel = Telemetry("shop")
    a = tel.table("public.a")
    a.target, a.state, a.rows_copied, a.bytes_copied, a.rows_estimate = "a", "r", 100, 2000, 90
    b = tel.table("public.b")
    b.target, b.state, b.rows_copied = "b", "d", 7
    tel.batch_committed(30, 3, 0.25, 4000, 1_700_000_000.0, {"public.a": 30})
    tel.server_wal_end = 6000
    tel.errors["OperationalError"] += 2
    ex = MetricsExporter(tel, 0, slot=FakeSlot()).start()
    try:
        m = scrape(ex.port)
    finally:
        ex.stop()
    L = lambda **kw: frozenset(kw.items())  # noqa: E731
    assert m[("replicator_stream_info", L(stream="shop"))] == 1
    assert m[("replicator_table_state", L(table="public.a", target="a", state="r"))] == 1
    assert m[("replicator_table_state", L(table="public.a", target="a", state="d"))] == 0
    assert m[("replicator_table_state", L(table="public.b", target="b", state="d"))] == 1
    assert m[("replicator_table_rows_copied", L(table="public.a"))] == 100
    assert m[("replicator_table_bytes_copied", L(table="public.a"))] == 2000
    assert m[("replicator_table_rows_estimate", L(table="public.a"))] == 90
    assert m[("replicator_table_changes_applied_total", L(table="public.a"))] == 30
    assert m[("replicator_changes_applied_total", L())] == 30
    assert m[("replicator_transactions_applied_total", L())] == 3
    assert m[("replicator_batches_total", L())] == 1
    assert m[("replicator_last_batch_changes", L())] == 30
    assert m[("replicator_last_batch_seconds", L())] == 0.25
    assert m[("replicator_applied_lsn", L())] == 4000
    assert m[("replicator_server_wal_end_lsn", L())] == 6000
    # lag: newest end (slot 9000) - newest applied (slot confirmed 5000)
    assert m[("replicator_lag_bytes", L())] == 4000
    assert m[("replicator_lag_seconds", L())] > 0
    assert m[("replicator_last_commit_timestamp_seconds", L())] == 1_700_000_000.0
    assert m[("replicator_errors_total", L(kind="OperationalError"))] == 2
    assert m[("replicator_errors_total", L(kind="slot_check"))] == 1
    assert m[("replicator_slot_exists", L())] == 1 and m[("replicator_slot_active", L())] == 1
    assert m[("replicator_slot_retained_wal_bytes", L())] == 4096
    assert m[("replicator_slot_wal_status", L(status="reserved"))] == 1
    assert m[("replicator_slot_wal_status", L(status="lost"))] == 0
    assert m[("replicator_slot_confirmed_flush_lsn", L())] == 5000
    assert ("replicator_slot_safe_wal_size_bytes", L()) not in m  # unlimited
    assert ("process_resident_memory_bytes", L()) in m


def test_port_in_use_is_an_option_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--metrics-port {port}"):
            MetricsExporter(Telemetry(), port).start()


def test_lag_figures():
    tel = Telemetry()
    assert lag_figures(tel) == (None, None)  # nothing known yet
    tel.applied_lsn, tel.server_wal_end = 100, 100
    assert lag_figures(tel) == (0, 0.0)
    tel.server_wal_end = 150
    assert lag_figures(tel) == (50, None)  # behind, but no commit applied yet
    tel.last_commit_time = 1000.0
    assert lag_figures(tel, now=1010.0) == (50, 10.0)
    # an idle stream's slot confirmed past the last applied commit: not lag
    slot = SlotFigures(checked_at=0, exists=True, confirmed_flush_lsn=150, current_lsn=120)
    assert lag_figures(tel, slot, now=1010.0) == (0, 0.0)
    # during the copy (nothing streamed yet) the slot gives both ends
    slot = SlotFigures(checked_at=0, exists=True, confirmed_flush_lsn=1000, current_lsn=1600)
    assert lag_figures(Telemetry(), slot) == (600, None)
