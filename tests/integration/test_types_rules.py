"""The two halves of every value rule agree: the Python predicate and clamp of the change path and
the SQL the copy query runs on the source decide the same for PostgreSQL's own renderings.

Also: the array JSON form built in Python from array text equals the one PostgreSQL builds
(``array_to_json``) for arrays of many element types, shapes and quotings.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from replicator.model import Column
from replicator.target import pgarray, value_rules

SESSION = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex"
NUMBERS = [
    "0",
    "1",
    "-1",
    "123.45",
    "123.4",
    "999.99",
    "1000",
    "-999.99",
    "0.001",
    "1.000",
    "12.340",
    "NaN",
    "Infinity",
    "-Infinity",
    "123.455",
    "-0.005",
    "0.995",
    "99999",
    "32767",
    "32768",
    "-32769",
    "1.5",
    "0.123",
    "0.1234",
    "1e-20",
    "123456789012345678901234567890.5",
]
DATES = [
    "2024-01-01",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "0044-03-15 BC",
    "4713-01-01 BC",
    "infinity",
    "-infinity",
]
TIMESTAMPS = [
    "2024-01-01 12:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59.999999",
    "10000-01-01 00:00:00",
    "0044-03-15 10:00:00 BC",
    "infinity",
    "-infinity",
    "294246-12-31 23:59:59",
    "294247-01-01 00:00:00",
    "294276-12-31 00:00:00",
    "100000-01-01 00:00:00",
    "99999-12-31 00:00:00",
]
CASES = [  # (rule, PostgreSQL type of the values, values)
    (value_rules.decimal_rule(5, 2, "t"), "numeric", NUMBERS),
    (value_rules.decimal_rule(4, 1, "t", nan=True), "numeric", NUMBERS),
    (value_rules.decimal_rule(3, 3, "t"), "numeric", NUMBERS),
    (value_rules.decimal_rule(3, 0, "t"), "numeric", NUMBERS),
    (value_rules.integer_rule(-32768, 32767, "t"), "numeric", NUMBERS),
    (value_rules.length_rule(3, "t"), "text", ["", "abc", "abcd", "😀😀😀", "😀😀😀😀", "a\nb"]),
    (
        value_rules.finite_float_rule("t"),
        "float8",
        ["1.5", "-0", "1e+300", "5e-324", "NaN", "Infinity", "-Infinity"],
    ),
    (value_rules.not_nan_rule("t"), "float4", ["1.5", "-0", "3.4e38", "NaN", "Infinity", "-Infinity"]),
    (value_rules.finite_float_rule("t"), "float4", ["1.5", "-0", "3.4e38", "NaN", "Infinity", "-Infinity"]),
    (value_rules.numeric_nan_rule("t"), "numeric(5,2)", ["1.50", "-999.99", "0.00", "NaN"]),
    (value_rules.year_rule("date", "t"), "date", DATES),
    (value_rules.year_rule("timestamp", "t"), "timestamp", TIMESTAMPS),
    (
        value_rules.year_rule("timestamptz", "t"),
        "timestamptz",
        [t + "+00" for t in TIMESTAMPS if "inf" not in t],
    ),
    (value_rules.duckdb_year_rule("timestamp"), "timestamp", TIMESTAMPS),
    (
        value_rules.duckdb_year_rule("timestamptz"),
        "timestamptz",
        [t + "+00" for t in TIMESTAMPS if "inf" not in t],
    ),
    (value_rules.time_rule("t"), "time", ["00:00:00", "23:59:59.999999", "24:00:00", "12:00:00.5"]),
    (value_rules.array_rule("t"), "int[]", ["{1,2}", "[0:1]={1,2}", "{}", "{{1},{2}}", "[2:2][1:1]={{1}}"]),
    (
        value_rules.array_rule("t", 1, nan=True),
        "numeric[]",
        ["{1.5,NaN}", "{NaN}", "{1}", "{{1}}", "{}", "[2:2]={1}", "{-1,NaN,2}", "{NULL}"],
    ),
    (
        value_rules.array_rule("t", 2),
        "text[]",
        ["{{a}}", "{a}", '{"{a}"}', '{{"{"}}', "{}", "{{{x}}}", '{"NaN"}'],
    ),
]


@pytest.fixture(scope="module")
def pg(pg_server):
    """One connection for the whole module (the tests only read)."""
    name = "types_rules"
    dsn = pg_server.create_database(name)
    try:
        with psycopg.connect(dsn, options=SESSION, autocommit=True) as c:
            yield c
    finally:
        pg_server.drop_database(name)


@pytest.mark.parametrize("rule, typ, values", CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_python_and_sql_halves_of_a_rule_agree(pg, rule, typ, values):
    t, v = "(x)::text", "x"
    clamp = rule.clamp_sql.format(t=t, v=v, type=typ).replace("%", "%%")
    fits = rule.fits_sql(t, v).replace("%", "%%")
    rows = pg.execute(
        f"SELECT x::text, {fits}, ({clamp})::text FROM (SELECT unnest(%s::text[])::{typ} x) s", (values,)
    ).fetchall()
    assert len(rows) == len(values)
    for text, fits_sql, clamp_sql in rows:
        assert rule.fits(text) == fits_sql, f"{text!r}: Python says {rule.fits(text)}, SQL {fits_sql}"
        if not fits_sql:
            assert rule.clamp(text) == clamp_sql, (
                f"clamp {text!r}: Python {rule.clamp(text)!r}, SQL {clamp_sql!r}"
            )


ARRAYS = [  # (type, element oid, ndims, value)
    ("int[]", 23, 1, "'{1,NULL,-3}'"),
    ("int[]", 23, 2, "'{{1,2},{3,NULL}}'"),
    ("bigint[]", 20, 1, "'{}'"),
    (
        "text[]",
        25,
        1,
        """ARRAY['a', NULL, 'NULL', 'null', '', 'x"y', 'b\\c', ' sp ', '{}', ',', E'nl\\n', '😀é', ';']""",
    ),
    ("text[]", 25, 3, "'{{{a,b}},{{c,\"d,e\"}}}'"),
    ("boolean[]", 16, 1, "'{t,f,NULL}'"),
    ("numeric[]", 1700, 1, "'{NaN,1.50,-0.0001,Infinity}'"),
    ("float8[]", 701, 1, "'{NaN,-0,1e-320,-Infinity}'"),
    ("timestamptz[]", 1184, 1, '\'{"2024-01-01 00:00:00+05",infinity,"0044-03-15 00:00:00+00 BC"}\''),
    ("jsonb[]", 3802, 1, """ARRAY['{"a": [1, "x"]}'::jsonb, 'null', '"s"', NULL]"""),
    ("json[]", 114, 1, """ARRAY['{ "spaced" :  1 }'::json]"""),
    ("box[]", 603, 1, "'{(3,4),(1,2);(1,1),(0,0)}'"),
    ("bytea[]", 17, 1, "ARRAY['\\x00ff'::bytea, NULL, '\\x']"),
    ("uuid[]", 2950, 1, "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'"),
    ("interval[]", 1186, 1, '\'{"1 year 2 mons","-00:00:01"}\''),
    ("tsvector[]", 3614, 1, "ARRAY['a:1 b'::tsvector]"),
    ("int4range[]", 3904, 1, "'{\"[1,5)\",empty}'"),
    ("point[]", 600, 1, "'{\"(1,2)\"}'"),
]


@pytest.mark.parametrize(
    "typ, elem, ndims, literal", ARRAYS, ids=[f"{i}-{a[0]}" for i, a in enumerate(ARRAYS)]
)
def test_array_json_from_text_equals_postgresql_array_to_json(pg, typ, elem, ndims, literal):
    col = Column("a", 0, typ, elem_oid=elem, ndims=ndims, elem_delim=";" if elem == 603 else ",")
    text, via_sql = pg.execute(
        f"SELECT x::text, {pgarray.array_json_sql(col).format(v='x')} FROM (SELECT ({literal})::{typ} x) s"
    ).fetchone()
    assert json.loads(pgarray.array_json(col)(text)) == json.loads(via_sql)
