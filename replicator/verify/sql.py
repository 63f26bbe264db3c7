"""Verify, queries: the same table from both sides, in the same key order, as canonical rows.

Contracts:

* **One order on both sides.**  Rows are sorted by the table's key (``TableMapping.view.key``;
  every column for key-less FULL tables).  A key column whose family both databases order natively
  (integers, numeric, dates, uuid ...) is ordered so on both sides; any other key column, or one
  the target stores as text (SQLite numeric, DuckDB wide numeric ...), is ordered by its PostgreSQL
  text byte by byte: ``COLLATE "C"`` on PostgreSQL, binary collations elsewhere.  NULLs sort last.
  Python compares the same sort keys (``values.sort_key``) to cut ranges and merge.
* **Bounded memory.**  The source is read through a server-side cursor (``SELECT … ORDER BY …``,
  fetched in batches) inside a REPEATABLE READ snapshot; targets through streamed results
  (``stream_results``: server-side cursors where the driver has them).  Ranges are ``(lo, hi]``
  predicates on the sort expressions; source bounds are literals of the source's text, target
  bounds the value the change path would bind (``Target.value_loader``).
* Rows are ``(sort_key, canonical values, raw key, version)``; source rows optionally carry
  ``xmin`` (the row version) for the live-mirror settlement.  Connections: ``read``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.types.string import TextLoader

from ..model import Column, TableMapping
from ..source import snapshot
from .values import NATIVE_ORDER, canonical, family, plain_order, sort_key

YIELD_ROWS = 2000  # target rows per driver fetch
FETCH_ROWS = 2000  # source rows per FETCH of the server-side cursor
_CURSORS = itertools.count()


# ----------------------------------------------------------------------------- predicates
def lex(n: int, op: str, gt, lt, eq, and_, or_):
    """``key > bound`` (op ``>``) or ``key <= bound`` (op ``<=``) over ``n`` sort columns, built
    from per-column ``gt(i)``/``lt(i)``/``eq(i)`` (None: impossible) with ``and_``/``or_``."""
    clauses = []
    for i in range(n):
        cmp = gt(i) if op == ">" else lt(i)
        if cmp is not None:
            clauses.append(and_([eq(j) for j in range(i)] + [cmp]))
    if op == "<=":
        clauses.append(and_([eq(j) for j in range(n)]))
    return or_(clauses)


class _Flavour:
    """Per-column comparisons honouring NULLS LAST for ``lex``: ``col(i)`` is the sort expression,
    ``val(i)`` the bound (None for NULL), ``nullable(i)`` whether NULL can occur."""

    def __init__(self, col, val, nullable, is_null, not_null, and_, or_):
        self.col, self.val, self.nullable = col, val, nullable
        self.is_null, self.not_null, self.and_, self.or_ = is_null, not_null, and_, or_

    def gt(self, i):
        v = self.val(i)
        if v is None:
            return None
        c = self.col(i)
        return self.or_([c > v, self.is_null(c)]) if self.nullable(i) else c > v

    def lt(self, i):
        v = self.val(i)
        return self.not_null(self.col(i)) if v is None else self.col(i) < v

    def eq(self, i):
        v = self.val(i)
        return self.is_null(self.col(i)) if v is None else self.col(i) == v

    def bound(self, n: int, op: str):
        return lex(n, op, self.gt, self.lt, self.eq, self.and_, self.or_)


class _Sql:
    """A psycopg ``sql`` fragment with the comparison operators ``lex`` needs."""

    def __init__(self, q):
        self.q = q

    def _op(self, op, other):
        return _Sql(
            sql.SQL("({} " + op + " {})").format(self.q, other.q if isinstance(other, _Sql) else other)
        )

    def __gt__(self, o):
        return self._op(">", o)

    def __lt__(self, o):
        return self._op("<", o)

    def __eq__(self, o):  # noqa: D105 - builds SQL, not a comparison
        return self._op("=", o)

    # unhashable: a class that defines __eq__ but not __hash__ gets __hash__ = None


def _sql_join(word: str, empty: str):
    def join(parts):
        parts = [p.q if isinstance(p, _Sql) else p for p in parts]
        if not parts:
            return _Sql(sql.SQL(empty))
        return _Sql(sql.SQL("(") + sql.SQL(f" {word} ").join(parts) + sql.SQL(")"))

    return join


# ----------------------------------------------------------------------------- the plan
class TablePlan:
    """How one mapped table is read on both sides; rows are ``(sort_key, values, key, version)``."""

    def __init__(self, m: TableMapping, target, target_types: dict[str, Any]):
        self.m, self.target = m, target
        view, src = m.view, m.source_table
        self.columns: Sequence[Column] = view.columns
        self.source_names = src.column_names
        self.target_names = view.column_names
        self.keyed = bool(view.key)
        self.key_idx = [view.column_names.index(k) for k in view.key] or list(range(len(view.columns)))
        fams = [family(c) for c in view.columns]
        self.signed_zero = target.keeps_signed_zero
        self.source_convert = compile_row(
            [self._source_canon(c) for c in view.columns],
            [f if c.policy in ("", "error") else "" for f, c in zip(fams, view.columns)],
        )
        self.target_convert = compile_row([canonical(c, self.signed_zero) for c in view.columns], fams)
        self.text_oids = {
            o
            for c, f in zip(src.columns, fams)
            if f not in PSYCOPG_NATIVE
            for o in (c.type_oid, c.base_oid)
            if o
        }
        kcols = [view.columns[i] for i in self.key_idx]
        self.text_order = [family(c) not in NATIVE_ORDER or _is_text(target_types.get(c.name)) for c in kcols]
        self.sort_fns = [sort_key(c, t) for c, t in zip(kcols, self.text_order)]
        self.sk = compile_sort_key(self.sort_fns, self.key_idx, [f is plain_order for f in self.sort_fns])
        self.nullable = [not c.not_null for c in kcols]
        self.bpchar = [family(c) == "bpchar" for c in kcols]
        self.target_cast = [self._target_cast(c, f) for c, f in zip(view.columns, fams)]
        #: FROM item of the source side: the table's own rows (``snapshot.relation``), set on first read
        self.source_relation: Optional[sql.Composable] = None

    def _target_cast(self, col: Column, fam: str):
        """The type a target column is read as when its driver value would not do (the target
        knows: PostgreSQL's own text, DuckDB's VARCHAR for dates, timestamps and intervals)."""
        return self.target.verify_read_type(col, fam)

    def _source_canon(self, col: Column) -> Callable:
        """Source text → canonical; a column with a value policy first goes through the target's
        conversion (the policy may store NULL, a clamped value or text)."""
        canon = canonical(col, self.signed_zero)
        if col.policy in ("", "error"):
            return canon
        load = self.target.value_loader(col)

        def through(v):
            if v is None:
                return None
            try:
                return canon(load(v if v.__class__ is str else str(v)))
            except Exception:  # noqa: BLE001  the value could not have been replicated: compare it as it is
                return canon(v)

        return through

    def key_values(self, values: tuple) -> tuple:
        return tuple(values[i] for i in self.key_idx)

    # ------------------------------------------------------------------------- source side
    def _src_sort_expr(self, i: int):
        name = sql.Identifier(self.source_names[self.key_idx[i]])
        if not self.text_order[i]:
            return name
        return sql.SQL('{} COLLATE "C"' if self.bpchar[i] else '{}::text COLLATE "C"').format(name)

    def source_query(self, lo: Optional[tuple], hi: Optional[tuple], version: bool) -> sql.Composed:
        """The rows in ``(lo, hi]`` (source raw keys; None: open), in key order."""
        t = self.m.source_table
        cols: list[sql.Composable] = [sql.Identifier(n) for n in self.source_names]
        if version:
            cols.append(sql.SQL("xmin::text"))
        where = [sql.SQL("({})").format(sql.SQL(self.m.where))] if self.m.where else []
        for bound, op in ((lo, ">"), (hi, "<=")):
            if bound is not None:
                where.append(self._src_bound(bound, op).q)
        order = []
        for i in range(len(self.key_idx)):
            if self.nullable[i]:
                order.append(
                    sql.SQL("({} IS NULL)").format(sql.Identifier(self.source_names[self.key_idx[i]]))
                )
            order.append(self._src_sort_expr(i))
        rel = self.source_relation or sql.SQL("ONLY {}").format(sql.Identifier(t.schema, t.name))
        q = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), rel)
        if where:
            q = sql.SQL("{} WHERE {}").format(q, sql.SQL(" AND ").join(where))
        return sql.SQL("{} ORDER BY {}").format(q, sql.SQL(", ").join(order))

    def _src_bound(self, bound: tuple, op: str) -> _Sql:
        f = _Flavour(
            lambda i: _Sql(self._src_sort_expr(i)),
            lambda i: None if bound[i] is None else sql.Literal(str(bound[i])),
            lambda i: self.nullable[i],
            lambda c: _Sql(sql.SQL("({} IS NULL)").format(c.q)),
            lambda c: _Sql(sql.SQL("({} IS NOT NULL)").format(c.q)),
            _sql_join("AND", "TRUE"),
            _sql_join("OR", "FALSE"),
        )
        return f.bound(len(self.key_idx), op)

    def source_rows(self, conn: psycopg.Connection, lo=None, hi=None, version=False) -> Iterator[tuple]:
        """Rows of a server-side cursor: integers and text as psycopg loads them, every other
        type as PostgreSQL's text (the form replication reads)."""
        n, convert, kidx, sk = len(self.columns), self.source_convert, self.key_idx, self.sk
        if self.source_relation is None:
            self.source_relation = snapshot.relation(conn, self.m.source_table)
        with conn.cursor(name=f"verify_{next(_CURSORS)}") as cur:
            for oid in self.text_oids:
                cur.adapters.register_loader(oid, TextLoader)
            cur.execute(self.source_query(lo, hi, version))
            while True:
                batch = cur.fetchmany(FETCH_ROWS)
                if not batch:
                    return
                for r in batch:
                    values = convert(r)
                    raw = tuple([r[i] for i in kidx])
                    yield sk(raw, values), values, raw, r[n] if version else None

    # ------------------------------------------------------------------------- target side
    def _tgt_table(self):
        return sa.table(
            self.m.target_name, *[sa.column(n, _RAW) for n in self.target_names], schema=self.m.target_schema
        )

    def _tgt_sort_expr(self, t, i: int):
        c = t.c[self.target_names[self.key_idx[i]]]
        return self.target.byte_order(c, self.bpchar[i]) if self.text_order[i] else c

    def target_select(self, lo=None, hi=None, after=None, limit=None):
        """Rows in ``(lo, hi]`` (source raw keys) and past ``after`` (a target raw key)."""
        t = self._tgt_table()
        cols = [
            t.c[n] if cast is None else sa.cast(t.c[n], cast)
            for n, cast in zip(self.target_names, self.target_cast)
        ]
        q = sa.select(*cols).select_from(t)
        for bound, op, from_source in ((lo, ">", True), (hi, "<=", True), (after, ">", False)):
            if bound is not None:
                q = q.where(self._tgt_bound(t, bound, op, from_source))
        order = []
        for i in range(len(self.key_idx)):
            e = self._tgt_sort_expr(t, i)
            if self.nullable[i]:
                order.append(t.c[self.target_names[self.key_idx[i]]].is_(None))
            order.append(e)
        q = q.order_by(*order)
        return q.limit(limit) if limit else q

    def _tgt_bound(self, t, bound: tuple, op: str, from_source: bool):
        typed = self.target.table(self.m).c

        def val(i):
            v = bound[i]
            if v is None:
                return None
            col = self.columns[self.key_idx[i]]
            if not from_source:  # a value read from the target (as text when cast so)
                if self.target_cast[self.key_idx[i]] is not None and not self.text_order[i]:
                    return sa.cast(sa.bindparam(None, v, type_=sa.String()), self.target.column_type(col))
                return sa.bindparam(None, v, type_=sa.types.NullType())
            if self.text_order[i]:
                return sa.bindparam(None, str(v), type_=sa.String())
            v = self.target.value_loader(col)(str(v))
            if isinstance(v, str) and self.target.casts_bound_text:  # converted in the target's SQL
                return sa.cast(sa.bindparam(None, v, type_=sa.String()), self.target.column_type(col))
            return sa.bindparam(None, v, type_=typed[col.name].type)

        f = _Flavour(
            lambda i: self._tgt_sort_expr(t, i),
            val,
            lambda i: self.nullable[i],
            lambda c: c.is_(None),
            lambda c: c.is_not(None),
            lambda parts: sa.and_(sa.true(), *parts),
            lambda parts: sa.or_(sa.false(), *parts),
        )
        return f.bound(len(self.key_idx), op)

    def target_row(self, r) -> tuple:
        values = self.target_convert(r)
        raw = tuple([r[i] for i in self.key_idx])
        return self.sk(raw, values), values, raw, None

    def target_raw(self, conn, lo=None, hi=None, after=None, limit=None) -> Iterator[tuple]:
        """Raw target tuples, streamed (server-side cursor where the driver has one)."""
        res = conn.execution_options(stream_results=True, yield_per=YIELD_ROWS).execute(
            self.target_select(lo, hi, after, limit)
        )
        for part in res.partitions():
            yield from part


