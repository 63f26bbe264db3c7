"""Verify, values: one canonical form per value, whichever side it was read from.

The source is read through psycopg with integers and text loaded natively and every other type as
PostgreSQL's text rendering (pinned session: UTC, ISO dates, iso_8601 intervals, hex bytea,
shortest-exact floats); a target returns what it stores: a driver value (int, Decimal, datetime,
UUID, bytes, bool, timedelta, list ...) or a text form (SQLite numeric/uuid, DuckDB VARCHAR, MySQL
LONGTEXT, JSON arrays).  :func:`canonical` maps both to one comparable value per type family of
the type map (``target/typemap.py``), by value semantics rather than by one target's storage quirks:

* integers → int; bool (``t``/``f``, 0/1, True/False) → bool;
* numeric → exact decimal text without trailing zeros (``1.50`` = ``1.5``; ``NaN``, ``±Infinity``);
* float8 → float, float4 → float rounded to single precision (a DOUBLE holding the float4 text and a
  REAL compare equal); NaN → ``'NaN'``; -0 → ``'-0'`` where the target keeps the sign of zero
  (``signed_zero``: DuckDB, PostgreSQL), else 0 (MySQL and SQLite store -0 as 0, docs/typemap.md);
* date / time / timestamp → fixed-width ISO text, timestamptz → naive UTC ISO text (an aware value
  is converted, a naive one is UTC as the type map stores it); ``infinity`` and BC kept (the
  maximum and minimum datetime, which is how DuckDB returns infinity, map to infinity too);
* interval → (months, days, microseconds), the parts PostgreSQL keeps apart (``'1 mon'`` is not
  ``'30 days'``, though ``=`` says so); ordered by their total with 30-day months, as both
  databases order; timetz → time and UTC offset;
* uuid → lowercase text; bytea → bytes; json/jsonb and arrays: ``nested``;
* everything else (text, char(n) with its padding, ranges, inet, enums ...) → its PostgreSQL text.

Canonical values are plain (None, bool, int, float, str, bytes, tuples of those): row digests
hash their ``marshal`` bytes.  :func:`sort_key` gives the ordering value of a key column: the
canonical value where both databases order natively, or the raw text where the target stores text
(it is then ordered by bytes on both sides).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..model import Column
from ..target import typemap
from .nested import array_value, json_value, numeric_text, text_value

#: families whose values both sides can order natively (else: ordered as text, byte-wise)
NATIVE_ORDER = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "float4",
        "float8",
        "numeric",
        "bool",
        "bytes",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "uuid",
        "interval",
    }
)
_F32 = struct.Struct("<f")
_MAX_TS, _MIN_TS = "9999-12-31 23:59:59.999999", "0001-01-01 00:00:00.000000"


def canonical(col: Column, signed_zero: bool = False) -> Callable[[Any], Any]:
    """The function turning a value of ``col`` (source text or target value) into its canonical
    form; ``signed_zero``: the target keeps -0 apart from 0, so the comparison does too."""
    fam, canon = family(col), dict(_CANON)
    if signed_zero:
        canon.update(float4=_signed(_float4), float8=_signed(_float8))
    if fam == "array":
        oid = getattr(col, "elem_base_oid", 0) or col.elem_oid
        return array_value(
            canon.get(typemap.FAMILY_BY_OID.get(oid, "text"), text_value),
            getattr(col, "elem_delim", ",") or ",",
        )
    return canon.get(fam, text_value)


def family(col: Column) -> str:
    """The column's family in the type map; a mapping's target type (``DOUBLE`` for a numeric)
    compares as the PostgreSQL type it stands for, when the type map knows that one."""
    as_type = getattr(typemap, "target_type_column", None)
    if col.target_type and as_type is not None:
        try:
            col = as_type(col, None)
        except (TypeError, ValueError):
            pass
    return typemap.family(col)


# ----------------------------------------------------------------------------- numbers
def _int(v):
    return v if v is None or v.__class__ is int else int(v)


def _bool(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v.strip().lower() in ("t", "true", "1", "y", "yes", "on")
    return bool(v)


def _float8(v):
    if v is None:
        return None
    f = float(v)
    if f != f:
        return "NaN"
    return f + 0.0  # -0.0 → 0.0: equal in PostgreSQL


def _float4(v):
    if v is None:
        return None
    f = float(v)
    if f != f:
        return "NaN"
    if not math.isinf(f):
        try:
            f = _F32.unpack(_F32.pack(f))[0]
        except OverflowError:
            pass
    return f + 0.0


def _signed(canon: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``canon`` keeping negative zero apart: ``'-0'``."""

    def signed(v):
        out = canon(v)
        if out == 0 and out.__class__ is float and math.copysign(1.0, float(v)) < 0:
            return "-0"
        return out

    return signed


