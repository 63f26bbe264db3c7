"""Verify, report: the human form of the verify document, one line per table.

``public.t: OK 123 rows``; ``public.t: DIFFERS rows source 10 target 9; keys 5..9: missing on
target id=7``; ``public.t: ERROR <what and what to do>``.  The JSON form is the document itself
(``verify.verify``).
"""

from __future__ import annotations

from typing import Optional


def render(doc: dict) -> str:
    """One line per table: ``public.t: OK 123 rows`` or ``public.t: DIFFERS rows source 10
    target 9; keys 5..9: missing on target id=7``."""
    return "\n".join(_line(t) for t in doc["tables"])


def _line(t: dict) -> str:
    if t["error"]:
        return f"{t['source']}: ERROR {t['error']}"
    if t["equal"]:
        note = (
            f" ({t['unsettled']} row(s) changing during every re-check were not compared)"
            if t["unsettled"]
            else ""
        )
        return f"{t['source']}: OK {t['source_rows']} rows{note}"
    parts = [f"{t['source']}: DIFFERS rows source {t['source_rows']} target {t['target_rows']}"]
    for r in t["ranges"]:
        kinds = _kinds(r)
        parts.append(f"keys {_span(r['from'], r['to'])}" + (f": {kinds}" if kinds else " differ"))
    if t.get("truncated"):
        parts.append(f"more not listed ({t['differing_ranges']} differing range(s) in all)")
    return "; ".join(parts)


def _kinds(r: dict) -> str:
    out = []
    for kind, label in (
        ("missing", "missing on target"),
        ("extra", "extra on target"),
        ("changed", "changed"),
    ):
        if r[kind]:
            cols = f" ({', '.join(r['columns'])})" if kind == "changed" and r["columns"] else ""
            out.append(f"{label} " + ", ".join(_key_text(k) for k in r[kind]) + cols)
    return ", ".join(out)


def _span(a: Optional[dict], b: Optional[dict]) -> str:
    def one(k, edge):
        if k is None:
            return edge
        vals = [_value_text(v) for v in k.values()]
        return vals[0] if len(vals) == 1 else "(" + ",".join(vals) + ")"

    return f"{one(a, 'start')}..{one(b, 'end')}"


def _key_text(k: dict) -> str:
    return ",".join(f"{c}={_value_text(v)}" for c, v in k.items())


def _value_text(v) -> str:
    if v is None:
        return "NULL"
    s = str(v)
    return repr(s) if isinstance(v, str) and (not s or any(ch in s for ch in " ,;=()'")) else s
