"""Value rules and policies: what a target column cannot hold, and what happens to such a value.

A :class:`Rule` says which PostgreSQL text renderings a target column type holds, once as a Python
predicate (the change path) and once as SQL run on the source inside the copy query (the copy path),
both from one regular expression (plus an optional extra check), so that both paths decide alike.
The column's ``policy`` (``Column.policy``) then applies on both paths:

* ``error`` (default): the change path raises ValueError (the applier turns it into a
  :class:`ValueRangeError` naming table, column, key and LSN); the copy query prefixes the value
  with :data:`MARK`, which every target refuses and reports with the row's key.
* ``null``: NULL is stored.
* ``clamp``: the nearest value the column holds (largest/smallest datetime or number, the value
  rounded to the column's scale, a string cut to its length); NULL where nothing is near (NaN,
  arrays of another shape).
* ``text``: not a rule matter: the target creates the column as text holding PostgreSQL's text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, Optional

POLICIES = ("error", "null", "clamp", "text")
#: prefix of a refused value in the copy stream (no PostgreSQL rendering of a checked type has it)
MARK = "\x1areplicator:out-of-range\x1a"
MARK_SQL = "chr(26) || 'replicator:out-of-range' || chr(26)"


def _nothing(_s: str) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Rule:
    """Values a target column holds: ``pattern`` fully matches their PostgreSQL text and, when
    given, ``check``/``check_sql`` holds too.  ``clamp``/``clamp_sql`` give the nearest value
    (PostgreSQL text / a source SQL expression of the column's type), None/NULL when none."""

    what: str
    pattern: str
    clamp: Callable[[str], Optional[str]] = _nothing
    clamp_sql: str = "NULL"
    check: Optional[Callable[[str], bool]] = None
    check_sql: str = ""
    #: the same test as SQL on the typed value ``{v}`` (cheaper than the regular expression)
    typed_sql: str = ""
    regex: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "regex", re.compile(self.pattern, re.S))

    def fits(self, s: str) -> bool:
        return self.regex.fullmatch(s) is not None and (self.check is None or self.check(s))

    def fits_sql(self, t: str, v: str) -> str:
        """SQL: true when the value ``v`` (its text: ``t``) fits: ``typed_sql``, else PostgreSQL's
        ``~`` with the same regular expression and ``check_sql``."""
        if self.typed_sql:
            return f"({self.typed_sql.format(v=v)})"
        match = f"{t} ~ '^(?:{self.pattern})$'"
        return (
            f"(CASE WHEN {match} THEN {self.check_sql.format(t=t)} ELSE false END)"
            if self.check_sql
            else match
        )


# ---------------------------------------------------------------- policies
def apply_policy(rule: Optional[Rule], policy: str, load: Callable[[str], Any]) -> Callable[[str], Any]:
    """PostgreSQL text → bound value with ``policy`` applied to the values ``rule`` refuses."""
    if rule is None or policy == "text":
        return load

    def checked(s: str):
        if rule.fits(s):
            return load(s)
        if policy == "null":
            return None
        if policy == "clamp":
            near = rule.clamp(s)
            return None if near is None else load(near)
        raise ValueError(rule.what)

    return checked


def copy_sql(rule: Optional[Rule], policy: str, copy: str, ident: str, pg_type: str) -> str:
    """Source SQL for one column of the copy query: ``copy`` (template on ``{v}``) applied to the
    quoted column ``ident``, with ``policy`` applied to the values ``rule`` refuses."""
    plain = copy.format(v=ident)
    if rule is None or policy == "text":
        return plain
    t = f"({ident})::text"
    if policy == "null":
        other = "NULL"
    elif policy == "clamp" and rule.clamp_sql != "NULL":
        near = rule.clamp_sql.format(t=t, v=ident, type=pg_type)
        other = f"({copy.format(v=f'({near})')})::text"
    elif policy == "clamp":
        other = "NULL"  # nothing is near
    else:
        other = f"{MARK_SQL} || {t}"
    return f"CASE WHEN {ident} IS NULL OR {rule.fits_sql(t, ident)} THEN ({plain})::text ELSE {other} END"


def unmark(s: str) -> str:
    """A value as the source had it (error messages show the value, not the copy-stream mark)."""
    return s.replace(MARK, "")


# ---------------------------------------------------------------- the rules
def decimal_rule(p: int, s: int, where: str, nan: bool = False) -> Rule:
    """DECIMAL(p,s): at most p-s integer digits and s decimals (trailing zeros aside); no ±Inf;
    NaN only with ``nan`` (PostgreSQL's numeric(p,s) holds it, DECIMAL elsewhere does not)."""
    ip = "0*" if p - s <= 0 else f"0*[0-9]{{0,{p - s}}}"
    fp = r"(\.0*)?" if s <= 0 else rf"(\.[0-9]{{0,{s}}}0*)?"
    top = Decimal(10) ** (p - s) - Decimal(10) ** -s
    q = Decimal(1).scaleb(-s)

    def clamp(v: str) -> Optional[str]:
        if v == "NaN":
            return None
        d = top if v == "Infinity" else -top if v == "-Infinity" else _round(v, q)
        return f"{max(-top, min(top, d)):f}"

    return Rule(
        f"{where} DECIMAL({p},{s}) holds no {'' if nan else 'NaN, '}±Infinity or more digits",
        f"-?{ip}{fp}" + ("|NaN" if nan else ""),
        clamp,
        f"CASE WHEN {{t}} = 'NaN' THEN NULL ELSE greatest(least(round(({{v}})::numeric, {s}), "
        f"{top:f}), -{top:f}) END",
    )


