"""duckdb-engine 0.17 under SQLAlchemy 2.1: process-wide repairs, applied on import.

They must also serve engines built outside the DuckDB target (e.g. tests/compare.py), so they
patch duckdb-engine's dialect class itself:

1. DuckDB's 'type_function' keywords (by, left, similar ...) can't be bare column names either,
   but duckdb-engine quotes only the 'reserved' ones.
2. duckdb-engine reflects columns with SQLAlchemy 2.1's pg_catalog query (pg_collation, regclass,
   pg_inherits: absent in DuckDB): reflect columns and primary keys from duckdb_columns() /
   duckdb_constraints(); the rest is reported as not reflectable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import duckdb_engine
import sqlalchemy as sa

_Prep = duckdb_engine.DuckDBIdentifierPreparer
_Prep.reserved_words = set(_Prep.reserved_words) | {
    k
    for (k,) in duckdb.connect()
    .execute("SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'type_function'")
    .fetchall()
}
REFLECTED: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {  # DuckDB type name → SQLAlchemy type
    "BOOLEAN": sa.Boolean,
    "TINYINT": sa.SmallInteger,
    "SMALLINT": sa.SmallInteger,
    "INTEGER": sa.Integer,
    "BIGINT": sa.BigInteger,
    "FLOAT": sa.REAL,
    "DOUBLE": sa.Double,
    "VARCHAR": sa.String,
    "BLOB": sa.LargeBinary,
    "DATE": sa.Date,
    "TIME": sa.Time,
    "TIMESTAMP": sa.DateTime,
    "TIMESTAMP WITH TIME ZONE": lambda: sa.DateTime(timezone=True),
    "JSON": sa.JSON,
    "INTERVAL": sa.Interval,
}
_IN_SCHEMA = "database_name = current_database() AND schema_name = coalesce($1, current_schema())"


def _get_multi_columns(self, connection, schema=None, filter_names=None, **kw):
    out: dict = {}
    for t, name, dtype, nullable, default, prec, scale in connection.exec_driver_sql(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, numeric_precision, "
        f"numeric_scale FROM duckdb_columns() WHERE {_IN_SCHEMA} ORDER BY table_name, column_index",
        (schema,),
    ):
        if not filter_names or t in filter_names:
            typ = (
                sa.Numeric(prec, scale)
                if dtype.startswith("DECIMAL")
                else REFLECTED.get(dtype, sa.types.NullType)()
            )
            out.setdefault((schema, t), []).append(
                {"name": name, "type": typ, "nullable": nullable, "default": default, "autoincrement": False}
            )
    return out.items()


def _get_multi_pk_constraint(self, connection, schema=None, filter_names=None, **kw):
    rows = connection.exec_driver_sql(
        "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
        f"WHERE constraint_type = 'PRIMARY KEY' AND {_IN_SCHEMA}",
        (schema,),
    )
    return [
        ((schema, t), {"constrained_columns": list(c), "name": None})
        for t, c in rows
        if not filter_names or t in filter_names
    ]


def _not_reflected(self, *a, **kw):
    raise NotImplementedError


# Any: methods replaced at run time, which mypy cannot type (the patches take the dialect's
# keyword arguments through **kw)
_Dialect: Any = duckdb_engine.Dialect
_Dialect.get_multi_columns = _get_multi_columns
_Dialect.get_multi_pk_constraint = _get_multi_pk_constraint
_Dialect.get_multi_foreign_keys = lambda self, *a, **kw: []
_Dialect.get_multi_indexes = lambda self, *a, **kw: []  # (the original only warns so)
for _name in ("unique_constraints", "check_constraints", "table_comment", "table_options"):
    setattr(_Dialect, f"get_multi_{_name}", _not_reflected)
