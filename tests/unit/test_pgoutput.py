"""pgoutput v1 decoder (v2 outside stream blocks is the same): byte-by-byte fixtures, edge cases and
hypothesis fuzzing (no server)."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import DecodeError
from replicator.model import UNCHANGED, Lsn
from replicator.source import pgoutput as po

# ---------------------------------------------------------------------------------------------------
# Independent test-side encoder (written from the docs, not from the decoder)

EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def ts(dt: datetime) -> bytes:
    delta = dt - EPOCH
    return struct.pack(">q", (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def cstr(s: str) -> bytes:
    return s.encode("utf-8") + b"\0"


def tup(values) -> bytes:
    out = [struct.pack(">h", len(values))]
    for v in values:
        if v is None:
            out.append(b"n")
        elif v is UNCHANGED:
            out.append(b"u")
        elif isinstance(v, bytes):
            out.append(b"b" + struct.pack(">i", len(v)) + v)
        else:
            raw = v.encode("utf-8")
            out.append(b"t" + struct.pack(">i", len(raw)) + raw)
    return b"".join(out)


def enc_begin(lsn, when, xid):
    return b"B" + struct.pack(">Q", lsn) + ts(when) + struct.pack(">I", xid)


def enc_commit(flags, lsn, end, when):
    return b"C" + struct.pack(">BQQ", flags, lsn, end) + ts(when)


def enc_origin(lsn, name):
    return b"O" + struct.pack(">Q", lsn) + cstr(name)


def enc_relation(relid, ns, name, ident, cols):
    out = (
        b"R"
        + struct.pack(">I", relid)
        + cstr(ns)
        + cstr(name)
        + ident.encode()
        + struct.pack(">h", len(cols))
    )
    for flags, cname, oid, mod in cols:
        out += struct.pack(">B", flags) + cstr(cname) + struct.pack(">Ii", oid, mod)
    return out


def enc_type(oid, ns, name):
    return b"Y" + struct.pack(">I", oid) + cstr(ns) + cstr(name)


def enc_insert(relid, new):
    return b"I" + struct.pack(">I", relid) + b"N" + tup(new)


def enc_update(relid, old, old_kind, new):
    head = b"U" + struct.pack(">I", relid)
    if old is not None:
        head += old_kind.encode() + tup(old)
    return head + b"N" + tup(new)


def enc_delete(relid, old, old_kind):
    return b"D" + struct.pack(">I", relid) + old_kind.encode() + tup(old)


def enc_truncate(relids, options):
    return b"T" + struct.pack(">iB", len(relids), options) + b"".join(struct.pack(">I", r) for r in relids)


def enc_message(flags, lsn, prefix, content):
    return b"M" + struct.pack(">BQ", flags, lsn) + cstr(prefix) + struct.pack(">i", len(content)) + content


T1 = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone.utc)
BIG = (0x1F << 32) | 0xDEADBEEF  # above 2^32


# ---------------------------------------------------------------------------------------------------
# Every message type, every field


def test_begin():
    m = po.decode(enc_begin(BIG, T1, 4_000_000_000))
    assert m == po.Begin(Lsn(BIG), T1, 4_000_000_000)
    assert isinstance(m.final_lsn, Lsn) and str(m.final_lsn) == "1F/DEADBEEF"
    assert m.commit_time.tzinfo is not None and m.commit_time.utcoffset() == timedelta(0)


def test_commit():
    m = po.decode(enc_commit(0, BIG, BIG + 48, T1))
    assert m == po.Commit(0, Lsn(BIG), Lsn(BIG + 48), T1)
    assert isinstance(m.end_lsn, Lsn)


def test_origin():
    assert po.decode(enc_origin(BIG, "pg_16385")) == po.Origin(Lsn(BIG), "pg_16385")


def test_relation_mixed_key_flags():
    cols = [(1, "id", 23, -1), (0, "name", 1043, 36), (1, "tenant", 20, -1), (0, "😀col", 1700, 786438)]
    m = po.decode(enc_relation(16384, "public", "orders", "d", cols))
    assert m.relid == 16384 and m.namespace == "public" and m.name == "orders"
    assert m.replica_identity == "d"
    assert m.columns == tuple(po.RelationColumn(*c) for c in cols)
    assert [c.is_key for c in m.columns] == [True, False, True, False]
    assert m.columns[1].type_mod == 36 and m.columns[0].type_mod == -1


@pytest.mark.parametrize("ident", ["d", "n", "f", "i"])
def test_relation_identities_and_empty(ident):
    m = po.decode(enc_relation(0xFFFFFFFF, "", "t", ident, []))
    assert m == po.Relation(0xFFFFFFFF, "", "t", ident, ())


def test_relation_bad_identity():
    with pytest.raises(DecodeError, match="replica identity"):
        po.decode(enc_relation(1, "s", "t", "x", []))


def test_type():
    assert po.decode(enc_type(16390, "public", "mood")) == po.TypeInfo(16390, "public", "mood")


def test_insert_values():
    vals = ("1", None, "", "😀 grüße", UNCHANGED, b"\x00\xff")
    m = po.decode(enc_insert(16384, vals))
    assert m == po.Insert(16384, vals)
    assert m.new[2] == "" and m.new[1] is None and m.new[4] is UNCHANGED and m.new[5] == b"\x00\xff"
    assert m.new[3] == "😀 grüße"


def test_update_without_old():
    m = po.decode(enc_update(7, None, None, ("1", "x", UNCHANGED)))
    assert m == po.Update(7, None, None, ("1", "x", UNCHANGED))


def test_update_key_old():
    m = po.decode(enc_update(7, ("1", None, None), "K", ("2", "x", UNCHANGED)))
    assert m.old_kind == "K" and m.old == ("1", None, None) and m.new == ("2", "x", UNCHANGED)


def test_update_full_old():
    m = po.decode(enc_update(7, ("1", "a", None), "O", ("1", "b", None)))
    assert m == po.Update(7, ("1", "a", None), "O", ("1", "b", None))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_delete(kind):
    assert po.decode(enc_delete(9, ("5", None), kind)) == po.Delete(9, ("5", None), kind)


@pytest.mark.parametrize(
    "opts,cascade,restart", [(0, False, False), (1, True, False), (2, False, True), (3, True, True)]
)
def test_truncate(opts, cascade, restart):
    m = po.decode(enc_truncate([16384, 0xFFFFFFFE], opts))
    assert m == po.Truncate((16384, 0xFFFFFFFE), cascade, restart)


def test_message():
    m = po.decode(enc_message(1, BIG, "my.prefix", b"\x00payload\xff"))
    assert m == po.LogicalMessage(True, Lsn(BIG), "my.prefix", b"\x00payload\xff")
    assert po.decode(enc_message(0, 1, "", b"")) == po.LogicalMessage(False, Lsn(1), "", b"")


def test_memoryview_and_bytearray_input():
    raw = enc_insert(1, ("a",))
    assert po.decode(memoryview(b"xx" + raw)[2:]) == po.decode(bytearray(raw)) == po.Insert(1, ("a",))


def test_timestamps_round_trip():
    for dt in (
        EPOCH,
        EPOCH - timedelta(microseconds=1),
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=timezone.utc),
    ):
        assert po.decode(enc_begin(0, dt, 0)).commit_time == dt
        assert po.pg_time(po.pg_micros(dt)) == dt


# ---------------------------------------------------------------------------------------------------
# Errors


def _raises(raw: bytes, *needles: str) -> str:
    with pytest.raises(DecodeError) as ei:
        po.decode(raw)
    text = str(ei.value)
    for n in needles:
        assert n in text, text
    return text


def test_errors_name_type_and_offset():
    _raises(b"", "offset 0")
    _raises(b"Z\x00", "unknown", "'Z'", "offset 0")
    for t in "bPKrp":  # two-phase (protocol version 3): never requested, refused by name
        _raises(t.encode() + b"\x00" * 8, repr(t), "two-phase", "protocol version 3")
    _raises(enc_begin(1, T1, 1)[:-1], "Begin", "'B'", "offset 1")
    _raises(enc_begin(1, T1, 1) + b"\x00", "trailing", "offset 21")
    _raises(enc_insert(1, ("a",))[:5] + b"X" + tup(("a",)), "expected 'N'", "offset 5")
    bad_kind = enc_insert(1, ("a",))[:8] + b"x" + enc_insert(1, ("a",))[9:]
    _raises(bad_kind, "kind byte", "offset 8")
    bad_utf8 = enc_insert(1, ("a", "\u00e9"))
    _raises(bad_utf8[:-2] + b"\xc3\x28", "UTF-8", "column 1")
    neg = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", -1)
    _raises(neg, "negative", "offset 9")
    _raises(b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", -1), "negative")
    _raises(enc_truncate([], 0)[:1] + struct.pack(">iB", -2, 0), "negative")
    _raises(b"R" + struct.pack(">I", 1) + b"ns\xff\0t\0d\0\0", "UTF-8", "namespace", "offset 7")
    _raises(enc_update(1, ("a",), "K", ("b",))[:10] + b"Q", "Update")
    _raises(b"D" + struct.pack(">I", 1) + b"N" + tup(("a",)), "expected 'K' or 'O'")
    _raises(b"B" + struct.pack(">Qq", 0, 2**63 - 1) + b"\0\0\0\0", "out of range")


def test_check_tuple():
    rel = po.Relation(
        5, "public", "orders", "d", (po.RelationColumn(1, "id", 23, -1), po.RelationColumn(0, "v", 25, -1))
    )
    po.check_tuple(rel, ("1", None))
    with pytest.raises(DecodeError) as ei:
        po.check_tuple(rel, ("1",))
    assert "public.orders" in str(ei.value) and "expected 2" in str(ei.value) and "got 1" in str(ei.value)


# ---------------------------------------------------------------------------------------------------
# Hypothesis: round trip, truncation, mutation

u32 = st.integers(0, 2**32 - 1)
lsn = st.integers(0, 2**64 - 1)
name = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
when = st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(timezone.utc))
value = st.one_of(st.none(), st.just(UNCHANGED), st.text(max_size=12), st.binary(max_size=8))
values = st.lists(value, max_size=6).map(tuple)


def _pair(enc, cls):
    return lambda args: (enc(*args), cls(*args))


messages = st.one_of(
    st.tuples(lsn, when, u32).map(lambda a: (enc_begin(*a), po.Begin(Lsn(a[0]), a[1], a[2]))),
    st.tuples(st.integers(0, 255), lsn, lsn, when).map(
        lambda a: (enc_commit(*a), po.Commit(a[0], Lsn(a[1]), Lsn(a[2]), a[3]))
    ),
    st.tuples(lsn, name).map(lambda a: (enc_origin(*a), po.Origin(Lsn(a[0]), a[1]))),
    st.tuples(
        u32,
        name,
        name,
        st.sampled_from("dnfi"),
        st.lists(st.tuples(st.integers(0, 255), name, u32, st.integers(-(2**31), 2**31 - 1)), max_size=5),
    ).map(lambda a: (enc_relation(*a), po.Relation(*a[:4], tuple(po.RelationColumn(*c) for c in a[4])))),
    st.tuples(u32, name, name).map(_pair(enc_type, po.TypeInfo)),
    st.tuples(u32, values).map(_pair(enc_insert, po.Insert)),
    st.tuples(u32, st.none(), st.none(), values).map(_pair(enc_update, po.Update)),
    st.tuples(u32, values, st.sampled_from("KO"), values).map(_pair(enc_update, po.Update)),
    st.tuples(u32, values, st.sampled_from("KO")).map(_pair(enc_delete, po.Delete)),
    st.tuples(st.lists(u32, max_size=5), st.integers(0, 3)).map(
        lambda a: (enc_truncate(*a), po.Truncate(tuple(a[0]), bool(a[1] & 1), bool(a[1] & 2)))
    ),
    st.tuples(st.integers(0, 1), lsn, name, st.binary(max_size=10)).map(
        lambda a: (enc_message(*a), po.LogicalMessage(bool(a[0]), Lsn(a[1]), a[2], a[3]))
    ),
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(messages)
def test_round_trip(pair):
    raw, expected = pair
    assert po.decode(raw) == expected
    assert po.decode(memoryview(raw)) == expected


@FUZZ
@given(messages)
def test_every_truncation_raises(pair):
    raw, _ = pair
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            po.decode(raw[:cut])


def _decode_or_decode_error(raw: bytes) -> None:
    try:
        po.decode(raw)
    except DecodeError:
        pass


@FUZZ
@given(messages, st.data())
def test_mutations_never_crash(pair, data):
    raw = bytearray(pair[0])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw)))
        if op == "insert" or not raw:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "flip":
            raw[min(pos, len(raw) - 1)] = data.draw(st.integers(0, 255))
        else:
            del raw[min(pos, len(raw) - 1)]
    _decode_or_decode_error(bytes(raw))


@FUZZ
@given(st.sampled_from(b"BCORYIUDTMSEcAZ"), st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(first, rest):
    _decode_or_decode_error(bytes([first]) + rest)


# ------------------------------------------------------------------ the decoder's fused paths
def _decoders():
    """A ChangeDecoder (fused paths on) and one with them off, both knowing relid 7 (mapped,
    3 columns) and relid 8 (not mapped)."""
    from replicator.model import Column, TableSchema
    from replicator.source.changes import ChangeDecoder

    cols = tuple(Column(n, 25, "text") for n in "abc")
    out = []
    for fused in (True, False):
        d = ChangeDecoder({"public.t": TableSchema("public", "t", cols)})
        if not fused:
            d._fast = d._fast_in = d._fast_out = {}
        for relid, rel in ((7, "t"), (8, "other")):
            d.feed(enc_relation(relid, "public", rel, "d", [(1, n, 25, -1) for n in "abc"]))
        out.append(d)
    return out


def _outcome(dec, raw):
    try:
        return ("event", dec.feed(raw), dec.lsn)
    except DecodeError as e:
        return ("error", str(e))


fused_inputs = st.one_of(
    messages.map(lambda m: m[0]),
    st.tuples(st.sampled_from([7, 8]), values).map(lambda a: enc_insert(*a)),
    st.tuples(st.sampled_from([7, 8]), st.none(), st.none(), values).map(lambda a: enc_update(*a)),
    st.tuples(st.sampled_from([7, 8]), values, st.sampled_from("KO"), values).map(lambda a: enc_update(*a)),
    st.tuples(st.sampled_from([7, 8]), values, st.sampled_from("KO")).map(lambda a: enc_delete(*a)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fused_inputs, st.integers(0, 40), st.binary(max_size=3))
def test_the_fused_paths_decode_as_the_full_decoder_does(raw, cut, extra):
    """Whole, cut short or with bytes after it: the same event (or the same error) either way."""
    for msg in (raw, raw[: max(1, len(raw) - cut)], raw + extra):
        fused, full = _decoders()
        assert _outcome(fused, msg) == _outcome(full, msg)
