"""The human form of `status`: its formatting helpers and render() on hand-built documents."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.status import render as reexported
from replicator.status_text import (
    UNKNOWN,
    human_count,
    human_duration,
    human_percent,
    human_size,
    human_state,
    human_sync_lsn,
    human_time,
    lag_text,
    parse_utc,
    render,
    safe_wal_text,
    text,
)

NOW = dt.datetime(2026, 11, 20, 23, 4, 10, tzinfo=dt.timezone.utc)
PYTHON_SPELLINGS = re.compile(r"\b(None|True|False|nan|inf)\b")


def full_doc() -> dict:
    """Every field of the document (README 'status --json') present, each with a distinct value."""
    return {
        "name": "replicator_demo",
        "target_state": "found",
        "tables": [
            {
                "source": "public.pgbench_accounts",
                "target": "pgbench_accounts",
                "state": "r",
                "sync_lsn": "0/259E348",
                "rows_copied": 100000,
                "copy_percent": None,
            },
            {
                "source": "public.big",
                "target": "big_copy",
                "state": "d",
                "sync_lsn": "0/0",
                "rows_copied": 123456,
                "copy_percent": 41.2,
            },
        ],
        "applied_lsn": "0/261FE58",
        "last_commit_time": "2026-11-20T23:03:58.767582Z",
        "slot": {
            "name": "replicator_slot",
            "exists": True,
            "active": True,
            "confirmed_flush_lsn": "0/261FFD8",
            "restart_lsn": "0/2610000",
            "wal_status": "extended",
            "retained_bytes": 3_400_000_000,
            "safe_wal_size": 1_200_000,
        },
        "lag": {"bytes": 216, "seconds": 0.4},
        "warnings": ["slot replicator_slot retains 3243 MiB of WAL on the source"],
    }


def unknown_doc() -> dict:
    """Every field that can be unknown is: what `status` without --source on a busy target gives."""
    return {
        "name": "replicator",
        "target_state": "busy",
        "tables": [],
        "applied_lsn": None,
        "last_commit_time": None,
        "slot": None,
        "lag": {"bytes": None, "seconds": None},
        "warnings": ["cannot read the target state: database is locked"],
    }


def line(out: str, label: str) -> str:
    """The value of the header line ``label: value``."""
    m = re.search(rf"^ *{re.escape(label)}: (.*)$", out, re.M)
    assert m, f"no {label!r} line in:\n{out}"
    return m.group(1)


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "n, want",
    [
        (0, "0 B"),
        (216, "216 B"),
        (999, "999 B"),
        (24_616, "24.6 kB"),
        (1_200_000, "1.2 MB"),
        (3_400_000_000, "3.4 GB"),
        (5 * 10**15, "5.0 PB"),
        (-2_000, "-2.0 kB"),
        (None, UNKNOWN),
    ],
)
def test_human_size(n, want):
    assert human_size(n) == want


@pytest.mark.parametrize(
    "s, want",
    [
        (0, "0 s"),
        (0.0, "0 s"),
        (0.01, "< 0.1 s"),
        (0.4, "0.4 s"),
        (0.487, "0.5 s"),
        (9.9, "9.9 s"),
        (42.2, "42 s"),
        (192, "3 min 12 s"),
        (7_500, "2 h 5 min"),
        (3 * 86_400 + 4 * 3600 + 59, "3 d 4 h"),
        (-5, "0 s"),
        (None, UNKNOWN),
    ],
)
def test_human_duration(s, want):
    assert human_duration(s) == want


def test_human_time_is_utc_to_the_second_with_its_age():
    assert human_time("2026-11-20T23:03:58.767582Z", NOW) == "2026-11-20T23:03:58Z (11 s ago)"
    assert human_time("2026-11-20T21:00:00Z", NOW) == "2026-11-20T21:00:00Z (2 h 4 min ago)"
    assert human_time("2026-11-21T00:04:10+01:00", NOW) == "2026-11-20T23:04:10Z (0 s ago)"
    assert human_time("2026-11-20T23:05:00Z", NOW) == "2026-11-20T23:05:00Z (in the future)"
    assert human_time(None, NOW) == UNKNOWN and human_time("", NOW) == UNKNOWN
    assert human_time("yesterday", NOW) == "yesterday"  # not ISO: shown as it is, never dropped
    assert parse_utc("2026-11-20T23:03:58") == dt.datetime(2026, 11, 20, 23, 3, 58, tzinfo=dt.timezone.utc)


def test_values_words_counts_states():
    values = (None, "", True, False, "0/1A", 3)
    assert [text(v) for v in values] == [UNKNOWN, UNKNOWN, "yes", "no", "0/1A", "3"]
    assert human_count(100_000) == "100,000" and human_count(None) == UNKNOWN
    assert human_percent(41.2) == "41.2%" and human_percent(None) == UNKNOWN
    assert [human_state(s) for s in ("i", "d", "s", "r")] == [
        "i (waiting)",
        "d (copying)",
        "s (copied)",
        "r (ready)",
    ]
    assert human_state("x") == "x" and human_state(None) == UNKNOWN
    assert human_sync_lsn("0/0") == UNKNOWN and human_sync_lsn("0/259E348") == "0/259E348"


def test_lag_text():
    assert lag_text({"bytes": 216, "seconds": 0.4}) == "216 B, 0.4 s"
    assert lag_text({"bytes": 0, "seconds": 0.0}) == "0 B, 0 s"
    assert lag_text({"bytes": 24_616, "seconds": None}) == f"24.6 kB, {UNKNOWN}"
    assert lag_text({"bytes": None, "seconds": None}) == UNKNOWN == lag_text(None)


def test_safe_wal_size_null_means_no_limit_unless_the_slot_is_lost():
    assert safe_wal_text({"safe_wal_size": 1_200_000, "wal_status": "reserved"}) == "1.2 MB"
    assert safe_wal_text({"safe_wal_size": None, "wal_status": "reserved"}).startswith("no limit")
    assert safe_wal_text({"safe_wal_size": None, "wal_status": "lost"}) == UNKNOWN
    assert safe_wal_text({"safe_wal_size": None, "wal_status": None}) == UNKNOWN


# ------------------------------------------------------------------ render


def test_every_field_present_has_its_place():
    out = render(full_doc(), NOW)
    assert not PYTHON_SPELLINGS.search(out), out
    assert line(out, "stream") == "replicator_demo (state found on the target)"
    assert line(out, "applied LSN") == "0/261FE58"
    assert "applied LSN: 0/261FE58" in out  # the demo's test greps "applied LSN: 0/"
    assert line(out, "last commit") == "2026-11-20T23:03:58Z (11 s ago)"
    assert line(out, "lag") == "216 B, 0.4 s"
    slot = line(out, "slot")
    assert slot.startswith("replicator_slot: active") and "wal_status extended" in slot
    assert line(out, "slot LSNs") == "confirmed 0/261FFD8, restart 0/2610000"
    assert line(out, "retained WAL") == "3.4 GB, safe_wal_size 1.2 MB"
    header, accounts, big = [ln for ln in out.splitlines() if ln.startswith(("SOURCE", "public."))]
    assert header.split() == ["SOURCE", "TARGET", "STATE", "SYNC", "LSN", "ROWS", "COPIED", "COPY"]
    assert accounts.split() == [
        "public.pgbench_accounts",
        "pgbench_accounts",
        "r",
        "(ready)",
        "0/259E348",
        "100,000",
        UNKNOWN,
    ]
    assert big.split() == ["public.big", "big_copy", "d", "(copying)", UNKNOWN, "123,456", "41.2%"]
    assert out.endswith("\nwarning: slot replicator_slot retains 3243 MiB of WAL on the source")


def test_the_header_comes_first_then_the_tables_then_the_warnings():
    out = render(full_doc(), NOW)
    order = [out.index(s) for s in ("stream:", "applied LSN:", "lag:", "slot:", "SOURCE", "warning:")]
    assert order == sorted(order)


def test_every_field_unknown_says_so_without_python_spellings():
    out = render(unknown_doc(), NOW)
    assert not PYTHON_SPELLINGS.search(out), out
    for label in ("applied LSN", "last commit", "lag", "slot"):
        assert line(out, label) == UNKNOWN
    assert "busy" in line(out, "stream")
    assert "could not be read" in out and "warning: cannot read the target state" in out


def test_unknown_values_inside_a_slot_and_a_table():
    doc = full_doc()
    doc["slot"] = {k: None for k in doc["slot"]} | {"name": "s", "exists": True}
    doc["tables"] = [{k: None for k in doc["tables"][0]}]
    doc["lag"] = {"bytes": 5, "seconds": None}
    out = render(doc, NOW)
    assert not PYTHON_SPELLINGS.search(out), out
    assert line(out, "slot") == f"s: active {UNKNOWN}, wal_status {UNKNOWN}"
    assert line(out, "slot LSNs") == f"confirmed {UNKNOWN}, restart {UNKNOWN}"
    assert line(out, "retained WAL") == f"{UNKNOWN}, safe_wal_size {UNKNOWN}"
    row = out.splitlines()[-3]
    assert row.split() == [UNKNOWN] * 6, out


def test_a_stopped_mirror_and_a_missing_slot():
    doc = full_doc()
    doc["slot"]["active"] = False
    doc["slot"]["safe_wal_size"] = None
    assert "inactive (no process holds it)" in line(render(doc, NOW), "slot")
    assert "no limit" in line(render(doc, NOW), "retained WAL")
    doc["slot"] = {"name": "replicator", "exists": False}
    out = render(doc, NOW)
    assert line(out, "slot").startswith("replicator: does not exist")
    assert "slot LSNs" not in out and not PYTHON_SPELLINGS.search(out)


def test_no_state_on_the_target_says_so():
    doc = unknown_doc() | {"target_state": "none", "warnings": []}
    out = render(doc, NOW)
    assert "no state for stream replicator on this target" in out and "warning" not in out
    doc["target_state"] = "found"
    assert "(no table state for stream replicator on this target)" in render(doc, NOW)


def test_a_document_without_any_field_still_renders():
    out = render({}, NOW)
    assert not PYTHON_SPELLINGS.search(out) and line(out, "applied LSN") == UNKNOWN


def test_status_reexports_render():
    assert reexported is render


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.0123456789/", min_size=1, max_size=20)
maybe_int = st.none() | st.integers(min_value=0, max_value=2**63)
maybe_float = st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False)
table = st.fixed_dictionaries(
    {
        "source": names,
        "target": names,
        "state": st.sampled_from(["i", "d", "s", "r"]),
        "sync_lsn": st.sampled_from(["0/0", "0/1A2B3C", "16/B374D848"]),
        "rows_copied": st.integers(min_value=0, max_value=2**40),
        "copy_percent": st.none() | st.floats(min_value=0, max_value=100, allow_nan=False),
    }
)
slot = st.none() | st.fixed_dictionaries(
    {
        "name": names,
        "exists": st.booleans(),
        "active": st.none() | st.booleans(),
        "confirmed_flush_lsn": st.none() | names,
        "restart_lsn": st.none() | names,
        "wal_status": st.none() | st.sampled_from(["reserved", "extended", "unreserved", "lost"]),
        "retained_bytes": maybe_int,
        "safe_wal_size": st.none() | st.integers(min_value=-(2**40), max_value=2**40),
    }
)


@given(
    st.fixed_dictionaries(
        {
            "name": names,
            "target_state": st.sampled_from(["found", "none", "busy", "error"]),
            "tables": st.lists(table, max_size=4),
            "applied_lsn": st.none() | names,
            "last_commit_time": st.none()
            | st.datetimes(min_value=dt.datetime(2000, 1, 1)).map(lambda t: t.isoformat() + "Z"),
            "slot": slot,
            "lag": st.fixed_dictionaries({"bytes": maybe_int, "seconds": maybe_float}),
            "warnings": st.lists(names, max_size=2),
        }
    )
)
def test_no_document_shows_a_python_spelling(doc):
    out = render(doc, NOW)
    assert not PYTHON_SPELLINGS.search(out), out
    assert "applied LSN: " in out and len(out.splitlines()) >= 6