# ----------------------------------------------------------------------------- date and time
def _date(v):
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip().replace(" (BC)", " BC")  # DuckDB spells BC so
        return {"9999-12-31": "infinity", "0001-01-01": "-infinity"}.get(s, s)
    if isinstance(v, dt.datetime):
        v = v.date()
    if v == dt.date.max:
        return "infinity"
    if v == dt.date.min:
        return "-infinity"
    return v.isoformat()


def _time(v):
    if v is None:
        return None
    if isinstance(v, str):
        return _fraction6(v.strip())
    if isinstance(v, dt.timedelta):  # MySQL TIME
        us = round(v / dt.timedelta(microseconds=1))
        sec, us = divmod(us, 1_000_000)
        return f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{us:06d}"
    if isinstance(v, dt.time):
        return v.replace(tzinfo=None).isoformat("microseconds")
    return _fraction6(str(v))


def _fraction6(s: str) -> str:
    """``HH:MM:SS[.f]`` / ``… HH:MM:SS[.f]`` with exactly six fractional digits."""
    head, dot, frac = s.partition(".")
    return f"{head}.{frac[:6].ljust(6, '0')}" if dot else f"{head}.000000"


def _timestamp(v):
    if v is None:
        return None
    if isinstance(v, str):
        return _timestamp_text(v.strip())
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return _edge(v.isoformat(" ", "microseconds"))
    if isinstance(v, dt.date):
        return _edge(f"{v.isoformat()} 00:00:00.000000")
    return _timestamp_text(str(v))


_UTC_SUFFIXES = ("", "+00", "+00:00", "+0000", "Z")


def _timestamp_text(s: str) -> str:
    """``YYYY-MM-DD HH:MM:SS[.f][offset][ BC]`` → naive UTC with six fractional digits (DuckDB's
    ``YYYY-MM-DD (BC) …`` spelling of BC as well); other forms (infinity, years past 9999) are
    kept as PostgreSQL renders them."""
    bc = s.endswith(" BC") or " (BC)" in s
    if bc:
        s = s.replace(" (BC)", "").removesuffix(" BC")
    if len(s) < 19 or s[4] != "-" or s[10] not in " T":
        return s + " BC" if bc else s
    rest = s[19:]
    frac = ""
    if rest.startswith("."):
        n = 1
        while n < len(rest) and rest[n].isdigit():
            n += 1
        frac, rest = rest[1:n], rest[n:]
    if rest not in _UTC_SUFFIXES:
        d = dt.datetime.fromisoformat(s).astimezone(dt.timezone.utc)
        return _edge(d.replace(tzinfo=None).isoformat(" ", "microseconds"))
    out = f"{s[:10]} {s[11:19]}.{frac[:6].ljust(6, '0')}"
    return out + " BC" if bc else _edge(out)


def _edge(s: str) -> str:
    return "infinity" if s == _MAX_TS else "-infinity" if s == _MIN_TS else s


def _timetz(v):
    """``HH:MM:SS.ffffff+HH:MM:SS``: time of day and UTC offset (both count in PostgreSQL)."""
    if v is None:
        return None
    if isinstance(v, dt.time):
        off = v.utcoffset() or dt.timedelta(0)
        return _time(v.replace(tzinfo=None)) + _offset(int(off.total_seconds()))
    s = str(v).strip()
    cut = max(s.rfind("+"), s.rfind("-"))
    if cut < 8:
        return _time(s)
    parts = [int(p) for p in s[cut + 1 :].split(":")] + [0, 0]
    secs = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return _time(s[:cut]) + _offset(-secs if s[cut] == "-" else secs)


def _offset(secs: int) -> str:
    sign, secs = ("-", -secs) if secs < 0 else ("+", secs)
    return f"{sign}{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


_ISO_INTERVAL = re.compile(
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?$"
)


