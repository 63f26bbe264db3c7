"""The MySQL / MariaDB type map: one :class:`~.types.Conv` per PostgreSQL family (docs/typemap.md).

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

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ..model import Column
from . import pgarray, typemap, value_rules
from .typemap import Conv

WHERE = "MySQL"
MAX_VARCHAR = 16383  # utf8mb4 characters in one VARCHAR
HEX = "encode({v}, 'hex')"


class RawJSON(sa.types.UserDefinedType):
    """A JSON column that binds PostgreSQL's JSON text as it is (sa.JSON would quote the string)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "JSON"


def decimal_args(col: Column) -> tuple[int, int] | None:
    """numeric(p,s) → (digits, scale) of the DECIMAL that holds it exactly; None: none does."""
    args = typemap.type_args(col)
    if not args:
        return None
    p, s = (args + (0,))[:2]
    digits, scale = (p - s, 0) if s < 0 else (max(p, s), s)
    return (digits, scale) if digits <= 65 and scale <= 30 else None


def _decimal(col: Column) -> Conv:
    args = decimal_args(col)
    if args is None:
        return Conv(mysql.LONGTEXT())  # PostgreSQL's exact text, NaN and ±Infinity included
    return Conv(mysql.DECIMAL(*args), Decimal, rule=value_rules.numeric_nan_rule(f"{WHERE} DECIMAL{args}"))


def _varchar(col: Column) -> Conv:
    args = typemap.type_args(col)
    return Conv(mysql.VARCHAR(args[0]) if args and args[0] <= MAX_VARCHAR else mysql.LONGTEXT())


def _datetime(fam: str, ddl: Any, copy: str = "{v}") -> Conv:
    name = {"date": "DATE"}.get(fam, "DATETIME")
    return Conv(ddl, typemap.PYTHON_LOADERS[fam], copy, value_rules.year_rule(fam, f"{WHERE} {name}"))


def _float(c: Column) -> Conv:
    return Conv(mysql.DOUBLE(), float, rule=value_rules.finite_float_rule(f"{WHERE} DOUBLE"))


def _array(c: Column) -> Conv:
    return Conv(
        RawJSON(), pgarray.array_json(c), pgarray.array_json_sql(c), value_rules.array_rule(f"{WHERE} JSON")
    )


#: PostgreSQL family → Conv (unlisted: LONGTEXT holding PostgreSQL's text form).
CONVS: dict[str, Callable[[Column], Conv]] = {
    "int2": lambda c: Conv(mysql.SMALLINT(), int),
    "int4": lambda c: Conv(mysql.INTEGER(), int),
    "int8": lambda c: Conv(mysql.BIGINT(), int),
    "numeric": _decimal,
    "float4": _float,
    "float8": _float,
    "bool": lambda c: Conv(mysql.BOOLEAN(), typemap.python_loader(c), "({v})::int"),
    "bytes": lambda c: Conv(mysql.LONGBLOB(), typemap.python_loader(c), HEX),
    "date": lambda c: _datetime("date", mysql.DATE()),
    "timestamp": lambda c: _datetime("timestamp", mysql.DATETIME(fsp=6)),
    "timestamptz": lambda c: _datetime("timestamptz", mysql.DATETIME(fsp=6), "({v} AT TIME ZONE 'UTC')"),
    "time": lambda c: Conv(mysql.TIME(fsp=6)),  # MySQL parses the text as LOAD DATA does (24:00:00)
    "uuid": lambda c: Conv(mysql.CHAR(36, charset="ascii", collation="ascii_bin")),
    "json": lambda c: Conv(RawJSON()),
    "varchar": _varchar,
    "bpchar": _varchar,
    "array": _array,
}


def mysql_conv(col: Column) -> Conv:
    """The MySQL column type, copy form, conversion and value rule of a source column."""
    make = CONVS.get(typemap.family(col))
    return make(col) if make else Conv(mysql.LONGTEXT())


# ---------------------------------------------------------------- limits (checked while planning)
MAX_COLUMNS = 1017  # InnoDB's columns per table (MySQL's own limit, 4096, is higher)
RECORD_BYTES = 8126  # InnoDB (16 KB pages): a record's worst case must stay below half a page
ROW_BYTES = 65535  # MySQL's row size, not counting BLOB/TEXT contents
EXTERNAL = 21  # a column InnoDB may store off the record: 20-byte pointer + length
FIXED = {
    mysql.BOOLEAN: 1,
    mysql.SMALLINT: 2,
    mysql.INTEGER: 4,
    mysql.BIGINT: 8,
    mysql.DOUBLE: 8,
    mysql.DATE: 3,
}
_DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def _decimal_bytes(p: int, s: int) -> int:
    return sum(n // 9 * 4 + _DIGIT_BYTES[n % 9] for n in (p - s, s))


def column_bytes(t: Any) -> tuple[int, int]:
    """(bytes in InnoDB's worst-case DYNAMIC record, bytes toward MySQL's 65,535-byte row) of a
    column type: fixed-width types their width; strings of at most 255 bytes their length + 1,
    longer ones and BLOBs an off-record pointer; unknown (mapping) types as BLOBs."""
    for cls, n in FIXED.items():
        if isinstance(t, cls):
            return n, n
    if isinstance(t, (mysql.DATETIME, mysql.TIME)):
        n = (5 if isinstance(t, mysql.DATETIME) else 3) + ((t.fsp or 0) + 1) // 2
        return n, n
    if isinstance(t, mysql.DECIMAL):
        n = _decimal_bytes(t.precision or 10, t.scale or 0)
        return n, n
    if isinstance(t, (mysql.VARCHAR, mysql.CHAR, mysql.VARBINARY)):
        assert t.length is not None  # the type map sizes every string type it makes
        n = t.length * (1 if isinstance(t, mysql.VARBINARY) or getattr(t, "charset", None) == "ascii" else 4)
        char = isinstance(t, mysql.CHAR)  # fixed width in a MySQL row; in InnoDB only when 1 byte a character
        record = n if char and n == t.length else n + 1 if n <= 255 else EXTERNAL
        return record, n if char else n + (1 if n <= 255 else 2)
    return EXTERNAL, 12


def row_problems(label: str, display: str, col_types: dict[str, Any], nullable: int, pk: bool) -> list[str]:
    """The InnoDB record and MySQL row limits for a table of ``col_types`` (see :func:`column_bytes`)
    with ``nullable`` nullable columns (``pk``: it has a primary key, else InnoDB adds a row id)."""
    sizes = [column_bytes(t) for t in col_types.values()]
    record = 5 + (nullable + 7) // 8 + 13 + (0 if pk else 6) + sum(s[0] for s in sizes)
    row = (nullable + 7) // 8 + sum(s[1] for s in sizes)
    fix = (
        "store some columns as text (columns.policy: text, a LONGTEXT kept off the record), or leave "
        "columns out (columns.exclude) in the mapping"
    )
    out = []
    if record >= RECORD_BYTES:
        out.append(
            f"{label}: a row of MySQL table {display} ({len(sizes)} columns) takes up to {record} "
            f"bytes in InnoDB's record, which holds less than {RECORD_BYTES}: {fix}"
        )
    if row > ROW_BYTES:
        out.append(
            f"{label}: a row of MySQL table {display} takes up to {row} bytes, more than "
            f"MySQL's row size limit of {ROW_BYTES}: {fix}"
        )
    return out
