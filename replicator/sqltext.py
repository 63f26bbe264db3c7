"""SQL text a user writes into a mapping (a row filter): is it one expression?

A row filter is pasted into three statements (the publication's ``WHERE (…)``, the copy's
``SELECT … WHERE (…)``, planning's check), so text that closes the parenthesis around it
(``aid > 0) OR (1=1``) or ends the statement (``;``) means something different in each, or
fails in one only.  :func:`expression_problem` refuses such text, reading it as PostgreSQL's
lexer would: quoted strings, quoted identifiers, dollar quoting and comments are skipped.
"""

from __future__ import annotations

import re
from typing import Optional

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _skip(text: str, i: int) -> Optional[int]:
    """The index after a quoted section or comment starting at ``i``; None when none starts
    there; -1 when it never ends; -2 for a line comment."""
    c, two = text[i], text[i : i + 2]
    if c in "'\"":
        escapes = c == "'" and i > 0 and text[i - 1] in "eE"
        j = i + 1
        while j < len(text):
            if escapes and text[j] == "\\":
                j += 2
                continue
            if text[j] == c:
                if text[j + 1 : j + 2] == c:  # doubled quote: part of the text
                    j += 2
                    continue
                return j + 1
            j += 1
        return -1
    if two == "--":  # would swallow the parenthesis the statements put after the text
        return -2
    if two == "/*":
        end = text.find("*/", i + 2)
        return -1 if end < 0 else end + 2
    m = _DOLLAR.match(text, i) if c == "$" else None
    if m:
        end = text.find(m.group(0), m.end())
        return -1 if end < 0 else end + len(m.group(0))
    return None


def expression_problem(text: str) -> Optional[str]:
    """Why ``text`` is not one SQL expression on its own, or None when it may be one."""
    depth, i = 0, 0
    while i < len(text):
        nxt = _skip(text, i)
        if nxt == -1:
            return "a quoted string, quoted name or comment in it is not closed"
        if nxt == -2:
            return "it holds a -- comment (use /* … */)"
        if nxt is not None:
            i = nxt
            continue
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return "it closes a parenthesis it did not open"
        elif c == ";" and depth == 0:
            return "it holds ';' (one expression, not statements)"
        i += 1
    if depth:
        return "a parenthesis in it is not closed"
    if not text.strip():
        return "it is empty"
    return None
