"""verify's canonical values: the source's PostgreSQL text and each target's stored form of the
same value compare equal, and different values do not (no servers)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from replicator.model import Column
from replicator.target.typemap import OID
from replicator.verify.values import canonical, display, sort_key

UTC = dt.timezone.utc


def col(kind, oid=None, elem=0, type_name=None, **kw):
    """A column of PostgreSQL type ``kind`` (a pg_type name, or given by ``oid``)."""
    return Column("c", oid if oid is not None else OID.get(kind, 25), type_name or kind, elem_oid=elem, **kw)


SAME = [  # (column, PostgreSQL text, target values that hold the same value)
    (col("int4"), "42", [42]),
    (col("int8"), "-1", [-1]),
    (col("bool"), "t", [True, 1, "t"]),
    (col("bool"), "f", [False, 0]),
    (col("numeric", type_name="numeric(12,2)"), "1.50", [Decimal("1.50"), Decimal("1.5"), "1.50", "1.5"]),
    (col("numeric"), "100", [Decimal("1E+2"), Decimal("100.000"), 100]),
    (col("numeric"), "-0.00", [Decimal("0"), "0"]),
    (col("numeric"), "NaN", [Decimal("NaN"), "NaN"]),
    (
        col("numeric"),
        "12345678901234567890.123456789012345678901",
        [Decimal("12345678901234567890.123456789012345678901")],
    ),
    (col("float8"), "0.1", [0.1]),
    (col("float8"), "-0", [0.0]),
    (col("float8"), "Infinity", [float("inf")]),
    (col("float4"), "0.1", [0.10000000149011612, 0.1]),  # REAL readback, DOUBLE holding the text
    (col("float4"), "NaN", [float("nan")]),
    (col("date"), "2024-02-29", [dt.date(2024, 2, 29)]),
    (col("date"), "infinity", [dt.date.max]),  # DuckDB returns infinity as the maximum date
    (
        col("time"),
        "12:34:56.5",
        [dt.time(12, 34, 56, 500000), dt.timedelta(hours=12, minutes=34, seconds=56.5), "12:34:56.500000"],
    ),
    (col("time"), "24:00:00", [dt.timedelta(hours=24), "24:00:00"]),
    (
        col("timestamp"),
        "2024-01-02 03:04:05",
        [dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05.000000"],
    ),
    (
        col("timestamptz"),
        "2024-01-02 03:04:05.123+00",
        [
            dt.datetime(2024, 1, 2, 3, 4, 5, 123000),  # MySQL/SQLite: naive UTC
            dt.datetime(2024, 1, 2, 4, 4, 5, 123000, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2024-01-02 03:04:05.123000",
            "2024-01-02T03:04:05.123+00:00",
        ],
    ),
    (col("timestamptz"), "infinity", [dt.datetime.max]),
    (col("timestamptz"), "0044-03-15 12:00:00.5+00 BC", ["0044-03-15 (BC) 12:00:00.5+00"]),  # DuckDB's BC
    (col("date"), "0044-03-15 BC", ["0044-03-15 (BC)"]),
    (
        col("uuid"),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"],
    ),
    (col("bytea"), "\\x00ff10", [b"\x00\xff\x10", memoryview(b"\x00\xff\x10"), bytearray(b"\x00\xff\x10")]),
    (
        col("jsonb"),
        '{"a": 1.50, "b": [1, "x", null, true]}',
        ['{"b":[1,"x",null,true],"a":1.5}', {"a": Decimal("1.5"), "b": [1, "x", None, True]}],
    ),
    (col("json"), '{"a" : 1, "a": 2}', ['{"a": 2}']),  # json keeps duplicates; the last one counts
    (
        col("interval", 1186),
        "P1Y2M3DT4H5M6.5S",
        [dt.timedelta(days=14 * 30 + 3, hours=4, minutes=5, seconds=6.5), "P1Y2M3DT4H5M6.5S"],
    ),
    (col("interval", 1186), "PT0S", [dt.timedelta(0)]),
    (col("timetz", 1266), "12:34:56+02", [dt.time(12, 34, 56, tzinfo=dt.timezone(dt.timedelta(hours=2)))]),
    (col("text"), "héllo 😀", ["héllo 😀", "héllo 😀".encode()]),
    (col("bpchar", type_name="character(4)"), "ab  ", ["ab  "]),
    (col("int4[]", 1007, elem=23), "{1,2,NULL}", ["[1,2,null]", [1, 2, None]]),
    (
        col("numeric[]", 1231, elem=1700),
        "{{1.50,2},{NULL,3}}",
        ['[["1.50","2"],[null,"3"]]', [[Decimal("1.5"), Decimal(2)], [None, Decimal(3)]]],
    ),
    (col("text[]", 1009, elem=25), '{"a b","c\\"d",NULL,"NULL"}', ['["a b","c\\"d",null,"NULL"]']),
    (
        col("timestamptz[]", 1185, elem=1184),
        '{"2024-01-02 03:04:05+00"}',
        [[dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)], '["2024-01-02 03:04:05+00"]'],
    ),
]


@pytest.mark.parametrize("c,text,stored", SAME, ids=[f"{c.type_name}:{t}" for c, t, _ in SAME])
def test_source_text_and_stored_forms_are_equal(c, text, stored):
    f = canonical(c)
    want = f(text)
    for v in stored:
        assert f(v) == want, (v, f(v), want)
        assert repr(f(v)) == repr(want)  # digests hash canonical values: equal means same bytes


DIFFERENT = [
    (col("numeric"), "1.5", "1.50001"),
    (col("int4"), "-1", -2),
    (col("float8"), "0.1", 0.1000000001),
    (col("timestamptz"), "2024-01-02 03:04:05+00", dt.datetime(2024, 1, 2, 3, 4, 5, 1)),
    (
        col("timestamptz"),
        "2024-01-02 03:04:05+00",
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ),
    (col("bpchar", type_name="character(4)"), "ab  ", "ab"),
    (col("text"), "a", "A"),
    (col("jsonb"), '{"a": 1}', '{"a": "1"}'),
    (col("bool"), "t", 0),
    (col("int4[]", 1007, elem=23), "{1,2}", [2, 1]),
    (col("interval", 1186), "P1D", dt.timedelta(days=1, microseconds=1)),
]


@pytest.mark.parametrize("c,text,stored", DIFFERENT, ids=[f"{c.type_name}:{t}" for c, t, _ in DIFFERENT])
def test_different_values_stay_different(c, text, stored):
    f = canonical(c)
    assert f(text) != f(stored)


def test_null_is_null_everywhere():
    for c, _t, _s in SAME:
        assert canonical(c)(None) is None


def test_target_type_compares_as_the_type_it_stands_for():
    """numeric mapped to DOUBLE: the target holds a float, compared as float8."""
    c = col("numeric", target_type="DOUBLE")
    f = canonical(c)
    assert f("0.1234567890123456789") == f(0.12345678901234568)


def test_sort_keys_order_as_the_databases_do():
    n = col("numeric", not_null=True)
    native, text = sort_key(n, False), sort_key(n, True)
    f = canonical(n)
    vals = ["10", "9.5", "-1", "100"]
    assert sorted(vals, key=lambda v: native(v, f(v))) == ["-1", "9.5", "10", "100"]
    assert sorted(vals, key=lambda v: text(v, f(v))) == ["-1", "10", "100", "9.5"]  # SQLite TEXT
    ts = sort_key(col("timestamptz", not_null=True), False)
    g = canonical(col("timestamptz"))
    order = ["-infinity", "2024-01-01 00:00:00+00", "infinity"]
    assert sorted(reversed(order), key=lambda v: ts(v, g(v))) == order
    nullable = sort_key(col("int4"), False)
    assert sorted([None, 3, 1], key=lambda v: nullable(v, v)) == [1, 3, None]  # NULLS LAST
    s = sort_key(col("text", not_null=True), False)
    words = ["b", "a", "é", "Z", "😀", "日本"]
    assert sorted(words, key=lambda v: s(v, v)) == sorted(words, key=lambda v: v.encode())  # C collation


def test_display():
    assert display(b"\x01\xff") == "\\x01ff"
    assert display(7) == 7 and display("x") == "x" and display(float("inf")) == "inf"
