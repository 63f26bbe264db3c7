"""Mapping files without a server: parsing, positions in errors, environment, resolution rules."""

from __future__ import annotations

import pytest

from replicator.config import parse
from replicator.errors import ConfigError
from replicator.mapping import publications, resolve
from replicator.model import Column, Identity, TableSchema

ISSUE_EXAMPLE = """\
source: ${SOURCE_DSN}
target: duckdb:///analytics.duckdb
name: shop
defaults:
  on_missing_row: error
tables:
  - source: public.orders
    target: sales_orders
    columns:
      exclude: [secret]
      rename: {cust_id: customer_id}
      types: {amount: "DECIMAL(12,2)"}
    where: "status <> 'draft'"
    key: [order_no]
    insert_only: false
  - include: "public.order_*"
  - include: "public.*"
    exclude: ["public.tmp_*"]
"""


def col(name, oid=23):
    return Column(name, oid, "integer" if oid == 23 else "text")


def table(name, cols, key=("id",), identity=Identity.DEFAULT, schema="public", oid=1, pk=None):
    return TableSchema(
        schema,
        name,
        tuple(col(c, 25 if c not in ("id", "order_no") else 23) for c in cols),
        identity=identity,
        key=key,
        oid=oid,
        primary_key=key if pk is None else pk,
    )


CATALOG = [
    # REPLICA IDENTITY USING INDEX on (order_no, status): the filter on status and the declared key
    # order_no are both inside the identity, and secret may be left out of the column list
    table(
        "orders",
        ["order_no", "cust_id", "amount", "status", "secret"],
        key=("order_no", "status"),
        identity=Identity.INDEX,
        oid=1,
        pk=("order_no",),
    ),
    table("events", ["id", "payload"], key=(), identity=Identity.FULL, oid=6, pk=()),
    table("order_items", ["id", "order_no"], oid=2),
    table("customers", ["id", "name"], oid=3),
    table("tmp_load", ["id"], oid=4),
    table("on", ["id", "no"], oid=5),
]


def test_issue_example_parses_with_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DSN", "postgresql://u@h/db")
    cfg = parse(ISSUE_EXAMPLE, "m.yaml")
    assert cfg.source == "postgresql://u@h/db" and cfg.name == "shop"
    e = cfg.tables[0]
    assert (e.source, e.target, e.columns_exclude, e.key, e.insert_only) == (
        "public.orders",
        "sales_orders",
        ("secret",),
        ("order_no",),
        False,
    )
    assert dict(e.rename) == {"cust_id": "customer_id"} and dict(e.types) == {"amount": "DECIMAL(12,2)"}
    assert cfg.tables[2].exclude == ("public.tmp_*",)


def test_env_default_and_missing_variable(monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    cfg = parse("target: ${NOPE:-sqlite:///x.db}\ntables:\n  - include: '*'\n")
    assert cfg.target == "sqlite:///x.db"
    with pytest.raises(ConfigError, match=r"m.yaml:1:9: environment variable NOPE is not set"):
        parse("source: ${NOPE}\ntables:\n  - include: '*'\n", "m.yaml")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "tables:\n  - source: a\n    taget: b\n",
            r"m.yaml:3:5: unknown key 'taget' .*did you mean 'target'",
        ),
        ("tables:\n  - source: a\n    source: b\n", r"m.yaml:3:5: duplicate key 'source' .*line 2"),
        ("tables:\n  - source: a\n    include: b\n", r"m.yaml:2:5: each tables entry needs exactly one"),
        (
            "tables:\n  - source: a\n    insert_only: maybe\n",
            r"m.yaml:3:18: insert_only must be true or false",
        ),
        (
            "tables:\n  - source: a\n    on_missing_row: ignore\n",
            r"m.yaml:3:21: on_missing_row must be one of",
        ),
        ("tables: public.a\n", r"m.yaml:1:9: 'tables' must be a non-empty list"),
        (
            "tables:\n  - source: a\n    columns: {policy: {x: drop}}\n",
            r"m.yaml:3:24: columns.policy.x must be one of",
        ),
        ("tables:\n  - source: [a\n", r"m.yaml:\d+:\d+: not valid YAML"),
        ("source: x\n", r"m.yaml:1:1: the mapping has no 'tables:' list"),
    ],
)
def test_shape_errors_name_file_line_and_column(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text, "m.yaml")


