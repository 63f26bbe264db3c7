"""Identifier checks shared by the targets' ``identifier_problems`` (run before anything exists).

Every target quotes every identifier, so quotes, semicolons, spaces, reserved words and non-ASCII
letters are just names.  What a database cannot do is keep apart names PostgreSQL keeps apart
(case-insensitive column names: DuckDB and SQLite fold ASCII letters, MySQL/MariaDB every letter)
or hold some names at all (MySQL: 64 characters, no trailing space, no character outside Unicode's
Basic Multilingual Plane such as emoji; PostgreSQL: 63 bytes).  Each problem is one line naming
both names (or the name and the limit) and the fix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..model import TableMapping

FIX = "rename one of them in the mapping (columns.rename)"


def ascii_lower(name: str) -> str:
    return "".join(ch.lower() if ch.isascii() else ch for ch in name)


def case_collisions(
    m: TableMapping, where: str, display: str, fold: Callable[[str], str] = ascii_lower
) -> list[str]:
    """Columns whose names differ only by letter case (as ``fold`` compares them)."""
    seen: dict[str, str] = {}
    out = []
    for c in m.view.columns:
        k = fold(c.name)
        if k in seen:
            out.append(
                f"{m.label}: columns {seen[k]!r} and {c.name!r} would be the same column of "
                f"{where} table {display} (column names are case-insensitive there): {FIX}"
            )
        else:
            seen[k] = c.name
    return out


def bad_names(m: TableMapping, where: str, display: str, ok: Callable[[str], str | None]) -> list[str]:
    """The table and column names ``ok`` refuses (it returns why, or None)."""
    out = []
    why = ok(m.target_name)
    if why:
        out.append(
            f"{m.label}: target table name {m.target_name!r} cannot be used in {where}: {why}; "
            f"map the table to another name in the mapping (target:)"
        )
    for c in m.view.columns:
        why = ok(c.name)
        if why:
            out.append(
                f"{m.label}: column {c.name!r} cannot be a column name of {where} table "
                f"{display}: {why}; rename it in the mapping (columns.rename)"
            )
    return out


def mysql_name_problem(name: str) -> str | None:
    if len(name) > 64:
        return f"longer than MySQL's 64 characters ({len(name)})"
    if name.endswith(" "):
        return "MySQL names cannot end with a space"
    if any(ord(ch) > 0xFFFF for ch in name):
        return "MySQL names hold no characters outside Unicode's Basic Multilingual Plane (e.g. emoji)"
    return None


def postgres_name_problem(name: str) -> str | None:
    n = len(name.encode("utf-8"))
    return f"longer than PostgreSQL's 63 bytes ({n} bytes in UTF-8)" if n > 63 else None


def beside(name: str, suffix: str, problem: Callable[[str], str | None]) -> str:
    """The name of a table kept beside table ``name`` (a re-sync's shadow, a parked old table):
    ``name + suffix``, or where the database cannot hold that (``problem`` says why), ``name``
    cut short + ``suffix`` + ``_`` + 6 hex digits of a hash of ``name`` (two long names with
    the same start stay apart)."""
    if problem(name + suffix) is None:
        return name + suffix
    tag = f"{suffix}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    cut = name
    while cut and problem(cut + tag) is not None:
        cut = cut[:-1]
    return cut + tag