def _round(v: str, q: Decimal) -> Decimal:
    """``v`` rounded half away from zero to the exponent of ``q``, as PostgreSQL's round();
    exact for any length, and without a negative zero (PostgreSQL's numeric has none)."""
    with localcontext(Context(prec=len(v) + 40, Emax=MAX_EMAX, Emin=MIN_EMIN)):
        d = Decimal(v).quantize(q, ROUND_HALF_UP)
    return d.copy_abs() if d.is_zero() else d


def integer_rule(lo: int, hi: int, where: str) -> Rule:
    """Integers in [lo, hi] (a numeric source may carry '.000')."""

    def clamp(v: str) -> Optional[str]:
        if v == "NaN":
            return None
        d = Decimal(hi if v == "Infinity" else lo) if "Infinity" in v else _round(v, Decimal(1))
        return str(max(lo, min(hi, int(d))))

    return Rule(
        f"{where} holds integers from {lo} to {hi}",
        r"-?[0-9]+(\.0*)?",
        clamp,
        f"CASE WHEN {{t}} = 'NaN' THEN NULL ELSE greatest(least(round(({{v}})::numeric), {hi}), {lo}) END",
        check=lambda v: lo <= Decimal(v) <= hi,
        check_sql=f"({{t}})::numeric BETWEEN {lo} AND {hi}",
    )


def length_rule(n: int, where: str) -> Rule:
    return Rule(
        f"{where} holds {n} characters",
        ".*",
        lambda v: v[:n],
        f"left({{t}}, {n})",
        check=lambda v: len(v) <= n,
        check_sql=f"char_length({{t}}) <= {n}",
    )


def finite_float_rule(where: str) -> Rule:
    top = "1.7976931348623157e+308"
    return Rule(
        f"{where} holds no NaN or ±Infinity",
        r"-?[0-9][0-9.e+-]*",
        lambda v: {"Infinity": top, "-Infinity": f"-{top}"}.get(v),
        f"CASE {{t}} WHEN 'Infinity' THEN '{top}'::float8 WHEN '-Infinity' THEN '-{top}'::float8 END",
        typed_sql=f"{{v}} BETWEEN '-{top}'::float8 AND '{top}'::float8",
    )  # NaN sorts above all


def not_nan_rule(where: str) -> Rule:
    return Rule(f"{where} holds no NaN", r"-?[0-9I].*", typed_sql="{v} <> 'NaN'")


def numeric_nan_rule(where: str) -> Rule:
    """A DECIMAL as wide as the source's numeric(p,s): only NaN does not fit."""
    return Rule(f"{where} holds no NaN", r"-?[0-9].*", typed_sql="{v} <> 'NaN'")


def year_rule(kind: str, where: str) -> Rule:
    """Dates/timestamps of years 1..9999 (no infinity, no BC)."""
    lo, hi = {
        "date": ("0001-01-01", "9999-12-31"),
        "timestamp": ("0001-01-01 00:00:00", "9999-12-31 23:59:59.999999"),
        "timestamptz": ("0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00"),
    }[kind]
    return Rule(
        f"{where} holds years 1 to 9999 (no infinity, no BC)",
        "[0-9]{4}-[-0-9 :.+]*",
        lambda v: lo if v == "-infinity" or v.endswith(" BC") else hi,
        f"CASE WHEN {{t}} = '-infinity' OR {{t}} LIKE '% BC' THEN '{lo}'::{{type}} ELSE '{hi}'::{{type}} END",
        typed_sql=f"{{v}} BETWEEN '{lo}' AND '{hi}'",
    )


def duckdb_year_rule(kind: str) -> Rule:
    """DuckDB timestamps end in January 294247; PostgreSQL's in December 294276."""
    tz = "+00" if kind == "timestamptz" else ""
    hi = f"294246-12-31 23:59:59.999999{tz}"
    return Rule(
        "DuckDB TIMESTAMP holds years up to 294246",
        "-?infinity|[0-9]{4,5}-.*|(1[0-9]{5}|2[0-8][0-9]{4}|29[0-3][0-9]{3}|294[01][0-9]{2}"
        "|2942[0-3][0-9]|29424[0-6])-.*",
        lambda v: hi,
        f"'{hi}'::{{type}}",
        typed_sql=f"{{v}} < '294247-01-01 00:00:00{tz}' OR {{v}} = 'infinity'",
    )


def time_rule(where: str) -> Rule:
    return Rule(
        f"{where} holds times before 24:00:00",
        "([01][0-9]|2[0-3]):.*",
        lambda v: "23:59:59.999999",
        "'23:59:59.999999'::{type}",
        typed_sql="{v} < '24:00:00'",
    )


def array_rule(where: str, dims: int | None = None, nan: bool = False) -> Rule:
    """Arrays without explicit lower bounds; with ``dims``, of exactly that many dimensions (or
    empty); with ``nan``, without NaN elements."""
    pattern = r"\{.*" if dims is None else r"\{\}|" + r"\{" * dims + "[^{].*"
    what = f"{where} holds arrays with lower bound 1" + (f" and {dims} dimension(s)" if dims else "")
    if not nan:
        return Rule(what, pattern)
    nan_re = re.compile(r"(^|[{,])NaN([,}]|$)")
    return Rule(
        what + " and no NaN elements",
        pattern,
        check=lambda v: not nan_re.search(v),
        check_sql="{t} !~ '(^|[{{,])NaN([,}}]|$)'",
    )
