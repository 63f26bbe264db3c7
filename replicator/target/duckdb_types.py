"""The DuckDB type map: one :class:`~.types.Conv` per column, its ``cast`` run in DuckDB SQL.

Contract: DuckDB converts in its own SQL on both paths.  The copy path loads the COPY CSV as
VARCHAR (``read_csv``) and the change path stages PostgreSQL text (Arrow); the same ``cast``
template turns that text into the stored value.  Only arrays need a form of their own first: the
source's ``array_to_json`` on the copy path and ``pgarray.array_json`` on the change path give the
same JSON, which DuckDB casts to a LIST.  Value rules and policies run before, identically
(``value_rules.py``).

Types (docs/typemap.md): SMALLINT / INTEGER / BIGINT; REAL / DOUBLE (NaN, ±Infinity kept);
numeric(p,s) with 0 ≤ s ≤ p ≤ 38 as DECIMAL(p,s) (NaN refused), other numerics as VARCHAR holding
the exact text; BOOLEAN; BLOB; DATE / TIMESTAMP / TIMESTAMPTZ (UTC) keeping ``infinity`` and BC
(years after 294246 refused); TIME (``24:00:00`` kept); TIMETZ; INTERVAL (months, days and
microseconds, as PostgreSQL); UUID; JSON (the text as sent); arrays as LISTs of the element's type
with the column's declared number of dimensions (arrays of other dimensions or with explicit lower
bounds refused); everything else VARCHAR holding PostgreSQL's exact text (char(n) keeps padding).
"""

from __future__ import annotations

import duckdb

from ..model import Column
from . import pgarray, typemap, value_rules
from .typemap import DDL, Conv

_BC = (
    "CASE WHEN suffix({v}, ' BC') THEN CAST(CAST(1 - CAST(split_part({v}, '-', 1) AS INTEGER) AS "
    "VARCHAR) || substr({v}, strpos({v}, '-'), length({v}) - strpos({v}, '-') - 2) AS {t}) "
    "ELSE CAST({v} AS {t}) END"
)
_ISO = (
    "^P(?:(-?[0-9]+)Y)?(?:(-?[0-9]+)M)?(?:(-?[0-9]+)D)?"
    "(?:T(?:(-?[0-9]+)H)?(?:(-?[0-9]+)M)?(?:(-?[0-9.]+)S)?)?$"
)
_PART = "CAST(coalesce(nullif(r.{p}, ''), '0') AS {t})"
#: ISO 8601 interval text (IntervalStyle=iso_8601) → INTERVAL, component by component.
_INTERVAL = (
    "CASE WHEN {v} IS NULL THEN NULL ELSE list_transform([regexp_extract({v}, '" + _ISO + "', "
    "['y', 'mo', 'd', 'h', 'mi', 's'])], lambda r: "
    "to_months(CAST("
    + _PART.format(p="y", t="BIGINT")
    + " * 12 + "
    + _PART.format(p="mo", t="BIGINT")
    + " AS INTEGER)) + to_days("
    + _PART.format(p="d", t="INTEGER")
    + ") + to_microseconds("
    + _PART.format(p="h", t="BIGINT")
    + " * 3600000000 + "
    + _PART.format(p="mi", t="BIGINT")
    + " * 60000000 + CAST(round("
    + _PART.format(p="s", t="DECIMAL(38,6)")
    + " * 1000000) AS BIGINT)))[1] END"
)

