"""pgoutput protocol version 2 streaming (issue 16): messages captured from a real PostgreSQL 15
(tests/fixtures/pgoutput_stream_pg15.json, made by tests/fixtures/capture_stream.py) decoded into
events and checked against what the server's sessions saw; every message truncated, extended and
fuzzed; the fused paths agree with the full decoder inside stream blocks too (no server)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import DecodeError
from replicator.model import (
    ChangeKind,
    Column,
    Lsn,
    RelationInfo,
    RowChange,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    TableSchema,
    Truncate,
    TxBegin,
    TxCommit,
)
from replicator.source import pgoutput as po
from replicator.source.changes import ChangeDecoder
from replicator.source.pgoutput_messages import TYPE_NAMES
from replicator.source.stream import start_replication_command
from tests.unit.test_pgoutput import (
    T1,
    enc_begin,
    enc_delete,
    enc_insert,
    enc_relation,
    enc_truncate,
    enc_update,
    ts,
    values,
)

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "pgoutput_stream_pg15.json").read_text())
FACTS = FIXTURE["facts"]
RAW = [bytes.fromhex(h) for _lsn, _xid, h in FIXTURE["messages"]]
TABLES = {
    "public.big": TableSchema("public", "big", tuple(Column(n, 25, "text") for n in ("id", "m", "note"))),
    "public.full_t": TableSchema("public", "full_t", tuple(Column(n, 25, "text") for n in ("id", "v", "w"))),
    "public.trunc_t": TableSchema("public", "trunc_t", (Column("id", 23, "integer"),)),
}


def in_stream_flags(raws: list[bytes]) -> list[bool]:
    """Whether each message is inside a stream block, by the test's own reading of the type bytes."""
    out, inside = [], False
    for raw in raws:
        out.append(inside)
        if raw[:1] in (b"S", b"E"):
            inside = raw[:1] == b"S"
    return out


IN_STREAM = in_stream_flags(RAW)


def decoder(fused: bool = True, abort_info: bool = False) -> ChangeDecoder:
    d = ChangeDecoder(TABLES, abort_info=abort_info)
    if not fused:
        d._fast = d._fast_in = d._fast_out = {}
    return d


def events(fused: bool = True) -> list:
    d = decoder(fused)
    out = [d.feed(raw) for raw in RAW]
    assert not d.in_stream
    return out


# ---------------------------------------------------------------------------------------------------
# The captured session, message by message


def test_the_capture_is_what_the_fixture_says():
    assert FIXTURE["server_version"].startswith("15.")
    assert FIXTURE["options"]["proto_version"] == "2" and FIXTURE["options"]["streaming"] == "on"
    assert FIXTURE["walsender_checked"] == len(RAW) - 1  # START_REPLICATION sent the same bytes (no 'M')
    kinds = {(raw[:1], inside) for raw, inside in zip(RAW, IN_STREAM)}
    inside = {bytes([t]) for t in b"RYIUDTME"}  # every change-like message inside a block, with its xid
    outside = {bytes([t]) for t in b"SAcBCRYI"}
    assert {k for k, i in kinds if i} == inside and {k for k, i in kinds if not i} == outside


