"""Modes without a server: mapping fields and their errors, the change rewrite, the extended view,
and how a soft_delete batch's INSERTs are cut so that a key is purged before each of them."""

from __future__ import annotations

import pytest

from replicator import modes
from replicator.config import parse
from replicator.errors import ConfigError
from replicator.mapping import resolve
from replicator.model import UNCHANGED, ChangeKind, Column, Identity, Lsn, RowChange, TableSchema
from replicator.netchange import NetChanges
from replicator.target.mode_ops import _distinct_runs

COLS = (Column("id", 23, "integer"), Column("name", 25, "text"), Column("big", 25, "text"))
KEYED = TableSchema("public", "t", COLS, identity=Identity.DEFAULT, key=("id",), primary_key=("id",), oid=1)
KEYLESS = TableSchema("public", "k", COLS, identity=Identity.FULL, oid=2)


def mapped(text: str, schema=KEYED):
    return resolve(parse(text, "m.yaml"), [schema])[0]


def test_soft_delete_adds_its_columns_last_and_keeps_the_source_apart():
    m = mapped("tables:\n  - source: public.t\n    mode: soft_delete\n")
    assert m.view.column_names[-3:] == ("_deleted", "_deleted_at", "_deleted_lsn")
    assert m.source_table.column_names == ("id", "name", "big")
    assert [c.source_sql for c in m.view.columns[-3:]] == ["false", "NULL::timestamptz", "NULL::bigint"]
    assert modes.plain(m).view.column_names == ("id", "name", "big")
    assert modes.compared(m).target_name == "t_current" and modes.compared(m).mode is None
    renamed = mapped(
        "tables:\n  - source: public.t\n    mode: soft_delete\n    soft_delete: {deleted: gone}\n"
    )
    assert renamed.view.column_names[-3] == "gone"


@pytest.mark.parametrize(
    "text,schema,message",
    [
        ("    mode: archive\n", KEYED, "mode must be one of mirror, soft_delete, history"),
        ("    soft_delete: {deleted: x}\n", KEYED, "add 'mode: soft_delete'"),
        ("    mode: soft_delete\n    insert_only: true\n", KEYED, "remove insert_only"),
        ("    mode: soft_delete\n    soft_delete: {gone: x}\n", KEYED, "not a column of mode soft_delete"),
        ("    mode: soft_delete\n    soft_delete: {deleted: name}\n", KEYED, "already has a column 'name'"),
        ("    mode: soft_delete\n", KEYLESS, "needs a key to find a row again"),
    ],
)
def test_mode_errors_name_the_entry(text, schema, message):
    with pytest.raises(ConfigError, match=message) as e:
        mapped(f"tables:\n  - source: public.{schema.name}\n{text}", schema)
    assert "m.yaml:" in str(e.value)


def test_a_delete_becomes_a_mark_of_the_key_only():
    m = mapped("tables:\n  - source: public.t\n    mode: soft_delete\n")
    (d,) = modes.changed(
        m, RowChange(ChangeKind.DELETE, "public.t", None, ("7", None, None), lsn=Lsn(99)), None
    )
    assert d.kind is ChangeKind.UPDATE and d.old is None
    assert d.new[:3] == ("7", UNCHANGED, UNCHANGED) and d.new[3] == "t" and d.new[5] == "99"
    (i,) = modes.changed(m, RowChange(ChangeKind.INSERT, "public.t", ("7", "a", "b")), None)
    assert i.new == ("7", "a", "b", "f", None, None)


def test_insert_delete_insert_in_one_batch_purges_before_each_insert():
    m = mapped("tables:\n  - source: public.t\n    mode: soft_delete\n")
    net = NetChanges([0])
    for ch in (
        RowChange(ChangeKind.INSERT, "public.t", ("7", "a", "b")),
        RowChange(ChangeKind.DELETE, "public.t", None, ("7", None, None)),
        RowChange(ChangeKind.INSERT, "public.t", ("7", "c", "d")),
        RowChange(ChangeKind.INSERT, "public.t", ("8", "e", "f")),
    ):
        for v in modes.changed(m, ch, None):
            net.add(v)
    inserts = [ch for ch in net.drain() if ch.kind is ChangeKind.INSERT]
    runs = _distinct_runs(inserts, m)
    assert all(len({ch.new[0] for ch in run}) == len(run) for run in runs)
    assert [ch.new[:2] for run in runs for ch in run if ch.new[0] == "7"][-1] == ("7", "c")


def test_the_history_example_mapping_resolves():
    """mappings/history_duckdb.yaml: customers in history mode, accounts soft-deleted (renamed
    columns), every other table mirrored."""
    import dataclasses
    from pathlib import Path

    from replicator.config import load

    cfg = load(str(Path(__file__).resolve().parents[2] / "mappings" / "history_duckdb.yaml"))
    tables = [
        dataclasses.replace(KEYED, name=n, oid=i) for i, n in enumerate(("customers", "accounts", "other"))
    ]
    by = {m.view.name: m for m in resolve(cfg, tables)}
    assert by["customers"].mode.kind == "history" and by["customers"].view.key == (
        "id",
        "_valid_from_lsn",
        "_seq",
    )
    assert by["accounts"].mode.kind == "soft_delete" and "is_deleted" in by["accounts"].view.column_names
    assert by["other"].mode is None and by["other"].view.column_names == ("id", "name", "big")


def test_a_key_change_in_history_is_a_tombstone_and_a_first_version():
    m = mapped("tables:\n  - source: public.t\n    mode: history\n")
    ch = RowChange(ChangeKind.UPDATE, "public.t", ("8", "n", UNCHANGED), ("7", None, None), True, Lsn(5))
    tomb, first = modes.changed(m, ch, None, seq=3)
    assert tomb.new[:3] == ("7", None, None) and tomb.new[-1] == "delete" and tomb.new[4:6] == ("5", "3")
    assert first.new[:3] == ("8", "n", UNCHANGED) and first.new[-1] == "update" and first.old is not None
    (plain,) = modes.changed(
        m, RowChange(ChangeKind.UPDATE, "public.t", ("7", "x", "y"), lsn=Lsn(6)), None, 0
    )
    assert plain.old is None and plain.new[-1] == "update" and plain.kind is ChangeKind.INSERT


def test_a_key_change_under_full_identity_is_seen_too():
    """REPLICA IDENTITY FULL with a declared key: the old tuple holds every column
    (old_is_key False); a changed key still ends the old key with a tombstone."""
    m = mapped("tables:\n  - source: public.k\n    key: [id]\n    mode: history\n", KEYLESS)
    moved = RowChange(ChangeKind.UPDATE, "public.k", ("8", "n", "b"), ("7", "n", "b"), False, Lsn(5))
    tomb, first = modes.changed(m, moved, None, seq=0)
    assert tomb.new[0] == "7" and tomb.new[-1] == "delete" and first.new[0] == "8"
    same = RowChange(ChangeKind.UPDATE, "public.k", ("7", "x", "b"), ("7", "n", "b"), False, Lsn(6))
    (only,) = modes.changed(m, same, None, seq=1)
    assert only.new[:2] == ("7", "x") and only.new[-1] == "update"
