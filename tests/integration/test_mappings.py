"""Mapping files against real servers: the worked examples in mappings/, row-filter semantics,
excluded columns never leaving the source, init, and a mapping changed between runs."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from replicator.config import parse
from tests.compare import source_rows, target_columns, target_rows, target_tables
from tests.integration.test_migrate import replicator, slots_and_publications

ROOT = Path(__file__).resolve().parents[2]

SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, secret text);
CREATE TABLE orders (order_no int PRIMARY KEY, cust_id int, status text, amount numeric(12,2));
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE TABLE order_items (id int PRIMARY KEY, order_no int, sku text);
CREATE TABLE tmp_import (id int PRIMARY KEY);
CREATE TABLE tenant_orders (tenant_id int, order_no int, total int, internal_note text,
                            PRIMARY KEY (tenant_id, order_no));
CREATE TABLE tenant_customers (tenant_id int, id int, name text, PRIMARY KEY (tenant_id, id));
CREATE SCHEMA audit;
CREATE TABLE audit.log (id int PRIMARY KEY, what text);
INSERT INTO customers SELECT g, 'name ' || g, g || '@example.com', 'secret ' || g FROM generate_series(1, 20) g;
INSERT INTO orders SELECT g, g % 20 + 1, CASE WHEN g % 3 = 0 THEN 'draft' ELSE 'paid' END, g * 1.5
  FROM generate_series(1, 30) g;
INSERT INTO order_items SELECT g, g % 30 + 1, 'sku' || g FROM generate_series(1, 50) g;
INSERT INTO tmp_import SELECT generate_series(1, 5);
INSERT INTO tenant_orders SELECT t, g, g * 10, 'note' FROM generate_series(41, 43) t, generate_series(1, 10) g;
INSERT INTO tenant_customers SELECT t, g, 'c' || g FROM generate_series(41, 43) t, generate_series(1, 4) g;
INSERT INTO audit.log VALUES (1, 'created');
"""


@pytest.fixture
def shop(source_db):
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute(SHOP)
    return source_db


def env_for(dsn, url):
    return {"SOURCE_DSN": dsn, "TARGET_URL": url}


def run_sql(dsn, *stmts):
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)


def same(dsn, src_sql, url, tgt_table, tgt_cols):
    """Source query result equals the target table (row by row, as multisets)."""
    from tests.compare import _key, norm

    with psycopg.connect(dsn) as c:
        src = sorted((tuple(norm(v) for v in r) for r in c.execute(src_sql)), key=_key)
    dst = target_rows(url, tgt_table, tgt_cols)
    assert src == dst, f"{tgt_table}:\n source {src[:5]}…\n target {dst[:5]}…"
    return len(src)


def test_whole_database_example(shop, pg_target_url):
    replicator(
        "migrate", "--mapping", str(ROOT / "mappings/whole_database.yaml"), env=env_for(shop, pg_target_url)
    )
    for t in ("customers", "orders", "order_items", "tmp_import", "tenant_orders"):
        cols = target_columns(pg_target_url, t)
        assert source_rows(shop, "public", t, cols) == target_rows(pg_target_url, t, cols)
    assert target_rows(pg_target_url, "log", ["id", "what"]) == [(1, "created")]
    assert slots_and_publications(shop) == ([], [])


def test_analytics_example_into_duckdb_with_row_filter_semantics(shop, duckdb_target_url):
    env = env_for(shop, duckdb_target_url)
    m = str(ROOT / "mappings/analytics_duckdb.yaml")
    replicator("migrate", "--mapping", m, "--keep-slot", env=env)
    # excluded columns never left the source: not in the publication's column list, not on the target
    with psycopg.connect(shop) as c:
        attnames = c.execute(
            "SELECT attnames FROM pg_publication_tables WHERE pubname = 'analytics' "
            "AND tablename = 'customers'"
        ).fetchone()[0]
    assert attnames == ["id", "name"]
    assert target_columns(duckdb_target_url, "dim_customers") == ["id", "customer_name"]
    # UPDATE into the filter = INSERT, out of it = DELETE, inside it = UPDATE
    run_sql(
        shop,
        "UPDATE orders SET status = 'paid' WHERE order_no = 3",  # draft → paid: enters
        "UPDATE orders SET status = 'draft' WHERE order_no = 1",  # paid → draft: leaves
        "UPDATE orders SET amount = 99 WHERE order_no = 2",  # stays
        "INSERT INTO orders VALUES (100, 1, 'draft', 1), (101, 1, 'paid', 2)",
        "UPDATE customers SET name = 'renamed', secret = 'new secret' WHERE id = 5",
    )
    replicator("migrate", "--mapping", m, env=env)
    n = same(
        shop,
        "SELECT order_no, cust_id, status, amount FROM orders WHERE status <> 'draft'",
        duckdb_target_url,
        "fact_orders",
        ["order_no", "customer_id", "status", "amount"],
    )
    assert n == 21
    same(shop, "SELECT id, name FROM customers", duckdb_target_url, "dim_customers", ["id", "customer_name"])
    same(
        shop,
        "SELECT id, order_no, sku FROM order_items",
        duckdb_target_url,
        "order_items",
        ["id", "order_no", "sku"],
    )
    tables = target_tables(duckdb_target_url)
    assert "tmp_import" not in tables and "tenant_orders" not in tables and "log" not in tables