def test_the_messages_decode_as_the_server_sent_them():
    msgs = [po.decode(raw, inside) for raw, inside in zip(RAW, IN_STREAM)]
    top, sub, after, aborted = (
        FACTS[k] for k in ("streamed_xid", "savepoint_xid", "after_rollback_xid", "aborted_xid")
    )
    control = [
        m for m in msgs if isinstance(m, (po.StreamStart, po.StreamStop, po.StreamCommit, po.StreamAbort))
    ]
    shape = [(type(m).__name__, getattr(m, "xid", None)) for m in control]
    assert shape == [
        ("StreamStart", top),
        ("StreamStop", None),
        ("StreamStart", top),
        ("StreamStop", None),
        ("StreamAbort", top),
        ("StreamStart", top),
        ("StreamStop", None),
        ("StreamCommit", top),
        ("StreamStart", aborted),
        ("StreamStop", None),
        ("StreamAbort", aborted),
    ]
    assert [m.first_segment for m in control if isinstance(m, po.StreamStart)] == [True, False, False, True]
    aborts = [m for m in control if isinstance(m, po.StreamAbort)]
    assert aborts == [po.StreamAbort(top, sub), po.StreamAbort(aborted, aborted)]
    (commit,) = [m for m in control if isinstance(m, po.StreamCommit)]
    assert commit.flags == 0
    assert FACTS["lsn_before_commit"] <= commit.commit_lsn < commit.end_lsn <= FACTS["lsn_after_commit"]
    assert isinstance(commit.commit_lsn, Lsn) and isinstance(commit.end_lsn, Lsn)
    micros = po.pg_micros(commit.commit_time)
    assert FACTS["micros_before_commit"] <= micros <= FACTS["micros_after_commit"]
    # inside blocks, the changes carry their (sub)transaction's xid; outside, 0
    xids = {m.xid for m, inside in zip(msgs, IN_STREAM) if inside and hasattr(m, "relid")}
    assert xids == {top, sub, after, aborted}
    assert all(
        m.xid == 0
        for m, inside in zip(msgs, IN_STREAM)
        if not inside and hasattr(m, "xid") and hasattr(m, "relid")
    )
    (message,) = [m for m in msgs if isinstance(m, po.LogicalMessage)]
    assert message == po.LogicalMessage(True, message.lsn, "capture", b"inside a stream", top)
    (truncate,) = [m for m in msgs if isinstance(m, po.Truncate)]
    assert truncate.xid == top and not truncate.cascade and not truncate.restart_identity
    types = [m for m in msgs if isinstance(m, po.TypeInfo)]
    assert {(t.namespace, t.name) for t in types} == {("public", "mood")}
    assert [t.xid for t in types] == [0, top, after, aborted]


def _split(evs: list) -> dict:
    """The events by transaction: ordinary ones by their TxBegin xid, streamed ones by StreamStart xid."""
    out: dict = {}
    current = None
    for ev in evs:
        if isinstance(ev, (TxBegin, StreamStart)):
            current = ev.xid
        if isinstance(ev, (StreamCommit, StreamAbort)):
            out.setdefault(ev.xid, []).append(ev)
            continue
        if ev is not None:
            out.setdefault(current, []).append(ev)
    return out


