"""The type map core: PostgreSQL column → family, target type choice, PostgreSQL text → Python value.

One map serves both paths.  Values arrive as PostgreSQL's text rendering, from COPY on the copy
path and from pgoutput on the change path (the source pins TimeZone=UTC, DateStyle=ISO,
IntervalStyle=iso_8601, extra_float_digits=3, bytea_output=hex, so both render identically).
Each target describes every column by a :class:`Conv` (its column type, the source SQL its bulk
loader reads, the Python conversion of the change path, and the :class:`~.rules.Rule` of values
it cannot hold); ``base.Target`` turns that into ``copy_expressions`` and ``value_loader`` with
the column's value policy applied the same way on both paths (``value_rules.py``).

Families group PostgreSQL types that map alike; anything not listed is the ``text`` family: its
exact PostgreSQL text form is stored.  A mapping's ``target_type`` is read by
:func:`target_type_column`: the column is then converted as the PostgreSQL type that matches the
chosen target type (``DECIMAL(12,2)`` → ``numeric(12,2)``), with that type's value value_rules.
docs/typemap.md is the user-facing table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional

import sqlalchemy as sa

from ..model import Column
from . import value_rules
from .value_rules import Rule

# pg_type OIDs of the built-in types the map knows by name.
OID = {
    "bool": 16,
    "bytea": 17,
    "char": 18,
    "name": 19,
    "int8": 20,
    "int2": 21,
    "int4": 23,
    "text": 25,
    "oid": 26,
    "json": 114,
    "xml": 142,
    "float4": 700,
    "float8": 701,
    "money": 790,
    "bpchar": 1042,
    "varchar": 1043,
    "date": 1082,
    "time": 1083,
    "timestamp": 1114,
    "timestamptz": 1184,
    "interval": 1186,
    "timetz": 1266,
    "numeric": 1700,
    "uuid": 2950,
    "jsonb": 3802,
}

FAMILY_BY_OID = {
    16: "bool",
    17: "bytes",
    18: "text",
    19: "text",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "int8",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1083: "time",
    1114: "timestamp",
    1184: "timestamptz",
    1186: "interval",
    1266: "timetz",
    1700: "numeric",
    2950: "uuid",
    3802: "json",
}


class DDL(sa.types.UserDefinedType):
    """A column type rendered verbatim in DDL (a target type name, or the mapping's choice)."""

    cache_ok = True

    def __init__(self, ddl: str):
        self.ddl = ddl

    def get_col_spec(self, **kw) -> str:
        return self.ddl

    def __repr__(self) -> str:
        return f"DDL({self.ddl!r})"


@dataclass(frozen=True)
class Conv:
    """How one target stores one source column.

    ``ddl``: the target column type.  ``copy``: source SQL template on ``{v}`` (the column value)
    whose text the bulk loader reads.  ``load``: PostgreSQL text → the bound value of the change
    path (and of row-based copies).  ``rule``: the values ``ddl`` cannot hold (None: all fit).
    ``cast``: for targets converting in their own SQL (DuckDB), the template on ``{v}`` turning
    the loaded text into the stored value.
    """

    ddl: Any
    load: Callable[[str], Any] = str
    copy: str = "{v}"
    rule: Optional[Rule] = None
    cast: str = "{v}"


#: types the catalog lists as arrays (an element type, category 'A') whose text is not an array's:
#: ``int2vector`` and ``oidvector`` print ``1 2 3``.  They are the ``text`` family.
VECTOR_OIDS = frozenset({22, 30})


def family(col: Column) -> str:
    """The mapping family of a column: its base type's family, ``array`` or ``text``."""
    if col.elem_oid and col.oid not in VECTOR_OIDS:
        return "array"
    return FAMILY_BY_OID.get(col.oid, "text")


def type_args(col: Column) -> tuple[int, ...]:
    """The modifier arguments of ``format_type`` output: ``numeric(12,2)`` → (12, 2)."""
    name = col.base_name or col.type_name
    if "(" not in name or col.elem_oid:
        return ()
    inner = name[name.index("(") + 1 : name.index(")")]
    try:
        return tuple(int(p) for p in inner.split(","))
    except ValueError:
        return ()


def element(col: Column) -> Column:
    """The element of an array column as a column of its own (same name, policy and nullability)."""
    name = (col.base_name if col.base_oid else col.type_name).removesuffix("[]")
    return dataclasses.replace(
        col,
        type_oid=col.elem_oid,
        type_name=name,
        base_oid=col.elem_base_oid,
        base_name="",
        elem_oid=0,
        elem_base_oid=0,
        ndims=0,
        target_type="",
    )


def with_type(col: Column, oid: int, name: str) -> Column:
    """``col`` as if it had the built-in type ``name`` (used for target_type and the text policy)."""
    return dataclasses.replace(
        col, type_oid=oid, type_name=name, base_oid=0, base_name="", elem_oid=0, elem_base_oid=0, ndims=0
    )


# ---------------------------------------------------------------- target_type
_TT = [  # (pattern on the upper-cased target type, PostgreSQL type it converts as)
    (r"(?:DECIMAL|NUMERIC|DEC|FIXED)\s*\(\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\)", "numeric"),
    (r"(?:DECIMAL|NUMERIC|DEC|FIXED)", "numeric()"),
    (r"TINYINT(?:\s*\(\d+\))?", "tinyint"),
    (r"(?:SMALLINT|INT2)(?:\s*\(\d+\))?", "smallint"),
    (r"(?:INT|INTEGER|INT4|MEDIUMINT)(?:\s*\(\d+\))?", "integer"),
    (r"(?:BIGINT|INT8)(?:\s*\(\d+\))?", "bigint"),
    (r"(?:REAL|FLOAT4)", "real"),
    (r"(?:DOUBLE(?: PRECISION)?|FLOAT8|FLOAT)", "double precision"),
    (r"(?:VARCHAR|CHARACTER VARYING|CHAR|CHARACTER|NVARCHAR|NCHAR)\s*\(\s*(\d+)\s*\)", "varchar"),
    (r"(?:TEXT|TINYTEXT|MEDIUMTEXT|LONGTEXT|STRING|VARCHAR|CLOB)", "text"),
]
INT_RANGE = {
    "tinyint": (-128, 127),
    "smallint": (-32768, 32767),
    "integer": (-2147483648, 2147483647),
    "bigint": (-9223372036854775808, 9223372036854775807),
}
_TT_OID = {
    "numeric": 1700,
    "smallint": 21,
    "tinyint": 21,
    "integer": 23,
    "bigint": 20,
    "real": 700,
    "double precision": 701,
    "varchar": 1043,
    "text": 25,
}


def parse_target_type(expr: str) -> tuple[str, tuple[int, ...]] | None:
    """A target type expression → (PostgreSQL-like kind, args), None when not one of the kinds
    whose values the replicator checks itself (decimal, integer, float, text)."""
    up = " ".join(expr.upper().split())
    for pattern, kind in _TT:
        m = re.fullmatch(pattern, up)
        if m:
            return kind, tuple(int(g) for g in m.groups() if g is not None)
    return None


def target_type_column(col: Column, decimal_default: tuple[int, int] | None) -> Column:
    """The column converted as the PostgreSQL type matching its ``target_type`` (``col`` itself
    when the target type is not a checked kind).  ``decimal_default``: the target's precision
    and scale of a bare ``DECIMAL`` (None: unbounded)."""
    parsed = parse_target_type(col.target_type) if col.target_type else None
    if parsed is None:
        return col
    kind, args = parsed
    if kind == "numeric()":
        kind, args = "numeric", decimal_default or ()
    name = f"{kind}({','.join(map(str, args))})" if args else kind
    return with_type(col, _TT_OID[kind], name)


def target_type_rule(
    col: Column, where: str, nan: bool = False, decimal_default: tuple[int, int] | None = None
) -> Rule | None:
    """The rule of a checked target type kind (decimal digits, integer range, text length);
    ``nan``: the target's decimal type holds NaN (PostgreSQL's numeric); ``decimal_default``:
    the precision and scale of a bare DECIMAL there."""
    parsed = parse_target_type(col.target_type) if col.target_type else None
    if parsed is None:
        return None
    kind, args = parsed
    if kind == "numeric()":
        kind, args = "numeric", decimal_default or ()
    what = f"{where} {col.target_type}"
    if kind == "numeric" and len(args) in (1, 2):
        return value_rules.decimal_rule(args[0], (args + (0,))[1], what, nan)
    if kind in INT_RANGE:
        return value_rules.integer_rule(*INT_RANGE[kind], what)
    if kind == "varchar":
        return value_rules.length_rule(args[0], what)
    return None


# ---------------------------------------------------------------- PostgreSQL text → Python
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


def _integer(s: str) -> int:
    """Integer text; a numeric source under an integer target type may carry '.000'."""
    return int(Decimal(s)) if "." in s else int(s)


PYTHON_LOADERS: dict[str, Callable[[str], Any]] = {
    "bool": _bool,
    "bytes": _bytea,
    "int2": _integer,
    "int4": _integer,
    "int8": _integer,
    "float4": float,
    "float8": float,
    "numeric": Decimal,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "uuid": uuid.UUID,
}


def python_loader(col: Column) -> Callable[[str], Any]:
    """PostgreSQL text → Python value for bound-parameter targets (identity for text forms)."""
    return PYTHON_LOADERS.get(family(col), str)