def _interval(v):
    """(months, days, microseconds): the parts PostgreSQL and DuckDB keep apart.  A timedelta
    (a driver's value; verify reads DuckDB's intervals as text) has lost them: its days are
    read as 30-day months and days, the way PostgreSQL's ``justify_days`` would."""
    if v is None:
        return None
    if isinstance(v, dt.timedelta):
        months, days = divmod(v.days, 30) if v.days >= 0 else (-(-v.days // 30), -(-v.days % 30))
        return (months, days, v.seconds * 1_000_000 + v.microseconds)
    s = str(v).strip()
    m = _ISO_INTERVAL.match(s)
    if m and s != "P":
        y, mo, d, h, mi = (int(g or 0) for g in m.groups()[:5])
        return (y * 12 + mo, d, (h * 60 + mi) * 60_000_000 + int(Decimal(m.group(6) or 0) * 1_000_000))
    return _verbose_interval(s)


_UNIT = re.compile(r"([-+]?\d+) (years?|mons?|months?|days?)|([-+]?)(\d+):(\d\d):(\d\d(?:\.\d+)?)")
_UNIT_PART = {"y": (0, 12), "m": (0, 1), "d": (1, 1)}  # unit → (part, multiplier)


def _verbose_interval(s: str):
    """``1 year 2 months 3 days -04:05:06.5`` (DuckDB's VARCHAR, PostgreSQL's postgres style)."""
    words = s.split(" ")
    parts, i = [0, 0, 0], 0
    while i < len(words):
        m = _UNIT.fullmatch(" ".join(words[i : i + 2])) if i + 1 < len(words) else None
        if m and m.group(2):
            part, mult = _UNIT_PART[m.group(2)[0]]
            parts[part] += int(m.group(1)) * mult
            i += 2
            continue
        m = _UNIT.fullmatch(words[i])
        if not m or not m.group(4):
            return s  # not an interval text we know: compare it as it is
        us = (int(m.group(4)) * 3600 + int(m.group(5)) * 60) * 1_000_000 + int(
            Decimal(m.group(6)) * 1_000_000
        )
        parts[2] += -us if m.group(3) == "-" else us
        i += 1
    return tuple(parts)


# ----------------------------------------------------------------------------- the rest
def _uuid(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)) and len(v) == 16:
        return str(uuid.UUID(bytes=bytes(v)))
    return str(v).strip().lower()


def _bytes(v):
    if v is None:
        return None
    if isinstance(v, str):
        return bytes.fromhex(v[2:]) if v.startswith("\\x") else v.encode()
    return bytes(v)


_CANON: dict[str, Callable[[Any], Any]] = {
    "bool": _bool,
    "bytes": _bytes,
    "int2": _int,
    "int4": _int,
    "int8": _int,
    "float4": _float4,
    "float8": _float8,
    "numeric": numeric_text,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamp,
    "uuid": _uuid,
    "json": json_value,
    "interval": _interval,
    "timetz": _timetz,
}


# ----------------------------------------------------------------------------- ordering, display
def sort_key(col: Column, text_order: bool) -> Callable[[Any, Any], Any]:
    """``f(raw, canonical) → ordering value`` of a key column, consistent with the ORDER BY both
    databases run: byte-wise text (``text_order``), else the canonical value; NULL sorts last."""
    fam = family(col)
    if text_order or fam not in NATIVE_ORDER:
        base = _raw_text
    elif fam == "numeric":
        base = _numeric_order
    elif fam in ("float4", "float8"):
        base = _float_order
    elif fam == "interval":
        base = _interval_order
    elif fam in ("date", "timestamp", "timestamptz"):
        base = _temporal_order
    else:
        base = plain_order
    if col.not_null:
        return base
    return lambda raw, canon: (True, 0) if canon is None else (False, base(raw, canon))


def _raw_text(raw, canon):
    return raw if raw.__class__ is str else text_value(raw)


def plain_order(raw, canon):
    return canon


def _numeric_order(raw, canon):
    return (1, Decimal(0)) if canon == "NaN" else (0, Decimal(canon))  # NaN sorts last


def _float_order(raw, canon):
    if canon.__class__ is str:
        return (0, 0.0) if canon == "-0" else (1, 0)  # NaN (or unparsed text) last
    return (0, canon)


def _interval_order(raw, canon):
    """Both databases order intervals by their total with 30-day months and 24-hour days."""
    if canon.__class__ is not tuple:
        return (1, 0)  # unparsed text last
    return (0, (canon[0] * 30 + canon[1]) * 86_400_000_000 + canon[2])


_RANK = {"-infinity": -2, "infinity": 2}


def _temporal_order(raw, canon):
    r = _RANK.get(canon)
    if r is not None:
        return (r, "")
    return (-1, canon) if canon.endswith(" BC") else (0, canon)


def display(v) -> Any:
    """A canonical value as JSON: numbers and booleans stay so, bytes become ``\\x…`` hex."""
    if isinstance(v, (bytes, bytearray)):
        return "\\x" + bytes(v).hex()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
