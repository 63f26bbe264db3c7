"""Pure logic without servers: LSNs, redaction, COPY text parsing, table selection, slot reach."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.dsn import redact, source_conninfo
from replicator.errors import ConfigError
from replicator.failpoints import _parse
from replicator.model import Lsn
from replicator.source.catalog import select_tables
from replicator.source.slot import reached
from replicator.source.snapshot import parse_text_line


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip(n):
    assert Lsn.parse(str(Lsn(n))) == n


def test_lsn_format_matches_postgres():
    assert str(Lsn.parse("16/B374D848")) == "16/B374D848"
    assert Lsn.parse("0/0") == 0
    with pytest.raises(ValueError):
        Lsn.parse("12345")


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://alice:s3cr3t@db.example:5432/app",
        "host=db user=alice password=s3cr3t dbname=app",
        "host=db password='s3 cr3t' dbname=app",
        "error connecting to mysql+pymysql://root:s3cr3t@127.0.0.1/x: refused",
    ],
)
def test_redact_removes_passwords(text):
    out = redact(text)
    assert "s3cr3t" not in out and "s3 cr3t" not in out and "***" in out


def test_source_conninfo_pins_session_settings():
    info = source_conninfo("postgresql://u@h/db?options=-c%20work_mem%3D64MB")
    assert "TimeZone=UTC" in info and "DateStyle=ISO" in info and "work_mem" in info


def _escape(v):
    if v is None:
        return "\\N"
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@given(st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=6))
def test_copy_text_line_round_trip(values):
    values = [v.replace("\x00", "") if v is not None else None for v in values]
    line = "\t".join(_escape(v) for v in values)
    assert parse_text_line(line) == tuple(values)


def test_copy_text_octal_and_control_escapes():
    assert parse_text_line("a\\bb\\fc\\vd\\101\\x41") == ("a\bb\fc\vdAA",)


TABLES = [(1, "public", "orders", "d"), (2, "public", "order_items", "d"), (3, "sales", "orders", "f")]


def test_select_tables_by_name_glob_and_default_schema():
    assert select_tables(TABLES, None) == TABLES
    assert [t[0] for t in select_tables(TABLES, ["orders"])] == [1]
    assert [t[0] for t in select_tables(TABLES, ["public.order*", "*.orders"])] == [1, 2, 3]
    with pytest.raises(ConfigError, match="public.nope"):
        select_tables(TABLES, ["nope"])


def test_reached_allows_a_page_header_only_at_a_page_boundary():
    assert reached(Lsn(0x2000), Lsn(0x2000 + 24))
    assert not reached(Lsn(0x1FF8), Lsn(0x2000 + 24))
    assert reached(Lsn(0x3000), Lsn(0x2FF0))


def test_failpoint_spec():
    assert _parse("copy.loaded:public.t=kill, apply.committed=kill@3,x=sleep:1") == {
        "copy.loaded:public.t": ("kill", 1),
        "apply.committed": ("kill", 3),
        "x": ("sleep:1", 1),
    }