def test_the_events_of_the_captured_session():
    evs = events()
    top, sub, after, aborted = (
        FACTS[k] for k in ("streamed_xid", "savepoint_xid", "after_rollback_xid", "aborted_xid")
    )
    by_tx = _split(evs)
    assert set(by_tx) == {FACTS["small_xid"], top, FACTS["between_xid"], aborted, FACTS["last_xid"]}
    # an ordinary transaction: as in protocol version 1 (lsn = its commit LSN, xid 0)
    small = by_tx[FACTS["small_xid"]]
    assert [type(e) for e in small] == [TxBegin, RelationInfo, RowChange, TxCommit]
    assert small[1].columns == (("id", 23), ("m", small[1].columns[1][1]), ("note", 25)) and small[1].xid == 0
    assert small[2] == RowChange(
        ChangeKind.INSERT, "public.big", ("0", "ok", "small"), lsn=small[0].final_lsn
    )
    # the streamed transaction: blocks, a transaction committed between them, a rolled back savepoint
    streamed = by_tx[top]
    order = [type(e).__name__ for e in evs if e is not None]
    assert (
        order.index("StreamStop")
        < order.index("TxBegin", order.index("StreamStop"))
        < order.index("StreamCommit")
    )
    assert sum(isinstance(e, StreamStart) for e in streamed) == 3
    rows = [e for e in streamed if isinstance(e, RowChange)]
    assert all(e.lsn == 0 for e in rows)
    main = [e for e in rows if e.xid == top]
    assert [e.new for e in main[:600]] == [(str(g), "sad", f"row {g}") for g in range(1, 601)]
    assert [(e.kind, e.table, e.new, e.old, e.old_is_key) for e in main[600:]] == [
        (ChangeKind.UPDATE, "public.big", ("-1", "sad", "row 1"), ("1", None, None), True),
        (ChangeKind.UPDATE, "public.big", ("2", "sad", "changed"), None, True),
        (ChangeKind.DELETE, "public.big", None, ("3", None, None), True),
        (ChangeKind.INSERT, "public.full_t", ("1", "a"), None, True),
        (ChangeKind.INSERT, "public.full_t", ("2", "b"), None, True),
        (ChangeKind.UPDATE, "public.full_t", ("1", "c"), ("1", "a"), False),
        (ChangeKind.DELETE, "public.full_t", None, ("2", "b"), False),
        (ChangeKind.INSERT, "public.full_t", ("3", "d", "33"), None, True),
    ]
    rolled_back = [e for e in rows if e.xid == sub]
    assert rolled_back and [e.new for e in rolled_back] == [
        (str(g), "ok", f"rolled back {g}") for g in range(1001, 1001 + len(rolled_back))
    ]
    assert [(e.xid, e.new) for e in rows if e.xid not in (top, sub)] == [
        (after, ("2000", "happy", "after the rollback"))
    ]
    (trunc,) = [e for e in streamed if isinstance(e, Truncate)]
    assert trunc == Truncate(("public.trunc_t",), False, False, Lsn(0), top)
    rels = [(e.table, len(e.columns), e.xid) for e in streamed if isinstance(e, RelationInfo)]
    assert rels == [
        ("public.big", 3, top),
        ("public.full_t", 2, top),
        ("public.full_t", 3, top),  # ALTER TABLE inside the streamed transaction
        ("public.trunc_t", 1, top),
        ("public.big", 3, after),
    ]
    assert streamed[-1] == StreamCommit(
        top, streamed[-1].commit_lsn, streamed[-1].end_lsn, streamed[-1].commit_time
    )
    assert StreamAbort(top, sub) in streamed
    assert streamed.index(StreamAbort(top, sub)) > max(
        i for i, e in enumerate(streamed) if getattr(e, "xid", 0) == sub and isinstance(e, RowChange)
    )
    # the aborted transaction: one block, then its abort
    gone = by_tx[aborted]
    assert gone[0] == StreamStart(aborted, True) and gone[-1] == StreamAbort(aborted, aborted)
    assert gone[-2] == StreamStop()
    assert {e.xid for e in gone if isinstance(e, RowChange)} == {aborted}
    assert [e.new[0] for e in gone if isinstance(e, RowChange)][:2] == ["3001", "3002"]
    between, last = by_tx[FACTS["between_xid"]], by_tx[FACTS["last_xid"]]
    assert [e.new for e in between if isinstance(e, RowChange)] == [("100000", "happy", "interleaved")]
    assert [(e.new, e.xid) for e in last if isinstance(e, RowChange)] == [(("4000", "ok", "last"), 0)]


def test_the_fused_paths_and_the_full_decoder_agree_on_the_capture():
    assert events(fused=True) == events(fused=False)


def test_streamed_inserts_take_the_fused_path(monkeypatch):
    calls = []
    real = po.decode
    monkeypatch.setattr(po, "decode", lambda raw, *a: calls.append(raw[:1]) or real(raw, *a))
    d = decoder()
    for raw in RAW:
        d.feed(raw)
    assert b"I" not in calls  # all inserts (2 or 3 columns, in blocks or not) were fused
    assert calls.count(b"U") == 2  # the two updates with an old tuple ('K', 'O')


