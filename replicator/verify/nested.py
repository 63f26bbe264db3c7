"""Verify, nested values: numbers as exact text, JSON, arrays, and driver values as PostgreSQL text.

Part of the canonical forms of ``values``: JSON is compared parsed (keys sorted, numbers
exact, ``1.0`` = ``1``); arrays as nested tuples of canonical elements whether they come as
PostgreSQL's array text, the JSON form the type map gives targets without arrays
(``target/pgarray.py``: numbers and booleans native, every other element its PostgreSQL text), or
a driver list (DuckDB LIST); a driver value of a text-family column is rendered as PostgreSQL
would print it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..target.pgarray import parse_array  # the one PostgreSQL array-text parser


def numeric_text(v):
    """Exact decimal text: no exponent, no trailing fractional zeros, no negative zero."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s[-1:].isdigit() or "e" in s or "E" in s:  # NaN, Infinity, exponent forms
            return decimal_text(Decimal(s))
    elif isinstance(v, Decimal):
        return decimal_text(v)
    elif isinstance(v, float):
        return decimal_text(Decimal(repr(v))) if math.isfinite(v) else decimal_text(Decimal(v))
    else:
        s = str(v)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", "", "-"):
        return "0"
    return s


def decimal_text(d: Decimal) -> str:
    """A Decimal as :func:`numeric_text`."""
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "-Infinity" if d < 0 else "Infinity"
    return numeric_text(format(d, "f"))


def json_value(v):
    """JSON text (or a parsed value) → compact text with sorted keys and exact numbers; text
    that is not JSON stays as it is."""
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v).decode()
    if isinstance(v, str):
        try:
            v = json.loads(v, parse_float=Decimal)
        except ValueError:
            return v  # not JSON: compare the text
    return _json_text(v)


def _json_text(o) -> str:
    if isinstance(o, dict):
        return (
            "{"
            + ",".join(
                f"{json.dumps(str(k), ensure_ascii=False)}:{_json_text(x)}" for k, x in sorted(o.items())
            )
            + "}"
        )
    if isinstance(o, (list, tuple)):
        return "[" + ",".join(_json_text(x) for x in o) + "]"
    if isinstance(o, bool) or o is None:
        return json.dumps(o)
    if isinstance(o, (int, float, Decimal)):
        return numeric_text(o)
    return json.dumps(o, ensure_ascii=False)


def text_value(v):
    """A text-family value: the text itself, or a driver value as PostgreSQL would print it."""
    if v is None or v.__class__ is str:
        return v
    return pg_text(v)


def pg_text(v) -> str:
    """A driver value rendered as PostgreSQL's text form (best effort, for text-family columns)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, (list, tuple)):
        return "{" + ",".join(_array_item(x) for x in v) + "}"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dt.timedelta):
        return _iso_interval(v)
    if isinstance(v, dt.datetime):
        return v.isoformat(" ")
    return str(v)


def _array_item(x) -> str:
    if x is None:
        return "NULL"
    s = pg_text(x)
    if s == "" or s.upper() == "NULL" or any(c in s for c in ' ,{}"\\\t\n'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _iso_interval(v: dt.timedelta) -> str:
    """A timedelta in PostgreSQL's iso_8601 interval style (``P1DT2H3M4.5S``)."""
    days, sec, us = v.days, v.seconds, v.microseconds
    h, m, s = sec // 3600, sec // 60 % 60, sec % 60
    out = "P" + (f"{days}D" if days else "")
    t = (f"{h}H" if h else "") + (f"{m}M" if m else "")
    if s or us:
        t += f"{s}.{us:06d}".rstrip("0").rstrip(".") + "S"
    return out + ("T" + t if t else "") if (days or t) else "PT0S"


def array_value(leaf: Callable[[Any], Any], delim: str) -> Callable[[Any], Any]:
    """Arrays as nested tuples of canonical elements, read from PostgreSQL's array text, the JSON
    form (``pgarray.py``: numbers, booleans, else the element's text) or a driver list."""

    def canon(v):
        if v is None:
            return None
        if isinstance(v, str):
            s = v.strip()
            try:
                if s.startswith("{"):
                    v = parse_array(s, delim)
                elif s.startswith("[") and not _BOUNDS.match(s):
                    v = json.loads(s)
                else:
                    return s  # explicit lower bounds: the text
            except (ValueError, IndexError):
                return s  # not an array text we can read: compare the text
        if not isinstance(v, (list, tuple)):
            return pg_text(v)
        return _tree(v, leaf)

    return canon


def _tree(v, leaf):
    return tuple(
        None if x is None else _tree(x, leaf) if isinstance(x, (list, tuple)) else leaf(x) for x in v
    )


_BOUNDS = re.compile(r"^\[-?\d+:-?\d+\]")