def test_yaml_booleans_stay_names():
    cfg = parse("tables:\n  - source: on\n    columns: {exclude: [no]}\n    insert_only: yes\n")
    e = cfg.tables[0]
    assert e.source == "on" and e.columns_exclude == ("no",) and e.insert_only is True
    (m,) = resolve(cfg, CATALOG)
    assert m.label == "public.on" and m.view.column_names == ("id",)


def test_first_matching_entry_wins_and_globs(monkeypatch):
    monkeypatch.setenv("SOURCE_DSN", "x")
    ms = resolve(parse(ISSUE_EXAMPLE, "m.yaml"), CATALOG)
    by = {m.label: m for m in ms}
    assert set(by) == {
        "public.orders",
        "public.order_items",
        "public.customers",
        "public.on",
        "public.events",
    }
    o = by["public.orders"]
    assert o.target_name == "sales_orders" and o.where == "status <> 'draft'"
    assert o.view.column_names == ("order_no", "customer_id", "amount", "status")
    assert o.source_table.column_names == ("order_no", "cust_id", "amount", "status")
    assert o.view.key == ("order_no",) and o.view.column("amount").target_type == "DECIMAL(12,2)"
    assert o.column_list is not None and "secret" not in o.column_list


def resolve_text(text):
    return resolve(parse(text, "m.yaml"), CATALOG)


@pytest.mark.parametrize(
    "text, message",
    [
        ("tables:\n  - source: public.nope\n", r"m.yaml:2:5: 'public.nope' matches no table"),
        ("tables:\n  - include: 'public.zz*'\n", r"m.yaml:2:5: 'public.zz\*' matches no table"),
        (
            "tables:\n  - source: customers\n    columns: {exclude: [nme]}\n",
            r"m.yaml:3:25: column 'nme' does not exist .*did you mean 'name'",
        ),
        ("tables:\n  - source: customers\n    columns: {rename: {name: id}}\n", r"both be called 'id'"),
        (
            "tables:\n  - source: customers\n    columns: {exclude: [id]}\n",
            r"cannot exclude id: .*replica identity",
        ),
        (
            "tables:\n  - source: customers\n  - source: order_items\n    target: customers\n",
            r"both map to target table 'customers'",
        ),
        (
            "tables:\n  - source: customers\n    where: \"name <> 'x'\"\n",
            r"m.yaml:3:5: the row filter .* uses name, outside its replica identity",
        ),
        (
            "tables:\n  - source: events\n    columns: {exclude: [payload]}\n",
            r"cannot exclude payload: .*REPLICA IDENTITY FULL",
        ),
        (
            "tables:\n  - source: customers\n    key: [name]\n",
            r"m.yaml:3:5: the declared key of public.customers must be part of its replica identity",
        ),
        (
            "tables:\n  - source: customers\n    columns: {exclude: [name], types: {name: TEXT}}\n",
            r"column 'name' .* is excluded",
        ),
    ],
)
def test_resolution_errors_point_at_the_entry(text, message):
    with pytest.raises(ConfigError, match=message):
        resolve_text(text)


def test_insert_only_allows_what_identity_would_refuse_and_gets_its_own_publication():
    ms = resolve_text(
        "tables:\n  - source: events\n    insert_only: true\n    columns: {exclude: [payload]}\n"
        '  - source: customers\n    where: "id > 10"\n'
    )
    full, inserts = publications(ms)
    assert [(p.name, p.columns, p.where) for p in full] == [("customers", None, "id > 10")]
    assert [(p.name, p.columns) for p in inserts] == [("events", ("id",))]
