"""The type map without servers: array text parsing, target type expressions, per-target column
types with target_type and policies, the Python half of value policies, identifier checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql, postgresql, sqlite

from replicator.model import Column, TableMapping, TableSchema
from replicator.target import open_target, pgarray, typemap, value_rules

INT, TEXT, NUMERIC, TS, F8 = 23, 25, 1700, 1114, 701
URLS = {
    "duckdb": "duckdb:///unused.duckdb",
    "sqlite": "sqlite:///unused.sqlite",
    "mysql": "mysql+pymysql://u@h/db",
    "pg": "postgresql://u@h/db",
}


def col(name="c", oid=TEXT, type_name="text", **kw) -> Column:
    return Column(name=name, type_oid=oid, type_name=type_name, **kw)


def mapping(*cols: Column, name="t", key=("id",)) -> TableMapping:
    cols = (col("id", INT, "integer", not_null=True),) + cols
    return TableMapping(TableSchema("public", name, cols, key=key, primary_key=key), name)


# ------------------------------------------------------------------ arrays
@pytest.mark.parametrize(
    "text, want",
    [
        ("{}", []),
        ("{1,NULL,3}", ["1", None, "3"]),
        ("{{1,2},{3,NULL}}", [["1", "2"], ["3", None]]),
        ('{"NULL",null,""}', ["NULL", "null", ""]),
        (r'{"a\"b","c\\d","{x}"," s "}', ['a"b', "c\\d", "{x}", " s "]),
        ('{"a,b",😀}', ["a,b", "😀"]),
        ("{{{x}}}", [[["x"]]]),
    ],
)
def test_parse_array(text, want):
    assert pgarray.parse_array(text) == want


def test_parse_array_box_delimiter_and_bounds():
    assert pgarray.parse_array("{(3,4),(1,2);(1,1),(0,0)}", ";") == ["(3,4),(1,2)", "(1,1),(0,0)"]
    with pytest.raises(ValueError):
        pgarray.parse_array("[0:1]={1,2}")


elements = st.one_of(
    st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
)


def quoted(v) -> str:
    """Array input that quotes every element (PostgreSQL accepts it; its output quotes fewer)."""
    if isinstance(v, list):
        return "{" + ",".join(quoted(x) for x in v) + "}"
    return "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(st.lists(elements, max_size=8), st.integers(1, 3))
def test_parse_array_round_trips_any_quoted_elements(flat, rows):
    value = [flat[i::rows] for i in range(rows)] if flat and len(flat) % rows == 0 else flat
    assert pgarray.parse_array(quoted(value)) == value


def test_array_json_native_elements_and_strings():
    ints = col("a", 1007, "integer[]", elem_oid=INT)
    assert pgarray.array_json(ints)("{{1,NULL},{-3,4}}") == "[[1,null],[-3,4]]"
    bools = col("a", 1000, "boolean[]", elem_oid=16)
    assert pgarray.array_json(bools)("{t,f,NULL}") == "[true,false,null]"
    texts = col("a", 1009, "text[]", elem_oid=TEXT)
    assert json.loads(pgarray.array_json(texts)('{"x\\"y",NULL,"NULL"}')) == ['x"y', None, "NULL"]
    domain_ints = col("a", 99999, "posint[]", elem_oid=99998, elem_base_oid=INT)
    assert pgarray.array_json(domain_ints)("{1}") == '["1"]'  # a domain element is a string


# ------------------------------------------------------------------ target types
@pytest.mark.parametrize(
    "expr, want",
    [
        ("DECIMAL(12,2)", ("numeric", (12, 2))),
        ("numeric( 40 , 10 )", ("numeric", (40, 10))),
        ("decimal", ("numeric()", ())),
        ("BIGINT", ("bigint", ())),
        ("int(11)", ("integer", ())),
        ("double precision", ("double precision", ())),
        ("varchar(5)", ("varchar", (5,))),
        ("LONGTEXT", ("text", ())),
        ("TIMESTAMP(3)", None),
        ("JSON", None),
    ],
)
def test_parse_target_type(expr, want):
    assert typemap.parse_target_type(expr) == want


def ddl(kind: str, c: Column, m: TableMapping | None = None) -> str:
    t = open_target(URLS[kind])
    t._collation = "utf8mb4_nopad_bin"  # MySQL: known without asking a server
    dialect = {
        "duckdb": postgresql.dialect(),
        "sqlite": sqlite.dialect(),
        "mysql": mysql.dialect(),
        "pg": postgresql.dialect(),
    }[kind]
    table = t.table(m or mapping(c))
    return str(sa.schema.CreateTable(table).compile(dialect=dialect))


@pytest.mark.parametrize(
    "kind, typ",
    [
        ("duckdb", "DECIMAL(12,2)"),
        ("mysql", "DECIMAL(12,2)"),
        ("sqlite", "DECIMAL(12,2)"),
        ("pg", "DECIMAL(12,2)"),
    ],
)
def test_target_type_is_the_ddl_and_checks_values(kind, typ):
    n = col("n", NUMERIC, "numeric", target_type=typ)
    assert f"n {typ}" in ddl(kind, n).replace('"', "").replace("`", "")
    t = open_target(URLS[kind])
    load = t.value_loader(n)
    assert str(load("1234567890.12")) == "1234567890.12"
    for bad in ("12345678901", "1.005", "NaN" if kind != "pg" else "Infinity"):
        with pytest.raises(ValueError):
            load(bad)
    clamp = open_target(URLS[kind]).value_loader(dataclasses.replace(n, policy="clamp"))
    assert str(clamp("1.005")) == "1.01" and str(clamp("-1e20")) == "-9999999999.99"


@pytest.mark.parametrize(
    "kind, text_type", [("duckdb", "VARCHAR"), ("mysql", "LONGTEXT"), ("sqlite", "TEXT"), ("pg", "text")]
)
def test_text_policy_makes_a_text_column_holding_postgresql_text(kind, text_type):
    ts = col("ts", TS, "timestamp without time zone", policy="text", target_type="DATETIME(3)")
    assert f"ts {text_type}" in ddl(kind, ts).replace('"', "").replace("`", "")
    assert open_target(URLS[kind]).value_loader(ts)("infinity") == "infinity"
    assert open_target(URLS[kind]).copy_expressions(mapping(ts)) == ["{col}", "{col}"]


def test_policy_null_makes_a_not_null_column_nullable():
    f = col("f", F8, "double precision", not_null=True)
    assert "f DOUBLE NOT NULL" in ddl("mysql", f)
    assert "f DOUBLE," in ddl("mysql", dataclasses.replace(f, policy="null")) + ","


def test_apply_policy():
    rule = value_rules.finite_float_rule("MySQL DOUBLE")
    assert value_rules.apply_policy(rule, "error", float)("1.5") == 1.5
    with pytest.raises(ValueError, match="NaN"):
        value_rules.apply_policy(rule, "error", float)("NaN")
    assert value_rules.apply_policy(rule, "null", float)("Infinity") is None
    assert value_rules.apply_policy(rule, "clamp", float)("-Infinity") == -1.7976931348623157e308
    assert value_rules.apply_policy(rule, "clamp", float)("NaN") is None
    assert value_rules.apply_policy(rule, "text", str)("NaN") == "NaN"


def test_copy_expression_applies_the_policy_on_the_source():
    m = mapping(col("ts", TS, "timestamp without time zone", policy="clamp"))
    expr = open_target(URLS["mysql"]).copy_expressions(m)[1]
    assert (
        expr.startswith('CASE WHEN "ts" IS NULL OR ("ts" BETWEEN')
        and "'9999-12-31 23:59:59.999999'::timestamp" in expr
    )
    marked = open_target(URLS["duckdb"]).copy_expressions(mapping(col("n", NUMERIC, "numeric(5,2)")))[1]
    assert "chr(26)" in marked  # error policy: the refused value is marked for the loader


# ------------------------------------------------------------------ identifiers
def test_identifier_problems_per_target():
    m = mapping(col("Name"), col("name"), col("😀"), col("trailing "), col("É"), col("é"))
    assert open_target(URLS["pg"]).identifier_problems(m) == []
    for kind in ("duckdb", "sqlite"):
        (line,) = open_target(URLS[kind]).identifier_problems(m)
        assert "'Name' and 'name'" in line and "columns.rename" in line
    lines = open_target(URLS["mysql"]).identifier_problems(m)
    assert len(lines) == 4 and "'É' and 'é'" in lines[1]
    assert any("'😀'" in x and "Basic Multilingual Plane" in x for x in lines)
    assert any("'trailing '" in x and "space" in x for x in lines)


def test_identifier_length_limits():
    long_pg = "é" * 32  # 64 bytes in UTF-8
    m = dataclasses.replace(mapping(col(long_pg)), target_name="x" * 64)
    lines = open_target(URLS["pg"]).identifier_problems(m)
    assert len(lines) == 2 and "63 bytes" in lines[0] and "target:" in lines[0] and repr(long_pg) in lines[1]
    lines = open_target(URLS["mysql"]).identifier_problems(
        dataclasses.replace(mapping(col("c" * 65)), target_name="t")
    )
    assert len(lines) == 1 and "64 characters" in lines[0]


def test_mysql_table_names_collide_when_the_server_folds_their_case():
    t = open_target(URLS["mysql"])
    t._lower_case_names = 1
    assert t.identifier_problems(mapping(name="Orders")) == []
    other = dataclasses.replace(
        mapping(name="orders"), view=dataclasses.replace(mapping().view, name="orders2")
    )
    (line,) = t.identifier_problems(other)
    assert "'Orders' and 'orders'" in line and "lower_case_table_names=1" in line and "target:" in line
    assert t.identifier_problems(mapping(name="Orders")) == []  # the same table asked again
    strict = open_target(URLS["mysql"])
    strict._lower_case_names = 0
    assert strict.identifier_problems(mapping(name="Orders")) == strict.identifier_problems(other) == []
