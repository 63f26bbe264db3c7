"""Streaming replication CopyData frames: 'w', 'k' parsing and the 'r' status update."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.errors import DecodeError
from replicator.model import Lsn
from replicator.source import frames

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
T1 = datetime(2031, 5, 6, 7, 8, 9, 654321, tzinfo=timezone.utc)
BIG = (0xAB << 32) | 0x12345678


def micros(dt: datetime) -> int:
    d = dt - EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def test_xlogdata():
    payload = b"B" + b"\x01" * 20
    raw = b"w" + struct.pack(">QQq", BIG, BIG + 100, micros(T1)) + payload
    f = frames.parse_frame(raw)
    assert isinstance(f, frames.XLogData)
    assert f.start == BIG and f.end == BIG + 100 and str(Lsn(f.start)) == str(Lsn(BIG))
    assert f.send_time == T1 and f.send_time.utcoffset() == timedelta(0)
    assert bytes(f.payload) == payload


def test_xlogdata_empty_payload_and_memoryview_input():
    raw = b"w" + struct.pack(">QQq", 1, 2, 0)
    f = frames.parse_frame(memoryview(raw))
    assert bytes(f.payload) == b"" and f.send_time == EPOCH


@pytest.mark.parametrize("reply", [0, 1])
def test_keepalive(reply):
    raw = b"k" + struct.pack(">QqB", BIG, micros(T1), reply)
    assert frames.parse_frame(raw) == frames.Keepalive(Lsn(BIG), T1, bool(reply))


@pytest.mark.parametrize(
    "raw,needle",
    [
        (b"", "empty"),
        (b"x123", "unknown"),
        (b"w" + b"\0" * 23, "truncated"),
        (b"k" + b"\0" * 16, "18 bytes"),
        (b"k" + b"\0" * 18, "18 bytes"),
        (b"k" + struct.pack(">Qq", 0, 2**63 - 1) + b"\0", "out of range"),
    ],
)
def test_bad_frames(raw, needle):
    with pytest.raises(DecodeError, match=needle):
        frames.parse_frame(raw)


def test_standby_status_update():
    raw = frames.standby_status_update(Lsn(BIG), Lsn(BIG - 1), Lsn(5), reply_requested=True, now=T1)
    assert len(raw) == 34 and raw[:1] == b"r"
    assert struct.unpack(">QQQqB", raw[1:]) == (BIG, BIG - 1, 5, micros(T1), 1)
    raw = frames.standby_status_update(Lsn(0), Lsn(0), Lsn(0))
    sent = EPOCH + timedelta(microseconds=struct.unpack(">q", raw[25:33])[0])
    assert abs(datetime.now(timezone.utc) - sent) < timedelta(seconds=60) and raw[-1] == 0


def test_standby_status_update_rejects_naive_and_bad_lsn():
    with pytest.raises(ValueError):
        frames.standby_status_update(Lsn(0), Lsn(0), Lsn(0), now=datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        frames.standby_status_update(Lsn(2**64), Lsn(0), Lsn(0), now=T1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_frames_never_crash(raw):
    try:
        frames.parse_frame(raw)
    except DecodeError:
        pass