def test_tenant_example_into_mysql(shop, mysql_target_url):
    env = env_for(shop, mysql_target_url)
    m = str(ROOT / "mappings/tenant_mysql.yaml")
    replicator("migrate", "--mapping", m, "--keep-slot", env=env)
    run_sql(
        shop,
        "INSERT INTO tenant_orders VALUES (42, 11, 110, 'x'), (41, 11, 110, 'x')",
        "UPDATE tenant_orders SET total = 0 WHERE order_no = 1",
        "DELETE FROM tenant_customers WHERE id = 2",
    )
    replicator("migrate", "--mapping", m, env=env)
    same(
        shop,
        "SELECT tenant_id, order_no, total FROM tenant_orders WHERE tenant_id = 42",
        mysql_target_url,
        "orders",
        ["tenant_id", "order_no", "total"],
    )
    same(
        shop,
        "SELECT tenant_id, id, name FROM tenant_customers WHERE tenant_id = 42",
        mysql_target_url,
        "customers",
        ["tenant_id", "id", "name"],
    )
    assert "internal_note" not in target_columns(mysql_target_url, "orders")


def test_init_writes_a_mapping_that_works(shop, sqlite_target_url, tmp_path):
    run_sql(shop, "CREATE TABLE nokey (v text)")
    out = replicator("init", "--source", shop, "--target", sqlite_target_url).stdout
    assert "PROBLEM: public.nokey" in out and shop not in out
    path = tmp_path / "m.yaml"
    path.write_text(out)
    cfg = parse(out, str(path))
    assert {e.source for e in cfg.tables} >= {"public.customers", "audit.log", "public.nokey"}
    replicator("migrate", "--mapping", str(path), env={"REPLICATOR_SOURCE": shop})
    assert len(target_rows(sqlite_target_url, "orders", ["order_no"])) == 30


def test_mapping_changed_between_runs(shop, sqlite_target_url, tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("tables:\n  - source: customers\n  - source: tmp_import\n")
    second = tmp_path / "b.yaml"
    second.write_text("tables:\n  - source: customers\n  - source: order_items\n")
    env = {"REPLICATOR_SOURCE": shop, "REPLICATOR_TARGET": sqlite_target_url}
    replicator("migrate", "--mapping", str(first), "--keep-slot", env=env)
    run_sql(shop, "INSERT INTO tmp_import VALUES (99)", "INSERT INTO customers VALUES (99, 'n', 'e', 's')")
    cp = replicator("migrate", "--mapping", str(second), "--keep-slot", env=env)
    assert "public.tmp_import is no longer selected" in cp.stderr
    assert "copying 1 table(s) from a fresh snapshot: public.order_items" in cp.stderr
    assert len(target_rows(sqlite_target_url, "order_items", ["id"])) == 50
    assert len(target_rows(sqlite_target_url, "tmp_import", ["id"])) == 5  # no longer applied
    assert len(target_rows(sqlite_target_url, "customers", ["id"])) == 21
    with psycopg.connect(shop) as c:
        pub = {
            r[0]
            for r in c.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'replicator'")
        }
    assert pub == {"customers", "order_items"}
    doc = json.loads(replicator("status", "--target", sqlite_target_url, "--json").stdout)
    assert {t["source"]: t["state"] for t in doc["tables"]} == {
        "public.customers": "r",
        "public.order_items": "r",
    }


def test_bad_mapping_is_refused_before_anything_exists(shop, sqlite_target_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  - source: customers\n    columns: {exclude: [emial]}\n")
    cp = replicator(
        "migrate", "--mapping", str(path), "--source", shop, "--target", sqlite_target_url, check=False
    )
    assert cp.returncode == 2 and f"{path}:3:25: column 'emial'" in cp.stderr and "'email'" in cp.stderr
    path.write_text('tables:\n  - source: customers\n    where: "nosuch > 1"\n')
    cp = replicator("check", "--mapping", str(path), "--source", shop, check=False)
    assert cp.returncode == 1 and "row filter of public.customers" in cp.stdout
    assert slots_and_publications(shop) == ([], [])
