"""The MySQL / MariaDB type map: one :class:`~.types.Conv` per PostgreSQL family (docs/types.md).

* Exact native types: smallint/integer/bigint; numeric(p,s) as DECIMAL when MySQL's 65 digits /
  30 decimals hold it (NaN refused by its rule); boolean as BOOLEAN (0/1); bytea as LONGBLOB;
  date as DATE, timestamp as DATETIME(6), timestamptz as DATETIME(6) in UTC (years 1..9999: no
  infinity, no BC); time as TIME(6); uuid as CHAR(36); json/jsonb as JSON (the text as sent);
  varchar(n)/char(n) as VARCHAR(n) (char keeps its padding).
* float4 and float8 are DOUBLE (not FLOAT: MySQL compares a FLOAT column as a double, so
  FULL-identity lookups of float4 values would miss; the shortest float4 text round-trips through
  DOUBLE).  NaN and ±Infinity have no DOUBLE form: refused by their rule.
* Arrays are JSON (``pgarray.py``).  Everything else (unbounded or too wide numeric, interval in
  ISO 8601, timetz, money, inet/cidr/macaddr, bit strings, tsvector, xml, ranges, composites,
  enums) is LONGTEXT holding PostgreSQL's exact text.
* ``copy`` is what the source COPY sends to ``LOAD DATA``: booleans as 0/1, timestamptz in UTC
  without offset, bytea as hex (``UNHEX`` in the LOAD DATA ``SET`` clause), arrays as JSON.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ..model import Column
from . import pgarray, rules, types
from .types import Conv

WHERE = "MySQL"
MAX_VARCHAR = 16383       # utf8mb4 characters in one VARCHAR
HEX = "encode({v}, 'hex')"


class RawJSON(sa.types.UserDefinedType):
    """A JSON column that binds PostgreSQL's JSON text as it is (sa.JSON would quote the string)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "JSON"


def decimal_args(col: Column) -> tuple[int, int] | None:
    """numeric(p,s) → (digits, scale) of the DECIMAL that holds it exactly; None: none does."""
    args = types.type_args(col)
    if not args:
        return None
    p, s = (args + (0,))[:2]
    digits, scale = (p - s, 0) if s < 0 else (max(p, s), s)
    return (digits, scale) if digits <= 65 and scale <= 30 else None


def _decimal(col: Column) -> Conv:
    args = decimal_args(col)
    if args is None:
        return Conv(mysql.LONGTEXT())  # PostgreSQL's exact text, NaN and ±Infinity included
    return Conv(mysql.DECIMAL(*args), Decimal, rule=rules.numeric_nan_rule(f"{WHERE} DECIMAL{args}"))


def _varchar(col: Column) -> Conv:
    args = types.type_args(col)
    return Conv(mysql.VARCHAR(args[0]) if args and args[0] <= MAX_VARCHAR else mysql.LONGTEXT())


def _datetime(fam: str, ddl: Any, copy: str = "{v}") -> Conv:
    name = {"date": "DATE"}.get(fam, "DATETIME")
    return Conv(ddl, types.PYTHON_LOADERS[fam], copy, rules.year_rule(fam, f"{WHERE} {name}"))


def _float(c: Column) -> Conv:
    return Conv(mysql.DOUBLE(), float, rule=rules.finite_float_rule(f"{WHERE} DOUBLE"))


def _array(c: Column) -> Conv:
    return Conv(RawJSON(), pgarray.array_json(c), pgarray.array_json_sql(c),
                rules.array_rule(f"{WHERE} JSON"))


#: PostgreSQL family → Conv (unlisted: LONGTEXT holding PostgreSQL's text form).
CONVS: dict[str, Callable[[Column], Conv]] = {
    "int2": lambda c: Conv(mysql.SMALLINT(), int), "int4": lambda c: Conv(mysql.INTEGER(), int),
    "int8": lambda c: Conv(mysql.BIGINT(), int), "numeric": _decimal,
    "float4": _float, "float8": _float,
    "bool": lambda c: Conv(mysql.BOOLEAN(), types.python_loader(c), "({v})::int"),
    "bytes": lambda c: Conv(mysql.LONGBLOB(), types.python_loader(c), HEX),
    "date": lambda c: _datetime("date", mysql.DATE()),
    "timestamp": lambda c: _datetime("timestamp", mysql.DATETIME(fsp=6)),
    "timestamptz": lambda c: _datetime("timestamptz", mysql.DATETIME(fsp=6), "({v} AT TIME ZONE 'UTC')"),
    "time": lambda c: Conv(mysql.TIME(fsp=6)),  # MySQL parses the text as LOAD DATA does (24:00:00)
    "uuid": lambda c: Conv(mysql.CHAR(36, charset="ascii", collation="ascii_bin")),
    "json": lambda c: Conv(RawJSON()), "varchar": _varchar, "bpchar": _varchar,
    "array": _array,
}


def mysql_conv(col: Column) -> Conv:
    """The MySQL column type, copy form, conversion and value rule of a source column."""
    make = CONVS.get(types.family(col))
    return make(col) if make else Conv(mysql.LONGTEXT())