JSON = (
    "JSON"
    if duckdb.connect()
    .execute(  # the json extension may be absent from a build
        "SELECT count(*) FROM duckdb_types() WHERE type_name = 'JSON'"
    )
    .fetchall()[0][0]
    else "VARCHAR"
)
#: family → (DuckDB type, cast template on {v} and {t}); unlisted families store VARCHAR text.
SCALARS: dict[str, tuple[str, str]] = {
    "int2": ("SMALLINT", ""),
    "int4": ("INTEGER", ""),
    "int8": ("BIGINT", ""),
    "float4": ("REAL", ""),
    "float8": ("DOUBLE", ""),
    "bool": ("BOOLEAN", ""),
    "bytes": ("BLOB", "unhex(substr({v}, 3))"),  # bytea_output=hex: '\x0aff'
    "date": ("DATE", _BC),
    "timestamp": ("TIMESTAMP", _BC),
    "timestamptz": ("TIMESTAMPTZ", _BC),
    "time": ("TIME", ""),
    "timetz": ("TIMETZ", ""),
    "interval": ("INTERVAL", _INTERVAL),
    "uuid": ("UUID", ""),
    "json": (JSON, ""),
}
MAX_DECIMAL = 38
WHERE = "DuckDB"
#: types whose ``=`` holds between values that differ (``-0.0 = 0.0``, ``'1 mon' = '30 days'``) →
#: two values of the type that are not equal.  DuckDB's UPDATE skips a value equal by ``=`` to the
#: stored one, and ``=`` cannot tell such values apart when matching rows (see ``duckdb.Plan``).
LOOSE_EQUALITY = {
    t: ("CAST(1 AS {t})", "CAST(2 AS {t})")
    for t in ("REAL", "FLOAT", "FLOAT4", "DOUBLE", "FLOAT8", "DOUBLE PRECISION")
}
LOOSE_EQUALITY["INTERVAL"] = ("INTERVAL 1 MICROSECOND", "INTERVAL 2 MICROSECONDS")


def loose_equality(ddl) -> tuple[str, str] | None:
    """Two unequal values of the column type ``ddl`` when its ``=`` is loose, else None."""
    name = " ".join(str(getattr(ddl, "ddl", "")).upper().split())
    pair = LOOSE_EQUALITY.get(name)
    return (pair[0].format(t=name), pair[1].format(t=name)) if pair else None


def scalar(col: Column) -> tuple[str, str, value_rules.Rule | None]:
    """(DuckDB type, cast template on ``{v}``, rule) of a non-array column."""
    fam = typemap.family(col)
    if fam == "numeric":  # precision ≤ 38 → DECIMAL; wider, unbounded or odd scales: exact text
        args = typemap.type_args(col)
        p, s = (args + (0, 0))[:2]
        if args and 0 <= s <= p <= MAX_DECIMAL:
            return (
                f"DECIMAL({p},{s})",
                f"CAST({{v}} AS DECIMAL({p},{s}))",
                value_rules.numeric_nan_rule(f"{WHERE} DECIMAL({p},{s})"),
            )
        return "VARCHAR", "{v}", None
    if fam not in SCALARS:
        return "VARCHAR", "{v}", None
    t, cast = SCALARS[fam]
    rule = value_rules.duckdb_year_rule(fam) if fam in ("timestamp", "timestamptz") else None
    return t, (cast or "CAST({v} AS {t})").replace("{t}", t), rule


def _array(col: Column) -> Conv:
    el = typemap.element(col)
    dims = max(col.ndims, 1)
    t, cast, _ = scalar(el)
    ddl = t + "[]" * dims
    if pgarray.element_kind(col) or cast == "{v}":  # JSON numbers/booleans/strings cast directly
        conv = f"CAST(CAST({{v}} AS JSON) AS {ddl})"
    else:
        inner = cast.replace("{v}", f"x{dims}")
        for d in range(dims, 0, -1):
            src = "CAST(CAST({v} AS JSON) AS VARCHAR" + "[]" * dims + ")" if d == 1 else f"x{d - 1}"
            inner = f"list_transform({src}, lambda x{d}: {inner})"
        conv = inner
    rule = value_rules.array_rule(f"{WHERE} {ddl}", dims, nan=t.startswith("DECIMAL"))
    return Conv(DDL(ddl), pgarray.array_json(col), pgarray.array_json_sql(col), rule, conv)


def duckdb_conv(col: Column) -> Conv:
    """The DuckDB column type, copy form, cast and value rule of a source column."""
    if typemap.family(col) == "array":
        return _array(col)
    t, cast, rule = scalar(col)
    return Conv(DDL(t), str, rule=rule, cast=cast)
