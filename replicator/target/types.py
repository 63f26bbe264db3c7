"""The type map: PostgreSQL column → target column type, and PostgreSQL text value → bound value.

One map serves both paths.  Values arrive as PostgreSQL's text rendering, from COPY on the copy
path and from pgoutput on the change path (the source pins TimeZone=UTC, DateStyle=ISO, so both
render identically).  Each target turns that text into its own value either in SQL (bulk loaders,
``CAST``) or in Python through :func:`python_loader`, the same function on both paths.

Families group PostgreSQL types that map alike; a target maps families to its own types and may
override single types.  Anything not listed maps to the ``text`` family: its exact PostgreSQL text
form is stored (documented in docs/types.md).
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any, Callable

from ..model import Column

# pg_type OIDs of the built-in types the map knows by name.
OID = {
    "bool": 16, "bytea": 17, "char": 18, "name": 19, "int8": 20, "int2": 21, "int4": 23,
    "text": 25, "oid": 26, "json": 114, "xml": 142, "float4": 700, "float8": 701, "money": 790,
    "bpchar": 1042, "varchar": 1043, "date": 1082, "time": 1083, "timestamp": 1114,
    "timestamptz": 1184, "interval": 1186, "timetz": 1266, "numeric": 1700, "uuid": 2950,
    "jsonb": 3802,
}

FAMILY_BY_OID = {
    16: "bool", 17: "bytes", 18: "text", 19: "text", 20: "int8", 21: "int2", 23: "int4",
    25: "text", 26: "int8", 114: "json", 700: "float4", 701: "float8", 1042: "bpchar",
    1043: "varchar", 1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz",
    1700: "numeric", 2950: "uuid", 3802: "json",
}


def family(col: Column) -> str:
    """The mapping family of a column: its base type's family, ``array`` or ``text``."""
    if col.elem_oid:
        return "array"
    return FAMILY_BY_OID.get(col.oid, "text")


def type_args(col: Column) -> tuple[int, ...]:
    """The modifier arguments of ``format_type`` output: ``numeric(12,2)`` → (12, 2)."""
    name = col.base_name or col.type_name
    if "(" not in name or col.elem_oid:
        return ()
    inner = name[name.index("(") + 1: name.index(")")]
    try:
        return tuple(int(p) for p in inner.split(","))
    except ValueError:
        return ()


def _bool(s: str) -> bool:
    return s == "t"


def _bytea(s: str) -> bytes:
    if s.startswith("\\x"):
        return bytes.fromhex(s[2:])
    raise ValueError("bytea not in hex format (the source session pins bytea_output=hex)")


def _timestamp(s: str) -> dt.datetime:
    if s in ("infinity", "-infinity") or s.endswith(" BC"):
        raise ValueError(f"timestamp {s!r} is outside the target's range")
    return dt.datetime.fromisoformat(s)


def _timestamptz(s: str) -> dt.datetime:
    """UTC-pinned sessions render ``2024-01-02 03:04:05.123+00``; return naive UTC."""
    v = _timestamp(s)
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v


def _date(s: str) -> dt.date:
    if s in ("infinity", "-infinity") or s.endswith(" BC"):
        raise ValueError(f"date {s!r} is outside the target's range")
    return dt.date.fromisoformat(s)


def _time(s: str) -> dt.time:
    return dt.time.fromisoformat(s)


def _json(s: str) -> str:
    return s


PYTHON_LOADERS: dict[str, Callable[[str], Any]] = {
    "bool": _bool, "bytes": _bytea, "int2": int, "int4": int, "int8": int,
    "float4": float, "float8": float, "numeric": Decimal, "date": _date, "time": _time,
    "timestamp": _timestamp, "timestamptz": _timestamptz, "uuid": uuid.UUID, "json": _json,
}


def python_loader(col: Column) -> Callable[[str], Any]:
    """PostgreSQL text → Python value for bound-parameter targets (identity for text forms)."""
    return PYTHON_LOADERS.get(family(col), str)


def is_json_text(s: str) -> bool:
    """True when ``s`` parses as JSON (used by tests and by targets that validate JSON)."""
    try:
        json.loads(s)
        return True
    except ValueError:
        return False