class _Raw(sa.types.UserDefinedType):
    """Values exactly as the driver returns them: an untyped column would let the dialect pick a
    conversion from the cursor's type code (duckdb-engine parses JSON, so JSON ``null`` became
    SQL NULL)."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "RAW"


_RAW = _Raw()


def _is_text(t) -> bool:
    return isinstance(t, (sa.String, sa.JSON))


#: families psycopg loads as the canonical value itself (int, str); the rest is read as text
#: targets that keep -0 apart from 0 (MySQL and SQLite store -0 as 0: docs/types.md)
PSYCOPG_NATIVE = frozenset({"int2", "int4", "int8", "text", "varchar"})
#: per family, an inline expression on ``{x}`` skipping the call when the value is already canonical
_INLINE = {
    "int2": "({x} if {x}.__class__ is int else {f}({x}))",
    "text": "({x} if {x}.__class__ is str else {f}({x}))",
}
_INLINE.update(int4=_INLINE["int2"], int8=_INLINE["int2"], varchar=_INLINE["text"], bpchar=_INLINE["text"])


def compile_row(fns: Sequence[Callable], families: Sequence[str]) -> Callable[[Sequence], tuple]:
    """``row → tuple of canonical values`` as one generated expression (a call per value only
    where the value may need converting): this loop runs for every row of both sides."""
    env = {f"f{i}": f for i, f in enumerate(fns)}
    parts = [_INLINE.get(fam, "{f}({x})").format(x=f"r[{i}]", f=f"f{i}") for i, fam in enumerate(families)]
    if not parts:  # a table without columns: every row is the empty tuple
        return lambda r: ()
    return eval(f"lambda r: ({', '.join(parts)},)", env)  # noqa: S307 - built from fixed templates


def compile_sort_key(fns: Sequence[Callable], idx: Sequence[int], plain: Sequence[bool]):
    """``(raw key, values) → sort key``: the canonical value itself where it orders as is."""
    if not fns:  # a table without columns: all rows sort alike
        return lambda raw, values: ()
    if len(fns) == 1:
        i, f = idx[0], fns[0]
        return (lambda raw, values: values[i]) if plain[0] else (lambda raw, values: f(raw[0], values[i]))
    env = {f"f{j}": f for j, f in enumerate(fns)}
    parts = [
        f"values[{i}]" if p else f"f{j}(raw[{j}], values[{i}])" for j, (i, p) in enumerate(zip(idx, plain))
    ]
    return eval(f"lambda raw, values: ({', '.join(parts)},)", env)  # noqa: S307
