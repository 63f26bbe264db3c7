"""schema_change.diff and the applied layout: column identity by attnum (issue 10, items 4, 5)."""

from __future__ import annotations

import json

from replicator.model import Column, RelationInfo, TableMapping, TableSchema
from replicator.schema_change import NOT_READ, diff, layout_of, remap, with_layout


def schema(*cols, attnums=()):
    return TableSchema(
        "public", "t", tuple(Column(n, o, "x") for n, o in cols), key=("id",), attnums=tuple(attnums)
    )


def rel(*cols):
    return RelationInfo("public.t", tuple(cols))


KNOWN = schema(("id", 23), ("f1", 1043), attnums=[("id", 1), ("f1", 2)])
REL = rel(("id", 23), ("g", 23))


def test_add_then_drop_is_not_a_rename_when_the_old_attnum_is_dropped():
    today = schema(("id", 23), ("g", 23), attnums=[("id", 1), ("g", 3)])
    d = diff(KNOWN, REL, today)
    assert d.added == ["g"] and d.dropped == ["f1"] and not d.renamed


def test_a_rename_keeps_its_attnum():
    today = schema(("id", 23), ("g", 1043), attnums=[("id", 1), ("g", 2)])
    d = diff(KNOWN, rel(("id", 23), ("g", 1043)), today)
    assert d.renamed == [("f1", "g")] and not d.added and not d.dropped


def test_renamed_again_since_is_still_a_rename():
    today = schema(("id", 23), ("h", 1043), attnums=[("id", 1), ("h", 2)])
    d = diff(KNOWN, rel(("id", 23), ("g", 1043)), today)
    assert d.renamed == [("f1", "g")]


def test_table_gone_or_catalog_not_read():
    d = diff(KNOWN, REL, None)  # the table is gone: followed as ADD and DROP
    assert d.added == ["g"] and d.dropped == ["f1"] and not d.renamed
    d = diff(KNOWN, REL, NOT_READ)  # not read: the position decides (the stricter answer)
    assert d.renamed == [("f1", "g")]
    old = schema(("id", 23), ("f1", 1043))  # a layout without attnums: the position decides
    today = schema(("id", 23), ("g", 23), attnums=[("id", 1), ("g", 3)])
    assert diff(old, REL, today).renamed == [("f1", "g")]


def test_layout_keeps_attnums_and_reads_older_layouts():
    m = TableMapping(KNOWN, "t")
    back = with_layout(TableMapping(schema(("id", 23)), "t"), layout_of(m))
    assert back.source_table.column_names == ("id", "f1")
    assert dict(back.source_table.attnums) == {"id": 1, "f1": 2}
    older = json.dumps([item[:2] for item in json.loads(layout_of(m))])
    back = with_layout(TableMapping(schema(("id", 23)), "t"), older)
    assert back.source_table.column_names == ("id", "f1") and back.source_table.attnums == ()


def test_remap_carries_attnums_of_kept_and_added_columns():
    m = remap(TableMapping(KNOWN, "t"), ["id", "g"], [Column("g", 23, "integer")], {"g": 3})
    assert dict(m.source_table.attnums) == {"id": 1, "g": 3}
    assert m.view.column_names == ("id", "g")
