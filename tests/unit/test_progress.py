"""The progress display's text, from Telemetry alone, without a terminal; and its modes."""

from __future__ import annotations

import io
import logging
import time

from replicator import progress
from replicator.metrics import SlotFigures
from replicator.telemetry import Telemetry

NOW = 1_700_000_000.0
CONTROL = ("\x1b", "\r")


def copying_telemetry() -> Telemetry:
    tel = Telemetry("s")
    a = tel.table("public.accounts")
    a.target, a.state, a.rows_estimate, a.copy_started = "accounts", "d", 100_000, NOW - 1.5
    a.rows_copied, a.bytes_copied = 45_000, 4_500_000
    b = tel.table("public.branches")
    b.target, b.state, b.rows_copied = "branches", "s", 10
    tel.table("public.history").state = "i"
    return tel


def streaming_telemetry() -> Telemetry:
    tel = Telemetry("s")
    for t in ("public.a", "public.b"):
        tel.table(t).state = "r"
    tel.batch_committed(1000, 40, 0.12, 0x1A2B3C, NOW - 2.0, {"public.a": 600, "public.b": 400})
    tel.server_wal_end = 0x1A2B3C + 12_300
    return tel


def test_copy_line_rows_percent_bytes_rate_eta():
    tel = copying_telemetry()
    line = progress.copy_line(tel.tables["public.accounts"], NOW)
    assert line == ("copying public.accounts: 45,000 of ~100,000 rows (45%), 4.5 MB, 30,000 rows/s, ETA 2s")
    assert progress.copy_rates(tel.tables["public.accounts"], NOW) == (30_000.0, 3_000_000.0, 55_000 / 30_000)
    # no estimate (never analyzed): no percent, no ETA
    t = tel.tables["public.accounts"]
    t.rows_estimate = 0
    assert progress.copy_line(t, NOW) == "copying public.accounts: 45,000 rows, 4.5 MB, 30,000 rows/s"


def test_tables_line_counts_states_and_planned():
    tel = copying_telemetry()
    assert (
        progress.tables_line(tel, planned=5)
        == "tables: 1 copied, 1 copying, 3 waiting (of 5); 45,010 rows copied"
    )
    assert progress.tables_line(Telemetry(), planned=0) == "tables: planning"


def test_stream_line_lag_rate_batches_and_slot():
    tel = streaming_telemetry()
    slot = SlotFigures(
        checked_at=NOW,
        exists=True,
        active=True,
        wal_status="reserved",
        confirmed_flush_lsn=0x1A2B3C,
        current_lsn=0x1A2B3C + 100,
        retained_bytes=3_100_000,
    )
    line = progress.stream_line(tel, NOW, rate=1234.4, slot=slot)
    assert line == (
        "applied 0/1A2B3C · lag 12.3 kB, 2.0s · 1,234 changes/s · 1,000 changes in 1 batches "
        "(last: 1,000 in 0.12s) · slot retains 3.1 MB (reserved)"
    )
    tel.server_wal_end = tel.applied_lsn
    assert "lag 0 B, 0.0s" in progress.stream_line(tel, NOW)
    tel.errors["OperationalError"] += 2
    assert progress.stream_line(tel, NOW).endswith("2 error(s) retried")
    assert progress.stream_line(Telemetry(), NOW).startswith("applied: nothing yet · lag ?")


def test_render_text_has_bars_tables_and_stream_without_control_characters():
    tel = copying_telemetry()
    text = progress.render_text(tel, NOW, planned=3)
    assert "public.accounts" in text and "45,000/~100,000 rows" in text and "ETA 2s" in text
    assert "30,000 rows/s" in text and "4.5 MB" in text
    assert "tables: 1 copied, 1 copying, 1 waiting (of 3)" in text
    assert "applied" not in text  # not streaming yet
    assert not any(c in text for c in CONTROL)
    text = progress.render_text(streaming_telemetry(), NOW, rate=10.0)
    assert "tables: 2 ready (of 2)" in text and "applied 0/1A2B3C" in text and "10 changes/s" in text
    assert not any(c in text for c in CONTROL)


def test_render_limits_table_rows():
    tel = Telemetry()
    for i in range(30):
        f = tel.table(f"public.t{i:02d}")
        f.state, f.copy_started, f.rows_estimate = "d", NOW - 1, 100
    text = progress.render_text(tel, NOW, max_tables=5)
    assert "public.t04" in text and "public.t05" not in text and "and 25 more" in text


def test_human_units():
    assert progress.human_bytes(999) == "999 B" and progress.human_bytes(1_500_000_000) == "1.5 GB"
    assert progress.human_duration(59) == "59s" and progress.human_duration(61) == "1m01s"
    assert progress.human_duration(7300) == "2h01m" and progress.human_duration(None) == "?"


def test_rate_meter():
    m = progress.RateMeter(window=10)
    assert m.add(0.0, 0) is None
    assert m.add(1.0, 100) == 100.0
    for t in range(2, 30):
        r = m.add(float(t), t * 100)
    assert r == 100.0 and len(m.samples) <= 12


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_choose_mode(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    assert progress.choose_mode(True, io.StringIO()) == "lines"
    assert progress.choose_mode(True, _Tty()) == "live"
    assert progress.choose_mode(True, _Tty(), log_format="json") == "lines"
    assert progress.choose_mode(False, _Tty()) == "off"
    monkeypatch.setenv("TERM", "dumb")
    assert progress.choose_mode(True, _Tty()) == "lines"


def test_lines_mode_logs_plain_progress(caplog, capsys):
    tel = copying_telemetry()
    tel.tables["public.accounts"].copy_started = time.time() - 1.5
    caplog.set_level(logging.INFO, logger="replicator.progress")
    with progress.ProgressDisplay(tel, "lines", copy_seconds=0.5, stream_seconds=0.5):
        time.sleep(1.3)
        tel.batch_committed(5, 1, 0.01, 0x100, time.time(), {"public.branches": 5})
        tel.server_wal_end = 0x200
        time.sleep(1.8)
    msgs = [r for r in caplog.records if r.name == "replicator.progress"]
    copy = [r for r in msgs if r.getMessage().startswith("copying public.accounts: 45,000 of ~100,000")]
    assert copy and copy[0].table == "public.accounts" and copy[0].rows_estimate == 100_000
    stream = [r for r in msgs if r.getMessage().startswith("applied 0/100")]
    assert stream and stream[0].lag_bytes == 0x100
    out = capsys.readouterr()
    assert not any(c in out.out + out.err for c in CONTROL)


def test_off_mode_says_nothing(caplog):
    caplog.set_level(logging.INFO)
    with progress.ProgressDisplay(copying_telemetry(), "off", copy_seconds=0.1):
        time.sleep(0.3)
    assert not [r for r in caplog.records if r.name == "replicator.progress"]
