"""check's table of tables: how UPDATE/DELETE find rows, problems per table, the text layout."""

from __future__ import annotations

from replicator import check_plan
from replicator.model import Column, Identity, TableSchema


def schema(identity=Identity.DEFAULT, key=(), pk=(), insert_only=False) -> TableSchema:
    cols = (Column("id", 23, "integer"), Column("v", 25, "text"))
    return TableSchema(
        "public", "t", cols, identity=identity, key=key, primary_key=pk, insert_only=insert_only
    )


def test_locate_by_says_how_rows_are_found():
    assert check_plan.locate_by(schema(key=("id",), pk=("id",))) == "primary key (id)"
    assert check_plan.locate_by(schema(Identity.INDEX, key=("v",), pk=("id",))) == "key (v)"
    assert check_plan.locate_by(schema(Identity.FULL)) == "all columns (REPLICA IDENTITY FULL)"
    assert check_plan.locate_by(schema()) == "cannot: no key"
    assert check_plan.locate_by(schema(Identity.NOTHING)) == "cannot: no key"
    assert check_plan.locate_by(schema(insert_only=True)).startswith("insert-only")


def row(source, locate="primary key (id)", problems=()):
    return {
        "source": source,
        "target": source.split(".")[1],
        "rows_estimate": 1234567,
        "bytes": 123_456_789,
        "identity": "default",
        "locate_by": locate,
        "problems": list(problems),
    }


def test_problems_go_to_the_table_they_name_and_hints_follow_a_missing_key():
    rows = [row("public.a"), row("public.ab", "cannot: no key")]
    check_plan.attach_problems(rows, ["public.ab: no primary key", "wal_level is 'replica'"])
    assert rows[0]["problems"] == [] and rows[1]["problems"] == ["public.ab: no primary key"]
    assert len(check_plan.hints(rows)) == 2 and "replicator copy" in check_plan.hints(rows)[0]
    assert check_plan.hints(rows[:1]) == []


def test_render_aligns_columns_and_says_ready_or_not():
    rows = [row("public.a"), row("public.longer_name", "cannot: no key", ["x"])]
    lines = check_plan.render(rows).splitlines()
    assert lines[0].startswith("TABLE") and "UPDATE/DELETE FIND ROWS BY" in lines[0]
    assert "1,234,567" in lines[1] and "123.5 MB" in lines[1] and lines[1].endswith("yes")
    assert lines[2].endswith("no: 1 problem(s)")
    assert lines[1].index("1,234,567") == lines[2].index("1,234,567")  # right-aligned, one column
