"""Mapping files: YAML → validated, frozen config objects, every error with file:line:column.

Contract: :func:`load` reads only the file and the environment (no database); :mod:`mapping`
resolves the result against the source catalog.  Both run before any slot, publication or table is
created.  The YAML is composed node by node with the safe loader, so: duplicate keys are refused,
names are taken as written (a table called ``on`` or ``no`` stays a name, never a boolean), and
``${VAR}`` / ``${VAR:-default}`` are expanded from the environment in every scalar.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .errors import ConfigError
from .sqltext import expression_problem

TOP_KEYS = {"source", "target", "name", "defaults", "tables"}
DEFAULT_KEYS = {"on_missing_row"}
ENTRY_KEYS = {
    "source",
    "include",
    "exclude",
    "target",
    "columns",
    "where",
    "key",
    "insert_only",
    "on_missing_row",
    "mode",
    "soft_delete",
    "history",
}
MODES = ("mirror", "soft_delete", "history")
#: the columns of each mode, by role, with their default names (modes.py)
MODE_COLUMNS = {
    "soft_delete": {"deleted": "_deleted", "deleted_at": "_deleted_at", "deleted_lsn": "_deleted_lsn"},
    "history": {
        "valid_from": "_valid_from",
        "valid_from_lsn": "_valid_from_lsn",
        "seq": "_seq",
        "valid_to": "_valid_to",
        "valid_to_lsn": "_valid_to_lsn",
        "op": "_op",
    },
}
COLUMN_KEYS = {"exclude", "rename", "types", "policy"}
ON_MISSING = ("error", "skip")
POLICIES = ("error", "null", "clamp", "text")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Pos:
    """Where something stands in the mapping file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Entry:
    """One item of ``tables:``; exactly one of ``source`` (a name) or ``include`` (a glob)."""

    pos: Pos
    source: Optional[str] = None
    include: Optional[str] = None
    exclude: tuple[str, ...] = ()
    target: Optional[str] = None
    columns_exclude: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    types: tuple[tuple[str, str], ...] = ()
    policy: tuple[tuple[str, str], ...] = ()
    where: str = ""
    key: tuple[str, ...] = ()
    insert_only: bool = False
    on_missing_row: str = "error"
    mode: str = "mirror"
    #: the mode's column names that the entry changes (role → name)
    mode_names: tuple[tuple[str, str], ...] = ()
    #: positions of fields and of column names inside them, for errors found later
    at: dict = field(default_factory=dict, compare=False, hash=False)

    def where_is(self, *path: str) -> Pos:
        return self.at.get(path, self.pos)


@dataclass(frozen=True)
class MappingConfig:
    path: str
    source: Optional[str] = None
    target: Optional[str] = None
    name: Optional[str] = None
    tables: tuple[Entry, ...] = ()