def test_a_relation_in_a_block_updates_the_cache_at_once():
    d = decoder()
    for raw in RAW:
        ev = d.feed(raw)
        if isinstance(ev, RelationInfo) and ev.table == "public.full_t" and len(ev.columns) == 3:
            break
    assert d.in_stream and d.widths[ev.relid] == 3 and ev.xid == FACTS["streamed_xid"]


# ---------------------------------------------------------------------------------------------------
# Misplaced, malformed, truncated and extended messages


def test_every_truncation_and_trailing_byte_names_the_message():
    for raw, inside in zip(RAW, IN_STREAM):
        name = TYPE_NAMES[chr(raw[0])]
        for cut in range(1, len(raw)):
            with pytest.raises(DecodeError, match=name):
                po.decode(raw[:cut], inside)
        with pytest.raises(DecodeError, match=f"{name}.*trailing"):
            po.decode(raw + b"\x00", inside)
        with pytest.raises(DecodeError, match="empty"):
            po.decode(raw[:0], inside)


def test_a_message_out_of_place_is_refused():
    first = next(raw for raw in RAW if raw[:1] == b"S")
    with pytest.raises(DecodeError, match="Stream Stop.*outside a stream block"):
        decoder().feed(b"E")
    for raw in (first, enc_begin(1, T1, 1), next(raw for raw in RAW if raw[:1] == b"c")):
        d = decoder()
        d.feed(first)
        with pytest.raises(DecodeError, match="not allowed inside a stream block"):
            d.feed(raw)
    with pytest.raises(DecodeError, match="first-segment flag 2"):
        po.decode(b"S" + struct.pack(">IB", 7, 2))
    for t in "bPKrp":
        with pytest.raises(DecodeError, match="two-phase"):
            po.decode(t.encode() + b"\x00" * 8, True)


def test_stream_abort_with_abort_lsn_and_time_only_when_requested():
    """PostgreSQL 16+ with proto_version '4' and streaming 'parallel' (not capturable on 15)."""
    raw = b"A" + struct.pack(">IIQ", 900, 901, 0x1_0000_0040) + ts(T1)
    assert po.decode(raw, abort_info=True) == po.StreamAbort(900, 901, Lsn(0x1_0000_0040), T1)
    assert decoder(abort_info=True).feed(raw) == StreamAbort(900, 901, Lsn(0x1_0000_0040), T1)
    with pytest.raises(DecodeError, match="Stream Abort.*trailing"):
        po.decode(raw)
    with pytest.raises(DecodeError, match="Stream Abort.*truncated"):
        po.decode(raw[:9], abort_info=True)


def test_start_replication_options():
    one = start_replication_command("s", Lsn(0), ["p", "q q"]).as_string(None)
    assert (
        one == """START_REPLICATION SLOT "s" LOGICAL 0/0 (proto_version '1', publication_names '"p","q q"')"""
    )
    two = start_replication_command("s", Lsn(0x1_0000_0010), ["p"], 2).as_string(None)
    assert (
        two
        == """START_REPLICATION SLOT "s" LOGICAL 1/10 (proto_version '2', streaming 'on', publication_names '"p"')"""
    )
    with pytest.raises(ValueError, match="proto_version 3"):
        start_replication_command("s", Lsn(0), ["p"], 3)


# ---------------------------------------------------------------------------------------------------
# Hypothesis: random bodies, and the fused paths against the full decoder inside blocks

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.sampled_from(b"BCORYIUDTMSEcAbPZ"), st.binary(max_size=48), st.booleans(), st.booleans())
def test_arbitrary_bytes_never_crash(first, rest, inside, abort_info):
    try:
        po.decode(bytes([first]) + rest, inside, abort_info)
    except DecodeError:
        pass


@FUZZ
@given(st.sampled_from(RAW), st.integers(0, 60), st.integers(0, 255), st.booleans())
def test_captured_messages_mutated_never_crash(raw, pos, byte, inside):
    mutated = bytearray(raw)
    mutated[min(pos, len(raw) - 1)] = byte
    for msg in (bytes(mutated), bytes(mutated[: pos + 1])):
        try:
            po.decode(msg, inside)
        except DecodeError:
            pass


