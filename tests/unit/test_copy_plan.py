"""Pure parts of the copy engine: asyncpg connection keywords from a libpq DSN, COPY options as
asyncpg keywords, and the split plan (a fake session answers the size query)."""

from __future__ import annotations

import pytest

from replicator import copyplan
from replicator.dsn import SOURCE_SETTINGS, asyncpg_params
from replicator.errors import ConfigError
from replicator.model import Column, TableMapping, TableSchema
from replicator.source.fastcopy import copy_keywords


def test_asyncpg_params_carry_the_pinned_session_settings_and_the_users_own():
    p = asyncpg_params(
        "host=db.example port=6432 dbname=app user=u password=pw options='-c search_path=s1 -cwork_mem=8MB'"
    )
    assert p is not None
    assert (p["host"], p["port"], p["database"], p["user"], p["password"]) == (
        "db.example",
        6432,
        "app",
        "u",
        "pw",
    )
    assert p["server_settings"]["search_path"] == "s1" and p["server_settings"]["work_mem"] == "8MB"
    assert all(p["server_settings"][k] == v for k, v in SOURCE_SETTINGS.items())
    assert asyncpg_params("postgresql://u@h/db?sslmode=verify-full")["ssl"] == "verify-full"


@pytest.mark.parametrize(
    "dsn",
    [
        "service=prod",
        "host=a,b dbname=x",
        "host=h sslrootcert=/ca.pem",
        "host=h options='-c a=b --other'",
        "host=h target_session_attrs=read-write",
    ],
)
def test_what_only_libpq_understands_falls_back_to_psycopg(dsn):
    assert asyncpg_params(dsn) is None


def test_a_libpq_environment_variable_asyncpg_ignores_falls_back(monkeypatch):
    monkeypatch.setenv("PGSERVICE", "prod")
    assert asyncpg_params("host=h") is None


def test_copy_options_become_asyncpg_keywords():
    assert copy_keywords("FORMAT text") == {"format": "text"}
    assert copy_keywords("FORMAT csv, NULL '\\N'") == {"format": "csv", "null": "\\N"}
    assert copy_keywords("FORMAT csv, NULL 'NULL', ENCODING 'UTF8'") == {
        "format": "csv",
        "null": "NULL",
        "encoding": "UTF8",
    }
    with pytest.raises(ValueError):
        copy_keywords("FORMAT csv, FORCE_QUOTE *")


class Sizes:
    """Answers the size query with ``rows`` and the leaf-partition query with ``leaves``."""

    def __init__(self, rows, leaves=()):
        self.rows, self.leaves = rows, list(leaves)

    def fetch(self, query):
        return self.leaves if "pg_partition_tree" in query else self.rows


def mapping(name: str, oid: int) -> TableMapping:
    t = TableSchema("public", name, (Column("id", 23, "integer"),), oid=oid)
    return TableMapping(view=t, target_name=name)


def test_big_plain_tables_are_split_into_page_ranges_biggest_first():
    ms = [mapping("small", 1), mapping("big", 2), mapping("parted", 3)]
    items = copyplan.plan(Sizes([(1, "r", 10, 150000), (2, "r", 1040, 150000), (3, "p", 0, 150000)]), ms, 100)
    big = [p for p in items if p.m.view.name == "big"]
    assert [(p.lo, p.hi) for p in big] == [(i * 100, (i + 1) * 100) for i in range(9)] + [(900, None)]
    assert (
        big[0].split is not None and big[0].split.pieces == 10 and all(p.split is big[0].split for p in big)
    )
    assert items[0].m.view.name == "big" and {p.m.view.name for p in items[-2:]} == {"small", "parted"}


def test_one_worker_keeps_the_mappings_order_and_old_servers_split_nothing():
    ms = [mapping("a", 1), mapping("b", 2)]
    items = copyplan.plan(Sizes([(1, "r", 1, 150000), (2, "r", 1000, 150000)]), ms, 100, workers=1)
    assert items[0].m.view.name == "a"
    items = copyplan.plan(Sizes([(1, "r", 1, 130000), (2, "r", 1000, 130000)]), ms, 100)
    assert all(p.split is None for p in items)


def test_a_short_tail_joins_the_last_piece():
    items = copyplan.plan(Sizes([(1, "r", 230, 150000)]), [mapping("t", 1)], 100)
    assert [(p.lo, p.hi) for p in items] == [(0, 100), (100, None)]


def test_the_piece_that_completes_a_split_table_is_told_so():
    s = copyplan.SplitTable(3)
    assert [s.finished(n) for n in (5, 6, 7)] == [False, False, True] and s.rows == 18


def test_the_piece_size_setting_is_checked_with_the_options(monkeypatch):
    """Before anything is created on the source: with the other option checks."""
    from replicator.options import Options, validate

    monkeypatch.setenv(copyplan.PIECE_PAGES_ENV, "0")
    with pytest.raises(ConfigError, match="REPLICATOR_COPY_PIECE_PAGES"):
        validate(Options(source="host=x", target="duckdb:///x.duckdb"))


def test_a_partitioned_table_is_split_by_its_leaves_and_a_big_leaf_by_pages():
    leaves = [(3, "public", "p1", "r", 240), (3, "public", "p2", "r", 30), (3, "public", "p3", "r", 0)]
    items = copyplan.plan(Sizes([(3, "p", 0, 150000)], leaves), [mapping("parted", 3)], 100)
    got = sorted((p.rel, p.lo, p.hi) for p in items)
    assert got == [
        (("public", "p1"), 0, 100),
        (("public", "p1"), 100, None),
        (("public", "p2"), 0, None),
        (("public", "p3"), 0, None),
    ]
    assert len({id(p.split) for p in items}) == 1 and items[0].split.pieces == 4


def test_a_partitioned_table_with_a_foreign_leaf_is_read_whole_through_its_root():
    leaves = [(3, "public", "p1", "r", 500), (3, "public", "remote", "f", 0)]
    items = copyplan.plan(Sizes([(3, "p", 0, 150000)], leaves), [mapping("parted", 3)], 100)
    assert [(p.split, p.rel) for p in items] == [(None, None)]
