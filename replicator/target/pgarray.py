"""PostgreSQL arrays as JSON: the one documented form of an array on targets without PostgreSQL's.

Contract: an array value travels to DuckDB, MySQL and SQLite as a JSON array, nested once per
dimension, ``null`` for a NULL element.  Elements of ``smallint``/``integer``/``bigint`` are JSON
numbers and of ``boolean`` JSON ``true``/``false``; every other element is a JSON string holding
the element's exact PostgreSQL text (what the element type's output function prints: ``'1.50'``,
``'2024-01-02 03:04:05+00'``, ``'{"a": 1}'`` for a json element).  Empty arrays are ``[]``.

Two producers give the same JSON value (tested on both): :func:`array_json` parses the array text
of a pgoutput tuple or a text COPY row in Python (the change path), :func:`array_json_sql` builds
the source-side SQL of the copy path (``array_to_json``).  Explicit lower bounds
(``'[0:1]={1,2}'``) have no JSON form: the value rules (``value_rules.py``) refuse them first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from ..model import Column

#: element types whose JSON form is native (numbers, booleans); everything else is a string
NATIVE_ELEMENTS = {16: "bool", 20: "int", 21: "int", 23: "int"}
_TOKENS: dict[str, re.Pattern] = {}
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _tokens(delim: str) -> re.Pattern:
    """``{``, ``}``, the delimiter, a quoted element (group 1) or a bare element (group 2)."""
    if delim not in _TOKENS:
        d = re.escape(delim)
        _TOKENS[delim] = re.compile(rf'[{{}}]|{d}|"((?:[^"\\]|\\.)*)"|([^{{}}"{d}]+)', re.S)
    return _TOKENS[delim]


def parse_array(text: str, delim: str = ",") -> list:
    """PostgreSQL array output → nested lists of element text (None for NULL)."""
    if not text.startswith("{"):
        raise ValueError("array with explicit bounds has no JSON form")
    stack: list[list] = []
    top: list = []
    for m in _tokens(delim).finditer(text):
        tok = m.group(0)
        if tok == "{":
            stack.append([])
        elif tok == "}":
            top = stack.pop()
            if stack:
                stack[-1].append(top)
        elif tok == delim:
            continue
        elif m.group(1) is not None:
            stack[-1].append(_UNESCAPE.sub(r"\1", m.group(1)))
        else:
            stack[-1].append(None if tok == "NULL" else tok)
    if stack:
        raise ValueError("unbalanced array text")
    return top


def _leaf(kind: str | None) -> Callable[[str], str]:
    if kind == "int":
        return lambda s: s
    if kind == "bool":
        return lambda s: "true" if s == "t" else "false"
    return lambda s: json.dumps(s, ensure_ascii=False)


def _render(value: list, leaf: Callable[[str], str]) -> str:
    return (
        "["
        + ",".join(
            "null" if v is None else _render(v, leaf) if isinstance(v, list) else leaf(v) for v in value
        )
        + "]"
    )


def element_kind(col: Column) -> str | None:
    """'int' / 'bool' when the elements are JSON numbers / booleans, else None (strings)."""
    return None if col.elem_base_oid else NATIVE_ELEMENTS.get(col.elem_oid)


def array_json(col: Column) -> Callable[[str], str]:
    """PostgreSQL array text → its JSON form (the change path)."""
    leaf, delim = _leaf(element_kind(col)), col.elem_delim or ","
    return lambda s: _render(parse_array(s, delim), leaf)


def array_json_sql(col: Column) -> str:
    """Source SQL (template on ``{v}``, the array value) giving the same JSON text (the copy path)."""
    if element_kind(col):
        return "array_to_json({v})::text"
    return "array_to_json(({v})::text[])::text"