def in_block(raw: bytes, xid: int) -> bytes:
    """A version 1 change message as it is inside a stream block: the xid after the type byte."""
    return raw[:1] + struct.pack(">I", xid) + raw[1:]


def _outcome(dec, raw):
    try:
        return ("event", dec.feed(raw), dec.lsn, dec.in_stream)
    except DecodeError as e:
        return ("error", str(e))


xids = st.sampled_from([0, 7, 732, 2**32 - 1])
relids = st.sampled_from([7, 8, 9])
block_inputs = st.one_of(
    st.sampled_from([raw for raw, inside in zip(RAW, IN_STREAM) if inside]),
    st.tuples(relids, values, xids).map(lambda a: in_block(enc_insert(a[0], a[1]), a[2])),
    st.tuples(relids, values, xids).map(lambda a: in_block(enc_update(a[0], None, None, a[1]), a[2])),
    st.tuples(relids, values, st.sampled_from("KO"), values, xids).map(
        lambda a: in_block(enc_update(*a[:4]), a[4])
    ),
    st.tuples(relids, values, st.sampled_from("KO"), xids).map(lambda a: in_block(enc_delete(*a[:3]), a[3])),
    st.tuples(st.lists(relids, max_size=3), xids).map(lambda a: in_block(enc_truncate(a[0], 0), a[1])),
    st.sampled_from([b"E", enc_begin(5, T1, 5), enc_insert(7, ("1", "2", "3"))]),
)


def _block_decoders():
    """Fused and full decoders inside a block, knowing relid 7 (mapped, 3 columns), 8 (not
    mapped) and 9 (mapped, announced inside the block with 2 columns)."""
    out = []
    for fused in (True, False):
        d = decoder(fused)
        d.feed(enc_relation(7, "public", "big", "d", [(1, n, 25, -1) for n in ("id", "m", "note")]))
        d.feed(enc_relation(8, "public", "other", "d", [(1, "id", 25, -1)]))
        d.feed(b"S" + struct.pack(">IB", 732, 1))
        d.feed(in_block(enc_relation(9, "public", "full_t", "f", [(0, "id", 25, -1), (0, "v", 25, -1)]), 733))
        out.append(d)
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_inputs, st.integers(0, 40), st.binary(max_size=3))
def test_the_fused_paths_decode_blocks_as_the_full_decoder_does(raw, cut, extra):
    """Inside a stream block, whole, cut short or with bytes after it: the same event (or error)."""
    for msg in (raw, raw[: max(1, len(raw) - cut)], raw + extra):
        fused, full = _block_decoders()
        assert _outcome(fused, msg) == _outcome(full, msg)


# ---------------------------------------------------------------------------------------------------
# Round trip of the stream control messages from an independent encoder (written from the docs)


@FUZZ
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
def test_control_messages_round_trip(xid, sub, lsn, end, first):
    assert po.decode(b"S" + struct.pack(">IB", xid, int(first))) == po.StreamStart(xid, first)
    assert po.decode(b"E", True) == po.StreamStop()
    commit = b"c" + struct.pack(">IBQQ", xid, 0, lsn, end) + ts(T1)
    assert po.decode(commit) == po.StreamCommit(xid, 0, Lsn(lsn), Lsn(end), T1)
    assert po.decode(b"A" + struct.pack(">II", xid, sub)) == po.StreamAbort(xid, sub)
    d = decoder()
    assert d.feed(b"S" + struct.pack(">IB", xid, int(first))) == StreamStart(xid, first) and d.in_stream
    assert d.feed(b"E") == StreamStop() and not d.in_stream
    assert d.feed(commit) == StreamCommit(xid, Lsn(lsn), Lsn(end), T1)
