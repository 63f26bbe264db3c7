"""Net-change reduction on every target: random change sequences per key (insert, update, delete,
key change, unchanged TOAST, DEFAULT and FULL identity) applied once reduced (netchange.py, as
the Replayer does) and once change by change, into two tables of the same real target; both
must hold exactly the source's end state."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import DivergenceError
from replicator.model import ChangeKind, Lsn, RowChange, TableMapping
from replicator.netchange import NetChanges
from replicator.target import open_target
from replicator.target.postgres_apply import text_array
from tests import targets
from tests.integration.test_target_conformance import schema_of
from tests.unit.test_netchange import histories

target_kind = targets.kind_fixture(*targets.ALL)


@pytest.fixture
def tables(source_db, target_url):
    """The mappings of one source table into two target tables (reduced, one by one)."""
    with psycopg.connect(source_db, autocommit=True) as c:
        c.execute("CREATE TABLE net (k1 text, k2 text, a text, b text, PRIMARY KEY (k1, k2))")
    view = schema_of(source_db, "net")
    target = open_target(target_url)
    maps = [TableMapping(view, "net_reduced"), TableMapping(view, "net_each")]
    with target.connect() as conn:
        for m in maps:
            target.ensure_table(conn, m)
    yield target, maps
    target.dispose()


def contents(target, m) -> dict:
    with target.connect() as conn:
        rows = conn.execute(sa.select(target.table(m))).all()
    return {(r[0], r[1]): tuple(r) for r in rows}


def apply_both(target, maps, start, changes) -> None:
    reduced, each = maps
    net = NetChanges([0, 1])
    for ch in changes:
        net.add(ch)
    with target.connect() as conn:
        for m in maps:
            conn.execute(sa.delete(target.table(m)))
            target.apply(conn, m, [RowChange(ChangeKind.INSERT, "public.net", new=r) for r in start.values()])
        target.apply(conn, reduced, net.drain())
        for ch in changes:
            target.apply(conn, each, [ch])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_reduced_batch_leaves_what_each_change_leaves(tables, data):
    target, maps = tables
    start, changes, final = data.draw(histories(key_cols=2, width=4))
    changes = [RowChange(ch.kind, "public.net", ch.new, ch.old, ch.old_is_key, ch.lsn) for ch in changes]
    apply_both(target, maps, start, changes)
    assert contents(target, maps[0]) == final
    assert contents(target, maps[1]) == final


def test_a_reduced_update_chain_of_a_missing_row_names_the_first_lsn(tables):
    target, (m, _) = tables
    net = NetChanges([0, 1])
    for n in range(3):
        net.add(RowChange(ChangeKind.UPDATE, "public.net", new=("9", "9", str(n), "b"), lsn=Lsn(0x100 + n)))
    with pytest.raises(DivergenceError, match=r"k1='9'.*LSN 0/100"):
        with target.connect() as conn:
            target.apply(conn, m, net.drain())


def test_text_array_literals_round_trip_through_postgresql(source_db):
    values = ['a","b', "c", None, "\\", '"', "", "NULL", "{}", "a,b", " sp ", "é😀", "tab\tnl\n"]
    with psycopg.connect(source_db) as c:
        for vs in (values, ["plain", "x"], [None], ["only"]):
            assert c.execute("SELECT %s::text[]", [text_array(vs)]).fetchone()[0] == vs