class _Reader:
    """Turns composed YAML nodes into values, remembering positions and raising ConfigError."""

    def __init__(self, path: str):
        self.path = path

    def pos(self, node: yaml.Node) -> Pos:
        m = node.start_mark
        return Pos(self.path, m.line + 1, m.column + 1)

    def fail(self, node: yaml.Node, msg: str) -> ConfigError:
        return ConfigError(f"{self.pos(node)}: {msg}")

    def text(self, node: yaml.Node, what: str) -> str:
        """A scalar taken as written (never a bool or number), with ${VAR} expanded."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value, not a {_kind(node)}")
        return self.expand(node, node.value)

    def expand(self, node: yaml.Node, value: str) -> str:
        def sub(m: re.Match) -> str:
            if m[1] in os.environ:
                return os.environ[m[1]]
            if m[2] is not None:
                return m[2]
            raise self.fail(
                node, f"environment variable {m[1]} is not set (use ${{{m[1]}:-default}} for a default)"
            )

        return _ENV.sub(sub, value)

    def flag(self, node: yaml.Node, what: str) -> bool:
        v = self.text(node, what).lower()
        if v in ("true", "yes", "on"):
            return True
        if v in ("false", "no", "off"):
            return False
        raise self.fail(node, f"{what} must be true or false, not {v!r}")

    def choice(self, node: yaml.Node, what: str, allowed) -> str:
        v = self.text(node, what)
        if v not in allowed:
            raise self.fail(node, f"{what} must be one of {', '.join(allowed)}, not {v!r}")
        return v

    def mapping(
        self, node: yaml.Node, what: str, allowed: set[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping node as {key: (key_node, value_node)}; unknown or repeated keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines), not a {_kind(node)}")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            key = self.text(k, f"a key of {what}")
            if key in out:
                raise self.fail(
                    k, f"duplicate key {key!r} in {what} (first at line {out[key][0].start_mark.line + 1})"
                )
            if allowed and key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), 1)
                raise self.fail(
                    k,
                    f"unknown key {key!r} in {what}"
                    + (
                        f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(sorted(allowed))}"
                    ),
                )
            out[key] = (k, v)
        return out

    def names(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        """A list of names (a single name is accepted too), each with its node."""
        if isinstance(node, yaml.ScalarNode):
            return [(self.text(node, what), node)]
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list of names, not a {_kind(node)}")
        return [(self.text(n, f"an item of {what}"), n) for n in node.value]

    def pairs(self, node: yaml.Node, what: str) -> list[tuple[str, str, yaml.Node]]:
        """A mapping of name → value, with the key node of each pair."""
        return [
            (k, self.text(v, f"{what}.{k}"), kn) for k, (kn, v) in self.mapping(node, what, set()).items()
        ]


def _kind(node: yaml.Node) -> str:
    return {yaml.ScalarNode: "single value", yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}.get(
        type(node), "value"
    )


def load(path: str) -> MappingConfig:
    """Read and validate a mapping file (syntax and shape; names are checked by mapping.resolve)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read mapping file {path}: {e.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<mapping>") -> MappingConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    r = _Reader(path)
    if root is None:
        raise ConfigError(f"{path}: the mapping file is empty; start from 'replicator init'")
    top = r.mapping(root, "the mapping file", TOP_KEYS)
    defaults = {"on_missing_row": "error"}
    if "defaults" in top:
        d = r.mapping(top["defaults"][1], "defaults", DEFAULT_KEYS)
        if "on_missing_row" in d:
            defaults["on_missing_row"] = r.choice(
                d["on_missing_row"][1], "defaults.on_missing_row", ON_MISSING
            )
    if "tables" not in top:
        raise r.fail(root, "the mapping has no 'tables:' list; add entries like '- include: \"public.*\"'")
    tables_node = top["tables"][1]
    if not isinstance(tables_node, yaml.SequenceNode) or not tables_node.value:
        raise r.fail(tables_node, "'tables' must be a non-empty list of entries")
    entries = tuple(_entry(r, n, defaults) for n in tables_node.value)
    get = lambda k: r.text(top[k][1], k) if k in top else None  # noqa: E731
    return MappingConfig(
        path=path, source=get("source"), target=get("target"), name=get("name"), tables=entries
    )


def _entry(r: _Reader, node: yaml.Node, defaults: dict) -> Entry:
    f = r.mapping(node, "a tables entry", ENTRY_KEYS)
    at: dict = {}
    kw: dict[str, Any] = {"on_missing_row": defaults["on_missing_row"]}
    if ("source" in f) == ("include" in f):
        raise r.fail(
            node, "each tables entry needs exactly one of 'source: schema.table' or 'include: \"glob\"'"
        )
    for k, (kn, v) in f.items():
        at[(k,)] = r.pos(kn)
        if k in ("source", "include", "target", "where"):
            kw[k] = r.text(v, k)
            problem = expression_problem(kw[k]) if k == "where" else None
            if problem:
                table = next(r.text(f[x][1], x) for x in ("source", "include") if x in f)
                raise r.fail(
                    v,
                    f"{table}: where {kw[k]!r} is not one SQL expression: {problem}; "
                    f"write a condition on the table's columns, e.g. status <> 'draft'",
                )
        elif k == "exclude":
            if "include" not in f:
                raise r.fail(kn, "'exclude' goes with 'include' (to exclude columns use columns.exclude)")
            kw["exclude"] = tuple(n for n, _ in r.names(v, "exclude"))
        elif k == "key":
            kw["key"] = _names_at(r, v, "key", at, ("key",))
        elif k == "insert_only":
            kw["insert_only"] = r.flag(v, "insert_only")
        elif k == "on_missing_row":
            kw["on_missing_row"] = r.choice(v, "on_missing_row", ON_MISSING)
        elif k == "columns":
            kw.update(_columns(r, v, at))
        elif k == "mode":
            kw["mode"] = r.choice(v, "mode", MODES)
        elif k in MODE_COLUMNS:
            kw["mode_names"] = _mode_names(r, k, v, at)
    for k in MODE_COLUMNS:
        if k in f and kw.get("mode") != k:
            raise r.fail(f[k][0], f"'{k}:' names the columns of mode {k}: add 'mode: {k}' to this entry")
    if kw.get("mode", "mirror") != "mirror" and kw.get("insert_only"):
        raise r.fail(f["mode"][1], f"mode {kw['mode']} needs UPDATE and DELETE: remove insert_only")
    return Entry(pos=r.pos(node), at=at, **kw)


def _mode_names(r: _Reader, mode: str, node, at: dict) -> tuple[tuple[str, str], ...]:
    """``soft_delete: {deleted: …, deleted_at: …}``: other names for the mode's columns."""
    items = r.pairs(node, mode)
    for role, name, kn in items:
        at[(mode, role)] = r.pos(kn)
        if role not in MODE_COLUMNS[mode]:
            raise r.fail(kn, f"{mode}.{role}: not a column of mode {mode} ({', '.join(MODE_COLUMNS[mode])})")
        if not name.strip():
            raise r.fail(kn, f"{mode}.{role}: give a column name")
    return tuple((role, name) for role, name, _ in items)


def _names_at(r: _Reader, node, what: str, at: dict, path: tuple) -> tuple[str, ...]:
    out = []
    for name, n in r.names(node, what):
        at[path + (name,)] = r.pos(n)
        out.append(name)
    if len(set(out)) != len(out):
        raise r.fail(node, f"{what} lists a name twice")
    return tuple(out)


def _columns(r: _Reader, node, at: dict) -> dict:
    c = r.mapping(node, "columns", COLUMN_KEYS)
    out: dict[str, Any] = {}
    if "exclude" in c:
        out["columns_exclude"] = _names_at(r, c["exclude"][1], "columns.exclude", at, ("columns", "exclude"))
    for k, target in (("rename", "rename"), ("types", "types"), ("policy", "policy")):
        if k in c:
            items = r.pairs(c[k][1], f"columns.{k}")
            for name, value, kn in items:
                at[("columns", k, name)] = r.pos(kn)
                if k == "policy" and value not in POLICIES:
                    raise r.fail(
                        kn, f"columns.policy.{name} must be one of {', '.join(POLICIES)}, not {value!r}"
                    )
            out[target] = tuple((n, v) for n, v, _ in items)
    return out
